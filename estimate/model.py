"""How long and how much: a whole-archive rebuild simulated on a stack's farm.

Pure: settings, a workload and a price table in, an `Estimate` out.

The simulation, per architecture: every job of the workload is taken
longest first and given to the worker instance (of any pool building that
architecture) on which it would finish earliest. An instance's speed is its
execution kind's slowdown (estimate/slowdowns.py) and its `make -j`. Each
pool starts with its minimum machines up; the others are requested as the
pool's scaling allows (Azure: the deployed CPU rule adds one VM per 10
minutes; AWS: target tracking asks for them at once) and take part after
their boot time. Machines leave when idle (Azure, after the scale-in
window) or stay (AWS instances are protected from scale-in until a drain
step exists) or stay because they are the minimum.

Ignored: build dependencies (OBS builds a package only after what it needs;
the model assumes the queue is always full), the scheduler's and
dispatcher's own time, downloads, publishing, failed builds and retries,
Spot evictions, OBS's own dispatch order (it is not longest-first), CPU
differences between Azure x86-64 sizes, and aarch64 workers taking armv7l
jobs (OBS allows it on CPUs with AArch32).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from components.topology import WorkerGroup, WorkerPool, worker_pools
from config.catalog import GRAVITON_TYPES
from config.model import FarmSettings
from estimate.prices import HOURS_PER_MONTH, PriceTable, premium_ssd_tier
from estimate.slowdowns import EMULATED, GRAVITON_GENERATION, NATIVE, parallel_speed
from estimate.workload import Workload


@dataclass(frozen=True)
class Scaling:
    boot_minutes: float
    # Minutes between two added machines while the queue is full; 0: all at once.
    step_minutes: float
    # Minutes an idle machine stays before it is removed; None: it stays.
    idle_minutes: float | None


SCALING = {
    # components/azure_workers.py: +1 VM when CPU > 60% over 10 min, 10 min
    # cooldown; -1 VM below 10% over 30 min. Boot: VM allocation and the
    # worker cloud-init (packages installed at boot), assumed 5 min.
    "azure": Scaling(boot_minutes=5, step_minutes=10, idle_minutes=30),
    # components/aws_workers.py: target tracking at 60% CPU, 300 s warm-up;
    # new instances are protected from scale-in and no drain step exists.
    "aws": Scaling(boot_minutes=5, step_minutes=0, idle_minutes=None),
}


def group_slowdown(pool: WorkerPool, group: WorkerGroup) -> float:
    """Slowdown of one build on this group against native Azure x86-64."""
    if pool.cloud == "aws":
        first = GRAVITON_TYPES[pool.vm_size.split(",")[0]]
        base = GRAVITON_GENERATION[first.generation].factor
    else:
        base = NATIVE.factor
    return base * (EMULATED[group.arch].factor if group.emulated else 1.0)


@dataclass
class GroupResult:
    pool: str
    arch: str
    execution: str
    instances_min: int
    instances_max: int
    jobs_per_instance: int
    slowdown: float
    jobs: int = 0
    busy_hours: float = 0.0
    finish_hours: float = 0.0


@dataclass
class PoolResult:
    pool: WorkerPool
    vm_hours: float = 0.0
    vms_used: int = 0
    cost: float | None = 0.0


@dataclass
class Estimate:
    stack: str
    workload: str
    hours: float
    vm_hours: float
    groups: list[GroupResult]
    pools: list[PoolResult]
    currency: str
    prices_as_of: str | None
    rebuild_cost: float | None
    idle_cost_per_month: float | None
    missing_prices: list[str] = field(default_factory=list)
    stale_prices: list[str] = field(default_factory=list)
    unbuildable: list[str] = field(default_factory=list)

    @property
    def bottleneck(self) -> GroupResult | None:
        return max(self.groups, key=lambda g: g.finish_hours, default=None)


@dataclass
class _Machine:
    pool: int
    index: int
    requested: float
    available: float
    last_finish: float = 0.0
    used: bool = False


def _machines(pools: list[WorkerPool]) -> list[_Machine]:
    out = []
    for p_i, pool in enumerate(pools):
        sc = SCALING[pool.cloud]
        for k in range(pool.max_vms):
            if k < pool.min_vms:
                out.append(_Machine(p_i, k, 0.0, 0.0))
            else:
                requested = (k - pool.min_vms) * sc.step_minutes
                out.append(_Machine(p_i, k, requested, requested + sc.boot_minutes))
    return out


def simulate(
    pools: list[WorkerPool], workload: Workload
) -> tuple[float, list[GroupResult], list[_Machine], list[str]]:
    """Makespan (minutes), per-group results, machines and unbuildable archs."""
    machines = _machines(pools)
    by_pool: dict[int, list[_Machine]] = {}
    for m in machines:
        by_pool.setdefault(m.pool, []).append(m)
    groups: list[GroupResult] = []
    makespan = 0.0
    unbuildable = []
    for arch in workload.architectures:
        jobs = sorted((j.minutes for j in workload.jobs_for(arch)), reverse=True)
        # One heap of (free at, machine id, slot) per group building this arch.
        lanes = []
        for p_i, pool in enumerate(pools):
            for g in pool.groups:
                if g.arch != arch:
                    continue
                speed = parallel_speed(g.jobs) / parallel_speed(workload.reference_jobs)
                result = GroupResult(
                    pool.name,
                    arch,
                    "emulated" if g.emulated else "native",
                    g.instances * pool.min_vms,
                    g.instances * pool.max_vms,
                    g.jobs,
                    group_slowdown(pool, g),
                )
                groups.append(result)
                heap = [
                    (m.available, (m.pool, m.index), n, m)
                    for m in by_pool.get(p_i, [])
                    for n in range(g.instances)
                ]
                heapq.heapify(heap)
                lanes.append((heap, result.slowdown * speed, result))
        if not lanes:
            unbuildable.append(arch)
            continue
        for minutes in jobs:
            best = min(lanes, key=lambda lane: lane[0][0][0] + minutes * lane[1])
            heap, factor, result = best
            start, key, n, machine = heapq.heappop(heap)
            duration = minutes * factor
            end = start + duration
            heapq.heappush(heap, (end, key, n, machine))
            machine.last_finish = max(machine.last_finish, end)
            machine.used = True
            result.jobs += 1
            result.busy_hours += duration / 60
            result.finish_hours = max(result.finish_hours, end / 60)
            makespan = max(makespan, end)
    return makespan, groups, machines, unbuildable


def _vm_minutes(m: _Machine, pool: WorkerPool, makespan: float) -> float:
    sc = SCALING[pool.cloud]
    if m.index < pool.min_vms or sc.idle_minutes is None:
        end = makespan
    elif m.requested >= makespan:
        return 0.0  # the rebuild was over before this machine was asked for
    else:
        end = (m.last_finish if m.used else m.available) + sc.idle_minutes
    return max(0.0, end - m.requested)


class _Pricer:
    def __init__(self, table: PriceTable, today_iso: str):
        self.table = table
        self.missing: list[str] = []
        self.used: list[str] = []
        self.today = today_iso

    def rate(self, key: str, spot: bool = False) -> float | None:
        price = self.table.get(key)
        rate = price.rate(spot) if price else None
        if rate is None:
            label = (
                f"{key} ({'spot' if spot else 'onDemand'})"
                if "/vm/" in key or "/ec2/" in key
                else key
            )
            if label not in self.missing:
                self.missing.append(label)
            return None
        if key not in self.used:
            self.used.append(key)
        return rate


def _add(total: float | None, part: float | None) -> float | None:
    return None if total is None or part is None else total + part


def _mul(a: float | None, b: float) -> float | None:
    return None if a is None else a * b


def estimate(
    stack: str,
    settings: FarmSettings,
    workload: Workload,
    table: PriceTable,
    today: str,
) -> Estimate:
    """The rebuild estimate for one stack; `today` (ISO date) dates the price check."""
    import datetime

    from estimate.prices import STALE_AFTER_DAYS

    table = table.with_override(dict(settings.prices)) if settings.prices else table
    pools = worker_pools(settings)
    makespan, groups, machines, unbuildable = simulate(pools, workload)
    pricer = _Pricer(table, today)
    az, aws = settings.location, settings.aws_region
    pool_results = []
    rebuild_cost: float | None = 0.0
    idle_cost: float | None = 0.0
    total_vm_hours = 0.0
    for p_i, pool in enumerate(pools):
        pr = PoolResult(pool)
        mins = [(m, _vm_minutes(m, pool, makespan)) for m in machines if m.pool == p_i]
        pr.vm_hours = sum(v for _, v in mins) / 60
        pr.vms_used = sum(1 for m, v in mins if v > 0)
        total_vm_hours += pr.vm_hours
        if pool.cloud == "azure":
            od = pricer.rate(f"azure/{az}/vm/{pool.vm_size}", spot=False) if not pool.spot else None
            sp = pricer.rate(f"azure/{az}/vm/{pool.vm_size}", spot=True) if pool.spot else None
            per_hour = sp if pool.spot else od
            disk = pricer.rate(
                f"azure/{az}/premiumSsd/{premium_ssd_tier(settings.azure_workers.os_disk_size_gb)}"
            )
            disk_hour = _mul(disk, 1 / HOURS_PER_MONTH)
            vm_total = _add(per_hour, disk_hour)
            pr.cost = _mul(vm_total, pr.vm_hours)
            idle_cost = _add(idle_cost, _mul(vm_total, pool.min_vms * HOURS_PER_MONTH))
        else:
            g = settings.graviton
            assert g is not None
            key = f"aws/{aws}/ec2/{pool.vm_size.split(',')[0]}"
            od = pricer.rate(key, spot=False)
            sp = pricer.rate(key, spot=True) if pool.spot else od
            gp3 = pricer.rate(f"aws/{aws}/ebsGp3")
            vol_hour = _mul(gp3, g.volume_size_gb / HOURS_PER_MONTH)
            base = min(g.on_demand_base, pool.max_vms)
            cost: float | None = 0.0
            for m, minutes in mins:
                rate = od if m.index < base or not pool.spot else sp
                cost = _add(cost, _mul(_add(rate, vol_hour), minutes / 60))
            pr.cost = cost
            idle_rates: float | None = 0.0
            for k in range(pool.min_vms):
                rate = od if k < base or not pool.spot else sp
                idle_rates = _add(idle_rates, _add(rate, vol_hour))
            idle_cost = _add(idle_cost, _mul(idle_rates, HOURS_PER_MONTH))
        rebuild_cost = _add(rebuild_cost, pr.cost)
        pool_results.append(pr)
    fixed = _fixed_hourly(settings, pricer)
    rebuild_cost = _add(rebuild_cost, _mul(fixed, makespan / 60))
    idle_cost = _add(idle_cost, _mul(fixed, HOURS_PER_MONTH))
    used_dates = [
        p.as_of for k in pricer.used if (p := table.get(k)) is not None and p.as_of is not None
    ]
    now = datetime.date.fromisoformat(today)
    stale = sorted(
        f"{k} ({p.as_of.isoformat()})"
        for k in pricer.used
        if (p := table.get(k)) is not None
        and p.as_of is not None
        and (now - p.as_of).days > STALE_AFTER_DAYS
    )
    if (now - table.compiled).days > STALE_AFTER_DAYS:
        stale.insert(0, f"the price table (compiled {table.compiled.isoformat()})")
    return Estimate(
        stack=stack,
        workload=workload.name,
        hours=makespan / 60,
        vm_hours=total_vm_hours,
        groups=groups,
        pools=pool_results,
        currency=table.currency,
        prices_as_of=min(used_dates).isoformat() if used_dates else None,
        rebuild_cost=rebuild_cost,
        idle_cost_per_month=idle_cost,
        missing_prices=pricer.missing,
        stale_prices=stale,
        unbuildable=unbuildable,
    )


def _fixed_hourly(settings: FarmSettings, pricer: _Pricer) -> float | None:
    """What runs whatever the workers do: server, its disks, gateways, addresses."""
    az = settings.location
    s = settings.server
    total = pricer.rate(f"azure/{az}/vm/{s.vm_size}")
    for size in (s.os_disk_size_gb, s.data_disk_size_gb):
        disk = pricer.rate(f"azure/{az}/premiumSsd/{premium_ssd_tier(size)}")
        total = _add(total, _mul(disk, 1 / HOURS_PER_MONTH))
    # Server public IP and the NAT gateway (with its public IP).
    total = _add(total, _mul(pricer.rate(f"azure/{az}/publicIp"), 2))
    total = _add(total, pricer.rate(f"azure/{az}/natGateway"))
    if settings.graviton is not None and settings.aws_region:
        aws = settings.aws_region
        # The VPN gateway's zone-redundant public IP, the gateway, AWS's NAT
        # gateway and the site-to-site VPN connection.
        total = _add(total, pricer.rate(f"azure/{az}/publicIp"))
        total = _add(
            total, pricer.rate(f"azure/{az}/vpnGateway/{settings.network.vpn_gateway_sku}")
        )
        total = _add(total, pricer.rate(f"aws/{aws}/natGateway"))
        total = _add(total, pricer.rate(f"aws/{aws}/vpnConnection"))
    return total
