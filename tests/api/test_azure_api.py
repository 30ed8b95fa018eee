"""Every Azure resource of every example stack, read with Azure's own models.

See tests/api/azure_api.py for how the body is built and read. The models
are those of the installed azure-mgmt-* packages; most carry only their
newest API version, not the one pulumi-azure-native sends, and
`NEAREST_VERSIONS` lists those cases (the test keeps the list true).
"""

from __future__ import annotations

import copy

import pytest

from tests.api.azure_api import OPERATIONS, check, operation, request_body
from tests.api.conftest import EXAMPLES, STACKS, stack_run

# type -> (API version pulumi-azure-native sends, version of the installed
# model it is checked with). Only RoleAssignment is checked at its own
# version: azure-mgmt-authorization 4 still ships one package per version.
NEAREST_VERSIONS = {
    "azure-native:resources:ResourceGroup": ("2024-03-01", "2025-04-01"),
    "azure-native:network:VirtualNetwork": ("2024-05-01", "2026-03-01"),
    "azure-native:network:NetworkSecurityGroup": ("2024-05-01", "2026-03-01"),
    "azure-native:network:PublicIPAddress": ("2024-05-01", "2026-03-01"),
    "azure-native:network:NatGateway": ("2024-05-01", "2026-03-01"),
    "azure-native:network:Subnet": ("2024-05-01", "2026-03-01"),
    "azure-native:network:NetworkInterface": ("2024-05-01", "2026-03-01"),
    "azure-native:network:VirtualNetworkGateway": ("2024-05-01", "2026-03-01"),
    "azure-native:network:LocalNetworkGateway": ("2024-05-01", "2026-03-01"),
    "azure-native:network:VirtualNetworkGatewayConnection": ("2024-05-01", "2026-03-01"),
    "azure-native:compute:Disk": ("2024-03-02", "2026-03-02"),
    "azure-native:compute:VirtualMachine": ("2024-11-01", "2026-04-01"),
    "azure-native:compute:VirtualMachineScaleSet": ("2024-11-01", "2026-04-01"),
    "azure-native:compute:VirtualMachineRunCommandByVirtualMachine": ("2024-11-01", "2026-04-01"),
    "azure-native:dataprotection:BackupVault": ("2025-01-01", "2026-06-01"),
    "azure-native:dataprotection:BackupPolicy": ("2025-01-01", "2026-06-01"),
    "azure-native:dataprotection:BackupInstance": ("2025-01-01", "2026-06-01"),
    "azure-native:monitor:AutoscaleSetting": ("2021-05-01-preview", "2022-10-01"),
    # azure-mgmt-authorization 4 has no 2022-05-01-preview role definitions.
    "azure-native:authorization:RoleDefinition": ("2022-05-01-preview", "2022-04-01"),
    # Not registered on this branch; a managed identity for the scaler is
    # coming (azure-mgmt-msi ships 2022-01-31-preview and 2024-11-30).
    "azure-native:managedidentity:UserAssignedIdentity": ("2023-01-31", "2024-11-30"),
    # Worker images (components/images.py): the gallery and its image
    # definition in azure-mgmt-compute, the template in azure-mgmt-imagebuilder.
    "azure-native:compute:Gallery": ("2024-03-03", "2026-03-03"),
    "azure-native:compute:GalleryImage": ("2024-03-03", "2026-03-03"),
    "azure-native:virtualmachineimages:VirtualMachineImageTemplate": ("2024-02-01", "2025-10-01"),
    # OLDER than what is sent: the only Python model of deployment scripts
    # is azure-mgmt-resource-deploymentscripts 1.0.0b1 (2020-10-01); what it
    # defines is checked, properties added since would read as unknown.
    "azure-native:resources:AzureCliScript": ("2023-08-01", "2020-10-01"),
}


def azure_resources(stack: str):
    return [r for r in stack_run(stack).resources if r.type.startswith("azure-native:")]


def all_types() -> list[str]:
    return sorted({r.type for s in STACKS for r in azure_resources(s)})


@pytest.mark.parametrize("stack", STACKS)
def test_every_azure_resource_reads_cleanly_with_azures_model(stack):
    found = []
    for r in azure_resources(stack):
        op = operation(r.type)
        for finding in check(op.model, request_body(op, r.inputs)):
            found.append(f"{r.type} {r.name}: {finding}")
    assert found == []


def test_the_stacks_cover_all_three_modes():
    from tests.program.test_program import mode_of

    assert {mode_of(s) for s in EXAMPLES} == {"intel-only", "hybrid", "native"}


