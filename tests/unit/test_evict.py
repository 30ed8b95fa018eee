"""The eviction watcher (cloud-init/obs-farm-evict.py) run for real against a
local metadata stand-in, on worker state directories in bs_worker's own
format. The real bs_worker's reaction (requeue, drain) is proven in
tests/integration/test_eviction.py; here: which notice means what, for which
machine, the state-file protocol and the repserver calls."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from components import cloudinit
from tests.helpers.imds import MetadataStandIn

WATCHER = cloudinit.TEMPLATE_DIR / "obs-farm-evict.py"
HOST = socket.gethostname()


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    """/etc/obs-farm of a machine with x86_64-1 building, x86_64-2 idle and
    aarch64-1 never started."""
    conf, work = tmp_path / "etc", tmp_path / "work"
    (conf / "groups").mkdir(parents=True)
    (conf / "groups" / "x86_64.env").write_text(
        'HOSTARCH="x86_64"\nINSTANCES="2"\nPORT_BASE="41000"\n'
    )
    (conf / "groups" / "aarch64.env").write_text(
        'HOSTARCH="aarch64"\nINSTANCES="1"\nPORT_BASE="41200"\n'
    )
    for n, state in ((1, "building"), (2, "idle")):
        d = work / "x86_64" / str(n) / "state"
        d.mkdir(parents=True)
        attrs = f'state="{state}"' + (' jobid="0123abcd" pid="4242"' if state == "building" else "")
        (d / "state").write_text(f"<workerstate {attrs} />\n")
    return {"conf": conf, "work": work, "run": tmp_path / "run"}


def write_worker_env(machine: dict[str, Path], cloud: str, repserver: str) -> None:
    (machine["conf"] / "worker.env").write_text(
        f'REPO_SERVER="{repserver}"\nWORK_DIR="{machine["work"]}"\nCLOUD="{cloud}"\n'
    )


def state(machine: dict[str, Path], group: str, n: int) -> dict[str, str]:
    return dict(ET.parse(machine["work"] / group / str(n) / "state" / "state").getroot().attrib)


@contextlib.contextmanager
def running_worker(machine: dict[str, Path], group: str, n: int) -> Iterator[None]:
    """Hold the instance's run lock as a live bs_worker does."""
    with (machine["work"] / group / str(n) / "state" / "lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def watcher(machine: dict[str, Path], imds: MetadataStandIn) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OBS_FARM_CONF_DIR": str(machine["conf"]),
        "OBS_FARM_RUN_DIR": str(machine["run"]),
        "OBS_FARM_IMDS": imds.url,
        "OBS_FARM_EVICT_POLL": "0.2",
    }
    return subprocess.Popen(
        [str(WATCHER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_azure_preempt_requeues_building_jobs_stops_all_and_acknowledges(machine):
    with MetadataStandIn(vm_name=HOST) as imds:
        write_worker_env(machine, "azure", imds.url)
        proc = watcher(machine, imds)
        with running_worker(machine, "x86_64", 1):
            time.sleep(1)
            assert proc.poll() is None and imds.worker_calls == []
            event = imds.azure_event("Preempt", [HOST])
            deadline = time.monotonic() + 10
            while len(imds.worker_calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            # Still "running" (lock held): no acknowledgement yet.
            assert imds.acks == [] and proc.poll() is None
        out = finish(proc)
        acks = list(imds.acks)
        calls = list(imds.worker_calls)
    wid = {"arch": "x86_64", "port": "41001", "workerid": f"{HOST}:x86_64-1"}
    assert calls == [{**wid, "state": "idle"}, {**wid, "state": "exit"}]
    assert state(machine, "x86_64", 1) == {
        "state": "discarded",
        "nextstate": "exit",
        "jobid": "0123abcd",
        "pid": "4242",
    }
    assert state(machine, "x86_64", 2) == {"state": "exit"}
    assert not (machine["work"] / "aarch64").exists()
    assert acks == [{"StartRequests": [{"EventId": event}]}]
    note = json.loads((machine["run"] / "eviction.json").read_text())
    assert (note["action"], note["state"]) == ("stop", "done")
    assert "Preempt: stop; requeued" in out


def test_azure_event_for_another_vm_is_ignored(machine):
    with MetadataStandIn(vm_name=HOST) as imds:
        write_worker_env(machine, "azure", imds.url)
        imds.azure_event("Preempt", ["some-other-vm"])
        imds.azure_event("Freeze", [HOST])
        proc = watcher(machine, imds)
        time.sleep(1.5)
        alive = proc.poll() is None
        proc.kill()
        proc.wait()
    assert alive
    assert imds.worker_calls == [] and imds.acks == []
    assert state(machine, "x86_64", 1)["state"] == "building"
    assert not (machine["run"] / "eviction.json").exists()


def test_azure_terminate_drains_and_stops_when_not_before_is_near(machine):
    with MetadataStandIn(vm_name=HOST) as imds:
        write_worker_env(machine, "azure", imds.url)
        later = formatdate(time.time() + 900, usegmt=True)
        imds.azure_event("Terminate", [HOST], NotBefore=later)
        proc = watcher(machine, imds)
        with running_worker(machine, "x86_64", 1):
            time.sleep(1.5)
            drained = state(machine, "x86_64", 1)
            assert imds.worker_calls == []
            # The platform will not wait for the job: stop now.
            imds.azure_events[0]["NotBefore"] = formatdate(time.time() + 30, usegmt=True)
            time.sleep(1.5)
            stopped = state(machine, "x86_64", 1)
        finish(proc)
    assert (drained["state"], drained["nextstate"]) == ("building", "exit")
    assert (stopped["state"], stopped["nextstate"]) == ("discarded", "exit")
    assert [c["state"] for c in imds.worker_calls] == ["idle", "exit"]


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("spot/instance-action", '{"action": "terminate", "time": "2026-11-28T05:00:00Z"}', "stop"),
        ("events/recommendations/rebalance", '{"noticeTime": "2026-11-28T05:00:00Z"}', "drain"),
        ("autoscaling/target-lifecycle-state", "Terminated", "drain"),
    ],
)
def test_aws_notices(machine, path, body, kind):
    with MetadataStandIn() as imds:
        write_worker_env(machine, "aws", imds.url)
        imds.aws["autoscaling/target-lifecycle-state"] = "InService"
        proc = watcher(machine, imds)
        with running_worker(machine, "x86_64", 1):
            time.sleep(1)
            assert proc.poll() is None and state(machine, "x86_64", 1)["state"] == "building"
            imds.aws[path] = body
            time.sleep(1.5)
            during = state(machine, "x86_64", 1)
            assert proc.poll() is None, "exited while a worker still runs"
        finish(proc)
    assert state(machine, "x86_64", 2) == {"state": "exit"}
    if kind == "stop":
        assert (during["state"], during["nextstate"]) == ("discarded", "exit")
        assert [c["state"] for c in imds.worker_calls] == ["idle", "exit"]
    else:
        # Drain: the job finishes and is uploaded; the repserver hears nothing from us.
        assert (during["state"], during["nextstate"]) == ("building", "exit")
        assert imds.worker_calls == []
    assert json.loads((machine["run"] / "eviction.json").read_text())["action"] == kind


def test_metadata_service_down_is_logged_once_and_survived(machine):
    write_worker_env(machine, "azure", "http://127.0.0.1:9")
    env = {
        **os.environ,
        "OBS_FARM_CONF_DIR": str(machine["conf"]),
        "OBS_FARM_RUN_DIR": str(machine["run"]),
        "OBS_FARM_IMDS": "http://127.0.0.1:9",
        "OBS_FARM_EVICT_POLL": "0.2",
    }
    proc = subprocess.Popen(
        [str(WATCHER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    time.sleep(2)
    alive = proc.poll() is None
    proc.kill()
    out, _ = proc.communicate()
    assert alive, out
    assert out.count("obs-farm-evict: metadata:") == 1, out
    assert state(machine, "x86_64", 1)["state"] == "building"
