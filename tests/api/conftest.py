"""The API-definition tier: every example stack (all three modes) run once
under the mocks, shared by the Azure and AWS checks."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tools.offline import ProgramRun, read_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
_RUNS: dict[str, ProgramRun] = {}


def stack_run(stack: str) -> ProgramRun:
    if stack not in _RUNS:
        _RUNS[stack] = run_program(stack, read_stack_config(stack))
    return _RUNS[stack]


@pytest.fixture(scope="session")
def runs() -> dict[str, ProgramRun]:
    return {s: stack_run(s) for s in STACKS}
