"""The estimate as the plan prints it: a text section, JSON, a compare table."""

from __future__ import annotations

from typing import Any

from estimate.model import Estimate


def _money(value: float | None, currency: str) -> str:
    return "unknown" if value is None else f"{value:,.0f} {currency}"


def to_json(e: Estimate) -> dict[str, Any]:
    """The contract: rebuild.hours, rebuild.vmHours, rebuild.cost,
    idle.costPerMonth, currency, pricesAsOf, and per pool and architecture
    the instance count and execution kind."""
    return {
        "stack": e.stack,
        "workload": e.workload,
        "rebuild": {
            "hours": round(e.hours, 2),
            "vmHours": round(e.vm_hours, 1),
            "cost": None if e.rebuild_cost is None else round(e.rebuild_cost, 2),
            "bottleneck": (
                {"pool": e.bottleneck.pool, "arch": e.bottleneck.arch} if e.bottleneck else None
            ),
        },
        "idle": {
            "costPerMonth": (
                None if e.idle_cost_per_month is None else round(e.idle_cost_per_month, 2)
            )
        },
        "currency": e.currency,
        "pricesAsOf": e.prices_as_of,
        "missingPrices": e.missing_prices,
        "stalePrices": e.stale_prices,
        "unbuildableArchitectures": e.unbuildable,
        "scaling": (
            {
                "rule": "obs-farm-scaler decide (scaler/obs_farm_scaler/decide.py)",
                "pollSeconds": e.scaling.poll_seconds,
                "idleMinutes": e.scaling.idle_minutes,
                "decisions": e.scaling.decisions,
                "scaleInHours": round(e.scaling.scale_in_hours, 2),
            }
            if e.scaling
            else None
        ),
        "pools": [
            {
                "pool": p.pool.name,
                "cloud": p.pool.cloud,
                "vmSize": p.pool.vm_size,
                "minVms": p.pool.min_vms,
                "maxVms": p.pool.max_vms,
                "spot": p.pool.spot,
                "vmsUsed": p.vms_used,
                "peakVms": p.peak_vms,
                "bootMinutes": p.boot_minutes,
                "bootMinutesFrom": "default" if p.boot_default else "obs-farm:estimate.bootMinutes",
                "vmHours": round(p.vm_hours, 1),
                "onDemandHours": round(p.on_demand_hours, 1),
                "cost": None if p.cost is None else round(p.cost, 2),
                "architectures": [
                    {
                        "arch": g.arch,
                        "execution": g.execution,
                        "instances": {"min": g.instances_min, "max": g.instances_max},
                        "jobsPerInstance": g.jobs_per_instance,
                        "slowdown": round(g.slowdown, 3),
                        "jobs": g.jobs,
                        "busyHours": round(g.busy_hours, 1),
                        "finishHours": round(g.finish_hours, 2),
                    }
                    for g in e.groups
                    if g.pool == p.pool.name
                ],
            }
            for p in e.pools
        ],
    }


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


# What a price key's amount is per (estimate/prices.py).
def _unit(key: str) -> str:
    if "/premiumSsd/" in key:
        return "per month"
    if key.endswith("/ebsGp3"):
        return "per GB-month"
    return "per hour"


def missing_price_snippet(missing: list[str]) -> list[str]:
    """The stack-config lines a user fills in to price what is missing."""
    kinds: dict[str, list[str]] = {}
    for label in missing:
        key, _, kind = label.partition(" (")
        kinds.setdefault(key, [])
        if kind:
            kinds[key].append(kind.rstrip(")"))
    lines = ["obs-farm:prices:"]
    for key, ks in sorted(kinds.items()):
        value = "{" + ", ".join(f"{k}: PRICE" for k in ks) + "}" if ks else "PRICE"
        lines.append(f"  {key}: {value}  # {_unit(key)}")
    return lines


