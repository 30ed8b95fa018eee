"""The rebuild estimate: the model's behaviour, its calibration, prices,
the `_jobhistory` importer on a recorded real answer, and the plan's
--workload/--json/--compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError, load_settings
from estimate.calibrate import emulated_factor, rebuild_hours
from estimate.model import Estimate, estimate
from estimate.prices import PRICES_FILE, check_override, load_prices, premium_ssd_tier
from estimate.workload import WorkloadError, load_workload, parse_workload
from tools import jobhistory, plan
from tools.offline import read_stack_config

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "jobhistory" / "lab-Debian_12-x86_64.xml"
TODAY = "2026-11-28"
WORKLOAD = load_workload("apertis-v2021dev3")


def stack(name: str, **changes: dict[str, Any]) -> dict[str, Any]:
    """Raw config of an example stack with some objects' keys changed."""
    raw = dict(read_stack_config(name))
    for key, update in changes.items():
        full = key if ":" in key else f"obs-farm:{key}"
        current = raw.get(full)
        value = json.loads(current) if isinstance(current, str) else dict(current or {})
        value.update(update)
        raw[full] = json.dumps(value)
    return raw


def run(raw: dict[str, Any], workload=WORKLOAD, today: str = TODAY) -> Estimate:
    return estimate("test", load_settings(raw), workload, load_prices(), today)


# Every price apertis-eval needs, made up for the tests (not the price table).
TEST_PRICES = {
    "azure/westeurope/vm/Standard_F32s_v2": {"onDemand": 1.5, "spot": 0.3},
    "azure/westeurope/vm/Standard_DS14_v2": {"onDemand": 1.2},
    "azure/westeurope/premiumSsd/P6": 10.0,
    "azure/westeurope/premiumSsd/P10": 20.0,
    "azure/westeurope/premiumSsd/P40": 300.0,
    "azure/westeurope/publicIp": 0.005,
    "azure/westeurope/natGateway": 0.045,
}


# -- the model --------------------------------------------------------------


def test_doubling_the_bottleneck_pool_about_halves_the_rebuild():
    base = run(stack("apertis-eval"))
    doubled = run(stack("apertis-eval", azureWorkers={"minVms": 6, "maxVms": 6}))
    assert base.bottleneck is not None and base.bottleneck.execution == "emulated"
    assert 0.45 < doubled.hours / base.hours < 0.6
    # Same work, so about the same VM-hours.
    assert doubled.vm_hours == pytest.approx(base.vm_hours, rel=0.1)


def test_a_pool_that_is_not_the_bottleneck_changes_nothing():
    # In `native` the Azure pool builds x86_64 only; with Graviton scaled
    # down, aarch64/armv7hl on Graviton is the bottleneck.
    slow_arm = {"maxInstances": 1, "minInstances": 1, "onDemandBase": 1}
    base = run(stack("native", graviton=slow_arm))
    assert base.bottleneck is not None and base.bottleneck.pool == "aws-graviton"
    more_x86 = run(stack("native", graviton=slow_arm, azureWorkers={"maxVms": 6}))
    assert more_x86.hours == pytest.approx(base.hours, abs=1e-9)


def test_spot_lowers_cost_not_time():
    prices = {"obs-farm:prices": json.dumps(TEST_PRICES)}
    on_demand = run({**stack("apertis-eval", azureWorkers={"spot": False}), **prices})
    spot = run({**stack("apertis-eval", azureWorkers={"spot": True}), **prices})
    assert spot.hours == pytest.approx(on_demand.hours)
    assert on_demand.rebuild_cost is not None and spot.rebuild_cost is not None
    assert spot.rebuild_cost < on_demand.rebuild_cost
    assert on_demand.missing_prices == [] and spot.missing_prices == []


def test_costs_add_up_from_the_prices_given():
    prices = {"obs-farm:prices": json.dumps(TEST_PRICES)}
    e = run({**stack("apertis-eval"), **prices})
    vm = 1.5 + 20.0 / 730  # F32s_v2 on demand + its P10 OS disk
    fixed = 1.2 + (10.0 + 300.0) / 730 + 2 * 0.005 + 0.045
    assert e.rebuild_cost == pytest.approx(e.vm_hours * vm + e.hours * fixed)
    assert e.idle_cost_per_month == pytest.approx(730 * (3 * vm + fixed))


def test_apertis_eval_is_within_the_calibration_band_of_a_week():
    cal = yaml.safe_load(WORKLOAD.source.read_text())["calibration"]  # type: ignore[union-attr]
    low, high = cal["bandHours"]
    e = run(stack(cal["stack"]))
    assert low <= e.hours <= high
    assert low < 168 < high


