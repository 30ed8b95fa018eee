"""Benchmark: the rebuild estimate within the plan's time budget.

    venv/bin/python -m bench.estimate_plan [--runs N] [--budget SECONDS]

Times, in this process (imports warm), the estimate alone for apertis-eval
with apertis-v2021dev3 (load workload and prices, simulate 11,525 jobs,
price), and the whole `plan apertis-eval --workload apertis-v2021dev3`
(program run under mocks included). Reports the median; exits 1 when the
whole plan's median exceeds the budget (default 5 s, "a few seconds").
A fresh `./plan` also pays Python's start-up and imports: time it with
`time ./plan apertis-eval --workload apertis-v2021dev3 >/dev/null`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time

from config import load_settings
from estimate.cli import estimate_stack
from tools import plan
from tools.offline import read_stack_config


def _median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="estimate_plan", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=5.0)
    args = parser.parse_args(argv)
    settings = load_settings(read_stack_config("apertis-eval"))
    alone = _median_seconds(
        lambda: estimate_stack("apertis-eval", settings, "apertis-v2021dev3"), args.runs
    )
    with tempfile.TemporaryDirectory() as out:

        def whole() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                plan.main(["apertis-eval", "--workload", "apertis-v2021dev3", "--out", out])

        whole_s = _median_seconds(whole, args.runs)
    print(f"estimate alone (apertis-eval, 11,525 jobs): {alone:.3f} s median of {args.runs}")
    print(f"plan apertis-eval --workload apertis-v2021dev3: {whole_s:.3f} s median of {args.runs}")
    if whole_s > args.budget:
        print(f"over budget: {whole_s:.2f} s > {args.budget:.2f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
