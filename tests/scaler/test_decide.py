"""decide() with plain data: every rule of the module docstring."""

from __future__ import annotations

import pytest
from obs_farm_scaler.decide import CONFIRM_SECONDS, decide, desired_machines, route
from obs_farm_scaler.model import (
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

from tests.scaler.helpers import DEV_POOL, GRAVITON_POOL, pool, settings

NOW = 1_000_000.0
MIN = 60.0
DEV = settings()
HYBRID = settings(pool(DEV_POOL, min=1, max=3), GRAVITON_POOL)
HOSTARCH = {"x86_64": "x86_64", "armv7hl": "armv7l", "aarch64": "aarch64"}


def workers(host: str, state: str = "idle", archs=("x86_64", "armv7hl", "aarch64"), n=1, **states):
    """The dev pool's workers of one machine; states: {'aarch64': 'building'}."""
    return [
        Worker(f"{host}:{a}-{i}", states.get(a, state), HOSTARCH[a], f"http://10.0.0.1:4100{i}")
        for a in archs
        for i in range(1, n + 1)
    ]


def observe(ws=(), waiting=None, pools=None, memory=None, capacity=None):
    status = WorkerStatus(tuple(ws), waiting or {})
    return Observed(status, pools or {}, memory or Memory())


def dev_state(*hosts, capacity=None, **kw):
    machines = tuple(Machine(f"vm-{h}", h, created=NOW - 60 * MIN, **kw) for h in hosts)
    return {"azure-x86": PoolState(len(hosts) if capacity is None else capacity, machines)}


def idle_memory(ws, since):
    return Memory(idle_since={w.workerid: since for w in ws if w.state == "idle"})


# --- desired count -------------------------------------------------------


def test_from_zero_waiting_jobs_request_capacity():
    d = decide(observe(waiting={"aarch64": 1}, pools=dev_state()), DEV, NOW)
    assert d.actions == (SetCapacity("azure-x86", 1),)
    (line,) = d.pools
    assert line.desired == 1 and line.current == 0
    assert line.line().startswith(
        "pool=azure-x86 demand=aarch64=1,armv7l=0,x86_64=0 current=0 desired=1 why=scale out to capacity 1"
    )


def test_desired_is_the_max_over_archs_of_ceil_demand_per_machine_clamped():
    p = settings(pool(DEV_POOL, max=10, groups=[
        {"arch": "x86_64", "hostarch": "x86_64", "instances": 2, "execution": "native"},
        {"arch": "aarch64", "hostarch": "aarch64", "instances": 3, "execution": "emulated"},
    ])).pools[0]  # fmt: skip
    assert desired_machines(p, {"x86_64": 3, "aarch64": 3}) == 2  # ceil(3/2)=2 > ceil(3/3)=1
    assert desired_machines(p, {"x86_64": 0, "aarch64": 7}) == 3
    assert desired_machines(p, {"x86_64": 100}) == 10  # max
    assert desired_machines(p, {}) == 0
    assert desired_machines(pool_min := settings(pool(DEV_POOL, min=1)).pools[0], {}) == 1
    assert pool_min.min == 1
    assert desired_machines(p, {"s390x": 5}) == 0  # an arch the pool does not build


def test_building_jobs_count_as_demand_and_waiting_adds_to_them():
    ws = workers("a", aarch64="building")
    d = decide(observe(ws, {"aarch64": 1}, dev_state("a"), idle_memory(ws, NOW)), DEV, NOW)
    assert d.actions == (SetCapacity("azure-x86", 2),)
    assert dict(d.pools[0].demand) == {"aarch64": 2, "armv7l": 0, "x86_64": 0}


def test_min_is_kept_without_demand():
    s = settings(pool(DEV_POOL, min=1))
    assert decide(observe(pools=dev_state()), s, NOW).actions == (SetCapacity("azure-x86", 1),)


def test_blocked_jobs_are_not_demand():
    from obs_farm_scaler.repserver import parse_workerstatus

    xml = b'<workerstatus clients="0"><waiting arch="aarch64" jobs="0"/><blocked arch="aarch64" jobs="7"/></workerstatus>'
    status = parse_workerstatus(xml)
    d = decide(Observed(status, dev_state()), DEV, NOW)
    assert d.actions == ()
    assert d.pools[0].why == "steady"


def test_capacity_is_never_lowered_by_setting_a_smaller_number():
    # 2 machines, no demand, but one is building and one only just became idle.
    ws = workers("a", x86_64="building") + workers("b")
    d = decide(observe(ws, {}, dev_state("a", "b"), idle_memory(ws, NOW - MIN)), DEV, NOW)
    assert not any(isinstance(a, SetCapacity) for a in d.actions)
    assert d.actions == ()
    assert "1 too many, no machine idle for 10 min" in d.pools[0].why


# --- scale in ------------------------------------------------------------


def test_only_machines_idle_for_idle_minutes_are_drained():
    ws = workers("busy", x86_64="building") + workers("idle1") + workers("fresh")
    mem = Memory(idle_since={
        **{w.workerid: NOW - 11 * MIN for w in workers("idle1")},
        **{w.workerid: NOW - 3 * MIN for w in workers("fresh")},
        "busy:armv7hl-1": NOW - 30 * MIN, "busy:aarch64-1": NOW - 30 * MIN,
    })  # fmt: skip
    s = settings(pool(DEV_POOL, max=3))
    d = decide(observe(ws, {}, dev_state("busy", "idle1", "fresh"), mem), s, NOW)
    assert d.actions == (Drain("azure-x86", "idle1", "all workers idle for 10 min"),)
    assert d.memory.drained == {"idle1": NOW}
    # idle times carry over; "fresh" keeps its own
    assert d.memory.idle_since["fresh:x86_64-1"] == NOW - 3 * MIN


def test_surplus_limits_how_many_are_drained_longest_idle_first():
    ws = workers("a") + workers("b") + workers("c")
    mem = Memory(idle_since={w.workerid: NOW - (20 if w.host == "b" else 15) * MIN for w in ws})
    s = settings(pool(DEV_POOL, min=1, max=3))
    d = decide(observe(ws, {}, dev_state("a", "b", "c"), mem), s, NOW)
    assert [a.host for a in d.actions if isinstance(a, Drain)] == ["b", "a"]


def test_a_machine_with_an_unregistered_worker_is_not_a_scale_in_candidate():
    ws = workers("a", archs=("x86_64", "aarch64"))  # armv7hl-1 never registered
    d = decide(observe(ws, {}, dev_state("a"), idle_memory(ws, NOW - 60 * MIN)), DEV, NOW)
    assert not any(isinstance(a, Drain | Delete) for a in d.actions)


def test_drain_is_confirmed_before_delete_and_a_started_build_stops_it():
    ws = workers("a", state="down")
    mem = Memory(drained={"a": NOW})
    st = dev_state("a", capacity=1)
    early = decide(observe(ws, {}, st, mem), DEV, NOW + CONFIRM_SECONDS - 1)
    assert early.actions == ()
    assert "confirming drain of a" in early.pools[0].why
    raced = workers("a", state="down", aarch64="building")
    busy = decide(observe(raced, {}, st, mem), DEV, NOW + CONFIRM_SECONDS + 1)
    assert busy.actions == ()
    assert "a drained, still building a:aarch64-1" in busy.pools[0].why
    # its build is not demand that keeps the pool: the drained machine leaves
    assert busy.pools[0].desired == 0
    done = decide(observe(ws, {}, st, mem), DEV, NOW + CONFIRM_SECONDS + 1)
    assert done.actions == (Delete("azure-x86", "vm-a", "a", "drained and idle"),)


def test_scale_out_while_draining_keeps_the_drained_machine_counted():
    ws = workers("a", state="down")
    mem = Memory(drained={"a": NOW})
    d = decide(observe(ws, {"x86_64": 1}, dev_state("a", capacity=1), mem), DEV, NOW + 1)
    assert d.actions == (SetCapacity("azure-x86", 2),)
    assert d.pools[0].current == 0


# --- incomplete information ------------------------------------------------


def test_repserver_unreachable_changes_nothing():
    mem = Memory(drained={"a": NOW - 600})
    obs = Observed(None, dev_state("a"), mem)
    d = decide(obs, DEV, NOW)
    assert d.actions == () and d.memory is mem
    assert d.pools[0].why == "repserver unreachable: nothing changes"


def test_cloud_failure_changes_nothing_in_that_pool_only():
    ws = workers("a") + [Worker(f"i-1:aarch64-{i}", "idle", "aarch64") for i in range(1, 5)]
    mem = Memory(idle_since={w.workerid: NOW - 60 * MIN for w in ws}, drained={"i-9": NOW - 600})
    pools = {"azure-x86": None, "aws-graviton": PoolState(0, ())}
    d = decide(observe(ws, {"aarch64": 20}, pools, mem), HYBRID, NOW)
    assert d.actions == (SetCapacity("aws-graviton", 4),)
    assert d.pools[0].why == "cloud API failed: nothing changes"
    # history of machines whose cloud did not answer is kept
    assert d.memory.drained == {"i-9": NOW - 600}


def test_workers_of_hosts_the_cloud_does_not_list_are_ignored():
    ghost = workers("ghost", aarch64="building")
    d = decide(observe(ghost, {}, dev_state(), idle_memory(ghost, NOW - 60 * MIN)), DEV, NOW)
    assert d.actions == ()
    assert d.pools[0].demand["aarch64"] == 0


def test_forgets_machines_no_cloud_lists():
    mem = Memory(first_seen={"gone": NOW - 99}, drained={"gone": NOW - 99, "a": NOW - 1})
    ws = workers("a", state="down")
    d = decide(observe(ws, {}, dev_state("a"), mem), DEV, NOW)
    assert d.memory.drained == {"a": NOW - 1}
    assert "gone" not in d.memory.first_seen


# --- health ----------------------------------------------------------------


def test_a_group_down_longer_than_unhealthy_minutes_is_drained_and_replaced():
    ws = workers("a", armv7hl="down")
    st = dev_state("a")
    first = decide(observe(ws, {}, st, idle_memory(ws, NOW)), DEV, NOW)
    assert first.actions == () and first.memory.trouble_since == {"a": NOW}
    later = decide(observe(ws, {}, st, first.memory), DEV, NOW + 5 * MIN)
    assert later.actions == (
        Drain("azure-x86", "a", "unhealthy for 5.0 min: workers down or missing: a:armv7hl-1"),
    )
    # after the confirm wait: deleted; the min (1) then brings a new machine
    s = settings(pool(DEV_POOL, min=1))
    gone = decide(observe(ws, {}, st, later.memory), s, NOW + 5 * MIN + CONFIRM_SECONDS)
    assert gone.actions == (
        Delete("azure-x86", "vm-a", "a", "drained and idle"),
        SetCapacity("azure-x86", 2),
    )


def test_unhealthy_replacement_scales_out_within_max():
    ws = workers("a", armv7hl="down")
    mem = Memory(trouble_since={"a": NOW - 6 * MIN})
    s = settings(pool(DEV_POOL, min=1))
    d = decide(observe(ws, {}, dev_state("a"), mem), s, NOW)
    assert d.actions[0] == Drain(
        "azure-x86", "a", "unhealthy for 6.0 min: workers down or missing: a:armv7hl-1"
    )
    assert d.actions[1:] == (SetCapacity("azure-x86", 2),)


def test_a_missing_worker_id_counts_as_down_and_recovery_clears_it():
    partial = workers("a", archs=("x86_64", "aarch64"))
    d = decide(observe(partial, {}, dev_state("a")), DEV, NOW)
    assert d.memory.trouble_since == {"a": NOW}
    healed = decide(observe(workers("a"), {}, dev_state("a"), d.memory), DEV, NOW + 10 * MIN)
    assert healed.memory.trouble_since == {}
    assert not any(isinstance(a, Drain) for a in healed.actions)


def test_a_machine_that_never_registers_is_reaped_after_the_boot_timeout():
    young = {"azure-x86": PoolState(1, (Machine("vm-a", "a", created=NOW - 29 * MIN),))}
    assert decide(observe((), {}, young), DEV, NOW).actions == ()
    old = {"azure-x86": PoolState(1, (Machine("vm-a", "a", created=NOW - 31 * MIN),))}
    d = decide(observe((), {}, old), DEV, NOW)
    assert d.actions == (
        Drain("azure-x86", "a", "never registered: no worker registered after 31.0 min"),
    )
    # a machine without a creation time is timed from when the scaler first saw it
    unknown = {"azure-x86": PoolState(1, (Machine("vm-a", "a"),))}
    seen = decide(observe((), {}, unknown), DEV, NOW)
    assert seen.actions == () and seen.memory.first_seen == {"a": NOW}
    assert decide(observe((), {}, unknown, seen.memory), DEV, NOW + 31 * MIN).actions[0] == Drain(
        "azure-x86", "a", "never registered: no worker registered after 31.0 min")  # fmt: skip


# --- AWS lifecycle hook --------------------------------------------------------


def test_terminating_wait_is_drained_then_released_when_idle():
    s = settings(GRAVITON_POOL)
    ws = [
        Worker(f"i-1:aarch64-{i}", "building" if i == 1 else "idle", "aarch64") for i in range(1, 5)
    ]
    st = {"aws-graviton": PoolState(1, (Machine("i-1", "i-1", terminating=True),))}
    d = decide(observe(ws, {}, st), s, NOW)
    assert d.actions[0] == Drain("aws-graviton", "i-1", "terminating: lifecycle hook")
    busy = decide(observe(ws, {}, st, d.memory), s, NOW + CONFIRM_SECONDS)
    assert not any(isinstance(a, CompleteLifecycle) for a in busy.actions)
    done_ws = [Worker(f"i-1:aarch64-{i}", "down", "aarch64") for i in range(1, 5)]
    done = decide(observe(done_ws, {}, st, d.memory), s, NOW + CONFIRM_SECONDS)
    assert CompleteLifecycle("aws-graviton", "i-1", "i-1") in done.actions
    assert not any(isinstance(a, Delete) for a in done.actions)


# --- hybrid routing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("waiting", "graviton_building", "want"),
    [
        # native Graviton (4 machines x 4 aarch64 instances = 16 slots) first
        ({"aarch64": 10}, 0, {"aws-graviton": {"aarch64": 10}, "azure-x86": {"aarch64": 0}}),
        # overflow beyond the native pool's max goes to the emulated pool
        ({"aarch64": 20}, 0, {"aws-graviton": {"aarch64": 16}, "azure-x86": {"aarch64": 4}}),
        # slots already building on the native pool are not free
        ({"aarch64": 5}, 14, {"aws-graviton": {"aarch64": 2}, "azure-x86": {"aarch64": 3}}),
        (
            {"armv7l": 3, "x86_64": 2},
            0,
            {"aws-graviton": {"armv7l": 3}, "azure-x86": {"armv7l": 0, "x86_64": 2}},
        ),
    ],
)
def test_hybrid_rule_native_first_emulated_takes_the_overflow(waiting, graviton_building, want):
    share = route(waiting, HYBRID.pools, {"aws-graviton": {"aarch64": graviton_building}})
    assert share == want


