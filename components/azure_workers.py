"""AzureWorkerPool: an x86-64 OBS worker scale set whose size the scaler sets.

Creates: a Flexible-orchestration VM scale set (Debian 12 or the
`image_reference` given, upgrade policy Manual so that only new VMs pick up a
new image or custom data; Premium SSD OS
disk, SSH keys only, no public IPs, optional Spot priority with eviction
policy Delete) whose cloud-init starts the pool's worker groups; and, only
when the scaler is turned off, a `monitor.AutoscaleSetting` with a single
CPU scale-OUT rule as a fallback (no scale-in rule, ever: the cloud must
never choose which busy VM to delete).

Capacity belongs to obs-farm-scaler (or, in the fallback, to autoscale): the
program never registers `sku.capacity`, so no `pulumi up` sends one. Why not
`ignore_changes`: the engine fills an ignored property from the inputs in the
state (pulumi/pulumi `processIgnoreChanges`, `PropertyPath.Reset`), and
azure-native updates a scale set with a full PUT of those inputs
(`defaultUpdate` -> `CreateOrUpdate`), so an ignored capacity is still sent,
with a stale value. An omitted one is not sent at all (see README, "Capacity
and `pulumi up`").
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
    # Only when the scaler is off: Azure autoscale adds VMs on CPU load.
    cpu_scale_out_fallback: bool = False
    # What the VMs boot (a gallery image version's or image's {"id": ...});
    # None: stock Debian 12 from the marketplace.
    image_reference: dict[str, pulumi.Input[str]] | None = None


def cpu_scale_out_rule(vmss_id: pulumi.Input[str]) -> dict[str, Any]:
    """+1 VM after 10 minutes above 60% CPU. There is deliberately no
    scale-in counterpart: Azure would pick the victim, building or not."""
    return {
        "metric_trigger": {
            "metric_name": "Percentage CPU",
            "metric_namespace": "microsoft.compute/virtualmachinescalesets",
            "metric_resource_uri": vmss_id,
            "time_grain": "PT1M",
            "statistic": "Average",
            "time_window": "PT10M",
            "time_aggregation": "Average",
            "operator": "GreaterThan",
            "threshold": 60,
        },
        "scale_action": {
            "direction": "Increase",
            "type": "ChangeCount",
            "value": "1",
            "cooldown": "PT10M",
        },
    }


class AzureWorkerPool(pulumi.ComponentResource):
    scale_set_id: pulumi.Output[str]
    scale_set_name: pulumi.Output[str]

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
            # No capacity: see the module docstring.
            sku={"name": pool.vm_size, "tier": "Standard"},
            # A new image or custom data reaches new VMs only; running ones
            # stay as they are until the scaler drains and deletes them.
            upgrade_policy={"mode": "Manual"},
            virtual_machine_profile={
                "os_profile": {
                    "computer_name_prefix": "obsw",
                    "admin_username": args.admin_username,
                    "custom_data": b64(args.user_data),
                    "linux_configuration": ssh_config(args.admin_username, args.ssh_public_key),
                },
                "storage_profile": {
                    "image_reference": args.image_reference or DEBIAN_12_GEN2,
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
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.scale_set_id = vmss.id
        self.scale_set_name = vmss.name
        self.autoscale_id: pulumi.Output[str] | None = None
        if args.cpu_scale_out_fallback:
            self.autoscale_id = self._fallback(name, args, vmss.id)
        self.register_outputs(
            {
                "scale_set_id": self.scale_set_id,
                "scale_set_name": self.scale_set_name,
                "autoscale_id": self.autoscale_id,
            }
        )

    def _fallback(
        self, name: str, args: AzureWorkerPoolArgs, vmss_id: pulumi.Output[str]
    ) -> pulumi.Output[str]:
        """CPU scale-out only: it cannot start a pool at 0 VMs (no metric), and
        with no scale-in rule VMs stay until someone removes them."""
        pool = args.pool
        autoscale = monitor.AutoscaleSetting(
            f"{name}-autoscale",
            resource_group_name=args.resource_group_name,
            location=args.location,
            target_resource_uri=vmss_id,
            enabled=True,
            profiles=[
                {
                    "name": "cpu-scale-out",
                    "capacity": {
                        "minimum": str(pool.min_vms),
                        "maximum": str(pool.max_vms),
                        "default": str(pool.min_vms),
                    },
                    "rules": [cpu_scale_out_rule(vmss_id)],
                }
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return autoscale.id
