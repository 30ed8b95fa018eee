"""Real Debian packages through the real OBS backend: native, emulated and
accelerated wall times, phase by phase (issue 14, "Real packages, not toy ones").

    flock /tmp/obs-farm-integration.lock venv/bin/python bench/packages/bench_packages.py \
        [--packages libogg=1.3.5-3,lzo2=2.10-2,...] \
        [--modes x86_64,aarch64,aarch64+accel,armv7l,armv7l+accel] [--json OUT]

Run as root from the repository root. The integration tier's harness is
reused as is: Debian bookworm sources fetched by `apt-get source` with
private apt state (debian_base.ensure_source), their build dependencies
resolved into the base project's `:full` the same way
(debian_base.ensure_base), the OBS backend on 127.0.0.1 with the dev stack's
rendered config (farm.farm_backend), the dev stack's worker groups run by
cloud-init/obs-farm-worker.sh (test_farm_builds.FarmWorkers) and jobs pinned
to them by host label (test_farm_builds.pin_constraints). Accelerated builds
follow test_accelerated_builds_match_the_emulated_ones: obs-farm-accel is
built by OBS on x86_64 and handed to the ARM build roots by accel/prjconf:
from the build root's own gcc source (accel/gcc, the only accelerator with
exact versions on Debian 12) for the architectures --accel-from-source names,
aarch64 by default, and from Debian's cross packages (accel/) for the others.

Builds run one at a time (one package, one mode), so every wall time is that
of a build alone on the machine. For each build it records the job's time on
the worker (job history endtime - starttime) and the phases read from the
build log's `[  123s]` stamps; see log_phases(). Not a test: it asserts
nothing about speed, and a failed build is reported and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# integration_lock and require_host give up through pytest.skip.
import pytest  # noqa: E402

from config import load_settings  # noqa: E402
from tests.helpers.binfmt import integration_lock  # noqa: E402
from tests.integration import debian_base  # noqa: E402
from tests.integration import obs_backend as ob  # noqa: E402
from tests.integration.farm import (  # noqa: E402
    farm_backend,
    require_host,
    scratch_dir,
    wait_registered,
)
from tests.integration.test_farm_builds import (  # noqa: E402
    ACCEL_SRC,
    FarmWorkers,
    deb_manifest,
    elf_sections,
    pin_constraints,
    without_build_id,
)
from tools.check import ar_members  # noqa: E402
from tools.offline import read_stack_config  # noqa: E402

#: Bookworm versions, pinned (bench/packages/README.md says why these).
DEFAULT_PACKAGES: tuple[tuple[str, str], ...] = (
    ("libogg", "1.3.5-3"),
    ("lzo2", "2.10-2"),
    ("pcre2", "10.42-1"),
    ("gmp", "2:6.2.1+dfsg1-1.1"),
    ("double-conversion", "3.2.1-1"),
    ("yaml-cpp", "0.7.0+dfsg-8"),
)
MODES: tuple[str, ...] = ("x86_64", "aarch64", "aarch64+accel", "armv7l", "armv7l+accel")
ARCHS = ("x86_64", "aarch64", "armv7l")
NATIVE = "x86_64"
BASE_PROJECT, BASE_REPO = "Debian:12", "main"
PLAIN_PROJECT, ACCEL_PROJECT = "bench", "bench:accel"
REPO = "Debian_12"
ACCEL_PACKAGE = "obs-farm-accel"
#: The accelerator built from the build root's own gcc-12 source (accel/gcc),
#: in a project of its own: it makes the same binary packages as accel/.
ACCEL_GCC_PROJECT, ACCEL_GCC_PACKAGE = "bench:accel-gcc", "obs-farm-accel-gcc"
ACCEL_GCC_SRC = ROOT / "accel" / "gcc"
#: What accel/gcc's debian/rules builds unless told otherwise; OBS passes no
#: environment, so the benchmark narrows it in the uploaded copy.
ACCEL_TARGETS_LINE = re.compile(r"^ACCEL_TARGETS \?= .*$", re.M)
#: gcc's Debian architecture (debian/target) per OBS architecture.
DEB_ARCH = {"aarch64": "arm64", "armv7l": "armhf"}
#: Exported accelerator package each ARM build root gets (accel/prjconf).
ACCEL_BINARY = {
    "aarch64": "obs-farm-accel-aarch64-linux-gnu",
    "armv7l": "obs-farm-accel-arm-linux-gnueabihf",
}
REGISTER_TIMEOUT_S = 120
ACCEL_BUILD_TIMEOUT_S = 3600
#: gcc-12 took 36 minutes per target under dpkg-buildpackage here
#: (bench/accel-gcc); three hours leaves room for both targets.
ACCEL_GCC_BUILD_TIMEOUT_S = 3 * 3600
#: How long `unresolvable` may last before it counts: the scheduler can see a
#: new package before it has the accelerator the x86_64 build exported.
UNRESOLVABLE_GRACE_S = 300
LOG_TAIL_LINES = 60


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Mode:
    """One way of building: an OBS architecture, with or without the accelerator."""

    name: str

    @property
    def arch(self) -> str:
        return self.name.split("+", 1)[0]

    @property
    def accel(self) -> bool:
        return self.name.endswith("+accel")

    def project(self, from_source: frozenset[str]) -> str:
        """The OBS project this mode builds in: plain, or the one whose
        accelerator is built from gcc's source (for an architecture in
        `from_source`) or from Debian's cross packages."""
        if not self.accel:
            return PLAIN_PROJECT
        return ACCEL_GCC_PROJECT if self.arch in from_source else ACCEL_PROJECT


