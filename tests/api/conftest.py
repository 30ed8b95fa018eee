"""The API-definition tier: every example stack (all three modes) run once
under the mocks, shared by the Azure and AWS checks."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from tools.offline import ProgramRun, read_stack_config, run_program

EXAMPLES = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
# With the scaler off, the clouds' own CPU scale-out fallbacks are deployed
# instead (an Azure autoscale setting, an AWS scaling policy): check those too.
SCALER_OFF = "+scaler-off"
STACKS = EXAMPLES + [f"{s}{SCALER_OFF}" for s in EXAMPLES]
_RUNS: dict[str, ProgramRun] = {}


def stack_run(stack: str) -> ProgramRun:
    if stack not in _RUNS:
        example = stack.removesuffix(SCALER_OFF)
        config = read_stack_config(example)
        if stack != example:
            scaler = json.loads(config.get("obs-farm:scaler", "{}"))
            config["obs-farm:scaler"] = json.dumps({**scaler, "enabled": False})
        _RUNS[stack] = run_program(example, config)
    return _RUNS[stack]


@pytest.fixture(scope="session")
def runs() -> dict[str, ProgramRun]:
    return {s: stack_run(s) for s in STACKS}
