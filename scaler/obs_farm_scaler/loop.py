"""Read, decide, act, log: one poll of the scaler, and the loop around it."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .config import Settings
from .decide import decide
from .model import (
    CompleteLifecycle,
    Decision,
    Delete,
    Drain,
    Memory,
    Observed,
    PoolState,
    SetCapacity,
    WorkerStatus,
)
from .repserver import RepserverError, Workers, fetch_workerstatus

log = logging.getLogger("obs-farm-scaler")
HEALTH_FILE = "/run/obs-farm/scaler.json"
MAX_BACKOFF_S = 60.0
# Keep a deleted machine's disable entry this long after the cloud stopped
# listing it, in case its workers report once more while it shuts down.
FORGET_AFTER_S = 600.0


class CloudPool(Protocol):
    calls: int

    def observe(self) -> PoolState: ...
    def set_capacity(self, capacity: int) -> None: ...
    def delete(self, machine: str) -> None: ...
    def complete_lifecycle(self, machine: str) -> None: ...


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Scaler:
    def __init__(
        self,
        settings: Settings,
        clouds: Mapping[str, CloudPool],
        *,
        workers: Workers | None = None,
        fetch: Callable[[str], WorkerStatus] = fetch_workerstatus,
        clock: Callable[[], float] = time.time,
        health_file: str | None = HEALTH_FILE,
        dry_run: bool = False,
    ):
        self.settings = settings
        self.clouds = clouds
        self.workers = workers or Workers(settings.bsdir)
        self.fetch = fetch
        self.clock = clock
        self.health_file = health_file
        self.dry_run = dry_run
        # Machines a previous run drained stay drained: they are deleted once
        # none of their workers builds (the confirm wait has long passed).
        try:
            drained = dict.fromkeys(self.workers.drained_hosts(), 0.0)
        except OSError as e:
            log.warning("cannot read drained machines: %s", e)
            drained = {}
        self.memory = Memory(drained=drained)
        self.last_lines: dict[str, str] = {}
        self.last_success: float | None = None
        self.absent_since: dict[str, float] = {}

    def observe(self) -> Observed:
        try:
            status: WorkerStatus | None = self.fetch(self.settings.repserver)
        except RepserverError as e:
            log.warning("repserver: %s", e)
            status = None
        pools: dict[str, PoolState | None] = {}
        for pool in self.settings.pools:
            try:
                pools[pool.name] = self.clouds[pool.name].observe()
            except Exception as e:  # any cloud failure: this pool is unknown this time
                log.warning("pool=%s cloud: %s: %s", pool.name, type(e).__name__, e)
                pools[pool.name] = None
        return Observed(status, pools, self.memory)

    def act(self, decision: Decision) -> bool:
        ok = True
        drained = dict(decision.memory.drained)
        for action in decision.actions:
            cloud = self.clouds.get(action.pool)
            what = f"pool={action.pool} {type(action).__name__} " + " ".join(
                f"{k}={v}" for k, v in asdict(action).items() if k != "pool"
            )
            if self.dry_run:
                log.info("dry-run: would %s", what)
                continue
            try:
                if isinstance(action, SetCapacity):
                    assert cloud is not None
                    cloud.set_capacity(action.capacity)
                elif isinstance(action, Drain):
                    moved = self.workers.drain(action.host)
                    what += f" moved={','.join(moved) or '-'}"
                elif isinstance(action, Delete):
                    assert cloud is not None
                    cloud.delete(action.machine)
                elif isinstance(action, CompleteLifecycle):
                    assert cloud is not None
                    cloud.complete_lifecycle(action.machine)
                log.info("done: %s", what)
            except Exception as e:
                ok = False
                log.error("failed: %s: %s: %s", what, type(e).__name__, e)
                if isinstance(action, Drain):
                    # Not drained: the next poll decides again from scratch.
                    drained.pop(action.host, None)
        self.memory = Memory(
            decision.memory.idle_since,
            decision.memory.first_seen,
            decision.memory.trouble_since,
            drained if not self.dry_run else {},
        )
        return ok

    def cleanup(self, observed: Observed, now: float) -> None:
        """Forget drained machines that no cloud has listed for a while."""
        if self.dry_run or any(st is None for st in observed.pools.values()):
            return
        listed = {m.host for st in observed.pools.values() if st for m in st.machines}
        for host in self.workers.drained_hosts():
            if host in listed:
                self.absent_since.pop(host, None)
            elif now - self.absent_since.setdefault(host, now) >= FORGET_AFTER_S:
                self.workers.forget(host)
                self.absent_since.pop(host, None)
                log.info("forgot %s: its machine is gone", host)

    def poll(self) -> bool:
        """One poll; True when everything was read and done."""
        now = self.clock()
        observed = self.observe()
        decision = decide(observed, self.settings, now)
        for line in decision.pools:
            text = line.line()
            acting = any(a.pool == line.pool for a in decision.actions)
            if acting or self.last_lines.get(line.pool) != text:
                log.info("%s", text)
            self.last_lines[line.pool] = text
        ok = self.act(decision)
        try:
            self.cleanup(observed, now)
        except OSError as e:
            log.warning("cleanup: %s", e)
        complete = observed.status is not None and all(
            st is not None for st in observed.pools.values()
        )
        ok = ok and complete
        if ok:
            self.last_success = now
        self.write_health(now, ok, decision)
        return ok

    def write_health(self, now: float, ok: bool, decision: Decision) -> None:
        if not self.health_file:
            return
        body: dict[str, Any] = {
            "lastPoll": _iso(now),
            "lastSuccess": _iso(self.last_success) if self.last_success else None,
            "ok": ok,
            "pools": {
                d.pool: {"demand": dict(d.demand), "current": d.current, "desired": d.desired,
                         "why": d.why}
                for d in decision.pools
            },
            "cloudCalls": {name: c.calls for name, c in self.clouds.items()},
        }  # fmt: skip
        path = Path(self.health_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(body, indent=1) + "\n")
            tmp.replace(path)
        except OSError as e:
            log.warning("health file %s: %s", path, e)

    def run(self, stop: threading.Event | None = None, once: bool = False) -> bool:
        stop = stop or threading.Event()
        delay = self.settings.poll_seconds
        while True:
            started = time.monotonic()
            ok = self.poll()
            if once:
                return ok
            # Back off while something fails (doubling, at most 6 poll intervals
            # or a minute); back to the poll interval at once after.
            poll = self.settings.poll_seconds
            delay = poll if ok else min(MAX_BACKOFF_S, 6 * poll, delay * 2)
            if stop.wait(max(0.0, delay - (time.monotonic() - started))):
                return ok
