"""Calibrate a synthetic workload's median on a stack's known rebuild time.

    python -m estimate.calibrate [--stack apertis-eval] [--hours 168]
        [--emulated-factor 4.5] [--workload apertis-v2021dev3]

Finds the median native build minutes (the distribution's shape, sigma and
cap, kept) for which the simulated rebuild of the stack takes `hours`,
with the emulation slowdown set to `--emulated-factor` (the source design's
4-5x midpoint by default) instead of the model's measured one. Prints the
median to write into the workload file, and the band of rebuild hours the
design's 4x and 5x would give.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from config import load_settings
from estimate import slowdowns
from estimate.model import simulate
from estimate.workload import load_workload, parse_workload
from tools.offline import read_stack_config


@contextmanager
def emulated_factor(factor: float) -> Iterator[None]:
    saved = dict(slowdowns.EMULATED)
    for arch, s in saved.items():
        slowdowns.EMULATED[arch] = dataclasses.replace(s, factor=factor)
    try:
        yield
    finally:
        slowdowns.EMULATED.clear()
        slowdowns.EMULATED.update(saved)


def rebuild_hours(stack: str, doc: dict, median: float) -> float:
    spec = {**doc, "buildMinutes": {**doc["buildMinutes"], "medianMinutes": median}}
    workload = parse_workload(spec, doc.get("name", "calibration"))
    run = simulate(load_settings(read_stack_config(stack)), workload)[0]
    return run.makespan / 3600


def calibrate(stack: str, doc: dict, hours: float, factor: float) -> float:
    lo, hi = 0.01, 600.0
    with emulated_factor(factor):
        for _ in range(50):
            mid = (lo + hi) / 2
            if rebuild_hours(stack, doc, mid) < hours:
                lo = mid
            else:
                hi = mid
    return (lo + hi) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="apertis-eval")
    parser.add_argument("--workload", default="apertis-v2021dev3")
    parser.add_argument("--hours", type=float, default=168.0)
    parser.add_argument("--emulated-factor", type=float, default=4.5)
    args = parser.parse_args(argv)
    import yaml

    path = load_workload(args.workload).source
    assert path is not None
    doc = yaml.safe_load(path.read_text())
    median = calibrate(args.stack, doc, args.hours, args.emulated_factor)
    print(f"medianMinutes: {median:.3f}")
    for f in (4.0, 5.0, slowdowns.EMULATED["aarch64"].factor):
        with emulated_factor(f):
            print(f"  at {f:g}x emulation: {rebuild_hours(args.stack, doc, median):.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
