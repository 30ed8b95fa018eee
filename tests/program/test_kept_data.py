"""The data disk and its backups outlive any teardown of the farm (issue 12,
defect 3), and existing stacks keep their disk.

What the program registers is checked against Azure's rule that deleting a
resource group deletes everything in it: nothing the farm may delete holds
the disk, the vault or the snapshots. The migration is checked against the
URNs the program registered before the kept group existed
(tests/data/urns-before-kept-data.json, recorded from that program under the
same mocks): every kept resource has the URN it had, or an alias to it, and
its resource group input names the adopted group, so `pulumi up` on an
existing stack neither creates nor replaces any of them.
"""

from __future__ import annotations

import json

import pytest

from components.server import data_disk_caching
from tests.conftest import ROOT, raw_config
from tools.offline import ProgramRun, read_stack_config, run_program

BEFORE = json.loads((ROOT / "tests/data/urns-before-kept-data.json").read_text())
KEPT_TYPES = {
    "azure-native:compute:Disk",
    "azure-native:dataprotection:BackupVault",
    "azure-native:dataprotection:BackupPolicy",
    "azure-native:dataprotection:BackupInstance",
    "azure-native:authorization:RoleAssignment",
}
# The scaler's and the worker image builds' role assignments
# (components/scaler.py, components/images.py) are the farm's, not the kept
# group's: they go with the farm.
FARM_OWNED = ("obs-farm:scaler:FarmScaler$", "obs-farm:azure:AzureWorkerImage$")


def kept(run):
    return [
        r
        for r in run.resources
        if r.type in KEPT_TYPES and not any(o in r.options["urn"] for o in FARM_OWNED)
    ]


def farm_groups(run, kept_rg):
    """The farm's own resource group (not the kept one, nor Image Builder's staging group)."""
    return [
        r
        for r in run.of_type("azure-native:resources:ResourceGroup")
        if r is not kept_rg and "AzureWorkerImage" not in r.options["urn"]
    ]


DISK_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/old-data"
    "/providers/Microsoft.Compute/disks/obs-server-data1234"
)


@pytest.fixture(scope="module", params=sorted(BEFORE))
def stack_run(request) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param, read_stack_config(request.param))


def kept_group(run: ProgramRun):
    [rg] = [
        r
        for r in run.of_type("azure-native:resources:ResourceGroup")
        if "KeptData" in r.options["urn"]
    ]
    return rg


def test_kept_group_is_protected_and_retained(stack_run):
    _, run = stack_run
    rg = kept_group(run)
    assert rg.options["protect"] and rg.options["retain_on_delete"]
    farm = farm_groups(run, rg)
    assert len(farm) == 1 and not farm[0].options["protect"]


def test_disk_vault_and_snapshots_live_in_the_kept_group(stack_run):
    _, run = stack_run
    rg = kept_group(run).name
    disk = run.one("azure-native:compute:Disk")
    assert disk.inputs["resourceGroupName"] == rg
    vault = run.one("azure-native:dataprotection:BackupVault")
    assert vault.inputs["resourceGroupName"] == rg
    instance = run.one("azure-native:dataprotection:BackupInstance").inputs["properties"]
    [store] = instance["policyInfo"]["policyParameters"]["dataStoreParametersList"]
    assert store["resourceGroupId"] == f"{rg}-id"
    # Nothing else lives there: the farm's teardown touches only its own group.
    others = [
        r.name
        for r in run.resources
        if r.inputs.get("resourceGroupName") == rg
        and r.type not in KEPT_TYPES | {"azure-native:dataprotection:BackupPolicy"}
    ]
    assert others == []


def test_everything_kept_is_protected_and_retained(stack_run):
    _, run = stack_run
    for r in kept(run):
        assert r.options["protect"] and r.options["retain_on_delete"], r.options["urn"]


def test_existing_stacks_keep_their_disk_and_backups(stack_run):
    stack, run = stack_run
    before = set(BEFORE[stack])
    by_urn = {r.options["urn"]: r for r in run.resources}
    for r in kept(run):
        # Same URN as before: Pulumi sees the same resource.
        assert r.options["urn"] in before, r.options["urn"]
    rg = kept_group(run)
    old_rg = "obs-farm:azure:FarmNetwork$azure-native:resources:ResourceGroup::obs-rg"
    assert old_rg in before and old_rg not in by_urn
    assert rg.options["aliases"] == [f"urn:pulumi:{stack}::obs-farm::{old_rg}"]
    # The farm's own group is a new resource (no alias), so the old group
    # can only ever be adopted as the kept one.
    [farm] = farm_groups(run, rg)
    assert farm.options["urn"] not in before and farm.options["aliases"] == []


def test_existing_disk_is_attached_not_created():
    run = run_program("reuse", raw_config(server={"existingDataDiskId": DISK_ID}))
    assert not run.of_type("azure-native:compute:Disk")
    [data] = run.one("azure-native:compute:VirtualMachine").inputs["storageProfile"]["dataDisks"]
    assert data["managedDisk"]["id"] == DISK_ID
    assert (data["createOption"], data["deleteOption"]) == ("Attach", "Detach")
    # Its size is not known here; None is valid at every size.
    assert data["caching"] == "None"
    instance = run.one("azure-native:dataprotection:BackupInstance").inputs["properties"]
    assert instance["dataSourceInfo"]["resourceID"] == DISK_ID
    assert instance["dataSourceInfo"]["resourceName"] == "obs-server-data1234"


@pytest.mark.parametrize(
    ("size", "caching"), [(32, "ReadOnly"), (4095, "ReadOnly"), (4096, "None"), (32767, "None")]
)
def test_data_disk_caching_at_the_4_tib_boundary(size, caching):
    """Defect 2: Azure offers no host caching on disks of 4096 GiB and more."""
    assert data_disk_caching(size) == caching
    run = run_program("big", raw_config(server={"dataDiskSizeGb": size}))
    [data] = run.one("azure-native:compute:VirtualMachine").inputs["storageProfile"]["dataDisks"]
    assert data["caching"] == caching
    assert run.one("azure-native:compute:Disk").inputs["diskSizeGB"] == size


INPUTS_BEFORE = json.loads((ROOT / "tests/data/kept-inputs-before.json").read_text())


@pytest.mark.parametrize("stack", sorted(INPUTS_BEFORE))
def test_kept_resources_register_the_inputs_they_had(stack):
    """Under the alias the kept group is the old `obs-rg` (Pulumi keeps its
    name), so every kept resource's inputs are what the previous program
    registered (tests/data/kept-inputs-before.json, recorded from it): no
    replacement. Only the group's role tag changes, in place."""
    run = run_program(stack, read_stack_config(stack))
    rg = kept_group(run)
    adopted = {a.split("::", 2)[2]: rg for a in rg.options["aliases"]}
    by_urn = {r.options["urn"]: r for r in run.resources} | adopted
    for urn, before in INPUTS_BEFORE[stack].items():
        now = json.loads(json.dumps(by_urn[urn].inputs).replace('"obs-data-rg', '"obs-rg'))
        if by_urn[urn] is rg:
            assert now["tags"].pop("obs-farm-role") == "data"
            before = {
                **before,
                "tags": {k: v for k, v in before["tags"].items() if k != "obs-farm-role"},
            }
        assert now == before, urn