def parse_packages(text: str) -> list[tuple[str, str]]:
    """`libogg=1.3.5-3,gmp=2:6.2.1+dfsg1-1.1` -> [(name, version), ...]."""
    out = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, version = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name) or not version:
            raise argparse.ArgumentTypeError(
                f"--packages entries must be SOURCE=VERSION (e.g. libogg=1.3.5-3); got {item!r}"
            )
        out.append((name, version))
    if not out:
        raise argparse.ArgumentTypeError("--packages names no package")
    return out


def parse_modes(text: str) -> list[Mode]:
    """`x86_64,aarch64+accel` -> modes, each one of MODES."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in MODES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--modes must be a list of {', '.join(MODES)}; got {text!r}"
        )
    return [Mode(m) for m in dict.fromkeys(names)]


def parse_from_source(text: str) -> frozenset[str]:
    """`aarch64,armv7l` (or `none`) -> the emulated architectures whose
    accelerator is built from the build root's own gcc source."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    if names == ["none"]:
        return frozenset()
    bad = [a for a in names if a not in DEB_ARCH]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--accel-from-source must be `none` or a list of {', '.join(DEB_ARCH)}; got {text!r}"
        )
    return frozenset(names)


def accel_gcc_source(dest: Path, archs: Sequence[str]) -> Path:
    """The obs-farm-accel-gcc source tree as OBS gets it, in `dest`: accel/gcc's
    debian/ with the scripts it calls from accel/, building only the targets
    of `archs` (OBS architectures). Returns the tree's directory."""
    targets = " ".join(DEB_ARCH[a] for a in sorted(archs, key=ARCHS.index))
    if not targets:
        raise ValueError("accel_gcc_source: no target architecture")
    tree = dest / ACCEL_GCC_PACKAGE
    shutil.copytree(ACCEL_GCC_SRC / "debian", tree / "debian", symlinks=True)
    for script in ("build-accelerator.sh", "accel-exec.c", "activate.sh"):
        shutil.copy2(ROOT / "accel" / script, tree / script)
    rules = tree / "debian" / "rules"
    text, n = ACCEL_TARGETS_LINE.subn(f"ACCEL_TARGETS ?= {targets}", rules.read_text())
    if n != 1:
        raise ValueError(f"{rules}: expected one `ACCEL_TARGETS ?=` line, found {n}")
    rules.write_text(text)
    return tree


