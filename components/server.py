"""ObsServer: the OBS server VM on Azure.

Creates: a static Standard public IP (web UI/API and SSH, both limited to the
admin ranges by the subnet's NSG), a NIC with the static private address the
workers and BSConfig use, a Premium SSD managed data disk for /srv/obs, and
the VM (Premium SSD OS disk, openSUSE Leap 15.6 for the `appliance` flavor or
Debian 12 for `backend`, SSH keys only) with the data disk attached at LUN 0.

The data disk is its own resource, protected and retained on delete, in the
resource group that outlives the farm (KeptData), and the VM detaches rather
than deletes it: replacing or destroying the VM never takes the archive with
it. The VM is deleted before its replacement is created, since a managed
disk attaches to one VM at a time. Given an existing disk id (a disk a
destroyed farm kept), the component creates no disk and attaches that one.
Host caching is ReadOnly below 4 TiB and None from there (Azure offers
none); the NIC gets accelerated networking where the size supports it.

The VM has a system-assigned managed identity: obs-farm-scaler, on the
server, authenticates with it to Azure (roles on the worker pool only) and,
through web-identity federation, to AWS (components/scaler.py). No key or
password for either cloud exists anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_azure_native import compute, network

from components.common import DEBIAN_12_GEN2, b64, premium_os_disk, ssh_config

DATA_DISK_LUN = 0
# Azure offers no host caching on managed disks of 4 TiB and more.
HOST_CACHING_MAX_GB = 4095


def data_disk_caching(size_gb: int | None) -> str:
    """ReadOnly host caching where Azure offers it; None for 4 TiB and more,
    and for an existing disk whose size the program does not know."""
    if size_gb is None or size_gb > HOST_CACHING_MAX_GB:
        return "None"
    return "ReadOnly"


# openSUSE Leap 15.6 from the Azure marketplace (publisher:offer:sku:version),
# the base of upstream's supported OBS 2.10 install.
OPENSUSE_LEAP_15_6_GEN2 = {
    "publisher": "SUSE",
    "offer": "opensuse-leap-15-6",
    "sku": "gen2",
    "version": "latest",
}
SERVER_IMAGES = {"appliance": OPENSUSE_LEAP_15_6_GEN2, "backend": DEBIAN_12_GEN2}


# Apache on the appliance publishes the built repositories here.
APPLIANCE_REPOSITORY_PORT = 82


def tls_parameters(certificate: str, private_key: str) -> dict[str, str]:
    """The run command's secret environment for a stack-supplied certificate."""
    if not (certificate and private_key):
        return {}
    return {"OBS_FARM_TLS_CERT": certificate, "OBS_FARM_TLS_KEY": private_key}


def server_image(flavor: str) -> dict[str, str]:
    """The marketplace image of a `server.flavor`."""
    return SERVER_IMAGES[flavor]


@dataclass(frozen=True)
class ObsServerArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    subnet_id: pulumi.Input[str]
    private_ip: str
    vm_size: str
    os_disk_size_gb: int
    data_disk_size_gb: int
    admin_username: str
    ssh_public_key: str
    user_data: str
    tags: dict[str, str]
    image_reference: dict[str, str] = field(default_factory=lambda: DEBIAN_12_GEN2)
    # The resource group that outlives the farm (KeptData); the data disk
    # is created there.
    data_resource_group_name: pulumi.Input[str] = ""
    # An existing disk to attach instead of creating one (kept by a farm
    # that was destroyed).
    existing_data_disk_id: str = ""
    accelerated_networking: bool = True