def price_notes(e: Estimate, show: int = 30, where: str = "") -> list[str]:
    notes = []
    if e.missing_prices:
        keys = sorted({m.partition(" (")[0] for m in e.missing_prices})
        notes.append(
            f"! cost not computed: estimate/prices.yaml has no price for {len(keys)} item(s) "
            f"used here (no official price list was reachable when it was compiled). "
            f"Give them in {where or f'Pulumi.{e.stack}.yaml'}, in {e.currency}, and re-run:"
        )
        snippet = missing_price_snippet(e.missing_prices)
        if len(snippet) > show + 1:
            snippet = [
                *snippet[: show + 1],
                f"  # ... and {len(snippet) - show - 1} more: --json lists them",
            ]
        notes += [f"    {line}" for line in snippet]
    if e.stale_prices:
        notes.append(
            f"! prices older than 6 months: {', '.join(e.stale_prices)}; check them against "
            "the clouds' price lists"
        )
    return notes


def render_text(e: Estimate) -> list[str]:
    b = e.bottleneck
    out = [
        f"Rebuild estimate (workload {e.workload}; model: estimate/model.py):",
        f"  rebuild: {e.hours:.1f} h ({e.hours / 24:.1f} days), {e.vm_hours:,.0f} worker VM-hours, "
        f"cost {_money(e.rebuild_cost, e.currency)}",
        f"  idle farm: {_money(e.idle_cost_per_month, e.currency)} per month"
        + (f"; prices as of {e.prices_as_of}" if e.prices_as_of else ""),
    ]
    if b:
        out.append(f"  bottleneck: {b.arch} on {b.pool} ({b.execution}, {b.slowdown:g}x native)")
    if e.scaling:
        sc = e.scaling
        out.append(
            f"  scaling: obs-farm-scaler's own rule, polled every {sc.poll_seconds:g} s "
            f"({sc.decisions:,} decisions), idle machines drained after {sc.idle_minutes:g} min; "
            f"pools back at their minimum {sc.scale_in_hours * 60:.0f} min after the last build"
        )
    rows: list[tuple[str, ...]] = [
        ("pool", "arch", "execution", "instances", "slowdown", "jobs", "busy h", "done at h")
    ]
    for g in e.groups:
        rows.append(
            (
                g.pool,
                g.arch,
                g.execution,
                f"{g.instances_min}..{g.instances_max}",
                f"{g.slowdown:g}x",
                str(g.jobs),
                f"{g.busy_hours:,.0f}",
                f"{g.finish_hours:.1f}",
            )
        )
    out += [f"  {line}" for line in _table(rows)]
    for p in e.pools:
        boot = "default" if p.boot_default else "obs-farm:estimate.bootMinutes"
        out.append(
            f"  {p.pool.name}: {p.pool.min_vms}..{p.pool.max_vms} {p.pool.vm_size}, peak "
            f"{p.peak_vms}, {p.vms_used} machine(s) started, boot {p.boot_minutes:g} min "
            f"({boot}), {p.vm_hours:,.0f} VM-hours{' (Spot)' if p.pool.spot else ''}, "
            f"{_money(p.cost, e.currency)}"
        )
    if e.unbuildable:
        out.append(f"  ! no worker builds {', '.join(e.unbuildable)}: those jobs are left out")
    out += [f"  {n}" for n in price_notes(e)]
    out.append(
        "  Ignored: build dependencies, scheduler/dispatcher time, cloud API latency, downloads, "
        "failed builds, Spot evictions, OBS's dispatch order."
    )
    return out


def compare_table(estimates: list[Estimate]) -> list[str]:
    rows: list[tuple[str, ...]] = [
        ("stack", "rebuild h", "days", "VM-hours", "rebuild cost", "idle cost/month", "bottleneck")
    ]
    for e in estimates:
        b = e.bottleneck
        rows.append(
            (
                e.stack,
                f"{e.hours:.1f}",
                f"{e.hours / 24:.1f}",
                f"{e.vm_hours:,.0f}",
                _money(e.rebuild_cost, e.currency),
                _money(e.idle_cost_per_month, e.currency),
                f"{b.arch} ({b.execution}, {b.pool})" if b else "-",
            )
        )
    return _table(rows)