_STAMP = re.compile(r"^\[\s*(\d+)s\] ?(.*)$")
#: accel/gcc's rules: `obs-farm-accel-gcc: gcc-12 for arm64 built in 1137 s`.
GCC_BUILT = re.compile(r"^obs-farm-accel-gcc: gcc-12 for \S+ built in \d+ s$")
#: dpkg-buildpackage's first line, once obs-build has set up the build root.
BUILD_START = re.compile(r"^dpkg-buildpackage: info: source package ")
#: Where the package's tests start: dh's `   dh_auto_test` (or the override
#: it runs), else the `make check` a hand-written rules file runs (gmp).
DH_TEST = re.compile(r"^   (debian/rules override_)?dh_auto_test\b")
MAKE_CHECK = re.compile(r"^(\S*/)?make (\S+ )*check\b")
#: Where they end: dh's next step (dh prints each with three spaces), or
#: dpkg-buildpackage calling the binary target after a separate build.
#: With Rules-Requires-Root: no, dpkg-buildpackage runs `debian/rules
#: binary` alone, before the build, so that line cannot start the phase.
DH_STEP = re.compile(r"^   (dh_\w+|debian/rules override_dh_\w+|create-stamp)\b")
BINARY_START = re.compile(r"^ (fakeroot )?debian/rules binary\b")


@dataclass(frozen=True)
class Phases:
    """Seconds per phase from the build log's stamps (None: marker not found).

    install: log start to dpkg-buildpackage (the build root set up, its
    packages installed, the accelerator's postinst included); build:
    configure and compile, up to the tests; tests: the package's test suite
    (dh_auto_test, or gmp's make check); binary: the rest of the log
    (install, strip, dpkg-deb, obs-build's checks). log_end is the log's last
    stamp: the job's time on the worker less downloading the build root's
    packages before the log starts and uploading the results after.
    """

    install: float | None = None
    build: float | None = None
    tests: float | None = None
    binary: float | None = None
    log_end: float | None = None


def _ends_tests(text: str) -> bool:
    return bool((DH_STEP.match(text) and not DH_TEST.match(text)) or BINARY_START.match(text))


def log_phases(log: str) -> Phases:
    """Split an obs-build log into the phases Phases names."""
    start = tests = tests_end = last = None
    for line in log.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        t, text = float(m[1]), m[2]
        last = t
        if start is None:
            if BUILD_START.match(text):
                start = t
        elif tests is None:
            if DH_TEST.match(text) or MAKE_CHECK.match(text):
                tests = t
        elif tests_end is None and _ends_tests(text):
            tests_end = t
    if start is None or last is None:
        return Phases(log_end=last)
    return Phases(
        install=start,
        build=None if tests is None else tests - start,
        tests=None if tests is None or tests_end is None else tests_end - tests,
        binary=None if tests_end is None else last - tests_end,
        log_end=last,
    )


def log_texts(log: str) -> list[str]:
    """A build log's lines without obs-build's `[  123s]` stamps."""
    return [m[2] if (m := _STAMP.match(line)) else line for line in log.splitlines()]


def accel_lines(log: str) -> list[str]:
    """The accelerator's own lines: one when it is installed, one more each
    time its file triggers run it again."""
    return [text for text in log_texts(log) if "obs-farm-accel:" in text]


@dataclass
class BuildRecord:
    package: str
    version: str
    mode: str
    project: str
    arch: str
    obs_package: str
    status: str
    details: str = ""
    workerid: str = ""
    job_seconds: float | None = None
    wall_seconds: float | None = None
    phases: Phases = field(default_factory=Phases)
    accel_lines: list[str] = field(default_factory=list)
    log_tail: str = ""


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def _ratio(value: float | None, native: float | None) -> str:
    return "" if value is None or not native else f" ({value / native:.1f}x)"


