"""An Azure Flexible virtual machine scale set, through azure-mgmt-compute.

Calls (API version of the installed SDK; the stand-in in the tests checks
every body against that version's models):
- GET  virtualMachineScaleSets/{name}: sku.capacity, the scale set's id;
- GET  virtualMachines?$filter='virtualMachineScaleSet/id' eq '{id}': the
  set's VMs (a Flexible set's VMs are ordinary VM resources; the
  virtualMachineScaleSets/{name}/virtualMachines API is for Uniform sets);
- PATCH virtualMachineScaleSets/{name} {"sku": {"capacity": n}}: scale out;
- POST virtualMachineScaleSets/{name}/delete {"instanceIds": [vm]}: delete
  exactly that VM (a Flexible set's instance ids are its VMs' names); Azure
  lowers the set's capacity by one with it. Through the scale set, not a
  DELETE of the VM resource: the server's role allows
  `virtualMachineScaleSets/delete/action` at the set's scope only, while a
  VM delete would need `virtualMachines/delete` at the resource group's
  scope, which would also cover the server VM itself.
Long-running operations are sent, not awaited (polling=False): the next poll
sees their effect, and a slow VM creation never blocks the loop.
"""

from __future__ import annotations

import os
from typing import Any

from .config import AzureTarget
from .model import Machine, PoolState

# A VM being deleted is gone for the scaler. A VM that failed to provision
# stays listed: it never registers, so the boot timeout reaps it.
GONE = ("Deleting",)


def credential() -> Any:
    """The server VM's system-assigned managed identity (CONTRACT.md).

    OBS_FARM_IMDS points the identity at another IMDS (tests); azure-identity
    reads that address from AZURE_POD_IDENTITY_AUTHORITY_HOST.
    """
    from azure.identity import ManagedIdentityCredential

    imds = os.environ.get("OBS_FARM_IMDS")
    if imds:
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds
    return ManagedIdentityCredential()


class AzurePool:
    def __init__(self, target: AzureTarget, cred: Any = None, base_url: str | None = None):
        from azure.mgmt.compute import ComputeManagementClient

        self.target = target
        self.calls = 0
        self.client = ComputeManagementClient(
            cred if cred is not None else credential(),
            target.subscription_id,
            base_url=base_url or os.environ.get("AZURE_RESOURCE_MANAGER_ENDPOINT") or None,
            # The loop retries with backoff itself; fail a poll fast.
            retry_total=1,
            connection_timeout=10,
            read_timeout=30,
        )

    def observe(self) -> PoolState:
        t = self.target
        vmss = self.client.virtual_machine_scale_sets.get(t.resource_group, t.scale_set)
        self.calls += 1
        capacity = int(vmss.sku.capacity or 0) if vmss.sku else 0
        flt = f"'virtualMachineScaleSet/id' eq '{vmss.id}'"
        machines = []
        for vm in self.client.virtual_machines.list(t.resource_group, filter=flt):
            props = vm.properties
            if props is None or props.provisioning_state in GONE:
                continue
            host = props.os_profile.computer_name if props.os_profile else None
            if not host:
                continue  # not ours to judge: never deleted for lack of a name
            created = props.time_created.timestamp() if props.time_created else None
            # (azure-mgmt-compute 39 nests these under `properties`; the
            # requirement is pinned to the major version tested here.)
            machines.append(Machine(id=str(vm.name), host=host, created=created))
        self.calls += 1
        return PoolState(capacity, tuple(machines))

    def set_capacity(self, capacity: int) -> None:
        from azure.mgmt.compute.models import Sku, VirtualMachineScaleSetUpdate

        t = self.target
        self.calls += 1
        self.client.virtual_machine_scale_sets.begin_update(
            t.resource_group,
            t.scale_set,
            VirtualMachineScaleSetUpdate(sku=Sku(capacity=capacity)),
            polling=False,
        )

    def delete(self, machine: str) -> None:
        from azure.mgmt.compute.models import VirtualMachineScaleSetVMInstanceRequiredIDs

        t = self.target
        self.calls += 1
        self.client.virtual_machine_scale_sets.begin_delete_instances(
            t.resource_group,
            t.scale_set,
            VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=[machine]),
            polling=False,
        )

    def complete_lifecycle(self, machine: str) -> None:
        raise NotImplementedError("Azure pools have no termination lifecycle hook")
