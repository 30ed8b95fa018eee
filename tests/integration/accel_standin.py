"""The accelerator built from the build root's own compiler source, through
OBS, with a stand-in for gcc (issue 14; the real gcc build is
bench/accel-gcc's, the real package is accel/gcc).

Debian builds its cross compilers from the `gcc-12-source` binary package
that the gcc-12 source package also builds; an accelerator built the same
way in the farm (accel/gcc) is in version lockstep with the distribution's
compiler by construction, and OBS rebuilds it when that source changes,
because a changed build dependency reschedules a package ("meta change").
This shows that mechanism with three tiny packages (accel/standin/):

- `toycc` builds `toycc` (the "compiler", arch) and `toycc-source` (its
  source tree, all), as gcc-12 builds gcc-12 and gcc-12-source;
- `obs-farm-accel-toycc` is built from `toycc-source` on the builder's
  architecture, versioned `<toycc version>+accel1`; its postinst takes
  the place of /usr/bin/toycc only if the build root's toycc is that version,
  and says which in one line of the build log;
- `toycc-user`, in a project whose config installs the accelerator with
  `Support:` (as accel/prjconf does for the ARM architectures), is built
  with whatever toycc its build root has and ships that toycc's version line.

Then only toycc's changelog changes (1.0 -> 1.1). OBS must rebuild the
accelerator by itself (reason `meta change`) at the new version; a build of
toycc-user in between must never run the accelerator on a version
mismatch; and toycc-user rebuilt (Support packages do not trigger rebuilds,
which is why the check in the build root stays) runs the new accelerator.

Everything builds for x86_64 only: what is shown is OBS's scheduling and the
lockstep check, which are the same for the ARM architectures; running an
accelerator inside emulated ARM build roots is test_farm_builds.py's. The
packages build on the x86_64 worker group of that module, while its
emulated builds keep the ARM groups busy.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integration import obs_backend as ob

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "accel" / "standin"
PRJ, USER_PRJ, REPO_NAME, ARCH = "lab:tc", "lab:tc:user", "Debian_12", "x86_64"
ACCEL = "obs-farm-accel-toycc"


def upload(backend: ob.ObsBackend, base: tuple[str, str]) -> float:
    """The two projects and the three packages at 1.0; the upload's time."""
    backend.create_project(PRJ, REPO_NAME, [base], [ARCH])
    backend.create_project(
        USER_PRJ, REPO_NAME, [(PRJ, REPO_NAME), base], [ARCH], f"Support: {ACCEL}\n"
    )
    since = time.time()
    backend.create_package(PRJ, "toycc", STANDIN / "toycc")
    backend.create_package(PRJ, ACCEL, STANDIN / ACCEL)
    backend.create_package(USER_PRJ, "toycc-user", STANDIN / "toycc-user")
    return since


def bumped_toycc(workdir: Path, version: str) -> Path:
    """toycc's source with one changelog entry more: `version`."""
    src = workdir / f"toycc-{version}"
    shutil.copytree(STANDIN / "toycc", src)
    changelog = src / "debian" / "changelog"
    entry = (
        f"toycc ({version}) unstable; urgency=medium\n\n  * New upload.\n\n"
        " -- obs-farm <obs-farm@example.invalid>  Sat, 28 Nov 2026 13:00:00 +0000\n\n"
    )
    changelog.write_text(entry + changelog.read_text())
    return src


def replace_sources(backend: ob.ObsBackend, project: str, package: str, srcdir: Path) -> float:
    """A new upload of `package` whose files replace the old ones in one
    commit (the old version's .dsc and tarball are dropped from the upload
    revision first); the time of the commit."""
    listing = ET.fromstring(backend.src("GET", f"/source/{project}/{package}"))
    for entry in listing.findall("entry"):
        name = entry.get("name", "")
        if not name.startswith("_"):
            backend.src("DELETE", f"/source/{project}/{package}/{name}", {"rev": "upload"})
    since = time.time()
    backend.create_package(project, package, srcdir)
    return since