def render_tables(
    records: Sequence[BuildRecord],
    modes: Sequence[Mode],
    comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """Markdown: per package its phases per mode and what compare_builds
    found, then the summary tables (whole job with ratios to native, and the
    tests alone)."""
    names = list(dict.fromkeys(r.package for r in records))
    by = {(r.package, r.mode): r for r in records}
    out = []
    for name in names:
        native = by.get((name, NATIVE))
        native_job = native.job_seconds if native and native.status == "succeeded" else None
        out += [
            f"### {name} {next(r.version for r in records if r.package == name)}",
            "",
            "| mode | status | whole job | install | configure+compile | tests | binary |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode in modes:
            r = by.get((name, mode.name))
            if r is None:
                continue
            p = r.phases
            ratio = "" if mode.name == NATIVE else _ratio(r.job_seconds, native_job)
            out.append(
                f"| {mode.name} | {r.status} | {_secs(r.job_seconds)}{ratio} | "
                f"{_secs(p.install)} | {_secs(p.build)} | {_secs(p.tests)} | {_secs(p.binary)} |"
            )
        for r in records:
            if r.package == name and r.accel_lines:
                # The last line is what the build ran with: the package's
                # file triggers say it again when a later package installs
                # one of its tools (g++'s cc1plus).
                out.append(f"\n{r.mode}: `{r.accel_lines[-1]}`")
        for arch, c in (comparisons or {}).get(name, {}).items():
            out.append(f"\n{arch}+accel against {arch}: {c['summary']}")
        out.append("")
    for title, pick in (
        ("Whole job on the worker (ratio to x86_64 native)", lambda r: r.job_seconds),
        ("Tests alone (dh_auto_test or make check), from the log", lambda r: r.phases.tests),
    ):
        out += [
            f"### {title}",
            "",
            "| package | " + " | ".join(m.name for m in modes) + " |",
            "| --- |" + " --- |" * len(modes),
        ]
        for name in names:
            native = by.get((name, NATIVE))
            base = pick(native) if native and native.status == "succeeded" else None
            cells = []
            for mode in modes:
                r = by.get((name, mode.name))
                if r is None:
                    cells.append("")
                elif r.status != "succeeded":
                    cells.append(r.status)
                else:
                    ratio = "" if mode.name == NATIVE else _ratio(pick(r), base)
                    cells.append(_secs(pick(r)) + ratio)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def compare_builds(fast: Mapping[str, Path], slow: Mapping[str, Path]) -> dict[str, Any]:
    """An accelerated build's .debs (by binary package) against the emulated
    build's: the same binary packages; which .debs are byte-identical as
    files; in each, the same files and relationships
    (test_farm_builds.deb_manifest); and every regular file byte for byte,
    or for one that differs, how: the sections of an ELF file, the members
    of an ar archive (a static library), or `content`. Detached debug files
    are named by build-id, so one whose build-id differs is matched by its
    name without it."""
    out: dict[str, Any] = {
        "packages": sorted(fast),
        "same_packages": set(fast) == set(slow),
        "debs_identical": [],
        "manifests_differ": [],
        "files_identical": 0,
        "files_differ": {},
        "files_unmatched": [],
    }
    for pkg in sorted(set(fast) & set(slow)):
        if fast[pkg].read_bytes() == slow[pkg].read_bytes():
            out["debs_identical"].append(pkg)
        if deb_manifest(fast[pkg]) != deb_manifest(slow[pkg]):
            out["manifests_differ"].append(pkg)
        a, b = ob.deb_files(fast[pkg]), ob.deb_files(slow[pkg])
        pairs = [(path, path, path) for path in sorted(set(a) & set(b))]
        rest_a = {without_build_id(p): p for p in set(a) - set(b)}
        rest_b = {without_build_id(p): p for p in set(b) - set(a)}
        both = set(rest_a) & set(rest_b)
        pairs += [(key, rest_a[key], rest_b[key]) for key in sorted(both)]
        for key, pa, pb in pairs:
            if a[pa] == b[pb]:
                out["files_identical"] += 1
            else:
                out["files_differ"][key] = how_differ(a[pa], b[pb])
        out["files_unmatched"] += sorted(
            p for p in (set(a) ^ set(b)) if without_build_id(p) not in both
        )
    return out


def how_differ(a: bytes, b: bytes) -> list[str]:
    """Where two versions of one file differ: ELF sections, ar members
    (with their sections), or just `content`."""
    if a.startswith(b"\x7fELF") and b.startswith(b"\x7fELF"):
        sa, sb = elf_sections(a), elf_sections(b)
        return sorted(s for s in set(sa) | set(sb) if sa.get(s) != sb.get(s))
    if a.startswith(b"!<arch>\n") and b.startswith(b"!<arch>\n"):
        ma, mb = ar_members(a), ar_members(b)
        return sorted(
            f"{m}: {' '.join(how_differ(ma[m], mb[m])) if m in ma and m in mb else 'only one side'}"
            for m in set(ma) | set(mb)
            if ma.get(m) != mb.get(m)
        )
    return ["content"]


def compare_summary(c: Mapping[str, Any]) -> str:
    """One line for the table: what compare_builds found."""
    n_pkgs, n_debs = len(c["packages"]), len(c["debs_identical"])
    parts = [
        "same binary packages" if c["same_packages"] else "different binary packages",
        "same files and relationships"
        if not c["manifests_differ"]
        else "files or relationships differ in " + ", ".join(c["manifests_differ"]),
        f"{n_debs} of {n_pkgs} .debs byte-identical",
    ]
    n_same, differ = c["files_identical"], c["files_differ"]
    files = f"{n_same} of {n_same + len(differ)} files byte-identical"
    if differ:
        by_how: dict[str, list[str]] = {}
        for path, how in differ.items():
            by_how.setdefault(", ".join(how), []).append(path.rsplit("/", 1)[-1])
        files += "; the others differ in " + "; ".join(
            f"{how} ({', '.join(names)})" for how, names in by_how.items()
        )
    if c["files_unmatched"]:
        files += f"; only on one side: {', '.join(c['files_unmatched'])}"
    return ", ".join([*parts, files])


# --------------------------------------------------------------------------- OBS side


def wait_final(
    obs: ob.ObsBackend, project: str, arch: str, name: str, timeout: float, since: float
) -> ob.BuildResult:
    """wait_build, letting `unresolvable` pass for UNRESOLVABLE_GRACE_S."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(1.0, deadline - time.monotonic())
        result = obs.wait_build(project, REPO, arch, name, left, since, interval=5.0)
        if result.status != "unresolvable" or time.time() - since > UNRESOLVABLE_GRACE_S:
            return result
        time.sleep(10)


def stop_build(obs: ob.ObsBackend, project: str, arch: str, name: str) -> None:
    """Abort a build that ran out of time and keep it from being scheduled
    again, then wait (bounded) until no worker builds it any more."""
    with contextlib.suppress(ob.HarnessError):
        obs.src(
            "POST",
            f"/build/{project}",
            [("cmd", "abortbuild"), ("package", name), ("arch", arch), ("repository", REPO)],
        )
    obs.put_package_meta(project, name, [], use_for_build=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not any(w.package == name for w in obs.workerstatus().building):
            return
        time.sleep(5)


def bench_full(
    sources: Mapping[str, list[Path]],
    archs: Sequence[str],
    accel_projects: Sequence[str],
    default_set: bool,
) -> dict[str, list[debian_base.BaseSet]]:
    """Per architecture, every chosen package's build dependencies (and on
    x86_64 those of the accelerators `accel_projects` build, as the
    integration tier resolves them)."""
    needs: set[str] = set()
    for files in sources.values():
        (dsc,) = [p for p in files if p.suffix == ".dsc"]
        needs |= set(debian_base.source_build_depends(dsc))
    base = debian_base.BUILD_PACKAGES + debian_base.EXTRA_PACKAGES
    # One cache for the default set, one for any other, so a smoke run with a
    # subset does not prune the full set's download.
    cache = debian_base.TEST_CACHE / "obs-lab-bench" / ("default" if default_set else "custom")
    sets = {a: [debian_base.ensure_base(a, base + tuple(sorted(needs)), cache)] for a in archs}
    for project, src, cache_name in (
        (ACCEL_PROJECT, ACCEL_SRC, "obs-lab-accel"),
        (ACCEL_GCC_PROJECT, ACCEL_GCC_SRC, "obs-lab-accel-gcc"),
    ):
        if project in accel_projects:
            deps = debian_base.source_build_depends(src / "debian" / "control")
            sets.setdefault(NATIVE, []).append(
                debian_base.ensure_base(
                    NATIVE, base + tuple(deps), cache_root=debian_base.TEST_CACHE / cache_name
                )
            )
    return sets


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.packages: list[tuple[str, str]] = args.packages
        self.modes: list[Mode] = args.modes
        self.from_source: frozenset[str] = args.accel_from_source
        self.timeout: float = args.timeout
        self.json_out: Path | None = args.json
        self.log_dir: Path | None = args.log_dir
        self.records: list[BuildRecord] = []
        #: Per accelerator project: its build's status, job time, log tail.
        self.accelerator: dict[str, dict[str, Any]] = {}
        #: Per package and ARM architecture: accelerated against emulated.
        self.comparisons: dict[str, dict[str, dict[str, Any]]] = {}
        self.workdir: Path | None = None
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def run(self) -> None:
        print("fetching sources ...", flush=True)
        sources = {n: debian_base.ensure_source(n, v) for n, v in self.packages}
        accel_projects = self.accel_projects()
        archs = sorted({m.arch for m in self.modes}, key=ARCHS.index)
        default_set = sorted(self.packages) == sorted(DEFAULT_PACKAGES)
        settings = load_settings(read_stack_config("dev"))
        with scratch_dir("obs-farm-bench-packages-") as workdir:
            self.workdir = workdir
            print("resolving build dependencies ...", flush=True)
            full = bench_full(sources, archs, list(accel_projects), default_set)
            with farm_backend(settings, workdir) as obs:
                obs.setup_debian_project(list(ARCHS))
                for arch, bases in full.items():
                    for base in bases:
                        obs.add_to_full(BASE_PROJECT, BASE_REPO, arch, base)
                paths = [(BASE_PROJECT, BASE_REPO)]
                obs.create_project(PLAIN_PROJECT, REPO, paths, list(ARCHS))
                prjconf = (ACCEL_SRC / "prjconf").read_text()
                for project in accel_projects:
                    obs.create_project(project, REPO, paths, list(ARCHS), prjconf)
                workers = FarmWorkers(settings, workdir / "farm", obs.reposerver)
                try:
                    self._with_workers(obs, workers, sources, accel_projects)
                finally:
                    workers.stop()
        print()
        print(render_tables(self.records, self.modes, self.comparisons))

    def accel_projects(self) -> dict[str, list[str]]:
        """Accelerator project -> the ARM architectures it accelerates."""
        out: dict[str, list[str]] = {}
        for mode in self.modes:
            if mode.accel:
                out.setdefault(mode.project(self.from_source), []).append(mode.arch)
        return out

    def _with_workers(
        self,
        obs: ob.ObsBackend,
        workers: FarmWorkers,
        sources: Mapping[str, list[Path]],
        accel_projects: Mapping[str, list[str]],
    ) -> None:
        want = {wid for g in workers.pool.groups for wid in g.worker_ids(workers.host)}
        workers.start()
        idle = wait_registered(obs, want, REGISTER_TIMEOUT_S)
        if set(idle) != want:
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in workers.logs.iterdir()}
            raise SystemExit(f"workers registered: {sorted(idle)} of {sorted(want)}; {logs}")
        accel_ok = {p: self._build_accelerator(obs, p, a) for p, a in accel_projects.items()}
        for name, version in self.packages:
            for mode in self.modes:
                project = mode.project(self.from_source)
                if mode.accel and not accel_ok[project]:
                    record = BuildRecord(
                        name, version, mode.name, project, mode.arch, "", "skipped",
                        details=f"the accelerator of {project} did not build",
                    )  # fmt: skip
                else:
                    record = self._build(obs, mode, name, version, sources[name])
                self.records.append(record)
                self._report(record)
                self._write_json()
            self._compare(obs, name)
            self._write_json()

    def _build_accelerator(self, obs: ob.ObsBackend, project: str, archs: Sequence[str]) -> bool:
        """Build `project`'s accelerator on x86_64 and wait until the ARM
        repositories of `archs` have it; False (and why, in the JSON) if not."""
        since = time.time()
        if project == ACCEL_GCC_PROJECT:
            package, timeout = ACCEL_GCC_PACKAGE, ACCEL_GCC_BUILD_TIMEOUT_S
            with tempfile.TemporaryDirectory(prefix="obs-farm-accel-gcc-") as tmp:
                tree = accel_gcc_source(Path(tmp), archs)
                obs.create_package(project, package, tree, build_archs=[NATIVE])
        else:
            package, timeout = ACCEL_PACKAGE, ACCEL_BUILD_TIMEOUT_S
            obs.create_package(project, package, ACCEL_SRC, build_archs=[NATIVE])
        print(f"building {package} in {project} on x86_64 for {', '.join(archs)} ...", flush=True)
        result = obs.wait_build(project, REPO, NATIVE, package, timeout, since)
        record: dict[str, Any] = {
            "package": package,
            "archs": list(archs),
            "status": result.status,
            "job_seconds": result.job_seconds,
        }
        self.accelerator[project] = record
        print(f"{package} x86_64: {result.status}, job {_secs(result.job_seconds)}", flush=True)
        log = obs.build_log(project, REPO, NATIVE, package)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{package}_x86_64.log").write_text(log)
        # accel/gcc's rules print the gcc build's own time per target (make
        # also echoes the recipe that prints it: not matched).
        record["lines"] = [text for text in log_texts(log) if GCC_BUILT.match(text)]
        if result.status != "succeeded":
            record["log_tail"] = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
            print(record["log_tail"])
            self._write_json()
            return False
        # The x86_64 build's packages reach the ARM repositories by export;
        # wait until each ARM scheduler has them.
        for arch in archs:
            listing = f"/build/{project}/{REPO}/{arch}/_repository"
            binary = ACCEL_BINARY[arch].encode()

            def exported(path: str = listing, name: bytes = binary) -> bool:
                return name in obs.rep("GET", path)

            try:
                ob.wait_until(exported, 300, f"{ACCEL_BINARY[arch]} exported to {arch}", 5.0)
            except ob.HarnessError as err:
                record["error"] = str(err)
                print(err)
                self._write_json()
                return False
        self._write_json()
        return True

    def _build(
        self, obs: ob.ObsBackend, mode: Mode, name: str, version: str, files: list[Path]
    ) -> BuildRecord:
        obs_name = f"{name}-{mode.arch}"
        project = mode.project(self.from_source)
        print(f"{name} {version} {mode.name} ({project}): building ...", flush=True)
        record = BuildRecord(name, version, mode.name, project, mode.arch, obs_name, "")
        since = time.time()
        obs.create_package(
            project,
            obs_name,
            files,
            extra_files={"_constraints": pin_constraints()},
            build_archs=[mode.arch],
            use_for_build=False,
        )
        try:
            result = wait_final(obs, project, mode.arch, obs_name, self.timeout, since)
        except ob.BuildTimeout as err:
            stop_build(obs, project, mode.arch, obs_name)
            record.status, record.details = "timeout", str(err)[:500]
            record.wall_seconds = time.time() - since
            return record
        record.status, record.details = result.status, result.details
        record.workerid, record.job_seconds = result.workerid, result.job_seconds
        record.wall_seconds = result.wall_seconds
        try:
            log = obs.build_log(project, REPO, mode.arch, obs_name)
        except ob.HarnessError as err:  # unresolvable/broken: no log
            log = f"(no build log: {err})"
        record.phases = log_phases(log)
        record.accel_lines = accel_lines(log)
        if result.status != "succeeded":
            record.log_tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{name}_{mode.name}.log").write_text(log)
        return record

    def _compare(self, obs: ob.ObsBackend, name: str) -> None:
        """For each ARM architecture built both ways, compare the results."""
        by = {r.mode: r for r in self.records if r.package == name}
        assert self.workdir is not None
        for arch in ARCHS:
            emu, acc = by.get(arch), by.get(f"{arch}+accel")
            if not (emu and acc and emu.status == acc.status == "succeeded"):
                continue
            debs = []
            for r in (acc, emu):
                # Kept with the logs when asked, to be compared again.
                dest = (self.log_dir or self.workdir / "compare") / "debs" / name / r.mode
                got = obs.fetch_binaries(r.project, REPO, r.arch, r.obs_package, dest, "*.deb")
                debs.append({d.name.split("_", 1)[0]: d for d in got})
            c = compare_builds(*debs)
            c["summary"] = compare_summary(c)
            self.comparisons.setdefault(name, {})[arch] = c
            print(f"{name} {arch}+accel against {arch}: {c['summary']}", flush=True)

    def _report(self, r: BuildRecord) -> None:
        p = r.phases
        print(
            f"{r.package} {r.version} {r.mode}: {r.status}, job {_secs(r.job_seconds)} "
            f"(install {_secs(p.install)}, configure+compile {_secs(p.build)}, "
            f"tests {_secs(p.tests)}, binary {_secs(p.binary)}) {r.workerid}",
            flush=True,
        )
        for line in r.accel_lines:
            print(f"  {line}")
        if r.status != "succeeded":
            print(f"  details: {r.details}")
            if r.log_tail:
                print("  " + r.log_tail.replace("\n", "\n  "))

    def _write_json(self) -> None:
        if self.json_out is None:
            return
        doc = {
            "command": sys.argv,
            "started": self.started,
            "cpus": os.cpu_count(),
            "packages": [f"{n}={v}" for n, v in self.packages],
            "modes": [m.name for m in self.modes],
            "accel_from_source": sorted(self.from_source),
            "accelerator": self.accelerator,
            "comparisons": self.comparisons,
            "builds": [asdict(r) for r in self.records],
        }
        self.json_out.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument(
        "--packages",
        type=parse_packages,
        default=list(DEFAULT_PACKAGES),
        help="SOURCE=VERSION,... of Debian bookworm (default: the six of the README)",
    )
    ap.add_argument(
        "--modes",
        type=parse_modes,
        default=[Mode(m) for m in MODES],
        help=f"comma-separated, of {','.join(MODES)} (default: all)",
    )
    ap.add_argument(
        "--accel-from-source",
        type=parse_from_source,
        default=frozenset({"aarch64"}),
        help="emulated architectures whose accelerator is built by OBS from the build root's "
        "own gcc-12 source (accel/gcc, about 35 minutes per target), the others' from Debian's "
        "cross packages (accel/); `none` or a list of aarch64,armv7l (default: aarch64)",
    )
    ap.add_argument("--json", type=Path, help="write every build's numbers here")
    ap.add_argument(
        "--log-dir", type=Path, help="keep every build log here, and the .debs compared"
    )
    ap.add_argument(
        "--timeout", type=float, default=6 * 3600, help="seconds one build may take (6 h)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: chroot builds, binfmt_misc and the backend's daemons")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(integration_lock())
            require_host()
        except pytest.skip.Exception as err:
            raise SystemExit(
                f"{err.msg}; run it as `flock /tmp/obs-farm-integration.lock venv/bin/python "
                "bench/packages/bench_packages.py ...` to wait for the lock"
            ) from None
        Bench(args).run()


if __name__ == "__main__":
    main()
