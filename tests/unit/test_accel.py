"""accel/: the wrapper program compiled and run for real (the host tool it
executes is a stand-in that prints what it was given), and the scripts under
shellcheck. The accelerator in real ARM build roots is
tests/integration/test_accel.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cloudinit import shellcheck

REPO = Path(__file__).resolve().parents[2]
ACCEL = REPO / "accel"
GCCLIB = "/usr/lib/gcc/aarch64-linux-gnu/12"
PLUGIN_FROM = f"{GCCLIB}/liblto_plugin.so"
PLUGIN_TO = "/usr/lib/obs-farm-accel/aarch64-linux-gnu/lib/liblto_plugin.so"
CXX_DIRS = [
    "-isystem",
    "/usr/include/c++/12",
    "-isystem",
    "/usr/include/aarch64-linux-gnu/c++/12",
    "-isystem",
    "/usr/include/c++/12/backward",
]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def wrapper(tmp_path: Path, tool: str) -> Path:
    """accel-exec.c built as build-accelerator.sh builds it for `tool`, with a
    stand-in for the host tool that prints its argv and environment."""
    real = tmp_path / f"real-{tool}"
    real.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n"
    )
    real.chmod(0o755)
    flags = [f'-DREAL="{real}"']
    if tool in ("cc1", "cc1plus"):
        flags += [
            "-DCOMPILER",
            f'-DGCCLIB="{GCCLIB}"',
            '-DTRIPLET="aarch64-linux-gnu"',
            '-DGCCVER="12"',
        ]
    if tool == "cc1plus":
        flags.append("-DCXX")
    if tool == "ld.bfd":
        flags += ["-DLINKER", f'-DPLUGIN_FROM="{PLUGIN_FROM}"', f'-DPLUGIN_TO="{PLUGIN_TO}"']
    out = tmp_path / tool
    subprocess.run(
        [
            "gcc",
            "-static",
            "-O2",
            "-Wall",
            "-Werror",
            *flags,
            "-o",
            str(out),
            ACCEL / "accel-exec.c",
        ],
        check=True,
        capture_output=True,
    )
    return out


def call(program: Path, *args: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": "libfakeroot-sysv.so", "LD_LIBRARY_PATH": "/x"}
    proc = subprocess.run(
        [str(program), *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(proc.stdout)


def test_compiler_gets_the_native_prefix_first(tmp_path):
    got = call(wrapper(tmp_path, "cc1"), "-quiet", "-iwithprefix", "include", "x.c")
    assert got["argv"] == ["-iprefix", f"{GCCLIB}/", "-quiet", "-iwithprefix", "include", "x.c"]
    assert "LD_PRELOAD" not in got["env"] and "LD_LIBRARY_PATH" not in got["env"]


def test_cxx_compiler_appends_the_native_libstdcxx_dirs_after_the_callers(tmp_path):
    cc1plus = wrapper(tmp_path, "cc1plus")
    got = call(cc1plus, "-isystem", "/mine", "x.cc")
    assert got["argv"] == ["-iprefix", f"{GCCLIB}/", "-isystem", "/mine", "x.cc", *CXX_DIRS]
    for flag in ("-nostdinc++", "-nostdinc"):
        assert call(cc1plus, flag, "x.cc")["argv"] == ["-iprefix", f"{GCCLIB}/", flag, "x.cc"]


def test_linker_gets_the_host_lto_plugin_and_nothing_else_changes(tmp_path):
    ld = wrapper(tmp_path, "ld.bfd")
    args = ["-plugin", PLUGIN_FROM, "-plugin-opt=/x/lto-wrapper", "-o", "a", "a.o"]
    assert call(ld, *args)["argv"] == ["-plugin", PLUGIN_TO, *args[2:]]
    assert call(ld, f"--plugin={PLUGIN_FROM}", "a.o")["argv"] == [f"--plugin={PLUGIN_TO}", "a.o"]
    other = ["-plugin", "/usr/lib/other.so", "-plugin"]  # a trailing -plugin is passed on
    assert call(ld, *other)["argv"] == other
    got = call(ld, "--version")
    assert got["argv"] == ["--version"] and "LD_PRELOAD" not in got["env"]


def test_a_missing_host_tool_is_named(tmp_path):
    ld = wrapper(tmp_path, "ld.bfd")
    (tmp_path / "real-ld.bfd").unlink()
    proc = subprocess.run([str(ld)], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 127
    assert proc.stderr == (
        f"obs-farm-accel: cannot run {tmp_path}/real-ld.bfd: No such file or directory\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--installed", "--debs", "/tmp"],
        ["--installed", "--installed-binutils"],
        ["--installed-binutils"],  # the compiler must come from somewhere
    ],
)
def test_build_accelerator_refuses_mixed_sources(tmp_path, args):
    """--installed takes everything from the machine; --installed-binutils
    only binutils, beside --debs."""
    proc = subprocess.run(
        [str(ACCEL / "build-accelerator.sh"), "--target", "aarch64-linux-gnu",
         "--out", str(tmp_path), *args],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("usage: ") and "--installed-binutils" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "script, shell, strict",
    [
        ("build-accelerator.sh", "#!/bin/bash\n", "set -euo pipefail\n"),
        ("../bench/accel-gcc/build.sh", "#!/bin/bash\n", "set -euo pipefail\n"),
        # Runs in the build root, whose /bin/sh is dash: no pipefail there.
        ("activate.sh", "#!/bin/sh\n", "set -eu\n"),
    ],
)
def test_scripts_pass_shellcheck_and_start_strict(script, shell, strict):
    text = (ACCEL / script).read_text()
    assert text.startswith(shell) and strict in text
    assert shellcheck(ACCEL / script) == ""
