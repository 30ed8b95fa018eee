from __future__ import annotations

import json
import subprocess
import sys

import pytest
from obs_farm_scaler.config import ConfigError, load, parse

from tests.scaler import SCALER
from tests.scaler.helpers import DEV_POOL, GRAVITON_POOL, pool, settings

CONTRACT = SCALER / "CONTRACT.md"


def contract_example() -> dict:
    text = CONTRACT.read_text()
    return json.loads(text.split("```json", 1)[1].split("```", 1)[0])


def test_the_contracts_example_loads():
    s = parse(contract_example())
    assert [p.name for p in s.pools] == ["azure-x86", "aws-graviton"]
    azure, aws = s.pools
    assert azure.azure and azure.azure.scale_set == "azure-x86-vmss1234"
    assert azure.instances_for("armv7l") == 2 and not azure.native_for("armv7l")
    assert aws.aws and aws.aws.lifecycle_hook == "aws-graviton-drain"
    assert aws.native_for("aarch64")
    assert (s.poll_seconds, s.idle_minutes, s.unhealthy_minutes) == (5, 10, 5)
    assert azure.worker_ids("vm1") == ["vm1:x86_64-1", "vm1:x86_64-2", "vm1:armv7hl-1",
                                       "vm1:armv7hl-2", "vm1:aarch64-1", "vm1:aarch64-2"]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pollSeconds": 30}, r"scaler.pollSeconds must be between 0.5 and 10; got 30"),
        ({"pollSeconds": "5"}, r"scaler.pollSeconds must be int or float; got '5'"),
        ({"idleMinutes": True}, r"scaler.idleMinutes must be int or float; got True"),
        ({"repserver": ""}, r"scaler.repserver must not be empty"),
        (
            {"pools": [pool(DEV_POOL, cloud="gcp")]},
            r"pools\[azure-x86\].cloud must be one of azure, aws; got 'gcp'",
        ),
        (
            {"pools": [pool(DEV_POOL, min=3)]},
            r"pools\[azure-x86\]: min and max must satisfy 0 <= min <= max; got 3, 2",
        ),
        (
            {"pools": [pool(DEV_POOL, azure={"subscriptionId": "s", "resourceGroup": "r"})]},
            r"pools\[azure-x86\].azure.scaleSet is required",
        ),
        (
            {
                "pools": [
                    pool(
                        DEV_POOL,
                        groups=[
                            {
                                "arch": "x86_64",
                                "hostarch": "x86_64",
                                "instances": 0,
                                "execution": "native",
                            }
                        ],
                    )
                ]
            },
            r"groups\[0\].instances must be at least 1; got 0",
        ),
        (
            {
                "pools": [
                    pool(
                        DEV_POOL,
                        groups=[
                            {
                                "arch": "x86_64",
                                "hostarch": "x86_64",
                                "instances": 1,
                                "execution": "kvm",
                            }
                        ],
                    )
                ]
            },
            r"execution must be one of native, emulated, emulated\+accel; got 'kvm'",
        ),
        ({"pools": [DEV_POOL, DEV_POOL]}, r"pool names must be unique"),
        (
            {"pools": [pool(GRAVITON_POOL, aws={**GRAVITON_POOL["aws"], "roleArn": 5})]},
            r"pools\[aws-graviton\].aws.roleArn must be str; got 5",
        ),
    ],
)
def test_bad_settings_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        settings(**change)


def test_load_reports_a_missing_file_and_bad_json(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"cannot read the scaler configuration .*nope.json"):
        load(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    monkeypatch.setenv("OBS_FARM_SCALER_CONFIG", str(bad))
    with pytest.raises(ConfigError, match=r"bad.json is not valid JSON"):
        load()


def test_the_command_reports_bad_config_without_a_traceback(tmp_path):
    bad = tmp_path / "scaler.json"
    bad.write_text(json.dumps({**contract_example(), "pollSeconds": 60}))
    run = subprocess.run(
        [sys.executable, "-m", "obs_farm_scaler", "--config", str(bad), "--once"],
        cwd=SCALER, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "obs-farm-scaler: scaler.pollSeconds must be between 0.5 and 10; got 60"
    )
