"""Real builds through a real OBS backend, on workers run by our own scripts.

The backend is Debian's obs-server 2.9.4 on 127.0.0.1 with the BSConfig.pm
the server's cloud-init renders for the `dev` stack (only $bsdir, the server
address and the loopback worker entry adjusted by the harness), and the
worker ranges from the farm.pm that the run command writes. The workers are
the `dev` stack's worker groups: the rendered group files, started with
cloud-init/obs-farm-worker.sh (binfmt F-flag check, worker code fetched from
the repserver, bs_worker with --arch, ports and host labels), on this host:
building inside the software-emulated VM would take far longer than the
tier's budget, so the VM test (test_worker_vm.py) proves registration and
these prove the builds. hello-obs is built for x86_64 natively and for
aarch64 and armv7l under qemu-user; the .debs must hold ELF files of the
right machine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import cloudinit
from components.topology import azure_worker_pool
from config import load_settings
from tests.integration import debian_base
from tests.integration import obs_backend as ob
from tests.integration.farm import farm_backend, record, require_host, scratch_dir, wait_registered
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELLO_OBS = REPO / "tests" / "data" / "hello-obs"
SCRIPTS = REPO / "cloud-init"
ARCHS = ("x86_64", "aarch64", "armv7l")
GROUP_OF = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7hl"}
BUILD_TIMEOUT_S = 1500
REGISTER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def settings():
    return load_settings(read_stack_config("dev"))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch_dir("obs-farm-builds-") as path:
        yield path


@pytest.fixture(scope="module")
def backend(settings, workdir) -> Iterator[ob.ObsBackend]:
    require_host()
    with farm_backend(settings, workdir) as obs:
        obs.setup_debian_project(list(ARCHS))
        obs.create_project("lab", "Debian_12", [("Debian:12", "main")], list(ARCHS))
        yield obs


class FarmWorkers:
    """The dev stack's worker groups, run by obs-farm-worker.sh on this host."""

    def __init__(self, settings, root: Path, reposerver: str):
        pool = dataclasses.replace(azure_worker_pool(settings), work_dir=str(root / "work"))
        self.pool = pool
        self.conf = root / "etc"
        (self.conf / "groups").mkdir(parents=True)
        # Only paths and the server address differ from the rendered files.
        env = cloudinit.worker_env(pool, "127.0.0.1").replace(
            "/var/lib/obs-farm/worker-code", str(root / "code")
        )
        env = env.replace("http://127.0.0.1:5252", reposerver)
        (self.conf / "worker.env").write_text(env)
        for g in pool.groups:
            (self.conf / "groups" / f"{g.arch}.env").write_text(cloudinit.group_env(g))
        sbin = root / "sbin"
        sbin.mkdir()
        (sbin / "obs-farm-check-binfmt").symlink_to(SCRIPTS / "check-binfmt.sh")
        self.env = {
            **os.environ,
            "OBS_FARM_CONF_DIR": str(self.conf),
            "PATH": f"{sbin}:{os.environ['PATH']}",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = root / "logs"
        self.logs.mkdir()

    def instances(self) -> list[str]:
        return [f"{g.arch}-{n}" for g in self.pool.groups for n in range(1, g.instances + 1)]

    def start(self) -> None:
        for name in self.instances():
            log = (self.logs / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [str(SCRIPTS / "obs-farm-worker.sh"), "run", name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        for name in self.procs:
            subprocess.run(
                [str(SCRIPTS / "obs-farm-worker.sh"), "stop", name],
                env=self.env,
                capture_output=True,
                timeout=60,
            )
        for proc in self.procs.values():
            ob.kill_tree(proc, grace=15.0)


def pin_constraints() -> str:
    """Each job architecture to its own worker group, by our host labels."""
    overwrites = "".join(
        f"<overwrite><conditions><arch>{a}</arch></conditions>"
        f"<hostlabel>obs-farm-{GROUP_OF[a]}</hostlabel></overwrite>"
        for a in ARCHS
    )
    return f"<constraints>{overwrites}</constraints>\n"


def test_hello_obs_builds_on_our_worker_groups(settings, backend, workdir):
    timings: dict[str, float] = {}
    workers = FarmWorkers(settings, workdir / "farm", backend.reposerver)
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    want = {wid: g for g in workers.pool.groups for wid in g.worker_ids(host)}
    try:
        t0 = time.monotonic()
        workers.start()
        idle = wait_registered(backend, set(want), REGISTER_TIMEOUT_S)
        timings["worker groups registered"] = time.monotonic() - t0
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in workers.logs.iterdir()}
        assert set(idle) == set(want), f"registered {sorted(idle)}; logs: {logs}"
        for wid, entry in idle.items():
            assert entry.hostarch == want[wid].scheduler_arch
            port = int(entry.uri.rsplit(":", 1)[1])
            assert port in want[wid].ports(), (wid, entry.uri)

        since = time.time()
        backend.create_package(
            "lab", "hello-obs", HELLO_OBS, extra_files={"_constraints": pin_constraints()}
        )
        results = backend.wait_builds(
            "lab", "Debian_12", "hello-obs", list(ARCHS), BUILD_TIMEOUT_S, since=since
        )
        for arch, result in results.items():
            timings[f"build {arch} (job on worker)"] = result.job_seconds or result.wall_seconds
            if result.status != "succeeded":
                print(backend.build_log("lab", "Debian_12", arch, "hello-obs")[-4000:])
        assert {a: r.status for a, r in results.items()} == dict.fromkeys(ARCHS, "succeeded"), {
            a: r.details for a, r in results.items()
        }
        built_by = {a: r.workerid for a, r in results.items()}
        assert built_by == {a: f"{host}:{GROUP_OF[a]}-1" for a in ARCHS}

        for arch in ARCHS:
            debs = backend.fetch_binaries(
                "lab", "Debian_12", arch, "hello-obs", workdir / "out" / arch, "*.deb"
            )
            assert len(debs) == 1, debs
            assert ob.deb_elf_machines(debs[0]) == {"./usr/bin/hello-obs": ob.ELF_MACHINES[arch]}
    finally:
        workers.stop()
    native = timings["build x86_64 (job on worker)"]
    record("worker groups on host registered", f"{timings['worker groups registered']:.0f} s")
    for arch in ARCHS:
        seconds = timings[f"build {arch} (job on worker)"]
        ratio = "" if arch == "x86_64" else f" ({seconds / native:.1f}x native)"
        record(f"hello-obs build {arch}, 3 at once on 2 cores", f"{seconds:.0f} s{ratio}")


# --------------------------------------------------------------------------- accelerated

ACCEL_SRC = REPO / "accel"
ACCEL_PROJECT = "lab:accel"
ACCEL_ARCHS = ("aarch64", "armv7l")
TRIPLET = {"aarch64": "aarch64-linux-gnu", "armv7l": "arm-linux-gnueabihf"}


def build_depends(control: Path) -> list[str]:
    """Package names in a debian/control's Build-Depends (no alternatives used)."""
    source = debian_base.parse_control(control.read_text().split("\n\n", 1)[0])
    return sorted({dep.split()[0] for dep in source["Build-Depends"].split(",") if dep.strip()})


def deb_manifest(deb: Path) -> tuple[list[str], dict[str, str]]:
    """A .deb's paths with their modes, and the control fields that state its
    relationships and identity."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    files = sorted(f"{line.split()[0]} {line.split()[5]}" for line in listing.splitlines())
    control = debian_base.parse_control(
        subprocess.run(
            ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
        ).stdout
    )
    fields = ("Package", "Version", "Architecture", "Depends", "Pre-Depends", "Provides")
    return files, {f: control.get(f, "") for f in fields}


def test_accelerated_builds_match_the_emulated_ones(settings, backend, workdir):
    """The accelerator the way a farm's users get it: the obs-farm-accel source
    package built by OBS on x86_64 from Debian 12's cross toolchains, handed
    to the ARM architectures by the project's ExportFilter and installed in
    their build roots by Support (accel/prjconf). hello-obs then builds for
    aarch64 and armv7l with the accelerator, runs (emulated) at build time,
    and gives the same files and relationships as the emulated builds of
    test_hello_obs_builds_on_our_worker_groups."""
    extra = debian_base.ensure_base(
        "x86_64",
        debian_base.BUILD_PACKAGES
        + debian_base.EXTRA_PACKAGES
        + tuple(build_depends(ACCEL_SRC / "debian" / "control")),
        cache_root=debian_base.TEST_CACHE / "obs-lab-accel",
    )
    backend.add_to_full("Debian:12", "main", "x86_64", extra)
    prjconf = (ACCEL_SRC / "prjconf").read_text()
    backend.create_project(
        ACCEL_PROJECT, "Debian_12", [("Debian:12", "main")], list(ARCHS), prjconf
    )
    workers = FarmWorkers(settings, workdir / "farm-accel", backend.reposerver)
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    want = {wid for g in workers.pool.groups for wid in g.worker_ids(host)}
    try:
        workers.start()
        wait_registered(backend, want, REGISTER_TIMEOUT_S)
        since = time.time()
        backend.create_package(ACCEL_PROJECT, "obs-farm-accel", ACCEL_SRC, build_archs=["x86_64"])
        backend.create_package(
            ACCEL_PROJECT,
            "hello-obs",
            HELLO_OBS,
            extra_files={"_constraints": pin_constraints()},
            build_archs=list(ACCEL_ARCHS),
        )
        accel = backend.wait_build(
            ACCEL_PROJECT, "Debian_12", "x86_64", "obs-farm-accel", BUILD_TIMEOUT_S, since
        )
        if accel.status != "succeeded":
            print(backend.build_log(ACCEL_PROJECT, "Debian_12", "x86_64", "obs-farm-accel")[-4000:])
        assert accel.status == "succeeded", accel.details
        results = backend.wait_builds(
            ACCEL_PROJECT, "Debian_12", "hello-obs", list(ACCEL_ARCHS), BUILD_TIMEOUT_S, since
        )
    finally:
        workers.stop()
    record("obs-farm-accel build x86_64 (job on worker)", f"{accel.job_seconds or 0:.0f} s")
    for arch, result in results.items():
        log = backend.build_log(ACCEL_PROJECT, "Debian_12", arch, "hello-obs")
        assert result.status == "succeeded", (result.details, log[-4000:])
        lines = [line for line in log.splitlines() if "obs-farm-accel:" in line]
        # cc1plus only where the build root has g++.
        want = re.compile(
            rf"obs-farm-accel: accelerating {re.escape(TRIPLET[arch])} \(revision skew "
            r"allowed\): cc1( cc1plus)? as ld\.bfd; gcc-12 12\.2\.0-14\+deb12u1 and "
            r"binutils 2\.40-2 in the build root; accelerator built from gcc-12 12\.2\.0-14 "
            r"and binutils 2\.40-2$"
        )
        assert len(lines) == 1 and want.search(lines[0]), lines or log[-4000:]
        record(
            f"hello-obs build {arch} accelerated (job on worker)",
            f"{result.job_seconds or 0:.0f} s",
        )
        fast = backend.fetch_binaries(
            ACCEL_PROJECT, "Debian_12", arch, "hello-obs", workdir / "accel" / arch, "*.deb"
        )
        slow = backend.fetch_binaries(
            "lab", "Debian_12", arch, "hello-obs", workdir / "emulated" / arch, "*.deb"
        )
        assert len(fast) == len(slow) == 1, (fast, slow)
        assert deb_manifest(fast[0]) == deb_manifest(slow[0])
        assert ob.deb_elf_machines(fast[0]) == {"./usr/bin/hello-obs": ob.ELF_MACHINES[arch]}
