"""Custom Azure roles granted to managed identities: one shape for the
scaler's roles and the image build's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pulumi
from pulumi_azure_native import authorization


def role_guid(resource_group_id: str, owner: str, role: str) -> str:
    """A custom role's id: a GUID, stable for the farm's resource group, owner and role."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{resource_group_id}/{owner}/{role}"))


def custom_role(
    resource_name: str,
    *,
    owner: str,
    role: str,
    role_name: pulumi.Input[str],
    description: str,
    actions: Sequence[str],
    resource_group_id: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> authorization.RoleDefinition:
    """A custom role with exactly `actions`, defined and assignable in the
    farm's resource group. Role names are unique in the tenant: callers put
    the resource group's generated name in `role_name`."""
    return authorization.RoleDefinition(
        resource_name,
        role_definition_id=pulumi.Output.from_input(resource_group_id).apply(
            lambda rg: role_guid(rg, owner, role)
        ),
        role_name=role_name,
        description=description,
        role_type="CustomRole",
        permissions=[{"actions": list(actions)}],
        scope=resource_group_id,
        assignable_scopes=[resource_group_id],
        opts=opts,
    )


def grant(
    resource_name: str,
    principal_id: pulumi.Input[str],
    role_definition_id: pulumi.Input[str],
    scope: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> authorization.RoleAssignment:
    """`role_definition_id` to a managed identity's service principal at `scope`."""
    return authorization.RoleAssignment(
        resource_name,
        principal_id=principal_id,
        principal_type="ServicePrincipal",
        role_definition_id=role_definition_id,
        scope=scope,
        opts=opts,
    )
