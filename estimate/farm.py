"""The farm the rebuild estimate simulates, scaled by obs-farm-scaler's own rule.

Pure (no I/O, no clock): pools, the scaler's settings and a job list in,
every machine's life and every job's placement out.

Three actors, each as the real farm has it:
- **The scaler** is the real rule: every `pollSeconds` the simulation shows
  the scaler's own `decide` (scaler/obs_farm_scaler/decide.py, imported, not
  copied) what it would observe (the repserver's /workerstatus: each
  worker idle, building or down, and the jobs waiting per scheduler
  architecture; each pool's cloud capacity and machines) and carries out
  its actions: SetCapacity creates machines, Drain stops a machine's
  workers from taking jobs, Delete removes it and lowers the capacity (as
  the Flexible scale set's batch delete and TerminateInstanceInAutoScaling-
  Group with a decrement do). Its settings are parsed by the scaler's own
  parser from the scaler.json the program renders (components/scaler.py),
  so pollSeconds, idleMinutes and each pool's min/max are the deployed ones.
- **The clouds**: a new machine's workers register `boot minutes` after the
  capacity request (per pool; see DEFAULT_BOOT_MINUTES). Cloud API latency
  is not modelled.
- **OBS's dispatcher**: a waiting job goes at once to an idle worker of its
  scheduler architecture on a machine that is not drained, preferring the
  machine with the largest share of idle workers (bs_dispatch sorts idle
  workers by their host's idle share after a shuffle; this model gives a
  tie to the machine created first, so in `hybrid` the first long ARM jobs
  can land on emulated workers, as they may in OBS). Jobs are taken
  longest first (bs_dispatch orders by how many packages wait on a job,
  then by age: the dependency graph this model does not have). A drained
  machine takes no new job.

Only polls at which something the scaler observes changed, or one of its
timers (idle, drain confirmation, boot and unhealthy limits) ran out, are
shown to `decide`; the others would repeat the previous poll. One more kind
of poll is skipped: when only waiting counts went down, the last decision
did nothing and no machine has all its workers idle, because the rule only
grows a pool for more demand and only shrinks one by draining a machine
whose workers are all idle. tests/unit/test_estimate_farm.py checks that
polling at every interval gives the same farm.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALER_DIR = Path(__file__).resolve().parents[1] / "scaler"
if str(SCALER_DIR) not in sys.path:
    sys.path.insert(0, str(SCALER_DIR))

from obs_farm_scaler import config as scaler_config  # noqa: E402
from obs_farm_scaler.decide import CONFIRM_SECONDS, decide  # noqa: E402
from obs_farm_scaler.model import (  # noqa: E402
    CompleteLifecycle,
    Delete,
    Drain,
    Machine,
    Memory,
    Observed,
    PoolState,
    SetCapacity,
    Worker,
    WorkerStatus,
)

# Minutes from a capacity request to every worker of the new machine
# registered, when the stack does not set obs-farm:estimate.bootMinutes.
# Measured only on this repository's test VM (software-emulated x86-64, stock
# Debian image, packages installed by cloud-init at boot): 336-346 s from
# boot to all workers registered (issue 9); with the packages baked into the
# image (obs-farm:images.bake) the VM tier measured 81-113 s. Not measured
# on Azure or AWS (VM allocation adds to it there), so the default stays the
# stock figure, rounded up, for baked pools too.
DEFAULT_BOOT_MINUTES = 6.0
# Simulated time after which the estimate gives up (a farm that can never
# finish, e.g. a boot time the scaler always reaps).
MAX_SIMULATED_HOURS = 24 * 365 * 5


class SimulationError(ValueError):
    """The simulated farm cannot finish the workload; the message says why."""


def check_boot_minutes(value: Any) -> dict[str, float]:
    """Validate obs-farm:estimate.bootMinutes; ValueError names the pool."""
    if not isinstance(value, dict):
        raise ValueError(f"must map worker pools to minutes; got {value!r}")
    pools = ("azure-x86", "aws-graviton")
    reap = scaler_config.DEFAULT_BOOT_MINUTES
    out = {}
    for pool, minutes in value.items():
        if pool not in pools:
            raise ValueError(f"names an unknown pool {pool!r}; pools are {', '.join(pools)}")
        if isinstance(minutes, bool) or not isinstance(minutes, int | float):
            raise ValueError(f"[{pool!r}] must be a number of minutes; got {minutes!r}")
        if not 0 <= minutes < reap:
            raise ValueError(
                f"[{pool!r}] must be at least 0 and below {reap:g}, the scaler's bootMinutes "
                f"(it replaces a machine with no worker registered by then); got {minutes!r}"
            )
        out[pool] = float(minutes)
    return out


@dataclass
class SimJob:
    hostarch: str
    minutes: float  # native minutes at the workload's reference make -j
    ready: float = 0.0  # seconds: when it enters the queue
    seq: int = 0


@dataclass(eq=False)
class _Machine:
    pool: str
    host: str
    created: float
    ready: float
    order: int
    workers: list[_Worker] = field(default_factory=list)
    registered: bool = False
    drained: bool = False
    deleted: float | None = None
    idle: int = 0


@dataclass(eq=False)
class _Worker:
    wid: str
    pool: str
    arch: str
    hostarch: str
    factor: float  # build seconds per native second on this group
    machine: _Machine
    pos: int
    busy: bool = False


@dataclass
class GroupStats:
    jobs: int = 0
    busy_seconds: float = 0.0
    finish: float = 0.0


@dataclass
class MachineLife:
    pool: str
    host: str
    created: float
    deleted: float | None  # None: still there at the end


@dataclass
class FarmRun:
    """What happened, in seconds from the moment the whole queue appeared."""

    makespan: float  # last build done
    end: float  # every pool back at its minimum (scale-in done)
    machines: list[MachineLife]
    groups: dict[tuple[str, str], GroupStats]  # (pool, arch)
    capacity: dict[str, list[tuple[float, int]]]  # pool -> (time, capacity) changes
    decisions: int  # polls shown to decide
    polls_skipped: int

    def peak(self, pool: str) -> int:
        return max((c for _, c in self.capacity.get(pool, [])), default=0)


@dataclass(frozen=True)
class PoolSpec:
    """One pool as the simulation needs it, beside the scaler's view of it."""

    name: str
    boot_seconds: float
    # repository arch -> slowdown (build seconds per native second) of that group.
    factors: Mapping[str, float]