def test_the_calibration_reproduces_its_week():
    doc = yaml.safe_load(WORKLOAD.source.read_text())  # type: ignore[union-attr]
    cal, median = doc["calibration"], doc["buildMinutes"]["medianMinutes"]
    with emulated_factor(cal["emulatedFactor"]):
        assert rebuild_hours(cal["stack"], doc, median) == pytest.approx(cal["hours"], rel=0.01)
    for factor, hours in zip((4.0, 5.0), cal["bandHours"], strict=True):
        with emulated_factor(factor):
            assert rebuild_hours(cal["stack"], doc, median) == pytest.approx(hours, abs=0.5)


def test_the_workload_has_the_source_designs_counts():
    assert WORKLOAD.build_count == 11525
    assert {r.name: r.packages for r in WORKLOAD.repositories} == {
        "development": 3237,
        "target": 465,
        "sdk": 419,
    }
    assert len(WORKLOAD.jobs_for("x86_64")) == 4121
    assert len(WORKLOAD.jobs_for("aarch64")) == 3702


def test_machines_above_the_minimum_arrive_after_boot():
    from estimate.farm import DEFAULT_BOOT_MINUTES

    e = run(stack("dev"))  # minVms 0: nothing runs before the first boot
    longest_native = max(j.minutes for j in WORKLOAD.jobs_for("x86_64"))
    x86 = next(g for g in e.groups if g.arch == "x86_64")
    assert x86.finish_hours * 60 > DEFAULT_BOOT_MINUTES + longest_native


def test_an_architecture_no_pool_builds_is_reported():
    raw = {**stack("apertis-eval"), "obs-farm:architectures": json.dumps(["x86_64"])}
    e = run(raw)
    assert set(e.unbuildable) == {"armv7hl", "aarch64"}


# -- prices ----------------------------------------------------------------


def test_missing_prices_are_named_not_guessed():
    e = run(stack("apertis-eval"))
    assert e.rebuild_cost is None
    assert "azure/westeurope/vm/Standard_F32s_v2 (onDemand)" in e.missing_prices


def test_old_prices_are_flagged():
    e = run(stack("hybrid"))
    assert any(s.startswith("aws/eu-central-1/ebsGp3") for s in e.stale_prices)
    fresh = run(stack("hybrid"), today="2024-01-01")
    assert fresh.stale_prices == []
    later = run(stack("apertis-eval"), today="2027-07-01")
    assert later.stale_prices == ["the price table (compiled 2026-11-28)"]


def test_every_catalog_size_has_an_entry_in_the_price_table():
    from config.catalog import AZURE_VM_SIZES, GRAVITON_TYPES

    table = load_prices(PRICES_FILE)
    for name in AZURE_VM_SIZES:
        assert f"azure/westeurope/vm/{name}" in table.entries
    for name in GRAVITON_TYPES:
        assert f"aws/eu-central-1/ec2/{name}" in table.entries
    found = [p for p in table.entries.values() if p.rate() is not None or p.spot is not None]
    assert all(p.source and p.as_of for p in found), "a found price needs its source and date"


def test_premium_ssd_tiers():
    assert premium_ssd_tier(64) == "P6"
    assert premium_ssd_tier(128) == "P10"
    assert premium_ssd_tier(129) == "P15"
    assert premium_ssd_tier(2048) == "P40"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"azure/westeurope/vm/F32": {"onDemand": 1}},
            "unknown price key 'azure/westeurope/vm/F32'",
        ),
        ({"azure/westeurope/natGateway": -1}, "must be a price of 0 or more; got -1"),
        ({"azure/westeurope/vm/Standard_F32s_v2": 1.5}, "must be a mapping with onDemand"),
        ({"aws/eu-central-1/ec2/c7g.8xlarge": {"reserved": 1}}, "must be a mapping with onDemand"),
        ({"aws/eu-central-1/ebsGp3": "cheap"}, "must be a price of 0 or more; got 'cheap'"),
    ],
)
def test_bad_price_overrides_are_refused_with_the_key(override, message):
    raw = {**stack("apertis-eval"), "obs-farm:prices": json.dumps(override)}
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    assert "obs-farm:prices" in str(caught.value)
    assert message in str(caught.value)


def test_a_good_override_is_accepted():
    assert check_override(TEST_PRICES) == TEST_PRICES


# -- workloads and the importer ----------------------------------------------


def test_bad_workload_files_say_what_is_wrong():
    with pytest.raises(WorkloadError, match="exactly one of `buildMinutes` and `jobs`"):
        parse_workload(
            {"repositories": [{"name": "a", "architectures": ["x86_64"], "packages": 1}]}, "w"
        )
    with pytest.raises(WorkloadError, match=r"architectures must be one of"):
        parse_workload(
            {"repositories": [{"name": "a", "architectures": ["ppc"], "packages": 1}], "jobs": []},
            "w",
        )
    with pytest.raises(WorkloadError, match="no workload 'nope'"):
        load_workload("nope")


