"""The scaler's pure parts: its settings, scaler.json against the contract,
the shipped package, and the IAM documents against botocore's models."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import botocore.session
import pytest

from components import scaler
from components.scaler import (
    AwsTarget,
    AzureTarget,
    package_files,
    package_tarball,
    pool_policy,
    render_install_scaler,
    render_scaler_config,
    trust_policy,
)
from components.topology import WorkerGroup, WorkerPool, worker_pools
from config import ConfigError, load_settings
from config.model import ScalerSettings
from tests.conftest import ROOT, raw_config

CONTRACT = ROOT / "scaler" / "CONTRACT.md"


def contract_example() -> dict:
    text = CONTRACT.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block, "CONTRACT.md has no json example"
    return json.loads(block.group(1))


# --- settings ------------------------------------------------------------------------


def test_scaler_defaults():
    s = load_settings(raw_config()).scaler
    assert (s.enabled, s.poll_seconds, s.idle_minutes, s.unhealthy_minutes) == (True, 5, 10, 5)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"pollSeconds": 11}, "obs-farm:scaler.pollSeconds must be at most 10; got 11"),
        ({"pollSeconds": 0}, "obs-farm:scaler.pollSeconds must be at least 1; got 0"),
        ({"idleMinutes": 0}, "obs-farm:scaler.idleMinutes must be at least 1; got 0"),
        ({"idleMinutes": "10m"}, "obs-farm:scaler.idleMinutes must be an integer; got '10m'"),
        ({"enabled": "yes"}, "obs-farm:scaler.enabled must be true or false; got 'yes'"),
        ({"unhealthyMinutes": 241}, "obs-farm:scaler.unhealthyMinutes must be at most 240"),
        ({"pollSecond": 5}, "obs-farm:scaler.pollSecond is not a setting; did you mean"),
    ],
)
def test_bad_scaler_settings_name_the_key(value, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config(scaler=value))
    assert message in str(caught.value)


def test_min_zero_is_valid_for_both_pools():
    s = load_settings(
        raw_config(
            mode="hybrid",
            azureWorkers={"minVms": 0},
            graviton={"instanceTypes": ["c7g.8xlarge"], "minInstances": 0},
            **{"aws:region": "eu-central-1"},
        )
    )
    assert [p.min_vms for p in worker_pools(s)] == [0, 0]


# --- scaler.json ---------------------------------------------------------------------


def contract_pools() -> list[WorkerPool]:
    def group(arch: str, emulated: bool, host: str = "x86_64") -> WorkerGroup:
        return WorkerGroup(arch, 2, 2, emulated, 8192, host)

    return [
        WorkerPool(
            "azure-x86",
            "azure",
            "Standard_D16ds_v5",
            0,
            2,
            False,
            (group("x86_64", False), group("armv7hl", True), group("aarch64", True)),
            "/mnt/obs-worker",
        ),
        WorkerPool(
            "aws-graviton",
            "aws",
            "c7g.8xlarge",
            0,
            3,
            True,
            (group("aarch64", False, "aarch64"),),
            "/var/lib/obs-worker",
        ),
    ]


def test_rendered_config_is_the_contracts_example():
    """The contract's own example, rendered from the same pools and targets."""
    text = render_scaler_config(
        ScalerSettings(),
        contract_pools(),
        AzureTarget("00000000-0000-0000-0000-000000000000", "obs-rg1234", "azure-x86-vmss1234"),
        AwsTarget(
            "eu-west-1",
            "aws-graviton-asg-1234",
            "aws-graviton-drain",
            "arn:aws:iam::123456789012:role/obs-farm-scaler-1234",
        ),
    )
    assert json.loads(text) == contract_example()


def test_config_follows_the_settings_and_topology():
    s = load_settings(
        raw_config(scaler={"pollSeconds": 2, "idleMinutes": 30}, azureWorkers={"maxVms": 7})
    )
    doc = json.loads(
        render_scaler_config(s.scaler, worker_pools(s), AzureTarget("sub", "rg", "vmss"))
    )
    assert (doc["pollSeconds"], doc["idleMinutes"]) == (2, 30)
    (pool,) = doc["pools"]
    assert (pool["min"], pool["max"]) == (1, 7)
    assert [g["hostarch"] for g in pool["groups"]] == ["x86_64", "armv7l", "aarch64"]
    assert pool["azure"] == {"subscriptionId": "sub", "resourceGroup": "rg", "scaleSet": "vmss"}


def test_a_pool_without_its_cloud_target_is_refused():
    s = load_settings(raw_config())
    with pytest.raises(ValueError, match="azure-x86 is on Azure but no scale set"):
        render_scaler_config(s.scaler, worker_pools(s))


# --- the package ---------------------------------------------------------------------