@pytest.mark.parametrize("type_", all_types())
def test_api_versions_are_known(type_):
    op = operation(type_)
    if op.pulumi_api_version == op.sdk_api_version:
        assert type_ not in NEAREST_VERSIONS
    else:
        assert NEAREST_VERSIONS.get(type_) == (op.pulumi_api_version, op.sdk_api_version)


def _first(type_: str):
    for s in STACKS:
        for r in azure_resources(s):
            if r.type == type_:
                return r
    raise AssertionError(type_)


@pytest.mark.parametrize("type_", all_types())
def test_an_unknown_property_is_caught(type_):
    """Seeded: a property Azure does not define (a misspelt or snake_case key)."""
    r = _first(type_)
    op = operation(type_)
    body = request_body(op, r.inputs)
    body.setdefault("properties", {})["notAnArmProperty"] = "x"
    assert any("properties.notAnArmProperty: unknown to" in f for f in check(op.model, body))


def _top(op):
    from tests.api.azure_api import top_level_fields

    return top_level_fields(op.model)


def _tagged_types() -> list[str]:
    # Sub-resources (subnets, backup policies, ...) have no tags of their own.
    return [t for t in all_types() if "tags" in {k.split(".")[0] for k in _top(operation(t))}]


def test_most_types_have_tags_to_seed():
    assert len(_tagged_types()) >= len(all_types()) - 4


@pytest.mark.parametrize("type_", _tagged_types())
def test_a_wrongly_typed_value_is_caught(type_):
    """Seeded: tags must be an object of strings; a list is refused."""
    r = _first(type_)
    op = operation(type_)
    body = request_body(op, r.inputs)
    body["tags"] = ["obs-farm"]
    assert any(f.startswith("tags:") for f in check(op.model, body)), check(op.model, body)


SEEDS = {
    # A missing required property.
    "azure-native:network:VirtualNetworkGatewayConnection": (
        lambda b: b["properties"].pop("connectionType"),
        "requires 'connectionType'",
    ),
    "azure-native:dataprotection:BackupInstance": (
        lambda b: b["properties"].pop("policyInfo"),
        "requires 'policyInfo'",
    ),
    "azure-native:authorization:RoleDefinition": (
        lambda b: b["properties"]["permissions"][0].__setitem__("actionz", ["*"]),
        "unknown to Permission",
    ),
    "azure-native:authorization:RoleAssignment": (
        lambda b: b["properties"].pop("principalId"),
        "requires 'properties.principalId'",
    ),
    "azure-native:monitor:AutoscaleSetting": (
        lambda b: b["properties"].pop("profiles"),
        "requires 'properties.profiles'",
    ),
    "azure-native:compute:Disk": (lambda b: b.pop("location"), "requires 'location'"),
    # A discriminator no model has.
    "azure-native:dataprotection:BackupPolicy": (
        lambda b: b["properties"]["policyRules"][0].__setitem__("objectType", "AzureBackupRules"),
        "objectType",
    ),
    # A snake_case key left by a plain dict inside a union-typed input.
    "azure-native:compute:VirtualMachine": (
        lambda b: b["properties"]["storageProfile"]["dataDisks"][0].__setitem__(
            "create_option", "Attach"
        ),
        "create_option: unknown to DataDisk",
    ),
    "azure-native:network:VirtualNetworkGateway": (
        lambda b: b["properties"]["bgpSettings"]["bgpPeeringAddresses"][0].__setitem__(
            "custom_bgp_ip_addresses", []
        ),
        "custom_bgp_ip_addresses: unknown to IPConfigurationBgpPeeringAddress",
    ),
}


@pytest.mark.parametrize("type_", sorted(SEEDS))
def test_seeded_bad_inputs_are_caught(type_):
    r = _first(type_)
    op = operation(type_)
    body = copy.deepcopy(request_body(op, r.inputs))
    mutate, expected = SEEDS[type_]
    mutate(body)
    found = check(op.model, body)
    assert any(expected in f for f in found), found


def test_mapped_but_unregistered_types_have_their_versions_listed():
    for type_ in sorted(set(OPERATIONS) - set(all_types())):
        op = operation(type_)
        assert NEAREST_VERSIONS[type_] == (op.pulumi_api_version, op.sdk_api_version)


def test_every_mapped_type_is_used_or_expected():
    # Types mapped but not registered by any stack (e.g. a managed identity
    # another change adds) stay harmless; unmapped registered types fail
    # test_every_azure_resource_reads_cleanly_with_azures_model.
    assert set(all_types()) <= set(OPERATIONS)
