"""Shared pieces of the integration tier: a backend configured as the
server's cloud-init configures it, and waiting for workers to register."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from components import cloudinit
from components.topology import WorkerPool
from config import FarmSettings
from tests.integration import obs_backend as ob

SCHEDULER_ARCHS = ("x86_64", "aarch64", "armv7l")


def require_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot builds, binfmt_misc, obsrun daemons, VMs)")
    tools = ("dpkg-source", "cpio", "update-binfmts")
    missing = [t for t in tools if not shutil.which(t)]
    if missing or not (ob.SERVER_CODE / "bs_srcserver").exists():
        pytest.fail(f"the integration tier needs obs-server and binfmt-support; missing {missing}")


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """World-searchable (the daemons run as obsrun), outside pytest's 0700 tmp.
    OBS_FARM_KEEP_SCRATCH=1 keeps it afterwards (backend and worker logs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        ob.unmount_below(path)
        if not os.environ.get("OBS_FARM_KEEP_SCRATCH"):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def farm_backend(settings: FarmSettings, workdir: Path) -> Iterator[ob.ObsBackend]:
    """The backend with the server's rendered BSConfig.pm and the farm.pm
    that the run command writes; the harness adjusts only $bsdir, the server
    address (127.0.0.1) and adds the loopback worker entry."""
    farm_pm = workdir / "farm.pm"
    farm_pm.write_text(cloudinit.render_farm_pm(settings))
    farm_pm.chmod(0o644)
    bsconfig = cloudinit.render_bsconfig(settings, farm_pm=str(farm_pm))
    with ob.Binfmt(SCHEDULER_ARCHS), ob.ObsBackend(bsconfig, workdir / "backend") as obs:
        yield obs


def wait_registered(
    obs: ob.ObsBackend, ids: set[str], timeout: float, states: tuple[str, ...] = ("idle",)
) -> dict[str, ob.WorkerEntry]:
    """Workers among `ids` in one of `states` (idle by default) once all are
    there (or what is there at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {
            w.workerid: w
            for w in obs.workerstatus().workers
            if w.workerid in ids and w.state in states
        }
        if set(found) == ids or time.monotonic() > deadline:
            return found
        time.sleep(2)


def answers(uri: str, timeout: float = 10) -> bool:
    """Whether the worker behind a registration still answers (a killed
    worker stays listed as idle)."""
    try:
        with urllib.request.urlopen(f"{uri}/worker", timeout=timeout) as resp:
            return resp.status == 200 and b"<worker" in resp.read()
    except OSError:
        return False


def ports_of(entries: Sequence[ob.WorkerEntry]) -> list[int]:
    return [int(e.uri.rsplit(":", 1)[1]) for e in entries]


# Numbers the tier reports at the end of the run (see conftest.py).
TIMINGS: dict[str, str] = {}


def write_worker_conf(
    pool: WorkerPool, conf: Path, reposerver: str, code_dir: Path, port_shift: int = 0
) -> None:
    """worker.env and groups/<arch>.env as cloud-init writes them, pointed at
    this host's backend and worker-code directory, every group's ports moved
    by `port_shift` so several "machines" fit on one host."""
    (conf / "groups").mkdir(parents=True)
    env = cloudinit.worker_env(pool, "127.0.0.1")
    env = env.replace("/var/lib/obs-farm/worker-code", str(code_dir))
    (conf / "worker.env").write_text(env.replace("http://127.0.0.1:5252", reposerver))
    for g in pool.groups:
        text = cloudinit.group_env(g).replace(
            f'PORT_BASE="{g.port_base}"', f'PORT_BASE="{g.port_base + port_shift}"'
        )
        assert str(g.port_base + port_shift) in text
        (conf / "groups" / f"{g.arch}.env").write_text(text)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def record(what: str, value: str) -> None:
    TIMINGS[what] = value