def succeeded(
    backend: ob.ObsBackend, project: str, package: str, since: float, timeout: float
) -> ob.BuildResult:
    """A build of `package` that ended after `since`, and succeeded. Waiting
    states pass: a package is unresolvable until the package its build root
    needs (toycc-source, the accelerator) is built and published."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        result = backend.wait_build(project, REPO_NAME, ARCH, package, max(left, 1), since)
        if result.status != "unresolvable" or left <= 0:
            break
        time.sleep(3)
    if result.status != "succeeded":
        with contextlib.suppress(ob.HarnessError):
            print(backend.build_log(project, REPO_NAME, ARCH, package)[-3000:])
    assert result.status == "succeeded", (project, package, result.details)
    return result


def accel_lines(log: str) -> list[str]:
    """The accelerator's lines in a build log, without the log's time stamps."""
    return [re.sub(r"^\[\s*\d+s\] ", "", line) for line in log.splitlines() if f"{ACCEL}:" in line]


def built_with(backend: ob.ObsBackend, workdir: Path, tag: str) -> str:
    """The toycc version line toycc-user's last build shipped."""
    (deb,) = backend.fetch_binaries(
        USER_PRJ, REPO_NAME, ARCH, "toycc-user", workdir / tag, "toycc-user_*.deb"
    )
    return ob.deb_files(deb)["./usr/share/toycc-user/built-with"].decode().strip()


def deb_version(backend: ob.ObsBackend, workdir: Path, obs_package: str, binary: str) -> str:
    """The version of `binary` as PRJ's `obs_package` last built it (OBS
    appends its release number, <CI_CNT>.<B_CNT>, to the changelog's)."""
    dest = workdir / f"{binary}-{time.monotonic_ns()}"
    (deb,) = backend.fetch_binaries(PRJ, REPO_NAME, ARCH, obs_package, dest, f"{binary}_*.deb")
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def line_for(native: str, accel_from: str) -> str:
    if native == accel_from:
        return (
            f"{ACCEL}: accelerating: toycc {native} in the build root; "
            f"accelerator built from toycc-source {accel_from}"
        )
    return (
        f"{ACCEL}: not accelerating, versions differ: toycc {native} in the build root; "
        f"accelerator built from toycc-source {accel_from}"
    )


def check(backend: ob.ObsBackend, workdir: Path, since: float, timeout: float) -> dict[str, float]:
    """The whole check, from the upload at `since`; its phases' times."""
    t: dict[str, float] = {}
    # 1. Everything at 1.0: the accelerator is built from toycc-source and
    # runs in toycc-user's build root.
    for project, package in ((PRJ, "toycc"), (PRJ, ACCEL), (USER_PRJ, "toycc-user")):
        succeeded(backend, project, package, since, timeout)
    t["first round"] = time.time() - since
    first = deb_version(backend, workdir, "toycc", "toycc")
    assert first.startswith("1.0"), first
    assert deb_version(backend, workdir, "toycc", "toycc-source") == first
    assert deb_version(backend, workdir, ACCEL, ACCEL) == f"{first}+accel1"
    log = backend.build_log(USER_PRJ, REPO_NAME, ARCH, "toycc-user")
    assert accel_lines(log) == [line_for(first, first)], log[-3000:]
    assert built_with(backend, workdir, "user-1") == f"toycc {first} (accelerator)"

    # 2. Only toycc changes. OBS rebuilds the accelerator by itself, because
    # its build dependency toycc-source changed.
    t0 = since = replace_sources(backend, PRJ, "toycc", bumped_toycc(workdir, "1.1"))
    succeeded(backend, PRJ, "toycc", since, timeout)
    second = deb_version(backend, workdir, "toycc", "toycc")
    assert second.startswith("1.1"), second
    succeeded(backend, PRJ, ACCEL, since, timeout)
    history = backend.job_history(PRJ, REPO_NAME, ARCH, ACCEL)
    assert len(history) == 2 and history[-1].get("reason") == "meta change", history
    t["accelerator rebuilt"] = time.time() - t0
    assert deb_version(backend, workdir, ACCEL, ACCEL) == f"{second}+accel1"

    # toycc-user's build dependency changed too, so OBS rebuilt it, with the
    # old or the new accelerator: never accelerated on a mismatch.
    succeeded(backend, USER_PRJ, "toycc-user", since, timeout)
    log = backend.build_log(USER_PRJ, REPO_NAME, ARCH, "toycc-user")
    lines, shipped = accel_lines(log), built_with(backend, workdir, "user-2")
    assert (lines, shipped) in (
        ([line_for(second, first)], f"toycc {second} (native)"),
        ([line_for(second, second)], f"toycc {second} (accelerator)"),
    ), (lines, shipped)
    print(f"toycc-user rebuilt by OBS after the bump: {lines[0]}")

    # 3. A rebuild of toycc-user (a new accelerator alone does not cause one)
    # runs the new accelerator.
    since = backend.rebuild(USER_PRJ, "toycc-user", ARCH)
    succeeded(backend, USER_PRJ, "toycc-user", since, timeout)
    log = backend.build_log(USER_PRJ, REPO_NAME, ARCH, "toycc-user")
    assert accel_lines(log) == [line_for(second, second)], log[-3000:]
    assert built_with(backend, workdir, "user-3") == f"toycc {second} (accelerator)"
    return t
