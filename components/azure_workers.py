"""AzureWorkerPool: an autoscaled x86-64 OBS worker scale set.

Creates: a Flexible-orchestration VM scale set (Debian 12, Premium SSD OS
disk, SSH keys only, no public IPs, optional Spot priority with eviction
policy Delete) whose cloud-init starts the pool's worker groups, and a
`monitor.AutoscaleSetting` that keeps it between the configured minimum and
maximum.

The autoscale rule is CPU-based for now: busy OBS workers keep their cores
busy, idle ones do not. The scale set's capacity belongs to the autoscaler
after creation, so `pulumi up` ignores it rather than resetting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import compute, monitor

from components.common import DEBIAN_12_GEN2, b64, premium_os_disk, ssh_config
from components.topology import WorkerPool


@dataclass(frozen=True)
class AzureWorkerPoolArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    subnet_id: pulumi.Input[str]
    pool: WorkerPool
    os_disk_size_gb: int
    admin_username: str
    ssh_public_key: str
    user_data: str
    tags: dict[str, str]


def cpu_rule(vmss_id: pulumi.Input[str], scale_out: bool) -> dict[str, Any]:
    """Scale out quickly on sustained load; scale in slowly, one VM at a time."""
    return {
        "metric_trigger": {
            "metric_name": "Percentage CPU",
            "metric_namespace": "microsoft.compute/virtualmachinescalesets",
            "metric_resource_uri": vmss_id,
            "time_grain": "PT1M",
            "statistic": "Average",
            "time_window": "PT10M" if scale_out else "PT30M",
            "time_aggregation": "Average",
            "operator": "GreaterThan" if scale_out else "LessThan",
            "threshold": 60 if scale_out else 10,
        },
        "scale_action": {
            "direction": "Increase" if scale_out else "Decrease",
            "type": "ChangeCount",
            "value": "1",
            "cooldown": "PT10M" if scale_out else "PT20M",
        },
    }


class AzureWorkerPool(pulumi.ComponentResource):
    scale_set_id: pulumi.Output[str]
    autoscale_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: AzureWorkerPoolArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:azure:AzureWorkerPool", name, None, opts)
        pool = args.pool
        priority: dict[str, Any] = (
            {"priority": "Spot", "eviction_policy": "Delete", "billing_profile": {"max_price": -1}}
            if pool.spot
            else {"priority": "Regular"}
        )
        vmss = compute.VirtualMachineScaleSet(
            f"{name}-vmss",
            resource_group_name=args.resource_group_name,
            location=args.location,
            orchestration_mode="Flexible",
            platform_fault_domain_count=1,
            single_placement_group=False,
            sku={"name": pool.vm_size, "tier": "Standard", "capacity": pool.min_vms},
            virtual_machine_profile={
                "os_profile": {
                    "computer_name_prefix": "obsw",
                    "admin_username": args.admin_username,
                    "custom_data": b64(args.user_data),
                    "linux_configuration": ssh_config(args.admin_username, args.ssh_public_key),
                },
                "storage_profile": {
                    "image_reference": DEBIAN_12_GEN2,
                    "os_disk": premium_os_disk(args.os_disk_size_gb),
                },
                "network_profile": {
                    "network_api_version": "2020-11-01",
                    "network_interface_configurations": [
                        {
                            "name": "primary",
                            "primary": True,
                            "enable_accelerated_networking": True,
                            "delete_option": "Delete",
                            "ip_configurations": [
                                {
                                    "name": "primary",
                                    "primary": True,
                                    "subnet": {"id": args.subnet_id},
                                }
                            ],
                        }
                    ],
                },
                **priority,
            },
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["sku.capacity"]),
        )
        autoscale = monitor.AutoscaleSetting(
            f"{name}-autoscale",
            resource_group_name=args.resource_group_name,
            location=args.location,
            target_resource_uri=vmss.id,
            enabled=True,
            profiles=[
                {
                    "name": "cpu",
                    "capacity": {
                        "minimum": str(pool.min_vms),
                        "maximum": str(pool.max_vms),
                        "default": str(pool.min_vms),
                    },
                    "rules": [cpu_rule(vmss.id, True), cpu_rule(vmss.id, False)],
                }
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.scale_set_id = vmss.id
        self.autoscale_id = autoscale.id
        self.register_outputs(
            {"scale_set_id": self.scale_set_id, "autoscale_id": self.autoscale_id}
        )
