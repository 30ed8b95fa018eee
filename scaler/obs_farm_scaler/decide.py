"""The scaler's decision: a pure function of what it observed (no I/O, no clock).

Per pool, desired machines = the maximum over the pool's scheduler
architectures of ceil((waiting jobs routed to the pool + jobs building on the
pool's machines) / worker instances per machine for that architecture),
clamped to [min, max] (buildkite-agent-scaler's formula, per architecture).

Routing when several pools can take an architecture (the hybrid rule):
native pools get the waiting jobs of an architecture first, each up to what
its maximum number of machines can run beside the jobs it is already
building; the emulated pool (the last taker) gets the overflow. Pools of the
same kind keep the configuration's order. The dispatcher still gives a job
to any idle worker that can take it; the rule only decides which pool grows.

Shrinking never lets a cloud choose: the scaler drains exactly the machines
all of whose worker instances have been idle for idleMinutes, waits
CONFIRM_SECONDS, re-checks that none of them started a build, and only then
deletes those machines. A machine with a worker group down (ids missing or
<down>) for unhealthyMinutes, or with no worker at all bootMinutes after it
appeared, is drained and deleted the same way; scale-out then replaces it.
Incomplete information (no /workerstatus, a cloud listing that failed)
changes nothing in the pool concerned.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from .config import Pool, Settings
from .model import (
    DOWN_STATES,
    Action,
    CompleteLifecycle,
    Decision,
    Delete,
    Drain,
    Machine,
    Memory,
    Observed,
    PoolDecision,
    PoolState,
    SetCapacity,
    Worker,
)

# After a drain, how long to wait before trusting that no build started: the
# dispatcher reads a worker's idle entry just before its PUT /build, whose
# timeout is 10 s (bs_dispatch assignjob); a build it started in that window
# shows as <building> once the PUT returns.
CONFIRM_SECONDS = 15.0


def route(
    waiting: Mapping[str, int],
    pools: Sequence[Pool],
    building: Mapping[str, Mapping[str, int]],
) -> dict[str, dict[str, int]]:
    """Waiting jobs per pool and scheduler arch, by the hybrid rule (module doc)."""
    share: dict[str, dict[str, int]] = {p.name: {} for p in pools}
    for arch, jobs in sorted(waiting.items()):
        takers = [p for p in pools if p.instances_for(arch) > 0]
        # sorted() is stable: configuration order among natives and emulated.
        takers.sort(key=lambda p: not p.native_for(arch))
        left = max(0, jobs)
        for i, p in enumerate(takers):
            room = max(0, p.max * p.instances_for(arch) - building.get(p.name, {}).get(arch, 0))
            take = left if i == len(takers) - 1 else min(left, room)
            share[p.name][arch] = take
            left -= take
    return share


def desired_machines(pool: Pool, demand: Mapping[str, int]) -> int:
    need = 0
    for arch, jobs in demand.items():
        per_machine = pool.instances_for(arch)
        if per_machine:
            need = max(need, math.ceil(jobs / per_machine))
    return min(pool.max, max(pool.min, need))


def _machine_health(
    pool: Pool, m: Machine, workers: Sequence[Worker], age: float, settings: Settings
) -> tuple[bool, bool, str]:
    """(registered, some group down, text) for one machine."""
    by_id = {w.workerid: w for w in workers}
    expected = pool.worker_ids(m.host)
    registered = any(wid in by_id for wid in expected)
    missing = [wid for wid in expected if wid not in by_id or by_id[wid].state in DOWN_STATES]
    if not registered:
        return False, False, f"no worker registered after {age / 60:.1f} min"
    return True, bool(missing), f"workers down or missing: {' '.join(missing)}"


def _pool_decide(
    pool: Pool,
    state: PoolState,
    share: Mapping[str, int],
    by_host: Mapping[str, Sequence[Worker]],
    mem: dict[str, dict[str, float]],
    settings: Settings,
    now: float,
) -> tuple[list[Action], PoolDecision]:
    actions: list[Action] = []
    notes: list[str] = []
    drained = mem["drained"]

    def drain(m: Machine, reason: str) -> None:
        actions.append(Drain(pool.name, m.host, reason))
        drained[m.host] = now
        notes.append(f"drain {m.host} ({reason})")

    # Jobs already running on this pool's machines that stay (not drained).
    building: dict[str, int] = defaultdict(int)
    for m in state.machines:
        if m.host not in drained and not m.terminating:
            for w in by_host.get(m.host, ()):
                if w.state == "building":
                    building[w.hostarch] += 1
    demand = {
        a: building.get(a, 0) + share.get(a, 0) for a in sorted({g.hostarch for g in pool.groups})
    }
    desired = desired_machines(pool, demand)

    # Machines already on their way out: complete them when safe.
    for m in state.machines:
        if m.host not in drained:
            continue
        busy = [w.workerid for w in by_host.get(m.host, ()) if w.state == "building"]
        if now - drained[m.host] < CONFIRM_SECONDS:
            notes.append(f"confirming drain of {m.host}")
        elif busy:
            notes.append(f"{m.host} drained, still building {' '.join(busy)}")
        elif m.terminating:
            actions.append(CompleteLifecycle(pool.name, m.id, m.host))
            notes.append(f"release {m.host} to its termination (drained, idle)")
        else:
            actions.append(Delete(pool.name, m.id, m.host, "drained and idle"))
            notes.append(f"delete {m.host} (drained, no build started)")

    # The cloud is terminating it (AWS lifecycle hook): drain now.
    for m in state.machines:
        if m.terminating and m.host not in drained:
            drain(m, "terminating: lifecycle hook")

    # Health: replace machines that never came up or lost a worker group.
    live: list[Machine] = []
    for m in state.machines:
        if m.terminating or m.host in drained:
            continue
        first = mem["first_seen"].setdefault(m.host, now)
        age = now - (m.created if m.created is not None else first)
        registered, group_down, text = _machine_health(
            pool, m, by_host.get(m.host, ()), age, settings
        )
        if not registered:
            mem["trouble_since"].pop(m.host, None)
            if age >= settings.boot_minutes * 60:
                drain(m, f"never registered: {text}")
                continue
        elif group_down:
            since = mem["trouble_since"].setdefault(m.host, now)
            if now - since >= settings.unhealthy_minutes * 60:
                drain(m, f"unhealthy for {(now - since) / 60:.1f} min: {text}")
                continue
        else:
            mem["trouble_since"].pop(m.host, None)
        live.append(m)

    out_of_service = sum(1 for m in state.machines if m.host in drained and not m.terminating)
    # The cloud's target still counts drained machines until they are deleted.
    current = state.capacity - out_of_service
    if desired > current:
        target = min(pool.max, desired + out_of_service)
        if target > state.capacity:
            actions.append(SetCapacity(pool.name, target))
            notes.insert(0, f"scale out to capacity {target}")
        else:
            notes.insert(0, f"need {desired}, at most {pool.max} with {out_of_service} draining")
    elif desired < current:
        idle_for = settings.idle_minutes * 60
        idle_since = mem["idle_since"]

        def idle_time(m: Machine) -> float | None:
            ids = pool.worker_ids(m.host)
            present = {w.workerid: w for w in by_host.get(m.host, ())}
            if any(wid not in present or present[wid].state != "idle" for wid in ids):
                return None
            return now - max(idle_since.get(wid, now) for wid in ids)

        timed = [(idle_time(m), m) for m in live]
        candidates = sorted(
            ((t, m) for t, m in timed if t is not None and t >= idle_for),
            key=lambda tm: (-tm[0], tm[1].host),
        )
        surplus = current - desired
        for _, m in candidates[:surplus]:
            drain(m, f"all workers idle for {settings.idle_minutes:g} min")
        if not candidates:
            notes.insert(
                0, f"{surplus} too many, no machine idle for {settings.idle_minutes:g} min"
            )
    else:
        notes.insert(0, "steady")
    decision = PoolDecision(pool.name, demand, current, desired, "; ".join(notes))
    return actions, decision


def decide(observed: Observed, settings: Settings, now: float) -> Decision:
    status = observed.status
    old = observed.memory
    if status is None:
        blind = tuple(
            PoolDecision(p.name, {}, None, None, "repserver unreachable: nothing changes")
            for p in settings.pools
        )
        return Decision((), blind, old)

    mem: dict[str, dict[str, float]] = {
        "idle_since": {
            w.workerid: old.idle_since.get(w.workerid, now)
            for w in status.workers
            if w.state == "idle"
        },
        "first_seen": dict(old.first_seen),
        "trouble_since": dict(old.trouble_since),
        "drained": dict(old.drained),
    }
    by_host: dict[str, list[Worker]] = defaultdict(list)
    for w in status.workers:
        by_host[w.host].append(w)

    host_pool: dict[str, str] = {}
    for name, st in observed.pools.items():
        for m in st.machines if st else ():
            host_pool[m.host] = name
    building: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for w in status.workers:
        if w.state == "building" and w.host in host_pool and w.host not in mem["drained"]:
            building[host_pool[w.host]][w.hostarch] += 1
    shares = route(status.waiting, settings.pools, building)

    # Forget machines no cloud lists any more, once every cloud answered (a
    # machine of a pool whose listing failed keeps its history).
    if all(observed.pools.get(p.name) is not None for p in settings.pools):
        for key in ("first_seen", "trouble_since", "drained"):
            mem[key] = {h: t for h, t in mem[key].items() if h in host_pool}

    actions: list[Action] = []
    lines: list[PoolDecision] = []
    for pool in settings.pools:
        st = observed.pools.get(pool.name)
        if st is None:
            lines.append(
                PoolDecision(
                    pool.name, shares[pool.name], None, None, "cloud API failed: nothing changes"
                )
            )
            continue
        acts, line = _pool_decide(pool, st, shares[pool.name], by_host, mem, settings, now)
        actions += acts
        lines.append(line)
    unroutable = {a: n for a, n in status.waiting.items() if n and not any(
        p.instances_for(a) for p in settings.pools)}  # fmt: skip
    if unroutable:
        lines.append(
            PoolDecision("-", unroutable, None, None, "no pool builds these architectures")
        )
    memory = Memory(
        idle_since=mem["idle_since"],
        first_seen=mem["first_seen"],
        trouble_since=mem["trouble_since"],
        drained=mem["drained"],
    )
    return Decision(tuple(actions), tuple(lines), memory)