def make_package(root: Path, body: str = "x = 1\n") -> Path:
    (root / "obs_farm_scaler" / "__pycache__").mkdir(parents=True)
    (root / "obs_farm_scaler" / "__init__.py").write_text(body)
    (root / "obs_farm_scaler" / "__main__.py").write_text("print('hi')\n")
    (root / "obs_farm_scaler" / "__pycache__" / "a.pyc").write_bytes(b"x")
    (root / "requirements.txt").write_text("boto3\n")
    return root


def members(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_tarball_is_reproducible_and_follows_the_sources(tmp_path):
    a = package_tarball(make_package(tmp_path / "a"))
    b = package_tarball(make_package(tmp_path / "b"))
    assert a == b  # other directory, other mtimes: same bytes
    assert sorted(members(a)) == [
        "obs_farm_scaler/__init__.py",
        "obs_farm_scaler/__main__.py",
        "requirements.txt",
    ]
    c = package_tarball(make_package(tmp_path / "c", body="x = 2\n"))
    assert c != a and members(c)["obs_farm_scaler/__init__.py"] == b"x = 2\n"


def test_the_real_package_is_shipped_whole():
    files = {p.relative_to(scaler.SCALER_DIR).as_posix() for p in package_files()}
    on_disk = {
        p.relative_to(scaler.SCALER_DIR).as_posix()
        for p in (scaler.SCALER_DIR / "obs_farm_scaler").rglob("*.py")
    }
    assert "requirements.txt" in files and on_disk <= files
    shipped = members(package_tarball())
    assert shipped["requirements.txt"] == (scaler.SCALER_DIR / "requirements.txt").read_bytes()


def test_script_changes_exactly_when_package_or_config_does(tmp_path):
    pkg = make_package(tmp_path / "p")
    one = render_install_scaler(True, "{}", pkg)
    assert render_install_scaler(True, "{}", pkg) == one
    assert render_install_scaler(True, '{"pollSeconds": 3}', pkg) != one
    (pkg / "obs_farm_scaler" / "__init__.py").write_text("x = 3\n")
    assert render_install_scaler(True, "{}", pkg) != one
    # Turned off, the package is not in the script: changing it re-runs nothing.
    off = render_install_scaler(False, root=pkg)
    (pkg / "obs_farm_scaler" / "__init__.py").write_text("x = 4\n")
    assert render_install_scaler(False, root=pkg) == off
    assert "enabled=0" in off


def test_script_size_stays_under_azures_limit(tmp_path):
    real = render_install_scaler(True, render_scaler_config(ScalerSettings(), []))
    assert len(real.encode()) < scaler.RUN_COMMAND_SCRIPT_LIMIT
    big = make_package(tmp_path / "big")
    # Incompressible bytes: gzip cannot hide them.
    (big / "obs_farm_scaler" / "blob.py").write_text(
        "# " + __import__("base64").b64encode(__import__("os").urandom(300_000)).decode()
    )
    with pytest.raises(ValueError, match="over Azure's 262144"):
        render_install_scaler(True, "{}", big)


# --- IAM -----------------------------------------------------------------------------


def botocore_operations(service: str) -> set[str]:
    return set(botocore.session.get_session().get_service_model(service).operation_names)


def test_every_iam_action_is_a_real_api_operation():
    """IAM action names are the API operation names (botocore's service models)."""
    actions = [*scaler.AWS_GROUP_ACTIONS, *scaler.AWS_DESCRIBE_ACTIONS]
    assert actions, "no actions"
    for action in actions:
        service, _, operation = action.partition(":")
        assert operation in botocore_operations(service), action


def test_pool_policy_scopes_writes_to_the_group():
    arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:uuid:autoScalingGroupName/g"
    doc = pool_policy(arn)
    writes, reads = doc["Statement"]
    assert writes["Resource"] == arn
    assert set(writes["Action"]) == {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:CompleteLifecycleAction",
    }
    # Only calls that change nothing are allowed on every resource.
    assert reads["Resource"] == "*"
    assert all(a.split(":")[1].startswith("Describe") for a in reads["Action"])
    assert all(s["Effect"] == "Allow" and "*" not in str(s["Action"]) for s in doc["Statement"])


def test_trust_policy_pins_audience_and_subject():
    doc = trust_policy("arn:aws:iam::1:oidc-provider/sts.windows.net/t/", "t", "principal-1")
    (stmt,) = doc["Statement"]
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Principal"] == {"Federated": "arn:aws:iam::1:oidc-provider/sts.windows.net/t/"}
    assert stmt["Condition"] == {
        "StringEquals": {
            "sts.windows.net/t/:aud": scaler.WEB_IDENTITY_AUDIENCE,
            "sts.windows.net/t/:sub": "principal-1",
        }
    }
    assert scaler.oidc_issuer("t") == "https://sts.windows.net/t/"


def test_no_long_lived_aws_keys_anywhere_in_the_program():
    sources = [ROOT / "__main__.py", *(ROOT / "components").glob("*.py")]
    for path in sources:
        text = path.read_text()
        assert "AccessKey(" not in text and "access_key" not in text, path