def scaler_settings(settings: Any) -> scaler_config.Settings:
    """The scaler's Settings for a stack: the scaler.json the program renders
    (components/scaler.py), parsed by the scaler's own parser."""
    from components.scaler import AwsTarget, AzureTarget, render_scaler_config
    from components.topology import worker_pools

    text = render_scaler_config(
        settings.scaler,
        worker_pools(settings),
        AzureTarget("estimate", "estimate", "estimate"),
        AwsTarget("estimate", "estimate", "estimate", "estimate"),
    )
    return scaler_config.parse(json.loads(text))


class _Farm:
    def __init__(
        self,
        scaler: scaler_config.Settings,
        specs: Mapping[str, PoolSpec],
        jobs: Iterable[SimJob],
        every_poll: bool,
    ):
        self.scaler = scaler
        self.specs = specs
        self.every_poll = every_poll
        self.pools = {p.name: p for p in scaler.pools}
        self.capacity = {p.name: 0 for p in scaler.pools}
        self.cap_log: dict[str, list[tuple[float, int]]] = {p.name: [] for p in scaler.pools}
        self.machines: list[_Machine] = []
        self.live: dict[str, list[_Machine]] = {p.name: [] for p in scaler.pools}
        self.idle: dict[str, set[_Worker]] = {}
        self.waiting: dict[str, list[tuple[float, int, SimJob]]] = {}
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.groups: dict[tuple[str, str], GroupStats] = {}
        self.running = 0
        self.pending = 0
        self.makespan = 0.0
        self.dirty = True
        self.waiting_down = False
        for job in jobs:
            job.seq = self._next()
            if job.ready <= 0:
                heapq.heappush(
                    self.waiting.setdefault(job.hostarch, []), (-job.minutes, job.seq, job)
                )
            else:
                self._push(job.ready, "arrive", job)
            self.pending += 1

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _push(self, t: float, kind: str, obj: Any) -> None:
        heapq.heappush(self.events, (t, self._next(), kind, obj))

    # -- the clouds ---------------------------------------------------------

    def _create(self, pool: str, t: float, ready: float) -> None:
        spec = self.pools[pool]
        n = self._next()
        m = _Machine(pool, f"{pool}-{n}", t, ready, n)
        for g in spec.groups:
            factor = self.specs[pool].factors[g.arch]
            for wid in g.worker_ids(m.host):
                m.workers.append(_Worker(wid, pool, g.arch, g.hostarch, factor, m, len(m.workers)))
        self.machines.append(m)
        self.live[pool].append(m)
        if ready <= t:
            self._register(m)
        else:
            self._push(ready, "ready", m)

    def _set_capacity(self, pool: str, t: float, capacity: int) -> None:
        self.capacity[pool] = capacity
        log = self.cap_log[pool]
        if not log or log[-1][1] != capacity:
            log.append((t, capacity))

    def _register(self, m: _Machine) -> None:
        if m.deleted is not None:
            return
        m.registered = True
        for w in m.workers:
            self._set_idle(w, True)
        self.dirty = True

    def _set_idle(self, w: _Worker, idle: bool) -> None:
        bucket = self.idle.setdefault(w.hostarch, set())
        if idle:
            w.busy = False
            w.machine.idle += 1
            if not w.machine.drained:
                bucket.add(w)
        else:
            w.busy = True
            w.machine.idle -= 1
            bucket.discard(w)

    # -- OBS's dispatcher ------------------------------------------------------

    def _dispatch(self, t: float) -> None:
        for hostarch, queue in self.waiting.items():
            idle = self.idle.get(hostarch)
            while queue and idle:
                w = max(
                    idle,
                    key=lambda w: (
                        w.machine.idle / len(w.machine.workers),
                        -w.machine.order,
                        -w.pos,
                    ),
                )
                _, _, job = heapq.heappop(queue)
                self._start(w, job, t)

    def _start(self, w: _Worker, job: SimJob, t: float) -> None:
        was_idle = not w.busy
        if was_idle:
            self._set_idle(w, False)
        duration = job.minutes * 60 * w.factor
        stats = self.groups.setdefault((w.pool, w.arch), GroupStats())
        stats.jobs += 1
        stats.busy_seconds += duration
        stats.finish = max(stats.finish, t + duration)
        self.running += 1
        self.pending -= 1
        self._push(t + duration, "done", w)
        if was_idle:
            self.dirty = True
        else:
            self.waiting_down = True

    def _done(self, w: _Worker, t: float) -> None:
        self.running -= 1
        self.makespan = max(self.makespan, t)
        queue = self.waiting.get(w.hostarch)
        if queue and not w.machine.drained:
            # The dispatcher's next job for this architecture: the only idle
            # worker of it is this one (any other would have taken it).
            _, _, job = heapq.heappop(queue)
            self._start(w, job, t)
        else:
            self._set_idle(w, True)
            self.dirty = True

    # -- the scaler ------------------------------------------------------------

    def _observed(self, memory: Memory) -> Observed:
        workers = []
        for pool in self.live.values():
            for m in pool:
                if not m.registered:
                    continue
                for w in m.workers:
                    state = "building" if w.busy else ("down" if m.drained else "idle")
                    workers.append(Worker(w.wid, state, w.hostarch))
        waiting = {a: len(q) for a, q in sorted(self.waiting.items())}
        pools = {
            name: PoolState(
                self.capacity[name],
                tuple(Machine(m.host, m.host, m.created) for m in machines),
            )
            for name, machines in self.live.items()
        }
        return Observed(WorkerStatus(tuple(workers), waiting), pools, memory)

    def _act(self, actions: Iterable[Any], t: float) -> None:
        for a in actions:
            if isinstance(a, SetCapacity):
                spec = self.specs[a.pool]
                for _ in range(a.capacity - self.capacity[a.pool]):
                    self._create(a.pool, t, t + spec.boot_seconds)
                self._set_capacity(a.pool, t, a.capacity)
            elif isinstance(a, Drain):
                m = self._machine(a.pool, a.host)
                m.drained = True
                for w in m.workers:
                    self.idle.get(w.hostarch, set()).discard(w)
            elif isinstance(a, Delete | CompleteLifecycle):
                m = self._machine(a.pool, a.host)
                m.deleted = t
                self.live[a.pool].remove(m)
                for w in m.workers:
                    self.idle.get(w.hostarch, set()).discard(w)
                self._set_capacity(a.pool, t, self.capacity[a.pool] - 1)
            self.dirty = True

    def _machine(self, pool: str, host: str) -> _Machine:
        return next(m for m in self.live[pool] if m.host == host)

    def _timers(self, memory: Memory, after: float) -> float:
        s = self.scaler
        times = [t + s.idle_minutes * 60 for t in memory.idle_since.values()]
        times += [t + CONFIRM_SECONDS for t in memory.drained.values()]
        times += [t + s.unhealthy_minutes * 60 for t in memory.trouble_since.values()]
        times += [
            m.created + s.boot_minutes * 60
            for machines in self.live.values()
            for m in machines
            if not m.registered
        ]
        return min((t for t in times if t > after), default=math.inf)

    def _above_minimum(self) -> bool:
        return any(len(self.live[p.name]) > p.min for p in self.scaler.pools)

    def _fully_idle_machine(self) -> bool:
        return any(
            m.registered and not m.drained and m.idle == len(m.workers)
            for machines in self.live.values()
            for m in machines
        )

    # -- the clock ---------------------------------------------------------------

    def run(self) -> FarmRun:
        for p in self.scaler.pools:
            for _ in range(p.min):
                self._create(p.name, 0.0, 0.0)  # the idle farm is up
            self._set_capacity(p.name, 0.0, p.min)
        self._dispatch(0.0)
        poll = self.scaler.poll_seconds
        memory = Memory()
        last_poll = 0.0
        decisions = skipped = 0
        acted = True
        limit = MAX_SIMULATED_HOURS * 3600
        now = 0.0
        while True:
            # The first poll after the last one and not before the present.
            next_tick = max(last_poll + poll, math.ceil(now / poll - 1e-9) * poll)
            polling = self.every_poll and bool(self.events or self.pending or self._above_minimum())
            if polling or self.dirty or acted or (self.waiting_down and self._fully_idle_machine()):
                due = next_tick
            else:
                timer = self._timers(memory, last_poll)
                due = (
                    math.inf
                    if timer == math.inf
                    else max(next_tick, math.ceil(timer / poll) * poll)
                )
            t_event = self.events[0][0] if self.events else math.inf
            if t_event == math.inf and due == math.inf:
                break
            if t_event <= due:
                now = t_event
                while self.events and self.events[0][0] == now:
                    _, _, kind, obj = heapq.heappop(self.events)
                    if kind == "done":
                        self._done(obj, now)
                    elif kind == "ready":
                        self._register(obj)
                    else:
                        heapq.heappush(
                            self.waiting.setdefault(obj.hostarch, []), (-obj.minutes, obj.seq, obj)
                        )
                        self.dirty = True
                self._dispatch(now)
            else:
                now = due
                if now > limit:
                    raise SimulationError(
                        f"the farm does not finish within {MAX_SIMULATED_HOURS} simulated hours"
                    )
                skipped += round((now - last_poll) / poll) - 1
                self.dirty = self.waiting_down = False
                decision = decide(self._observed(memory), self.scaler, now)
                decisions += 1
                memory = decision.memory
                acted = bool(decision.actions)
                self._act(decision.actions, now)
                self.dirty = False
                self._dispatch(now)
                last_poll = now
        return FarmRun(
            makespan=self.makespan,
            end=now,
            machines=[MachineLife(m.pool, m.host, m.created, m.deleted) for m in self.machines],
            groups=self.groups,
            capacity=self.cap_log,
            decisions=decisions,
            polls_skipped=max(0, skipped),
        )


