"""azureWorkers.accelerate: validated against what the Azure pool emulates,
and carried consistently into every place that names a group's execution
(topology output, worker labels, the plan, ./check; scaler.json in
tests/scaler/test_program_contract.py)."""

from __future__ import annotations

import pytest

from components import cloudinit
from components.topology import azure_worker_pool, worker_pools
from config import ConfigError, load_settings
from tests.conftest import raw_config
from tools import check
from tools.plan import topology_table


def settings(**overrides: object):
    return load_settings(raw_config(**overrides))


def error_of(**overrides: object) -> str:
    with pytest.raises(ConfigError) as err:
        settings(**overrides)
    return str(err.value)


def test_default_accelerates_nothing():
    pool = azure_worker_pool(settings())
    assert {g.execution for g in pool.groups} == {"native", "emulated"}


def test_accelerated_groups_are_marked_and_labelled():
    pool = azure_worker_pool(settings(azureWorkers={"accelerate": ["aarch64"]}))
    by_arch = {g.arch: g for g in pool.groups}
    assert by_arch["aarch64"].execution == "emulated+accel"
    assert by_arch["aarch64"].hostlabels == (
        "obs-farm-emulated",
        "obs-farm-accel",
        "obs-farm-aarch64",
    )
    assert by_arch["armv7hl"].execution == "emulated"
    assert by_arch["armv7hl"].hostlabels == ("obs-farm-emulated", "obs-farm-armv7hl")
    assert by_arch["x86_64"].execution == "native"
    out = {a["arch"]: a["execution"] for a in pool.to_output()["architectures"]}
    assert out == {"x86_64": "native", "armv7hl": "emulated", "aarch64": "emulated+accel"}
    # What the worker machine starts its group with.
    env = cloudinit.group_env(by_arch["aarch64"])
    assert 'EXECUTION="emulated+accel"\n' in env
    assert 'HOSTLABELS="obs-farm-emulated obs-farm-accel obs-farm-aarch64"\n' in env


def test_check_expects_the_labels_the_workers_register():
    pool = azure_worker_pool(settings(azureWorkers={"accelerate": ["armv7hl", "aarch64"]}))
    specs = check.pool_specs([pool.to_output()])
    assert {g.arch: g.hostlabels for g in specs[0].groups} == {
        g.arch: set(g.hostlabels) for g in pool.groups
    }


def test_plan_shows_the_execution_kind():
    s = settings(azureWorkers={"accelerate": ["aarch64"]})
    rows = [r for r in topology_table(worker_pools(s)) if " aarch64 " in r]
    assert len(rows) == 1 and "emulated+accel" in rows[0], rows


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            {"azureWorkers": {"accelerate": ["x86_64"]}},
            "obs-farm:azureWorkers.accelerate lists x86_64, which the Azure pool does not "
            "build under emulation (obs-farm:mode intel-only, obs-farm:architectures "
            "['x86_64', 'armv7hl', 'aarch64']); allowed: armv7hl, aarch64",
        ),
        (
            {"architectures": ["x86_64", "aarch64"], "azureWorkers": {"accelerate": ["armv7hl"]}},
            "obs-farm:azureWorkers.accelerate lists armv7hl, which the Azure pool does not "
            "build under emulation",
        ),
        (
            {"azureWorkers": {"accelerate": ["aarch64", "aarch64"]}},
            "obs-farm:azureWorkers.accelerate lists an architecture twice",
        ),
        ({"azureWorkers": {"accelerate": ["arm64"]}}, "azureWorkers.accelerate"),
        ({"azureWorkers": {"accelerate": "aarch64"}}, "azureWorkers.accelerate"),
    ],
)
def test_bad_accelerate_names_the_setting_and_what_is_allowed(overrides, words):
    assert words in error_of(**overrides)
