"""bench/packages/bench_packages.py's pure parts: which OBS project each mode
builds in, and the accel/gcc source tree it uploads (the benchmark itself
runs outside CI, see bench/packages/README.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
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


def _object(tmp_path: Path, name: str, value: str) -> bytes:
    """A real ELF object whose .rodata holds `value`."""
    src = tmp_path / f"{name}.c"
    src.write_text(f'const char greeting[] = "{value}";\n')
    obj = tmp_path / f"{name}.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    return obj.read_bytes()


def _deb(tmp_path: Path, name: str, files: dict[str, bytes], depends: str = "libc6") -> Path:
    root = tmp_path / f"deb-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: libdemo\nVersion: 1\nArchitecture: arm64\nMaintainer: t <t@example.invalid>\n"
        f"Depends: {depends}\nDescription: demo\n"
    )
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    out = tmp_path / f"{name}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_compare_builds_reads_real_debs(bench: ModuleType, tmp_path: Path) -> None:
    same, other = _object(tmp_path, "a", "hello"), _object(tmp_path, "b", "howdy")
    lib = "usr/lib/libdemo.so.0"
    debug_a = "usr/lib/debug/.build-id/ab/" + "c" * 38 + ".debug"
    debug_b = "usr/lib/debug/.build-id/12/" + "3" * 38 + ".debug"
    fast = {"libdemo": _deb(tmp_path, "fast", {lib: same, debug_a: other, "usr/share/x": b"x"})}
    slow = {"libdemo": _deb(tmp_path, "slow", {lib: same, debug_b: same, "usr/share/x": b"x"})}
    c = bench.compare_builds(fast, slow)
    assert c["same_packages"] and c["manifests_differ"] == [] and c["debs_identical"] == []
    assert c["files_identical"] == 2  # the library and usr/share/x
    # The debug files are matched by their name without the build-id.
    debug = "./usr/lib/debug/.build-id/XX/ID.debug"
    assert list(c["files_differ"]) == [debug]
    assert ".rodata" in c["files_differ"][debug]
    assert ".text" not in c["files_differ"][debug]
    assert c["files_unmatched"] == []
    summary = bench.compare_summary(c)
    assert summary.startswith(
        "same binary packages, same files and relationships, 0 of 1 .debs byte-identical, "
        "2 of 3 files byte-identical; the others differ in "
    ), summary
    assert "(ID.debug)" in summary
    # The same .deb on both sides is byte-identical as a file.
    c = bench.compare_builds(fast, fast)
    assert c["debs_identical"] == ["libdemo"] and c["files_differ"] == {}
    # Relationships count: another Depends is a difference.
    slow_dep = {
        "libdemo": _deb(
            tmp_path,
            "dep",
            {lib: same, debug_b: same, "usr/share/x": b"x"},
            depends="libc6 (>= 2.36)",
        )
    }
    c = bench.compare_builds(fast, slow_dep)
    assert c["manifests_differ"] == ["libdemo"]
    assert "files or relationships differ in libdemo" in bench.compare_summary(c)
    # A package only one side built.
    c = bench.compare_builds({**fast, "extra": fast["libdemo"]}, slow)
    assert not c["same_packages"]
    assert bench.compare_summary(c).startswith("different binary packages")


@pytest.mark.skipif(shutil.which("ar") is None, reason="needs ar (binutils)")
def test_static_libraries_differ_by_member(bench: ModuleType, tmp_path: Path) -> None:
    """A static library is an ar archive: which members differ, and where."""
    archives = {}
    for side, value in (("fast", "hello"), ("slow", "howdy")):
        d = tmp_path / side
        d.mkdir()
        (d / "same.o").write_bytes(_object(tmp_path, "s", "unchanged"))
        (d / "a_rather_long_member_name.o").write_bytes(_object(tmp_path, side, value))
        lib = d / "libdemo.a"
        subprocess.run(
            ["ar", "rcD", str(lib), "same.o", "a_rather_long_member_name.o"], cwd=d, check=True
        )
        archives[side] = lib.read_bytes()
    members = bench.ar_members(archives["fast"])
    assert set(members) >= {"same.o", "a_rather_long_member_name.o"}
    assert members["same.o"] == (tmp_path / "fast" / "same.o").read_bytes()
    how = bench.how_differ(archives["fast"], archives["slow"])
    assert len(how) == 1 and how[0].startswith("a_rather_long_member_name.o: "), how
    assert ".rodata" in how[0]
    assert bench.how_differ(b"text one", b"text two") == ["content"]


def test_gcc_build_time_line_is_the_printed_one(bench: ModuleType) -> None:
    """accel/gcc's rules print the time; make also echoes the recipe."""
    rules = (REPO / "accel" / "gcc" / "debian" / "rules").read_text()
    assert 'echo "obs-farm-accel-gcc: gcc-12 for $$arch built in' in rules
    assert bench.GCC_BUILT.match("obs-farm-accel-gcc: gcc-12 for arm64 built in 1137 s")
    recipe = (
        '\techo "obs-farm-accel-gcc: gcc-12 for $arch built in $(( $(date +%s) - start )) s"; \\'
    )
    assert not bench.GCC_BUILT.match(recipe)