def test_hybrid_rule_prefers_native_even_when_the_emulated_pool_is_listed_first():
    # HYBRID lists azure first; the rule is by execution, not by order
    assert route({"aarch64": 1}, HYBRID.pools, {}) == {
        "azure-x86": {"aarch64": 0}, "aws-graviton": {"aarch64": 1}}  # fmt: skip


def test_hybrid_from_zero_grows_graviton_and_keeps_azure_at_its_min():
    pools = {"azure-x86": PoolState(0, ()), "aws-graviton": PoolState(0, ())}
    d = decide(observe((), {"aarch64": 6}, pools), HYBRID, NOW)
    assert d.actions == (SetCapacity("azure-x86", 1), SetCapacity("aws-graviton", 2))


def test_hybrid_overflow_grows_the_emulated_pool_beyond_its_min():
    pools = {"azure-x86": PoolState(1, ()), "aws-graviton": PoolState(4, ())}
    d = decide(observe((), {"aarch64": 20}, pools), HYBRID, NOW)
    # 16 native slots are full; 4 overflow jobs at 1 aarch64 instance per
    # azure-x86 machine want 4 machines: clamped to its max of 3
    assert d.actions == (SetCapacity("azure-x86", 3),)
    assert dict(d.pools[0].demand)["aarch64"] == 4


def test_waiting_jobs_no_pool_builds_are_reported():
    s = settings(pool(DEV_POOL, groups=[DEV_POOL["groups"][0]]))
    d = decide(observe((), {"aarch64": 3}, dev_state()), s, NOW)
    assert d.actions == ()
    assert (
        d.pools[-1].line()
        == "pool=- demand=aarch64=3 current=? desired=? why=no pool builds these architectures"
    )
