"""./run-tests sets up what it needs (issue 12, defect 8): as root with apt it
installs the missing Debian packages itself, otherwise it prints the command;
the same for --integration. The real script runs in a copy of the repository
whose apt-get, dpkg-query, id, venv and tools are recording stand-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = dict(
    line.split(": ", 1)
    for line in (ROOT / "scripts/debian-packages").read_text().splitlines()
    if line and not line.startswith("#")
)
UNIT = PACKAGES["unit"].split()
INTEGRATION = PACKAGES["integration"].split()

RECORD = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
"""
# The venv's python: records, then exits with $RC_UNIT for the unit tier's
# pytest and $RC_INTEGRATION for the integration tier's (default 0).
PYTHON = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
case "$*" in
  *"not integration"*) exit "${RC_UNIT:-0}";;
  *"-m integration"*) exit "${RC_INTEGRATION:-0}";;
esac
"""
DPKG_QUERY = """#!/bin/sh
# dpkg-query -W -f=... PACKAGE: installed unless listed in $MISSING
for pkg; do :; done
case " $MISSING " in *" $pkg "*) exit 1;; esac
echo "install ok installed"
"""


def sandbox(tmp_path: Path, uid: int, missing: list[str]) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "run-tests", repo / "run-tests")
    shutil.copy(ROOT / "scripts/debian-packages", repo / "scripts/debian-packages")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (repo / "venv/bin").mkdir(parents=True)
    stubs = {
        repo / "scripts/venv.sh": RECORD,
        repo / "venv/bin/ruff": RECORD,
        repo / "venv/bin/mypy": RECORD,
        repo / "venv/bin/python": PYTHON,
        bin_dir / "apt-get": RECORD,
        bin_dir / "dpkg-query": DPKG_QUERY,
        bin_dir / "id": f"#!/bin/sh\necho {uid}\n",
    }
    for path, text in stubs.items():
        path.write_text(text)
        path.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "LOG": str(tmp_path / "log"),
        "MISSING": " ".join(missing),
        "HOME": str(tmp_path),
    }
    return repo, env


def run(tmp_path: Path, uid: int, missing: list[str], *args: str, **rcs: int):
    repo, env = sandbox(tmp_path, uid, missing)
    env.update({f"RC_{tier.upper()}": str(rc) for tier, rc in rcs.items()})
    proc = subprocess.run(
        [str(repo / "run-tests"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    log = Path(env["LOG"]).read_text().splitlines() if Path(env["LOG"]).exists() else []
    return proc, log


def test_root_installs_what_is_missing_then_tests(tmp_path):
    proc, log = run(tmp_path, 0, ["shellcheck", "cpio"])
    assert proc.returncode == 0, proc.stderr
    assert log[:2] == [
        "apt-get update -q",
        "apt-get install -y -q --no-install-recommends shellcheck cpio",
    ]
    assert log[-1] == "python -m pytest -m not integration -n auto"


def test_without_root_it_prints_the_command_and_stops(tmp_path):
    proc, log = run(tmp_path, 1000, ["shellcheck"])
    assert proc.returncode == 2
    assert f"apt-get install -y {' '.join(UNIT)}" in proc.stderr
    assert log == []


def test_integration_installs_its_own_packages_too(tmp_path):
    proc, log = run(
        tmp_path, 0, ["obs-server", "qemu-user-static", "cloud-init"], "--integration", "-x"
    )
    assert proc.returncode == 0, proc.stderr
    assert log[1] == (
        "apt-get install -y -q --no-install-recommends cloud-init obs-server qemu-user-static"
    )
    assert log[-2:] == [
        "python -m pytest -m not integration -n auto -x",
        "python -m pytest -m integration --durations=15 -x",
    ]


@pytest.mark.parametrize(
    ("unit", "integration", "code", "ran_integration"),
    [
        (0, 0, 0, True),
        (1, 0, 1, False),  # a failing unit tier stops before the long one
        (5, 0, 0, True),  # arguments that select integration tests only
        (0, 5, 0, True),  # ... or unit tests only
        (5, 5, 5, True),  # nothing selected at all
        (0, 1, 1, True),
    ],
)
def test_integration_runs_the_tiers_in_turn(tmp_path, unit, integration, code, ran_integration):
    proc, log = run(tmp_path, 0, [], "--integration", unit=unit, integration=integration)
    assert proc.returncode == code, proc.stderr
    pytest_runs = [line for line in log if line.startswith("python -m pytest")]
    assert pytest_runs[0] == "python -m pytest -m not integration -n auto"
    assert (
        pytest_runs[1:] == ["python -m pytest -m integration --durations=15"]
    ) is ran_integration


def test_integration_without_root_prints_both_lists(tmp_path):
    proc, _ = run(tmp_path, 1000, ["obs-worker"], "--integration")
    assert proc.returncode == 2
    assert f"apt-get install -y {' '.join(UNIT + INTEGRATION)}" in proc.stderr


def test_nothing_missing_installs_nothing(tmp_path):
    proc, log = run(tmp_path, 0, [])
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in log if line.startswith("apt-get")]


def test_ci_reads_the_same_list():
    lines = (ROOT / ".ci/run").read_text().splitlines()
    code = " ".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "scripts/debian-packages" in code
    assert not [p for p in UNIT + INTEGRATION if f" {p} " in f" {code} "]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    subprocess.run(["shellcheck", str(ROOT / "run-tests"), str(ROOT / ".ci/run")], check=True)
    assert os.access(ROOT / "run-tests", os.X_OK)
