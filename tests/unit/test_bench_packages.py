"""bench/packages/bench_packages.py's pure parts: which OBS project each mode
builds in, and the accel/gcc source tree it uploads (the benchmark itself
runs outside CI, see bench/packages/README.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = REPO / "bench" / "packages" / "bench_packages.py"
    spec = importlib.util.spec_from_file_location("bench_packages", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_packages"] = module
    spec.loader.exec_module(module)
    return module


def test_from_source_parses_and_refuses(bench: ModuleType) -> None:
    assert bench.parse_from_source("aarch64") == frozenset({"aarch64"})
    assert bench.parse_from_source("armv7l, aarch64") == frozenset({"aarch64", "armv7l"})
    assert bench.parse_from_source("none") == frozenset()
    for bad in ("", "x86_64", "aarch64,none", "armhf"):
        with pytest.raises(argparse.ArgumentTypeError, match="--accel-from-source must be"):
            bench.parse_from_source(bad)


def test_modes_pick_their_project(bench: ModuleType) -> None:
    gcc = frozenset({"aarch64"})
    projects = {m.name: m.project(gcc) for m in bench.parse_modes(",".join(bench.MODES))}
    assert projects == {
        "x86_64": "bench",
        "aarch64": "bench",
        "aarch64+accel": "bench:accel-gcc",
        "armv7l": "bench",
        "armv7l+accel": "bench:accel",
    }
    assert bench.Mode("aarch64+accel").project(frozenset()) == "bench:accel"
    assert bench.Mode("armv7l+accel").project(frozenset({"armv7l"})) == "bench:accel-gcc"


@pytest.mark.parametrize(
    ("archs", "targets"),
    [(["aarch64"], "arm64"), (["armv7l"], "armhf"), (["armv7l", "aarch64"], "arm64 armhf")],
)
def test_accel_gcc_source_narrows_the_targets(
    bench: ModuleType, tmp_path: Path, archs: list[str], targets: str
) -> None:
    tree = bench.accel_gcc_source(tmp_path, archs)
    original = (REPO / "accel" / "gcc" / "debian" / "rules").read_text().splitlines()
    rules = tree / "debian" / "rules"
    changed = [
        (a, b) for a, b in zip(original, rules.read_text().splitlines(), strict=True) if a != b
    ]
    default = "ACCEL_TARGETS ?= arm64 armhf"
    assert default in original
    narrowed = f"ACCEL_TARGETS ?= {targets}"
    assert changed == ([] if narrowed == default else [(default, narrowed)])
    assert narrowed in rules.read_text().splitlines()
    assert os.access(rules, os.X_OK)
    # The rules call these from the tree's top (./build-accelerator.sh).
    for script in ("build-accelerator.sh", "accel-exec.c", "activate.sh"):
        assert (tree / script).read_bytes() == (REPO / "accel" / script).read_bytes()
    assert os.access(tree / "build-accelerator.sh", os.X_OK)
    assert (tree / "debian" / "control").read_text().startswith("Source: obs-farm-accel-gcc\n")


def test_accel_gcc_source_refuses_rules_it_cannot_narrow(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "gcc"
    shutil.copytree(REPO / "accel" / "gcc", src)
    rules = src / "debian" / "rules"
    rules.write_text(rules.read_text().replace("ACCEL_TARGETS ?=", "ACCEL_TARGETS :="))
    monkeypatch.setattr(bench, "ACCEL_GCC_SRC", src)
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="expected one `ACCEL_TARGETS \\?=` line, found 0"):
        bench.accel_gcc_source(tmp_path / "out", ["aarch64"])
