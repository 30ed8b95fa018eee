"""The kernel's binfmt_misc for tests that need it real: taken under the
integration lock (binfmt_misc is global to the machine) and put back as it
was found (the mount and every handler)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

LOCK = Path("/tmp/obs-farm-integration.lock")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def lock_held_by_us(path: Path = LOCK) -> bool:
    """Whether this process or an ancestor (e.g. `flock LOCK pytest`) holds the lock."""
    ino = path.stat().st_ino
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if len(f) > 5 and f[1] == "FLOCK" and f[5].endswith(f":{ino}"):
            holders.add(int(f[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        pid = _parent(pid)
    return False


#: Outside CI, how long a unit test waits for an integration run elsewhere on
#: this machine before it skips (CI has no such run and waits as long as it takes).
LOCAL_WAIT_S = 120.0


@contextlib.contextmanager
def integration_lock(path: Path = LOCK) -> Iterator[None]:
    """The machine-wide lock every binfmt_misc change holds (see COMMON rules)."""
    with path.open("a") as f:
        if lock_held_by_us(path):
            yield
            return
        if os.environ.get("CI") == "true":
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
            return
        deadline = time.monotonic() + LOCAL_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"binfmt_misc busy: {path} held by an integration run")
                time.sleep(2)
        yield


@contextlib.contextmanager
def kernel_binfmt(arches: Iterable[str]) -> Iterator[None]:
    """qemu-user-static handlers with F for `arches`, registered in the real
    kernel while the test runs, everything restored afterwards."""
    from tests.integration.obs_backend import Binfmt

    with integration_lock(), Binfmt(arches):
        yield
