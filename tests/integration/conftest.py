"""Print the integration tier's measurements at the end of every run."""

from __future__ import annotations

from typing import Any

from tests.integration.farm import TIMINGS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("obs-farm integration measurements")
    for what, value in TIMINGS.items():
        terminalreporter.write_line(f"{what:52s} {value}")
