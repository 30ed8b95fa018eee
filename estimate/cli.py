"""What tools/plan.py calls for `--workload`, `--json` and `--compare`."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from config import FarmSettings, load_settings
from estimate.farm import SimulationError
from estimate.model import Estimate, estimate
from estimate.prices import load_prices
from estimate.report import compare_table, price_notes
from estimate.workload import load_workload
from tools.offline import read_stack_config

DEFAULT_WORKLOAD = "apertis-v2021dev3"


def estimate_stack(
    stack: str, settings: FarmSettings, workload_name: str, today: datetime.date | None = None
) -> Estimate:
    workload = load_workload(workload_name)
    day = (today or datetime.date.today()).isoformat()
    try:
        return estimate(stack, settings, workload, load_prices(), day)
    except SimulationError as err:
        raise SimulationError(f"Pulumi.{stack}.yaml: {err}") from None


def compare(stacks: list[str], workload_name: str, stack_dir: Path) -> str:
    """One table of rebuild hours and costs across stacks."""
    estimates = [
        estimate_stack(s, load_settings(read_stack_config(s, stack_dir)), workload_name)
        for s in stacks
    ]
    out = [f"Rebuild of workload {workload_name} per stack (estimate/model.py):", ""]
    out += compare_table(estimates)
    union = dataclasses.replace(
        estimates[0],
        missing_prices=sorted({k for e in estimates for k in e.missing_prices}),
        stale_prices=sorted({k for e in estimates for k in e.stale_prices}),
    )
    notes = price_notes(union, show=100, where="each Pulumi.STACK.yaml")
    if notes:
        out += ["", *notes]
    return "\n".join(out)