def test_importer_on_a_job_history_recorded_from_the_real_backend(tmp_path):
    # Recorded from Debian's obs-server 2.9.4 by the integration tier's
    # importer test (then in test_jobhistory_import.py, now in
    # test_farm_builds.py): two builds of hello-obs, x86_64.
    xml = FIXTURE.read_bytes()
    entries = jobhistory.parse_jobhistory(xml)
    assert [e.package for e in entries] == ["hello-obs", "hello-obs"]
    assert all(e.code == "succeeded" for e in entries)
    out = tmp_path / "lab.yaml"
    assert jobhistory.main(["--name", "lab", "--out", str(out), f"Debian_12/x86_64={FIXTURE}"]) == 0
    w = load_workload(str(out))
    assert len(w.jobs) == 1
    assert w.jobs[0].minutes == pytest.approx(entries[-1].minutes, abs=0.001)
    # Imported as emulated, the minutes are divided by the emulation slowdown.
    out2 = tmp_path / "lab-emu.yaml"
    assert (
        jobhistory.main(
            ["--name", "e", "--out", str(out2), "--emulated", "aarch64", f"main/aarch64={FIXTURE}"]
        )
        == 0
    )
    assert load_workload(str(out2)).jobs[0].minutes == pytest.approx(
        entries[-1].minutes / 4.2, abs=0.001
    )


def test_importer_keeps_the_last_success_and_skips_failures():
    xml = (
        b"<jobhistlist>"
        b'<jobhist package="a" code="succeeded" starttime="100" endtime="700"/>'
        b'<jobhist package="a" code="succeeded" starttime="1000" endtime="1300"/>'
        b'<jobhist package="a" code="failed" starttime="2000" endtime="2010"/>'
        b'<jobhist package="b" code="failed" starttime="2000" endtime="2100"/>'
        b"</jobhistlist>"
    )
    doc = jobhistory.build_workload("w", {("main", "armv7l"): xml}, set())
    assert doc["jobs"] == [
        {"repository": "main", "arch": "armv7hl", "package": "a", "minutes": 5.0}
    ]
    assert "1 package(s) without a succeeded job" in str(doc["description"])


def test_importer_refuses_what_is_not_a_job_history(tmp_path, capsys):
    bad = tmp_path / "x.xml"
    bad.write_text("<workerstatus/>")
    assert jobhistory.main(["--name", "x", "--out", str(tmp_path / "o"), f"r/x86_64={bad}"]) == 2
    assert "must be a <jobhistlist>" in capsys.readouterr().err


# -- the plan ------------------------------------------------------------------


def test_plan_json_has_the_contract_keys(tmp_path, capsys):
    assert (
        plan.main(
            ["apertis-eval", "--workload", "apertis-v2021dev3", "--json", "--out", str(tmp_path)]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    est = doc["estimate"]
    assert set(est["rebuild"]) >= {"hours", "vmHours", "cost"}
    assert "costPerMonth" in est["idle"]
    assert est["currency"] == "USD"
    assert "pricesAsOf" in est
    arch = {a["arch"]: a for p in est["pools"] for a in p["architectures"]}
    assert arch["aarch64"]["execution"] == "emulated"
    assert arch["x86_64"]["instances"] == {"min": 15, "max": 15}
    assert doc["topology"][0]["vmSize"] == "Standard_F32s_v2"


def test_plan_text_and_compare(tmp_path, capsys):
    assert (
        plan.main(["apertis-eval", "--workload", "apertis-v2021dev3", "--out", str(tmp_path)]) == 0
    )
    text = capsys.readouterr().out
    assert "Rebuild estimate (workload apertis-v2021dev3" in text
    assert "bottleneck: " in text
    assert plan.main(["--compare", "apertis-eval", "apertis-fast"]) == 0
    table = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split() for line in table.splitlines() if line.startswith("apertis")
    }
    assert float(rows["apertis-fast"][1]) < float(rows["apertis-eval"][1]) / 5


def test_plan_with_an_unknown_workload_exits_2(tmp_path, capsys):
    assert plan.main(["dev", "--workload", "nope", "--out", str(tmp_path)]) == 2
    assert "no workload 'nope'" in capsys.readouterr().err


def test_apertis_fast_is_the_recommended_trade_off():
    fast, eval_ = run(stack("apertis-fast")), run(stack("apertis-eval"))
    # About a day; not under 24 h because of the longest emulated build.
    longest = max(j.minutes for j in WORKLOAD.jobs) * 4.2 / 60
    assert 24 < longest <= fast.hours < 26
    # About the evaluation farm's worker VM-hours, on the same VM size.
    assert fast.vm_hours < eval_.vm_hours * 1.03


def test_compare_names_the_stack_with_bad_config(tmp_path, capsys):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text((REPO / "Pulumi.dev.yaml").read_text().replace("maxVms: 2", "maxVms: 0"))
    (tmp_path / "Pulumi.dev.yaml").write_text((REPO / "Pulumi.dev.yaml").read_text())
    assert plan.main(["--compare", "dev", "bad", "--stack-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Pulumi.bad.yaml" in err
    assert "obs-farm:azureWorkers.maxVms must be at least 1; got 0" in err
