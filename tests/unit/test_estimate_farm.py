"""The rebuild estimate's farm: capacity follows the OBS queue through
obs-farm-scaler's own `decide`, as the deployed scaler.json configures it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load_settings
from estimate import farm
from estimate.cli import estimate_stack
from estimate.farm import CONFIRM_SECONDS, SimulationError, machine_hours
from estimate.model import simulate
from estimate.report import render_text
from estimate.workload import Job, Repository, Workload, parse_workload
from tools import plan
from tools.offline import read_stack_config

REPO = Path(__file__).resolve().parents[2]


def stack(name: str, **changes: dict[str, Any]) -> dict[str, Any]:
    raw = dict(read_stack_config(name))
    for key, update in changes.items():
        full = f"obs-farm:{key}"
        current = raw.get(full)
        value = json.loads(current) if isinstance(current, str) else dict(current or {})
        value.update(update)
        raw[full] = json.dumps(value)
    return raw


def jobs(arch: str, count: int, minutes: float = 60.0, ready: float = 0.0) -> list[Job]:
    return [Job("r", arch, f"p{ready:g}-{i}", minutes, ready) for i in range(count)]


def workload(*parts: list[Job]) -> Workload:
    all_jobs = tuple(j for part in parts for j in part)
    archs = tuple(sorted({j.arch for j in all_jobs}))
    return Workload("t", "", (Repository("r", archs, len(all_jobs)),), all_jobs, 2)


def capacities(run: farm.FarmRun, pool: str) -> list[int]:
    return [c for _, c in run.capacity[pool]]


SMALL = parse_workload(
    {
        "repositories": [
            {"name": "r", "architectures": ["x86_64", "armv7hl", "aarch64"], "packages": 60},
            {"name": "s", "architectures": ["x86_64"], "packages": 20},
        ],
        "buildMinutes": {
            "distribution": "lognormal",
            "sigma": 1.4,
            "maxMinutes": 90,
            "medianMinutes": 3.4,
        },
    },
    "small",
)


# -- the queue drives capacity ---------------------------------------------------


@pytest.mark.parametrize(("queued", "peak"), [(3, 1), (5, 1), (23, 5), (60, 12), (500, 20)])
def test_capacity_follows_the_queue_and_stops_at_max(queued, peak):
    # apertis-fast: 1..20 VMs, 5 x86_64 worker instances per VM.
    run, _, _ = simulate(load_settings(stack("apertis-fast")), workload(jobs("x86_64", queued)))
    assert run.peak("azure-x86") == peak == min(20, max(1, math.ceil(queued / 5)))


def test_a_growing_queue_grows_the_pool_step_by_step_up_to_max():
    # 5 builds at once, 20 more after 30 min, 100 more after 60 min (all 2 h long).
    w = workload(
        jobs("x86_64", 5, 120), jobs("x86_64", 20, 120, ready=30), jobs("x86_64", 100, 120, 60)
    )
    run, _, _ = simulate(load_settings(stack("apertis-fast")), w)
    log = run.capacity["azure-x86"]
    grow = [(t, c) for (t, c), (_, before) in zip(log[1:], log, strict=False) if c > before]
    assert [c for _, c in grow] == [5, 20]  # ceil(25 / 5), then ceil(125 / 5) capped at 20
    poll = 5
    assert 30 * 60 <= grow[0][0] <= 30 * 60 + poll
    assert 60 * 60 <= grow[1][0] <= 60 * 60 + poll
    # ... and back to its minimum of 1 when the queue is empty.
    assert log[-1][1] == 1


def test_idle_machines_are_drained_and_deleted_after_idle_minutes():
    settings = load_settings(stack("dev"))  # 0..2 VMs, 1 instance per arch
    run, _, _ = simulate(settings, workload(jobs("x86_64", 2, 30)))
    assert capacities(run, "azure-x86") == [0, 2, 1, 0] or capacities(run, "azure-x86") == [0, 2, 0]
    # The last machine leaves idleMinutes (+ the drain's confirmation and a poll) after its build.
    tail = run.end - run.makespan
    assert 10 * 60 + CONFIRM_SECONDS <= tail <= 10 * 60 + CONFIRM_SECONDS + 2 * 5
    longer = load_settings(stack("dev", scaler={"idleMinutes": 30}))
    run30, _, _ = simulate(longer, workload(jobs("x86_64", 2, 30)))
    assert run30.end - run30.makespan == pytest.approx(tail + 20 * 60, abs=5)


def test_hybrid_routes_to_the_native_pool_first():
    # hybrid: Graviton 0..4 instances with 4 native aarch64 workers each;
    # Azure 0..3 VMs with 2 emulated aarch64 workers each.
    settings = load_settings(stack("hybrid"))
    few, _, _ = simulate(settings, workload(jobs("aarch64", 10)))
    assert few.peak("aws-graviton") == 3  # ceil(10 / 4)
    assert few.peak("azure-x86") == 0  # nothing overflows: no emulated machine starts
    many, _, _ = simulate(settings, workload(jobs("aarch64", 30)))
    assert many.peak("aws-graviton") == 4  # its max: 16 jobs
    assert many.peak("azure-x86") == 3  # the 14 others overflow: ceil(14 / 2) capped at 3


def test_the_scaler_config_changes_the_numbers():
    base = simulate(load_settings(stack("dev")), SMALL)[0]
    slow_poll = simulate(load_settings(stack("dev", scaler={"pollSeconds": 10})), SMALL)[0]
    # dev starts at 0 VMs: the first capacity request waits for the first poll.
    assert slow_poll.makespan == pytest.approx(base.makespan + 5, abs=1e-6)
    idle = simulate(load_settings(stack("dev", scaler={"idleMinutes": 60})), SMALL)[0]
    assert idle.makespan == pytest.approx(base.makespan)
    assert sum(machine_hours(idle, "azure-x86", 0)) > sum(machine_hours(base, "azure-x86", 0))
    more = simulate(load_settings(stack("dev", azureWorkers={"maxVms": 4})), SMALL)[0]
    assert more.peak("azure-x86") == 4 and base.peak("azure-x86") == 2
    assert more.makespan < base.makespan * 0.7


@pytest.mark.parametrize("name", ["hybrid", "native", "apertis-fast"])
def test_skipping_polls_changes_nothing(name):
    """Polls where nothing the scaler sees changed are skipped (estimate/farm.py);
    polling at every interval gives exactly the same farm."""
    settings = load_settings(stack(name))
    fast, _, _ = simulate(settings, SMALL)
    every, _, _ = simulate(settings, SMALL, every_poll=True)
    assert every.decisions > 5 * fast.decisions  # it did poll more
    assert fast.makespan == every.makespan and fast.end == every.end
    assert fast.machines == every.machines and fast.capacity == every.capacity
    assert {k: (g.jobs, g.finish) for k, g in fast.groups.items()} == {
        k: (g.jobs, g.finish) for k, g in every.groups.items()
    }


# -- boot time ---------------------------------------------------------------------


def test_boot_time_is_a_per_pool_setting_with_a_default():
    w = workload(jobs("x86_64", 1, 10))
    default = simulate(load_settings(stack("dev")), w)[0]
    # First poll at 5 s, then the default boot, then 10 native minutes.
    assert default.makespan == pytest.approx(5 + farm.DEFAULT_BOOT_MINUTES * 60 + 600)
    raw = {**stack("dev"), "obs-farm:estimate": json.dumps({"bootMinutes": {"azure-x86": 1}})}
    quick = simulate(load_settings(raw), w)[0]
    assert quick.makespan == pytest.approx(5 + 60 + 600)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"azure": 2}, "names an unknown pool 'azure'; pools are azure-x86, aws-graviton"),
        ({"azure-x86": 30}, "must be at least 0 and below 30, the scaler's bootMinutes"),
        ({"azure-x86": "fast"}, "must be a number of minutes; got 'fast'"),
    ],
)
def test_bad_boot_minutes_are_refused_with_the_key(value, message):
    raw = {**stack("dev"), "obs-farm:estimate": json.dumps({"bootMinutes": value})}
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    assert "obs-farm:estimate.bootMinutes" in str(caught.value)
    assert message in str(caught.value)


def test_the_plan_shows_boot_time_and_scaling(tmp_path, capsys):
    assert (
        plan.main(["hybrid", "--workload", "apertis-v2021dev3", "--json", "--out", str(tmp_path)])
        == 0
    )
    est = json.loads(capsys.readouterr().out)["estimate"]
    assert est["scaling"]["pollSeconds"] == 5 and est["scaling"]["idleMinutes"] == 10
    pools = {p["pool"]: p for p in est["pools"]}
    assert pools["aws-graviton"]["bootMinutes"] == farm.DEFAULT_BOOT_MINUTES
    assert pools["aws-graviton"]["bootMinutesFrom"] == "default"
    assert 1 <= pools["aws-graviton"]["peakVms"] <= 4
    text = "\n".join(
        render_text(estimate_stack("hybrid", load_settings(stack("hybrid")), "apertis-v2021dev3"))
    )
    assert "scaling: obs-farm-scaler's own rule, polled every 5 s" in text
    assert f"boot {farm.DEFAULT_BOOT_MINUTES:g} min (default)" in text


def test_without_the_scaler_the_plan_says_the_estimate_is_not_modelled(tmp_path, capsys):
    stack_file = tmp_path / "Pulumi.off.yaml"
    text = (REPO / "Pulumi.dev.yaml").read_text()
    stack_file.write_text(text + "  obs-farm:scaler:\n    enabled: false\n")
    code = plan.main(
        [
            "off",
            "--workload",
            "apertis-v2021dev3",
            "--stack-dir",
            str(tmp_path),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "scaler.enabled is false" in capsys.readouterr().err
    with pytest.raises(SimulationError):
        simulate(load_settings(read_stack_config("off", tmp_path)), SMALL)


# -- machine-hours ----------------------------------------------------------------


def test_machine_hours_count_until_deletion_and_split_the_on_demand_base():
    run = farm.FarmRun(
        makespan=3600.0,
        end=7200.0,
        machines=[
            farm.MachineLife("p", "a", 0.0, None),  # the minimum: counts until the last build
            farm.MachineLife("p", "b", 0.0, 5400.0),  # deleted 30 min after it
            farm.MachineLife("p", "c", 1800.0, 3600.0),
        ],
        groups={},
        capacity={},
        decisions=0,
        polls_skipped=0,
    )
    assert sum(machine_hours(run, "p", 1)) == pytest.approx(1 + 1.5 + 0.5)
    od, spot = machine_hours(run, "p", 1, on_demand_base=1)
    assert od == pytest.approx(1.0) and spot == pytest.approx(2.0)
