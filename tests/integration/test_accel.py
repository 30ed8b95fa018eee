"""The accelerator (accel/) for real, in arm64 and armhf build roots under
qemu-user.

The accelerator is built by accel/build-accelerator.sh from Debian 12's own
cross packages for this x86-64 host (gcc-12 12.2.0-14cross1, built from
gcc-12 12.2.0-14; binutils 2.40-2). The build roots hold the Debian bookworm
toolchain closure the OBS tests build with (gcc-12 12.2.0-14+deb12u1,
binutils 2.40-2), unpacked and registered with dpkg, so the accelerator's
package is installed by the build root's own dpkg, under emulation, and its
maintainer scripts run there as they do when obs-build installs it.

What these show, per architecture:
- with exact lockstep (the default), Debian 12's revision skew keeps the
  emulated compiler, and the one line says both versions;
- with revision skew allowed, cc1, cc1plus, as and ld.bfd become the host's;
  C and C++ (libstdc++, NEON/VFP intrinsics, the LTO plugin the driver
  always passes to the linker) compile, link and run, and the objects and
  programs equal the emulated compiler's except for the .comment version
  string (and so the build-id). This tests the mechanism on both targets
  with these sources; the shipped accelerator does not allow the skew for
  aarch64, because 12.2.0-14+deb12u1 changes AArch64 code generation for
  stack-protected frames (CVE-2023-4039), which these files do not reach
  (accel/debian/revision-skew);
- a machine that cannot run the accelerator's programs falls back, loudly;
- removing the package puts the emulated tools back.
The OBS builds with the accelerator are test_farm_builds.py's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.binfmt import kernel_binfmt
from tests.integration import debian_base
from tests.integration.farm import record, scratch_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "accel" / "build-accelerator.sh"
GCC = "12"
#: OBS architecture -> GNU triplet
TARGETS = {"aarch64": "aarch64-linux-gnu", "armv7l": "arm-linux-gnueabihf"}
#: Debian armhf's default FPU is VFPv3-D16; NEON intrinsics need it asked for.
NEON = {"aarch64": "", "armv7l": "-mfpu=neon"}
CROSS = tuple(
    f"{p}-{triplet}"
    for triplet in TARGETS.values()
    for p in (f"cpp-{GCC}", f"gcc-{GCC}", f"g++-{GCC}", "binutils")
)

HELLO_C = r"""#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("hello %.6f\n", sqrt((double)argc)); return 0; }
"""
APP_CC = r"""#include <algorithm>
#include <iostream>
#include <map>
#include <string>
#include <vector>
#include <arm_neon.h>
template <typename T> T sum(const std::vector<T> &v) { T s{}; for (auto x : v) s += x; return s; }
int main() {
  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  std::vector<double> v{3.0, 1.5, 2.5};
  std::sort(v.begin(), v.end());
  float32x4_t a = vdupq_n_f32(2.0f);
  std::cout << m["b"] << " " << sum(v) << " " << vgetq_lane_f32(vaddq_f32(a, a), 0) << std::endl;
  return 0;
}
"""
BUILD_SH = """set -eu
cd /tmp/src
o=$1
mkdir -p "$o"
gcc -O2 -g -ffile-prefix-map=/tmp/src=. -c hello.c -o "$o/hello.o"
g++ -O2 -g -ffile-prefix-map=/tmp/src=. ${NEON:-} -c app.cc -o "$o/app.o"
gcc -o "$o/hello" "$o/hello.o" -lm
g++ -o "$o/app" "$o/app.o"
"$o/hello" a b
"$o/app"
"""
EXPECTED_OUTPUT = "hello 1.732051\n2 7 4\n"


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def in_root(root: Path, script: str, env: dict[str, str] | None = None) -> str:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    proc = run(["chroot", str(root), "/bin/sh", "-c", script], env={**base, **(env or {})})
    assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def unpacked_root(debs: list[Path], root: Path) -> None:
    """A build root with `debs` unpacked and registered as installed in its
    dpkg database (no maintainer scripts: only the compiler is used)."""
    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    status = []
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(root)]).check_returncode()
        control = run(["dpkg-deb", "-f", str(deb)]).stdout.rstrip("\n")
        fields = debian_base.parse_control(control)
        status.append(
            control.replace(
                f"Package: {fields['Package']}",
                f"Package: {fields['Package']}\nStatus: install ok installed",
                1,
            )
        )
        name = fields["Package"]
        if fields.get("Multi-Arch") == "same":
            name += f":{fields['Architecture']}"
        members = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        listing = subprocess.run(
            ["tar", "-t"], input=members, capture_output=True, check=True
        ).stdout.decode()
        paths = ["/." if p in ("./", ".") else p[1:].rstrip("/") for p in listing.splitlines()]
        (info / f"{name}.list").write_text("\n".join(paths) + "\n")
    dpkg = root / "var" / "lib" / "dpkg"
    (dpkg / "status").write_text("\n\n".join(status) + "\n")
    for empty in ("available", "diversions"):
        (dpkg / empty).touch()
    (dpkg / "updates").mkdir(exist_ok=True)


@pytest.fixture(scope="module")
def cross_debs() -> Path:
    debs = debian_base.ensure_exact("x86_64", CROSS)
    assert {d.name.split("_")[0] for d in debs} == set(CROSS)
    return debs[0].parent


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch_dir("obs-farm-accel-") as path:
        yield path


@pytest.fixture(scope="module")
def emulation() -> Iterator[None]:
    with kernel_binfmt(TARGETS):
        yield


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_accelerated_compiler_matches_the_emulated_one(arch, cross_debs, workdir, emulation):
    triplet = TARGETS[arch]
    prefix = f"/usr/lib/obs-farm-accel/{triplet}"
    out = workdir / f"debs-{arch}"
    t0 = time.monotonic()
    proc = run(
        [
            str(BUILDER),
            "--target",
            triplet,
            "--debs",
            str(cross_debs),
            "--out",
            str(out),
            "--allow-revision-skew",
        ],
        env={**os.environ, "DPKG_DEB_COMPRESSOR_TYPE": "none"},
    )
    assert proc.returncode == 0, proc.stderr
    record(f"accel {arch}: accelerator package built", f"{time.monotonic() - t0:.0f} s")
    deb = Path(proc.stdout.strip().splitlines()[-1])
    assert deb.name == f"obs-farm-accel-{triplet}_12.2.0-14+accel1_all.deb"

    root = workdir / f"root-{arch}"
    unpacked_root(debian_base.ensure_base(arch).deb_paths(), root)
    shutil.copy(deb, root / "tmp" / deb.name)
    src = root / "tmp" / "src"
    src.mkdir()
    (src / "hello.c").write_text(HELLO_C)
    (src / "app.cc").write_text(APP_CC)
    (src / "build.sh").write_text(BUILD_SH)
    native = {
        "cc1": f"/usr/lib/gcc/{triplet}/{GCC}/cc1",
        "cc1plus": f"/usr/lib/gcc/{triplet}/{GCC}/cc1plus",
        "as": f"/usr/bin/{triplet}-as",
        "ld.bfd": f"/usr/bin/{triplet}-ld.bfd",
    }
    versions = (
        "gcc-12 12.2.0-14+deb12u1 and binutils 2.40-2 in the build root; "
        "accelerator built from gcc-12 12.2.0-14 and binutils 2.40-2"
    )

    # Installed by the build root's dpkg: skew allowed, so it switches on.
    log = in_root(root, f"dpkg -i --force-depends /tmp/{deb.name}")
    lines = [line for line in log.splitlines() if line.startswith("obs-farm-accel:")]
    assert lines == [
        f"obs-farm-accel: accelerating {triplet} (revision skew allowed): "
        f"cc1 cc1plus as ld.bfd; {versions}"
    ], log
    for tool, path in native.items():
        assert os.readlink(root / path.lstrip("/")) == f"{prefix}/wrap/{tool}"
        assert (root / f"{path.lstrip('/')}.emulated").is_file()

    t0 = time.monotonic()
    assert in_root(root, "sh /tmp/src/build.sh acc", {"NEON": NEON[arch]}) == EXPECTED_OUTPUT
    accelerated_s = time.monotonic() - t0

    # Exact lockstep (the default) refuses Debian 12's revision skew: one line,
    # both versions, and the emulated tools stay.
    strict = workdir / f"strict-{arch}"
    shutil.copytree(root / prefix.lstrip("/"), strict, symlinks=True)
    conf = strict / "accel.conf"
    conf.write_text(conf.read_text().replace("REVISION_SKEW=yes", "REVISION_SKEW=no"))
    shutil.move(strict, root / "tmp" / "strict")
    in_root(root, "dpkg -r obs-farm-accel-" + triplet)
    for path in native.values():
        assert not (root / path.lstrip("/")).is_symlink()
        assert not (root / f"{path.lstrip('/')}.emulated").exists()
    log = in_root(root, "/tmp/strict/activate", env={"OBS_FARM_ACCEL_DIR": "/tmp/strict"})
    assert log == f"obs-farm-accel: not accelerating {triplet}, versions differ: {versions}\n"
    assert in_root(root, "dpkg-divert --list 'obs-farm-accel*'") == ""

    # A machine that cannot run the accelerator's programs falls back, loudly.
    moved = root / "tmp" / "strict"
    conf = moved / "accel.conf"
    conf.write_text(conf.read_text().replace("REVISION_SKEW=no", "REVISION_SKEW=yes"))
    (moved / "wrap" / "as").chmod(0o644)
    log = in_root(root, "/tmp/strict/activate", env={"OBS_FARM_ACCEL_DIR": "/tmp/strict"})
    assert log == (
        f"obs-farm-accel: not accelerating {triplet}, this machine cannot run the "
        f"accelerator's amd64 programs: {versions}\n"
    )
    assert in_root(root, "dpkg-divert --list 'obs-farm-accel*'") == ""

    t0 = time.monotonic()
    assert in_root(root, "sh /tmp/src/build.sh emu", {"NEON": NEON[arch]}) == EXPECTED_OUTPUT
    emulated_s = time.monotonic() - t0
    record(
        f"accel {arch}: hello.c + app.cc, emulated / accelerated",
        f"{emulated_s:.1f} s / {accelerated_s:.1f} s",
    )

    # Same code: objects equal without .comment, programs without .comment
    # and the build-id computed over it.
    strip = "--remove-section .comment --remove-section .note.gnu.build-id"
    for name in ("hello.o", "app.o", "hello", "app"):
        in_root(
            root,
            f"cd /tmp/src && objcopy {strip} acc/{name} acc/{name}.cmp && "
            f"objcopy {strip} emu/{name} emu/{name}.cmp && cmp acc/{name}.cmp emu/{name}.cmp",
        )
    comments = {
        o: in_root(root, f"readelf -p .comment /tmp/src/{o}/hello.o") for o in ("acc", "emu")
    }
    assert "GCC: (Debian 12.2.0-14) 12.2.0" in comments["acc"]
    assert "GCC: (Debian 12.2.0-14+deb12u1) 12.2.0" in comments["emu"]

    # obs-build installs the build root one `dpkg --install --force-depends`
    # at a time, in its own order, and g++ came after the accelerator in
    # real OBS builds: the package's file triggers switch cc1plus when g++
    # puts it in place. Here g++-12 is removed, the accelerator installed
    # (no cc1plus yet), then g++-12 installed by the build root's dpkg.
    (gxx,) = [d for d in debian_base.ensure_base(arch).deb_paths() if d.name.startswith("g++-12_")]
    shutil.copy(gxx, root / "tmp" / gxx.name)
    in_root(root, "dpkg -r --force-depends g++-12")
    assert not (root / native["cc1plus"].lstrip("/")).exists()
    log = in_root(root, f"dpkg -i --force-depends /tmp/{deb.name}")
    assert [line for line in log.splitlines() if line.startswith("obs-farm-accel:")] == [
        f"obs-farm-accel: accelerating {triplet} (revision skew allowed): cc1 as ld.bfd; {versions}"
    ], log
    log = in_root(root, f"dpkg -i --force-depends /tmp/{gxx.name}")
    assert [line for line in log.splitlines() if line.startswith("obs-farm-accel:")] == [
        f"obs-farm-accel: accelerating {triplet} (revision skew allowed): "
        f"cc1 cc1plus as ld.bfd; {versions}"
    ], log
    for tool, path in native.items():
        assert os.readlink(root / path.lstrip("/")) == f"{prefix}/wrap/{tool}", tool
        assert (root / f"{path.lstrip('/')}.emulated").is_file(), tool
    in_root(root, "dpkg -r obs-farm-accel-" + triplet)
    for path in native.values():
        assert (root / path.lstrip("/")).is_file() and not (root / path.lstrip("/")).is_symlink()
    assert in_root(root, "dpkg-divert --list 'obs-farm-accel*'") == ""
