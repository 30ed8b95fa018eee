"""How long and how much: a whole-archive rebuild simulated on a stack's farm.

Pure: settings, a workload and a price table in, an `Estimate` out.

The simulation (estimate/farm.py): the whole workload is queued at once;
OBS's dispatcher gives each waiting job, longest first, to an idle worker
instance of its architecture; obs-farm-scaler's own `decide` runs every
`scaler.pollSeconds` on what the farm shows and grows each pool (native
pools first for an architecture several pools build), up to its maximum,
with machines whose workers register after the pool's boot time; it drains
and deletes machines idle for `scaler.idleMinutes`. A build's time is its
native minutes times its group's slowdown (estimate/slowdowns.py) and
`make -j` factor. Worker VM-hours run from each machine's capacity request
to its deletion; the pool's minimum machines count until the last build.

Ignored: build dependencies (OBS builds a package only after what it needs;
the model assumes the queue is always full), the scheduler's and
dispatcher's own time, cloud API latency, downloads, publishing, failed
builds and retries, Spot evictions, OBS's own dispatch order (it is not
longest-first), CPU differences between Azure x86-64 sizes, and aarch64
workers taking armv7l jobs (OBS allows it on CPUs with AArch32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.topology import SCHEDULER_ARCH, WorkerGroup, WorkerPool, worker_pools
from config.catalog import GRAVITON_TYPES
from config.model import FarmSettings
from estimate.farm import (
    DEFAULT_BOOT_MINUTES,
    FarmRun,
    PoolSpec,
    SimJob,
    SimulationError,
    machine_hours,
    scaler_settings,
    simulate_farm,
)
from estimate.prices import HOURS_PER_MONTH, PriceTable, premium_ssd_tier
from estimate.slowdowns import EMULATED, GRAVITON_GENERATION, NATIVE, parallel_speed
from estimate.workload import Workload


def group_slowdown(pool: WorkerPool, group: WorkerGroup) -> float:
    """Slowdown of one build on this group against native Azure x86-64."""
    if pool.cloud == "aws":
        first = GRAVITON_TYPES[pool.vm_size.split(",")[0]]
        base = GRAVITON_GENERATION[first.generation].factor
    else:
        base = NATIVE.factor
    # emulated+accel keeps the emulated factor: the accelerator's whole-job
    # ratio on real packages is not measured yet (estimate/slowdowns.py).
    return base * (EMULATED[group.arch].factor if group.emulated else 1.0)


def boot_minutes(settings: FarmSettings, pool: str) -> float:
    return float(settings.estimate.boot_minutes.get(pool, DEFAULT_BOOT_MINUTES))


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
    boot_minutes: float = DEFAULT_BOOT_MINUTES
    boot_default: bool = True
    peak_vms: int = 0
    on_demand_hours: float = 0.0


@dataclass
class Scaling:
    """How the simulated farm was scaled (obs-farm-scaler's settings)."""

    poll_seconds: float
    idle_minutes: float
    decisions: int
    scale_in_hours: float  # from the last build until every pool is at its minimum


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
    scaling: Scaling | None = None
    missing_prices: list[str] = field(default_factory=list)
    stale_prices: list[str] = field(default_factory=list)
    unbuildable: list[str] = field(default_factory=list)

    @property
    def bottleneck(self) -> GroupResult | None:
        return max(self.groups, key=lambda g: g.finish_hours, default=None)


def simulate(
    settings: FarmSettings, workload: Workload, every_poll: bool = False
) -> tuple[FarmRun, list[GroupResult], list[str]]:
    """The rebuild on the stack's farm: the run, per-group results, and the
    architectures no pool builds (their jobs left out)."""
    if not settings.scaler.enabled:
        raise SimulationError(
            "scaler.enabled is false: the rebuild estimate simulates obs-farm-scaler's "
            "decisions, and the CPU scale-out fallback used without it is not modelled"
        )
    pools = worker_pools(settings)
    specs = {}
    groups: list[GroupResult] = []
    for pool in pools:
        factors = {}
        for g in pool.groups:
            speed = parallel_speed(g.jobs) / parallel_speed(workload.reference_jobs)
            slowdown = group_slowdown(pool, g)
            factors[g.arch] = slowdown * speed
            groups.append(
                GroupResult(
                    pool.name,
                    g.arch,
                    g.execution,
                    g.instances * pool.min_vms,
                    g.instances * pool.max_vms,
                    g.jobs,
                    slowdown,
                )
            )
        specs[pool.name] = PoolSpec(pool.name, boot_minutes(settings, pool.name) * 60, factors)
    built = {g.arch for g in groups}
    unbuildable = [a for a in workload.architectures if a not in built]
    jobs = [
        SimJob(SCHEDULER_ARCH[j.arch], j.minutes, j.ready_minutes * 60)
        for j in workload.jobs
        if j.arch in built
    ]
    run = simulate_farm(scaler_settings(settings), specs, jobs, every_poll=every_poll)
    for result in groups:
        stats = run.groups.get((result.pool, result.arch))
        if stats:
            result.jobs = stats.jobs
            result.busy_hours = stats.busy_seconds / 3600
            result.finish_hours = stats.finish / 3600
    return run, groups, unbuildable


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
    run, groups, unbuildable = simulate(settings, workload)
    makespan = run.makespan / 60
    pricer = _Pricer(table, today)
    az, aws = settings.location, settings.aws_region
    pool_results = []
    rebuild_cost: float | None = 0.0
    idle_cost: float | None = 0.0
    total_vm_hours = 0.0
    for pool in pools:
        pr = PoolResult(pool)
        pr.boot_minutes = boot_minutes(settings, pool.name)
        pr.boot_default = pool.name not in settings.estimate.boot_minutes
        pr.vms_used = sum(1 for m in run.machines if m.pool == pool.name)
        pr.peak_vms = run.peak(pool.name)
        g = settings.graviton
        base = None
        if pool.cloud == "aws" and pool.spot:
            assert g is not None
            base = min(g.on_demand_base, pool.max_vms)
        od_hours, spot_hours = machine_hours(run, pool.name, pool.min_vms, base)
        pr.vm_hours = od_hours + spot_hours
        pr.on_demand_hours = od_hours
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
            assert g is not None
            key = f"aws/{aws}/ec2/{pool.vm_size.split(',')[0]}"
            od = pricer.rate(key, spot=False)
            sp = pricer.rate(key, spot=True) if pool.spot else od
            gp3 = pricer.rate(f"aws/{aws}/ebsGp3")
            vol_hour = _mul(gp3, g.volume_size_gb / HOURS_PER_MONTH)
            pr.cost = _add(
                _mul(_add(od, vol_hour), od_hours) if od_hours else 0.0,
                _mul(_add(sp, vol_hour), spot_hours) if spot_hours else 0.0,
            )
            on_demand_idle = pool.min_vms if base is None else min(base, pool.min_vms)
            idle_rates = _add(
                _mul(_add(od, vol_hour), on_demand_idle),
                _mul(_add(sp, vol_hour), pool.min_vms - on_demand_idle)
                if pool.min_vms > on_demand_idle
                else 0.0,
            )
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
    scaling = Scaling(
        poll_seconds=settings.scaler.poll_seconds,
        idle_minutes=settings.scaler.idle_minutes,
        decisions=run.decisions,
        scale_in_hours=(run.end - run.makespan) / 3600,
    )
    return Estimate(
        stack=stack,
        workload=workload.name,
        scaling=scaling,
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