class ObsServer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    data_disk_id: pulumi.Output[str]
    data_disk_name: pulumi.Output[str]
    vm_id: pulumi.Output[str]
    vm_name: pulumi.Output[str]
    principal_id: pulumi.Output[str]

    def __init__(self, name: str, args: ObsServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("obs-farm:azure:ObsServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg, loc, tags = args.resource_group_name, args.location, args.tags

        pip = network.PublicIPAddress(
            f"{name}-ip",
            resource_group_name=rg,
            location=loc,
            sku={"name": "Standard"},
            public_ip_allocation_method="Static",
            tags=tags,
            opts=child,
        )
        nic = network.NetworkInterface(
            f"{name}-nic",
            resource_group_name=rg,
            location=loc,
            ip_configurations=[
                {
                    "name": "primary",
                    "primary": True,
                    "subnet": {"id": args.subnet_id},
                    "private_ip_allocation_method": "Static",
                    "private_ip_address": args.private_ip,
                    "public_ip_address": {"id": pip.id},
                }
            ],
            enable_accelerated_networking=args.accelerated_networking,
            tags=tags,
            opts=child,
        )
        data_disk_id: pulumi.Input[str]
        if args.existing_data_disk_id:
            data_disk_id = args.existing_data_disk_id
            data_disk_name: pulumi.Input[str] = args.existing_data_disk_id.rsplit("/", 1)[-1]
            caching = data_disk_caching(None)
        else:
            data_disk = compute.Disk(
                f"{name}-data",
                resource_group_name=args.data_resource_group_name or rg,
                location=loc,
                sku={"name": "Premium_LRS"},
                disk_size_gb=args.data_disk_size_gb,
                creation_data={"create_option": "Empty"},
                tags=tags,
                # The build archive: `pulumi destroy` must not delete it, nor
                # a replacement of the disk resource.
                opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True),
            )
            data_disk_id, data_disk_name = data_disk.id, data_disk.name
            caching = data_disk_caching(args.data_disk_size_gb)
        vm = compute.VirtualMachine(
            f"{name}-vm",
            resource_group_name=rg,
            location=loc,
            hardware_profile={"vm_size": args.vm_size},
            network_profile={
                "network_interfaces": [{"id": nic.id, "primary": True, "delete_option": "Detach"}]
            },
            os_profile={
                "computer_name": "obs-server",
                "admin_username": args.admin_username,
                "custom_data": b64(args.user_data),
                "linux_configuration": ssh_config(args.admin_username, args.ssh_public_key),
            },
            storage_profile={
                "image_reference": args.image_reference,
                "os_disk": premium_os_disk(args.os_disk_size_gb),
                "data_disks": [
                    {
                        "lun": DATA_DISK_LUN,
                        "create_option": "Attach",
                        "managed_disk": {"id": data_disk_id},
                        "caching": caching,
                        "delete_option": "Detach",
                    }
                ],
            },
            # The scaler's identity (module docstring); added in place.
            identity={"type": "SystemAssigned"},
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.public_ip = pip.ip_address.apply(lambda ip: ip or "")
        self.private_ip = pulumi.Output.from_input(args.private_ip)
        self.data_disk_id = pulumi.Output.from_input(data_disk_id)
        self.data_disk_name = pulumi.Output.from_input(data_disk_name)
        self.vm_id = vm.id
        self.vm_name = vm.name
        self.principal_id = vm.identity.apply(lambda i: (i.principal_id if i else None) or "")
        self.register_outputs(
            {
                "public_ip": self.public_ip,
                "private_ip": self.private_ip,
                "data_disk_id": self.data_disk_id,
                "data_disk_name": self.data_disk_name,
                "vm_id": self.vm_id,
                "vm_name": self.vm_name,
                "principal_id": self.principal_id,
            }
        )


@dataclass(frozen=True)
class BackendWorkersArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    vm_name: pulumi.Input[str]
    script: str
    tags: dict[str, str]
    # Environment of the script that must stay secret (the appliance's TLS
    # certificate and key): Azure's protectedParameters, never returned by
    # its API; Pulumi keeps them secret in the state.
    protected_parameters: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class BackendWorkers(pulumi.ComponentResource):
    """What the OBS server learns from the worker pools, delivered by a VM run command.

    Creates: one managed run command on the server VM running
    obs-farm-apply-farm (worker address ranges for $ipaccess, one scheduler
    per architecture; on the appliance, a supplied TLS certificate).
    Changing the workers re-runs it in place; the VM's custom data (which
    Azure refuses to change in place) never sees them.
    """

    run_command_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: BackendWorkersArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:azure:BackendWorkers", name, None, opts)
        source: dict[str, Any] = {"script": args.script}
        protected: dict[str, Any] = {}
        if args.protected_parameters:
            protected["protected_parameters"] = [
                {"name": k, "value": pulumi.Output.secret(v)}
                for k, v in sorted(args.protected_parameters.items())
            ]
        command = compute.VirtualMachineRunCommandByVirtualMachine(
            f"{name}-apply",
            resource_group_name=args.resource_group_name,
            vm_name=args.vm_name,
            location=args.location,
            source=source,
            async_execution=False,
            timeout_in_seconds=3600,
            treat_failure_as_deployment_failure=True,
            tags=args.tags,
            **protected,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.run_command_id = command.id
        self.register_outputs({"run_command_id": self.run_command_id})
