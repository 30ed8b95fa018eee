"""The accelerator that bench/accel-gcc/build.sh built from the build root's
own gcc source, in an arm64 (or armhf) build root under qemu-user: it must
switch on with *exact* versions (no revision skew allowed), and every
object and program it makes must be byte for byte the emulated compiler's,
.comment and build-id included. Debian 12's own cross packages (12.2.0-14,
the accelerator test_accel.py builds) are run on the same sources beside
it, with the revision skew allowed, to show what the exact match buys:
sp.c has a variable-length array in a stack-protected frame, the case
CVE-2023-4039's fix (12.2.0-14+deb12u1) changes on AArch64.

    venv/bin/python bench/accel-gcc/check.py [--arch aarch64|armv7l] [--deb FILE]

Root, the integration lock (taken here), qemu-user-static; the build
root's packages come from the integration tier's cache. It prints each
compiler's line and what differs; it exits non-zero if the from-source
accelerator does not switch on or its output differs from the emulated
compiler's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.binfmt import kernel_binfmt  # noqa: E402
from tests.integration import debian_base  # noqa: E402
from tests.integration.test_accel import (  # noqa: E402
    APP_CC,
    BUILDER,
    CROSS,
    HELLO_C,
    NEON,
    TARGETS,
    in_root,
    run,
    unpacked_root,
)

SP_C = r"""#include <string.h>
int sp(int n, const char *s) {
  char vla[n];
  char buf[64];
  strcpy(buf, s);
  memcpy(vla, buf, n);
  return vla[n - 1] + buf[3];
}
"""
BUILD = """set -eu
cd /tmp/src
o=$1
mkdir -p "$o"
gcc -O2 -g -ffile-prefix-map=/tmp/src=. -c hello.c -o "$o/hello.o"
gcc -O2 -g -fstack-protector-strong -ffile-prefix-map=/tmp/src=. -c sp.c -o "$o/sp.o"
g++ -O2 -g -ffile-prefix-map=/tmp/src=. ${NEON:-} -c app.cc -o "$o/app.o"
gcc -o "$o/hello" "$o/hello.o" -lm
g++ -o "$o/app" "$o/app.o"
"$o/hello" a b
"$o/app"
"""
OUTPUTS = ("hello.o", "sp.o", "app.o", "hello", "app")


def compiled(root: Path, out: str, arch: str) -> float:
    t0 = time.monotonic()
    in_root(root, f"sh /tmp/src/build.sh {out}", {"NEON": NEON[arch]})
    return time.monotonic() - t0


def differing(root: Path, a: str, b: str) -> list[str]:
    return [
        name
        for name in OUTPUTS
        if (root / "tmp/src" / a / name).read_bytes() != (root / "tmp/src" / b / name).read_bytes()
    ]


def beyond_comment(root: Path, a: str, b: str) -> list[str]:
    """The outputs that still differ without .comment and the build-id (what
    names the compiler's Debian revision): a difference in the code."""
    strip = "--remove-section .comment --remove-section .note.gnu.build-id"
    out = []
    for name in OUTPUTS:
        script = (
            f"cd /tmp/src && objcopy {strip} {a}/{name} {a}/{name}.cmp && "
            f"objcopy {strip} {b}/{name} {b}/{name}.cmp && cmp -s {a}/{name}.cmp {b}/{name}.cmp"
        )
        if run(["chroot", str(root), "/bin/sh", "-c", script]).returncode != 0:
            out.append(name)
    return out


def switch(root: Path, deb: Path, remove: str | None) -> str:
    if remove:
        in_root(root, f"dpkg -r {remove}")
    shutil.copy(deb, root / "tmp" / deb.name)
    log = in_root(root, f"dpkg -i --force-depends /tmp/{deb.name}")
    return next(line for line in log.splitlines() if line.startswith("obs-farm-accel:"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(TARGETS), default="aarch64")
    parser.add_argument("--deb", type=Path, help="the from-source accelerator .deb")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/obs-farm-accel-gcc"))
    args = parser.parse_args(argv)
    triplet = TARGETS[args.arch]
    pkg = f"obs-farm-accel-{triplet}"
    deb = args.deb or next(iter(sorted(args.work.glob(f"{pkg}_*_all.deb"))), None)
    if deb is None or not deb.is_file():
        parser.error(f"--deb: no {pkg}_*_all.deb given or in {args.work}")

    with tempfile.TemporaryDirectory(prefix="obs-farm-accel-gcc-check-") as tmp:
        work = Path(tmp)
        cross = debian_base.ensure_exact("x86_64", CROSS)[0].parent
        proc = run(
            [
                str(BUILDER),
                "--target",
                triplet,
                "--debs",
                str(cross),
                "--out",
                str(work / "debian"),
                "--allow-revision-skew",
            ],
            env={**os.environ, "DPKG_DEB_COMPRESSOR_TYPE": "none"},
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        debian_deb = Path(proc.stdout.strip().splitlines()[-1])
        root = work / "root"
        unpacked_root(debian_base.ensure_base(args.arch).deb_paths(), root)
        src = root / "tmp" / "src"
        src.mkdir()
        for name, text in (("hello.c", HELLO_C), ("sp.c", SP_C), ("app.cc", APP_CC),
                           ("build.sh", BUILD)):  # fmt: skip
            (src / name).write_text(text)
        with kernel_binfmt([args.arch]):
            emulated = compiled(root, "emu", args.arch)
            own_line = switch(root, deb, None)
            own = compiled(root, "own", args.arch)
            debian_line = switch(root, debian_deb, pkg)
            debian = compiled(root, "deb", args.arch)
        own_diff, debian_diff = differing(root, "emu", "own"), differing(root, "emu", "deb")
        debian_code = beyond_comment(root, "emu", "deb")
    print(f"from source ({deb.name}):\n  {own_line}")
    print(f"  differs from the emulated compiler's output in: {own_diff or 'nothing'}")
    print(f"Debian 12's cross packages ({debian_deb.name}):\n  {debian_line}")
    print(f"  differs from the emulated compiler's output in: {debian_diff or 'nothing'}")
    print(f"  ... and without .comment and the build-id in: {debian_code or 'nothing'}")
    print(f"compile and link, emulated / from source / Debian's: "
          f"{emulated:.1f} s / {own:.1f} s / {debian:.1f} s")  # fmt: skip
    ok = "accelerating" in own_line and "(exact versions)" in own_line and not own_diff
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
