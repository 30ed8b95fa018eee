"""DiskBackup: daily Azure Disk Backup of the server's data disk.

Creates: a Backup vault (system-assigned identity), a backup policy (daily
incremental snapshots kept for the configured number of days in the
operational store), the two role assignments the vault needs (Disk Backup
Reader on the disk, Disk Snapshot Contributor on the resource group that
holds the snapshots) and the backup instance. Everything lives in the kept
resource group (KeptData), snapshots included, and every resource here is
`protect`ed and `retainOnDelete`: tearing the farm down leaves the backups
running; restore creates a new disk from a recovery point (README:
"Backups").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import authorization, dataprotection

# Built-in role definition ids (the same in every subscription).
DISK_BACKUP_READER = "3e5e47e6-65f7-47ef-90b5-e5dd4d455f24"
DISK_SNAPSHOT_CONTRIBUTOR = "7efff54f-a5b4-42b5-a1c5-5411624893ce"
DISKS = "Microsoft.Compute/disks"
OPERATIONAL_STORE = {"data_store_type": "OperationalStore", "object_type": "DataStoreInfoBase"}


@dataclass(frozen=True)
class DiskBackupArgs:
    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: str
    disk_id: pulumi.Input[str]
    disk_name: pulumi.Input[str]
    retention_days: int
    tags: dict[str, str]


def policy_properties(retention_days: int) -> dict[str, Any]:
    # Typed Args where the schema has a union (policy rules, triggers, delete
    # options, backup parameters): plain dicts there keep their snake_case
    # keys on the wire, which Azure would not understand.
    backup_rule = dataprotection.AzureBackupRuleArgs(
        object_type="AzureBackupRule",
        name="BackupDaily",
        backup_parameters=dataprotection.AzureBackupParamsArgs(
            object_type="AzureBackupParams", backup_type="Incremental"
        ),
        data_store=dataprotection.DataStoreInfoBaseArgs(**OPERATIONAL_STORE),
        trigger=dataprotection.ScheduleBasedTriggerContextArgs(
            object_type="ScheduleBasedTriggerContext",
            schedule={
                "repeating_time_intervals": ["R/2024-01-01T02:00:00+00:00/P1D"],
                "time_zone": "UTC",
            },
            tagging_criteria=[
                {
                    "is_default": True,
                    "tagging_priority": 99,
                    "tag_info": {"id": "Default_", "tag_name": "Default"},
                }
            ],
        ),
    )
    retention_rule = dataprotection.AzureRetentionRuleArgs(
        object_type="AzureRetentionRule",
        name="Default",
        is_default=True,
        lifecycles=[
            {
                "source_data_store": OPERATIONAL_STORE,
                "delete_after": dataprotection.AbsoluteDeleteOptionArgs(
                    object_type="AbsoluteDeleteOption", duration=f"P{retention_days}D"
                ),
            }
        ],
    )
    return {
        "object_type": "BackupPolicy",
        "datasource_types": [DISKS],
        "policy_rules": [backup_rule, retention_rule],
    }


def _principal(identity: Any) -> str:
    if identity is None:
        return ""
    if isinstance(identity, dict):
        return str(identity.get("principalId") or identity.get("principal_id") or "")
    return str(getattr(identity, "principal_id", "") or "")


class DiskBackup(pulumi.ComponentResource):
    backup_instance_id: pulumi.Output[str]
    vault_name: pulumi.Output[str]

    def __init__(self, name: str, args: DiskBackupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("obs-farm:azure:DiskBackup", name, None, opts)
        # Deleting the backup instance deletes its recovery points: the farm's
        # teardown (`pulumi destroy --exclude-protected`) must not.
        child = pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True)
        rg = args.resource_group_name
        vault = dataprotection.BackupVault(
            f"{name}-vault",
            resource_group_name=rg,
            location=args.location,
            identity={"type": "SystemAssigned"},
            properties={
                "storage_settings": [{"datastore_type": "VaultStore", "type": "LocallyRedundant"}]
            },
            tags=args.tags,
            opts=child,
        )
        policy = dataprotection.BackupPolicy(
            f"{name}-policy",
            resource_group_name=rg,
            vault_name=vault.name,
            properties=policy_properties(args.retention_days),
            opts=child,
        )
        subscription = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        ).subscription_id
        principal = vault.identity.apply(_principal)

        def role(
            role_name: str, role_id: str, scope: pulumi.Input[str]
        ) -> authorization.RoleAssignment:
            return authorization.RoleAssignment(
                f"{name}-{role_name}",
                principal_id=principal,
                principal_type="ServicePrincipal",
                role_definition_id=subscription.apply(
                    lambda s: (
                        f"/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"
                    )
                ),
                scope=scope,
                opts=child,
            )

        grants = [
            role("disk-reader", DISK_BACKUP_READER, args.disk_id),
            role("snapshot-contributor", DISK_SNAPSHOT_CONTRIBUTOR, args.resource_group_id),
        ]
        instance = dataprotection.BackupInstance(
            f"{name}-instance",
            resource_group_name=rg,
            vault_name=vault.name,
            properties={
                "object_type": "BackupInstance",
                "data_source_info": {
                    "object_type": "Datasource",
                    "datasource_type": DISKS,
                    "resource_type": DISKS,
                    "resource_id": args.disk_id,
                    "resource_uri": args.disk_id,
                    "resource_name": args.disk_name,
                    "resource_location": args.location,
                },
                "policy_info": {
                    "policy_id": policy.id,
                    "policy_parameters": {
                        "data_store_parameters_list": [
                            dataprotection.AzureOperationalStoreParametersArgs(
                                object_type="AzureOperationalStoreParameters",
                                data_store_type="OperationalStore",
                                resource_group_id=args.resource_group_id,
                            )
                        ]
                    },
                },
            },
            tags=args.tags,
            # The vault must hold its roles before Azure validates the instance.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=grants)),
        )
        self.backup_instance_id = instance.id
        self.vault_name = vault.name
        self.register_outputs(
            {"backup_instance_id": self.backup_instance_id, "vault_name": self.vault_name}
        )
