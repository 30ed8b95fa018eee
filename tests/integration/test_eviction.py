"""A notice of eviction to a worker machine that is building puts its job
back in the queue at once, and another machine then builds it.

Real Debian obs-server 2.9.4 on 127.0.0.1 (the dev stack's rendered
BSConfig), real bs_worker instances run by our own obs-farm-worker.sh, our
own eviction watcher (cloud-init/obs-farm-evict.py), and a local stand-in of
the Azure instance metadata service (tests/helpers/imds.py). Each "machine"
is the dev stack's x86_64 group (one instance) in its own UTS namespace, so
it has its own hostname and worker id, as on a scale-set VM; the two
machines differ only in their directories and ports.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.topology import azure_worker_pool
from config import load_settings
from tests.helpers.imds import MetadataStandIn
from tests.integration import obs_backend as ob
from tests.integration.farm import (
    farm_backend,
    record,
    require_host,
    scratch_dir,
    wait_for,
    wait_registered,
    write_worker_conf,
)
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELLO_OBS = REPO / "tests" / "data" / "hello-obs"
SCRIPTS = REPO / "cloud-init"
PROJECT, REPOSITORY, ARCH, PACKAGE = "lab", "Debian_12", "x86_64", "hello-obs"
REQUEUE_GOAL_S = 60


@pytest.fixture(scope="module")
def settings():
    return load_settings(read_stack_config("dev"))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch_dir("obs-farm-evict-") as path:
        yield path


@pytest.fixture(scope="module")
def backend(settings, workdir) -> Iterator[ob.ObsBackend]:
    require_host()
    with farm_backend(settings, workdir) as obs:
        obs.setup_debian_project([ARCH])
        obs.create_project(PROJECT, REPOSITORY, [("Debian:12", "main")], [ARCH])
        yield obs


class Machine:
    """One worker machine: the dev stack's x86_64 group, one instance, its
    own hostname (UTS namespace), configuration, work directory and port."""

    def __init__(self, hostname: str, settings, root: Path, reposerver: str, port_shift: int):
        self.hostname = hostname
        pool = azure_worker_pool(settings)
        group = dataclasses.replace(next(g for g in pool.groups if g.arch == ARCH), instances=1)
        pool = dataclasses.replace(pool, groups=(group,), work_dir=str(root / "work"))
        self.workerid = group.worker_ids(hostname)[0]
        self.port = group.port_base + port_shift + 1
        self.conf = root / "etc"
        write_worker_conf(pool, self.conf, reposerver, root / "code", port_shift)
        self.run_dir = root / "run"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, imds: str = "") -> dict[str, str]:
        return {
            **os.environ,
            "OBS_FARM_CONF_DIR": str(self.conf),
            "OBS_FARM_RUN_DIR": str(self.run_dir),
            "OBS_FARM_IMDS": imds,
            "OBS_FARM_EVICT_POLL": "1",
        }

    def _spawn(self, name: str, cmd: list[str], imds: str = "") -> subprocess.Popen[bytes]:
        # Its own hostname, as the machine's: worker ids and the watcher's
        # match of the event's Resources both come from it.
        wrapped = ["unshare", "--uts", "sh", "-c", f'hostname {self.hostname} && exec "$@"', "sh"]
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            wrapped + cmd, env=self.env(imds), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn("worker", [str(SCRIPTS / "obs-farm-worker.sh"), "run", f"{ARCH}-1"])

    def start_watcher(self, imds: str) -> subprocess.Popen[bytes]:
        return self._spawn("watcher", [str(SCRIPTS / "obs-farm-evict.py")], imds)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if "worker" in self.procs and self.procs["worker"].poll() is None:
            subprocess.run(
                [str(SCRIPTS / "obs-farm-worker.sh"), "stop", f"{ARCH}-1"],
                env=self.env(), capture_output=True, timeout=150,
            )  # fmt: skip
        for proc in self.procs.values():
            ob.kill_tree(proc, grace=15.0)


def job_status(obs: ob.ObsBackend) -> dict[str, str]:
    path = f"/build/{PROJECT}/{REPOSITORY}/{ARCH}/{PACKAGE}/_jobstatus"
    # code is an attribute, workerid and the rest are elements (BSXML jobstatus).
    root = ET.fromstring(obs.rep("GET", path))
    return {**root.attrib, **{e.tag: e.text or "" for e in root}}


def test_preempted_machine_requeues_its_job_at_once_and_another_builds_it(
    settings, backend, workdir
):
    a = Machine("evict-a", settings, workdir / "a", backend.reposerver, port_shift=0)
    b = Machine("evict-b", settings, workdir / "b", backend.reposerver, port_shift=50)
    with MetadataStandIn(vm_name=a.hostname) as imds:
        try:
            worker_a = a.start_worker()
            assert wait_registered(backend, {a.workerid}, 120), a.log("worker")
            watcher = a.start_watcher(imds.url)
            since = time.time()
            backend.create_package(PROJECT, PACKAGE, HELLO_OBS)
            wait_for(
                f"{a.workerid} to build {PACKAGE}",
                lambda: (
                    job_status(backend).get("workerid") == a.workerid
                    and job_status(backend).get("code") == "building"
                ),
                600,
            )
            time.sleep(5)  # into the build, not at its very start
            assert job_status(backend).get("workerid") == a.workerid, "finished before the notice"

            t0 = time.monotonic()
            event = imds.azure_event("Preempt", [a.hostname])
            wait_for("the job back in the queue", lambda: "code" not in job_status(backend), 120)
            requeued = time.monotonic() - t0
            status = backend.workerstatus()
            entry = status.find(a.workerid)
            assert entry is not None and entry.state == "down", status
            assert status.waiting.get(ARCH, 0) >= 1 or not status.building, status

            assert worker_a.wait(timeout=120) == 0, a.log("worker")
            assert watcher.wait(timeout=60) == 0, a.log("watcher")
            stopped = time.monotonic() - t0
            assert imds.acks == [{"StartRequests": [{"EventId": event}]}], a.log("watcher")
            assert f"requeued ['{a.workerid}']" in a.log("watcher")
            assert requeued <= REQUEUE_GOAL_S, f"requeued after {requeued:.1f} s"

            b.start_worker()
            result = backend.wait_build(PROJECT, REPOSITORY, ARCH, PACKAGE, 900, since=since)
            assert (result.status, result.workerid) == ("succeeded", b.workerid), (
                result,
                b.log("worker"),
            )
            debs = backend.fetch_binaries(
                PROJECT, REPOSITORY, ARCH, PACKAGE, workdir / "out", "*.deb"
            )
            assert len(debs) == 1, debs
        finally:
            a.stop()
            b.stop()
    record("eviction: Preempt notice to job back in the queue", f"{requeued:.1f} s")
    record("eviction: notice to every instance stopped, event acknowledged", f"{stopped:.0f} s")
