"""Changing the workers never touches the server VM or its data disk.

Azure refuses custom-data changes in place (the VM would be replaced), and
the data disk holds the archive. Stacks that differ only in worker settings
(sizes, counts, spot, architectures, mode, Graviton pools) must register the
server VM, its NIC and its data disk with identical inputs, while what the
server must learn from the workers still reaches it (the run command).

One input is excused: the `obs-farm-mode` tag, which every resource carries
(policy farm-tags) and which Azure updates in place without touching the VM.
"""

from __future__ import annotations

import copy

import pytest

from tests.conftest import raw_config
from tools.offline import ProgramRun, run_program

GRAVITON = {"instanceTypes": ["c7g.8xlarge"], "instancesPerArch": 2, "jobsPerInstance": 2}
AWS = {"aws:region": "eu-central-1", "graviton": GRAVITON}
SERVER_SIDE = (
    "azure-native:compute:VirtualMachine",
    "azure-native:compute:Disk",
    "azure-native:network:NetworkInterface",
)

VARIANTS = {
    "worker-size": {"azureWorkers": {"vmSize": "Standard_D32ds_v5", "instancesPerArch": 4}},
    "worker-counts": {"azureWorkers": {"minVms": 0, "maxVms": 10, "jobsPerInstance": 1}},
    "worker-spot": {"azureWorkers": {"spot": True}},
    "architectures-x86-only": {"architectures": ["x86_64"]},
    "architectures-arm-only": {"architectures": ["aarch64", "armv7hl"]},
    "mode-hybrid": {"mode": "hybrid", **AWS},
    "mode-native": {"mode": "native", **AWS},
    "graviton-change": {
        "mode": "hybrid",
        "aws:region": "eu-central-1",
        "graviton": {
            **GRAVITON,
            "instanceTypes": ["m6g.8xlarge", "c6g.8xlarge"],
            "maxInstances": 9,
            "spot": False,
        },
    },
}


def server_side(run: ProgramRun) -> dict[str, dict]:
    out = {}
    for t in SERVER_SIDE:
        inputs = copy.deepcopy(run.one(t).inputs)
        inputs.get("tags", {}).pop("obs-farm-mode", None)
        out[t] = inputs
    return out


@pytest.fixture(scope="module")
def base() -> ProgramRun:
    return run_program("safety", raw_config())


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_worker_changes_leave_server_and_disk_alone(base, variant):
    run = run_program("safety", raw_config(**VARIANTS[variant]))
    assert server_side(run) == server_side(base)
    disk = run.one("azure-native:compute:Disk")
    assert disk.options["protect"] and disk.options["retain_on_delete"]


@pytest.mark.parametrize("variant", ["architectures-x86-only", "mode-hybrid"])
def test_what_follows_the_workers_reaches_the_server_by_run_command(base, variant):
    run = run_program("safety", raw_config(**VARIANTS[variant]))
    assert apply_farm(run).inputs["source"] != apply_farm(base).inputs["source"]


def apply_farm(run: ProgramRun):
    kind = "azure-native:compute:VirtualMachineRunCommandByVirtualMachine"
    return next(r for r in run.of_type(kind) if r.name == "obs-backend-apply")
