"""Deploy-time defects of issue 12 that show in what the program registers:
worker SSH through the server (4), accelerated networking (5) and user-data
size limits (7)."""

from __future__ import annotations

import base64
import ipaddress

import pytest

import config.limits
from config import ConfigError, load_settings
from config.catalog import AZURE_VM_SIZES
from config.limits import AWS_USER_DATA_LIMIT, AZURE_CUSTOM_DATA_LIMIT, user_data_documents
from tests.conftest import ROOT, raw_config
from tools.offline import ProgramRun, read_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
GRAVITON = {"instanceTypes": ["c7g.8xlarge"], "instancesPerArch": 2, "jobsPerInstance": 2}
# Every mode, with the largest documents each can render (all
# architectures, armv7hl emulated on Graviton).
MODES = {
    "intel-only": {},
    "hybrid": {"mode": "hybrid", "aws:region": "eu-central-1", "graviton": GRAVITON},
    "hybrid-armv7-emulated": {
        "mode": "hybrid",
        "aws:region": "eu-central-1",
        "graviton": {**GRAVITON, "armv7hlEmulated": True},
    },
    "native": {"mode": "native", "aws:region": "eu-central-1", "graviton": GRAVITON},
    "native-graviton4": {
        "mode": "native",
        "aws:region": "eu-central-1",
        "graviton": {**GRAVITON, "instanceTypes": ["c8g.8xlarge"], "armv7hlEmulated": True},
    },
}


def runs() -> list[tuple[str, dict[str, str]]]:
    out = [(s, read_stack_config(s)) for s in STACKS]
    out += [(f"mode-{m}", raw_config(**o)) for m, o in MODES.items()]
    return out


@pytest.fixture(scope="module", params=runs(), ids=lambda p: p[0])
def any_run(request) -> tuple[str, ProgramRun, dict[str, str]]:
    name, raw = request.param
    return name, run_program(name.replace("mode-", ""), raw), raw


def sent_user_data(run: ProgramRun) -> list[tuple[str, str, int]]:
    """(resource, cloud, decoded bytes) of every user-data document registered."""
    found = []
    for r in run.of_type("azure-native:compute:VirtualMachine"):
        found.append((r.name, "azure", len(base64.b64decode(r.inputs["osProfile"]["customData"]))))
    for r in run.of_type("azure-native:compute:VirtualMachineScaleSet"):
        data = r.inputs["virtualMachineProfile"]["osProfile"]["customData"]
        found.append((r.name, "azure", len(base64.b64decode(data))))
    for r in run.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        found.append((r.name, "aws", len(base64.b64decode(r.inputs["userData"]))))
    return found


def test_user_data_fits_the_clouds_limits(any_run):
    name, run, raw = any_run
    sent = sent_user_data(run)
    assert sent, name
    for resource, cloud, size in sent:
        limit = AWS_USER_DATA_LIMIT if cloud == "aws" else AZURE_CUSTOM_DATA_LIMIT
        assert size <= limit, f"{name}: {resource} sends {size} bytes of user data (limit {limit})"
    # The validation measures the very documents the program sends.
    measured = sorted(
        (cloud, size) for _, _, cloud, size in user_data_documents(load_settings(raw))
    )
    assert measured == sorted((cloud, size) for _, cloud, size in sent)


@pytest.mark.parametrize(
    ("limit", "cloud", "message"),
    [
        (
            "AWS_USER_DATA_LIMIT",
            "aws",
            "obs-farm:graviton: the cloud-init user data of worker pool aws-graviton is",
        ),
        (
            "AZURE_CUSTOM_DATA_LIMIT",
            "azure",
            "obs-farm:azureWorkers: the cloud-init user data of worker pool azure-x86 is",
        ),
    ],
)
def test_user_data_over_the_limit_names_the_pool(monkeypatch, limit, cloud, message):
    raw = raw_config(**MODES["hybrid"])
    monkeypatch.setattr(config.limits, limit, 1000)
    with pytest.raises(ConfigError) as err:
        load_settings(raw)
    assert any(
        p.startswith(message) and "over the 1000-byte limit" in p for p in err.value.problems
    )
    # Nothing is created: the program stops at the settings.
    from tools.offline import RecordingMocks

    mocks = RecordingMocks()
    with pytest.raises(Exception, match="invalid stack config"):
        run_program("too-big", raw, mocks=mocks)
    assert [r.type for r in mocks.resources if not r.type.startswith("pulumi:")] == []


def test_azure_workers_take_ssh_from_the_server_subnet_only(any_run):
    """Defect 4: workers have no public IP; the server is the jump host."""
    name, run, raw = any_run
    settings = load_settings(raw)
    nsg = next(
        r for r in run.of_type("azure-native:network:NetworkSecurityGroup") if "worker" in r.name
    )
    ssh = [
        rule
        for rule in nsg.inputs["securityRules"]
        if rule["access"] == "Allow"
        and "22" in (rule.get("destinationPortRanges") or [rule.get("destinationPortRange")])
    ]
    assert len(ssh) == 1, name
    [rule] = ssh
    assert rule["sourceAddressPrefixes"] == [settings.network.server_subnet]
    assert rule["priority"] < 4096  # before the deny-all
    assert ipaddress.ip_network(rule["destinationAddressPrefix"]) == ipaddress.ip_network(
        settings.network.azure_worker_subnet
    )


def test_server_nic_has_accelerated_networking(any_run):
    """Defect 5: required by the Dsv5 sizes; the size table says which support it."""
    name, run, raw = any_run
    size = AZURE_VM_SIZES[load_settings(raw).server.vm_size]
    nic = run.one("azure-native:network:NetworkInterface").inputs
    assert nic["enableAcceleratedNetworking"] is size.accelerated_networking is True, name


def test_every_size_in_the_table_states_accelerated_networking():
    for size in AZURE_VM_SIZES.values():
        assert isinstance(size.accelerated_networking, bool)