def simulate_farm(
    scaler: scaler_config.Settings,
    specs: Mapping[str, PoolSpec],
    jobs: Iterable[SimJob],
    every_poll: bool = False,
) -> FarmRun:
    """Run the farm until every job is built and every pool is back at its
    minimum. `every_poll` shows every poll to `decide` (slow; for tests)."""
    return _Farm(scaler, specs, jobs, every_poll).run()


def machine_hours(
    run: FarmRun, pool: str, min_machines: int, on_demand_base: int | None = None
) -> tuple[float, float]:
    """(on-demand, Spot) machine-hours of a pool for the rebuild: every
    machine from its capacity request to its deletion, except the pool's
    minimum after the last build (that is the idle farm's). With
    `on_demand_base` None every hour is on-demand; else the first
    `on_demand_base` machines are (an Auto Scaling group's base capacity)."""
    changes: dict[float, int] = {}
    for m in run.machines:
        if m.pool != pool:
            continue
        changes[m.created] = changes.get(m.created, 0) + 1
        end = run.end if m.deleted is None else m.deleted
        changes[end] = changes.get(end, 0) - 1
    points = sorted(changes)
    od = spot = 0.0
    count = 0
    for a, b in itertools.pairwise(points):
        count += changes[a]
        for lo, hi, after in ((a, min(b, run.makespan), False), (max(a, run.makespan), b, True)):
            if hi <= lo:
                continue
            base = count if on_demand_base is None else min(count, on_demand_base)
            if after:
                counted = max(0, count - min_machines)
                paid_od = max(0, base - min(min_machines, base))
            else:
                counted, paid_od = count, base
            od += paid_od * (hi - lo)
            spot += (counted - paid_od) * (hi - lo)
    return od / 3600, spot / 3600
