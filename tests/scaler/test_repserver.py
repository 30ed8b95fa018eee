"""The repserver adapter's file side on a throw-away $bsdir laid out as OBS
lays it out (the integration tier drives it against the real backend)."""

from __future__ import annotations

import pytest
from obs_farm_scaler.repserver import RepserverError, Workers, parse_workerstatus


def layout(tmp_path, entries):
    for state, name in entries:
        d = tmp_path / "workers" / state
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("<worker/>")
    return Workers(tmp_path)


def test_drain_disables_by_host_prefix_and_moves_only_that_hosts_idle_entries(tmp_path):
    w = layout(tmp_path, [
        ("idle", "x86_64:vm1:x86_64-1"), ("idle", "armv7l:vm1:armv7hl-1"),
        ("idle", "x86_64:vm10:x86_64-1"), ("building", "aarch64:vm1:aarch64-1"),
    ])  # fmt: skip
    assert sorted(w.drain("vm1")) == ["armv7l:vm1:armv7hl-1", "x86_64:vm1:x86_64-1"]
    workers = tmp_path / "workers"
    assert sorted(p.name for p in (workers / "idle").iterdir()) == ["x86_64:vm10:x86_64-1"]
    assert sorted(p.name for p in (workers / "down").iterdir()) == [
        "armv7l:vm1:armv7hl-1", "x86_64:vm1:x86_64-1"]  # fmt: skip
    # a building worker is left alone: it finishes, then reports into `down`
    assert (workers / "building" / "aarch64:vm1:aarch64-1").exists()
    assert [p.name for p in (workers / "disable").iterdir()] == ["vm1:"]
    assert w.drained_hosts() == {"vm1"}
    w.forget("vm1")
    # the last down entry of each kind stays (constraints); here vm10's idle
    # x86_64 entry is of the same kind as vm1's, armv7l has no other
    assert sorted(p.name for p in (workers / "down").iterdir()) == ["armv7l:vm1:armv7hl-1"]
    assert w.drained_hosts() == set()


def test_forget_keeps_one_down_entry_per_hostarch_and_labels(tmp_path):
    def worker(labels):
        return (
            "<worker hostarch='aarch64'>"
            + "".join(f"<hostlabel>{x}</hostlabel>" for x in labels)
            + "</worker>"
        )

    down = tmp_path / "workers" / "down"
    down.mkdir(parents=True)
    native, emulated = (
        ("obs-farm-native", "obs-farm-aarch64"),
        ("obs-farm-emulated", "obs-farm-aarch64"),
    )
    for host in ("i-1", "i-2"):
        for n in (1, 2):
            (down / f"aarch64:{host}:aarch64-{n}").write_text(worker(native))
    (down / "aarch64:vm1:aarch64-1").write_text(worker(emulated))
    w = Workers(tmp_path)
    w.forget("i-1")
    w.forget("vm1")
    w.forget("i-2")
    left = sorted(p.name for p in down.iterdir())
    assert left == ["aarch64:i-2:aarch64-1", "aarch64:vm1:aarch64-1"]


def test_drained_hosts_ignores_disable_entries_an_admin_wrote(tmp_path):
    w = layout(tmp_path, [("disable", "manual:")])
    w.drain("vm2")
    assert w.drained_hosts() == {"vm2"}


@pytest.mark.parametrize("host", ["", "a.b", "vm1:", ".*", "../x"])
def test_drain_refuses_what_is_not_a_plain_hostname(tmp_path, host):
    with pytest.raises(ValueError, match="not a plain hostname"):
        layout(tmp_path, []).drain(host)


def test_parse_rejects_what_is_not_workerstatus():
    with pytest.raises(RepserverError, match="not XML"):
        parse_workerstatus(b"<html")
    with pytest.raises(RepserverError, match="answered <status>"):
        parse_workerstatus(b"<status code='500'/>")
