"""KeptData: the resource group that outlives the farm.

Creates: one resource group, `protect`ed and `retainOnDelete`, for what must
survive any teardown of the farm: the server's data disk, the Backup vault
and the disk snapshots. Deleting a resource group deletes everything in it,
whatever Pulumi's options say about one resource, so the farm's own resource
group (network, VMs, VPN) holds nothing that must be kept.

Existing stacks kept everything in one resource group, logical name
`obs-rg` under the `FarmNetwork`; `previous` aliases that resource group
to this one, so `pulumi up` adopts it as the kept group without touching it
(the disk and the vault stay where they are, their inputs unchanged) and
re-creates the rest of the farm in the new farm group (README: "Upgrading
from one resource group").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import resources


@dataclass(frozen=True)
class KeptDataArgs:
    location: str
    tags: dict[str, str]
    # URNs the group was registered under before (migration).
    previous: tuple[pulumi.Input[str], ...] = field(default_factory=tuple)


class KeptData(pulumi.ComponentResource):
    resource_group_name: pulumi.Output[str]
    resource_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: KeptDataArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("obs-farm:azure:KeptData", name, None, opts)
        rg = resources.ResourceGroup(
            f"{name}-rg",
            location=args.location,
            tags=args.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=True,
                retain_on_delete=True,
                aliases=list(args.previous),
            ),
        )
        self.resource_group_name = rg.name
        self.resource_group_id = rg.id
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "resource_group_id": self.resource_group_id,
            }
        )
