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
these prove the builds. A real Debian package, libogg 1.3.5-3 from
bookworm (C, autotools, debhelper; `make check` runs its two self-test
programs at build time), is built for x86_64 natively and for aarch64 and
armv7l under qemu-user; the .debs must hold ELF files of the right machine.
It was chosen as the smallest real package with a test suite whose build
needs nothing beyond build-essential and debhelper (the heavier ones are
bench/packages' subject).

Everything is uploaded before the worker groups start, so the builds run
at once: the emulated ones on the ARM groups, and meanwhile, on the x86_64
group, the native build, the accelerator, and the stand-in of the
accelerator built from the compiler's own source (accel_standin.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components import cloudinit
from components.topology import azure_worker_pool
from config import load_settings
from estimate.workload import load_workload
from tests.integration import accel_standin, debian_base
from tests.integration import obs_backend as ob
from tests.integration.farm import farm_backend, record, require_host, scratch_dir, wait_registered
from tools import jobhistory
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: The real package (name, bookworm version) the tier builds and accelerates.
REAL_PACKAGE = ("libogg", "1.3.5-3")
#: Its shared library (multiarch path) and the last line each of its two
#: self-tests prints when it passes (`make check` stops the build otherwise).
REAL_LIBRARY = "./usr/lib/{triplet}/libogg.so.0.8.5"
REAL_TESTS_PASSED = (
    "Testing unaligned writecopies (MSb): ok.",
    "Testing loss of pages (rollback required)... ok.",
)
TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "armv7l": "arm-linux-gnueabihf",
}
SCRIPTS = REPO / "cloud-init"
ARCHS = ("x86_64", "aarch64", "armv7l")
GROUP_OF = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7hl"}
ACCEL_SRC = REPO / "accel"
ACCEL_PROJECT = "lab:accel"
#: Where the shipped accelerator accelerates on Debian 12: armv7l only
#: (accel/debian/revision-skew allows armhf's revision skew; aarch64 is
#: exact and falls back, which test_accel.py shows in a build root).
ACCEL_ARCHS = ("armv7l",)
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
def real_source() -> list[Path]:
    return debian_base.ensure_source(*REAL_PACKAGE)


@pytest.fixture(scope="module")
def backend(settings, workdir, real_source) -> Iterator[ob.ObsBackend]:
    require_host()
    (dsc,) = [p for p in real_source if p.suffix == ".dsc"]
    needs = debian_base.source_build_depends(dsc)
    with farm_backend(settings, workdir) as obs:
        obs.setup_debian_project(list(ARCHS))
        for arch in ARCHS:
            extra = debian_base.ensure_base(
                arch,
                debian_base.BUILD_PACKAGES + debian_base.EXTRA_PACKAGES + tuple(needs),
                cache_root=debian_base.TEST_CACHE / "obs-lab-real",
            )
            obs.add_to_full("Debian:12", "main", arch, extra)
        obs.create_project("lab", "Debian_12", [("Debian:12", "main")], list(ARCHS))
        yield obs


@pytest.fixture(scope="module")
def lab_uploaded(backend, real_source) -> float:
    """The real package uploaded for every architecture, pinned to its
    group; the time of the upload."""
    since = time.time()
    backend.create_package(
        "lab", REAL_PACKAGE[0], real_source, extra_files={"_constraints": pin_constraints()}
    )
    return since


@pytest.fixture(scope="module")
def standin_uploaded(backend) -> float:
    """accel_standin's packages, for the x86_64 group; the upload's time."""
    return accel_standin.upload(backend, ("Debian:12", "main"))


@pytest.fixture(scope="module")
def accel_uploaded(backend, real_source) -> float:
    """The accelerator's project (accel/prjconf) with obs-farm-accel and the
    real package (for ACCEL_ARCHS) uploaded; the time of the upload. Done
    before the workers start, so everything builds at once on the two cores:
    the x86_64 worker builds obs-farm-accel among its jobs; the accelerated build of
    the real package waits for it (its build root needs obs-farm-accel, which
    OBS resolves once the x86_64 build is exported), then for its worker
    group, whose first job is the emulated build (lab_uploaded)."""
    extra = debian_base.ensure_base(
        "x86_64",
        debian_base.BUILD_PACKAGES
        + debian_base.EXTRA_PACKAGES
        + tuple(debian_base.source_build_depends(ACCEL_SRC / "debian" / "control")),
        cache_root=debian_base.TEST_CACHE / "obs-lab-accel",
    )
    backend.add_to_full("Debian:12", "main", "x86_64", extra)
    prjconf = (ACCEL_SRC / "prjconf").read_text()
    backend.create_project(
        ACCEL_PROJECT, "Debian_12", [("Debian:12", "main")], list(ARCHS), prjconf
    )
    since = time.time()
    backend.create_package(ACCEL_PROJECT, "obs-farm-accel", ACCEL_SRC, build_archs=["x86_64"])
    backend.create_package(
        ACCEL_PROJECT,
        REAL_PACKAGE[0],
        real_source,
        extra_files={"_constraints": pin_constraints()},
        build_archs=list(ACCEL_ARCHS),
    )
    return since


@pytest.fixture(scope="module")
def farm(
    settings, backend, workdir, lab_uploaded, accel_uploaded, standin_uploaded
) -> Iterator[FarmWorkers]:
    """The dev stack's worker groups on this host, registered, for the whole
    module (every test's builds run on them; all were uploaded before)."""
    workers = FarmWorkers(settings, workdir / "farm", backend.reposerver)
    want = {wid: g for g in workers.pool.groups for wid in g.worker_ids(workers.host)}
    try:
        t0 = time.monotonic()
        workers.start()
        # A worker may take a job at once: registered is idle or building.
        registered = wait_registered(
            backend, set(want), REGISTER_TIMEOUT_S, states=("idle", "building")
        )
        record("worker groups on host registered", f"{time.monotonic() - t0:.0f} s")
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in workers.logs.iterdir()}
        assert set(registered) == set(want), f"registered {sorted(registered)}; logs: {logs}"
        for wid, entry in registered.items():
            assert entry.hostarch == want[wid].scheduler_arch
            port = int(entry.uri.rsplit(":", 1)[1])
            assert port in want[wid].ports(), (wid, entry.uri)
        yield workers
    finally:
        workers.stop()


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
        #: The machine name in the worker ids (`<host>:<group>-<n>`).
        self.host = subprocess.run(
            ["hostname"], capture_output=True, text=True, check=True
        ).stdout.strip()
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


def real_debs(project: str, arch: str, dest: Path, backend: ob.ObsBackend) -> dict[str, Path]:
    """The built .debs of the real package by binary package name."""
    name = REAL_PACKAGE[0]
    debs = backend.fetch_binaries(project, "Debian_12", arch, name, dest, "*.deb")
    return {deb.name.split("_", 1)[0]: deb for deb in debs}


def assert_real_build(backend: ob.ObsBackend, project: str, arch: str, debs: dict[str, Path]):
    """The library is of the target machine and the self-tests ran and passed."""
    name = REAL_PACKAGE[0]
    assert set(debs) == {"libogg0", "libogg-dev", "libogg0-dbgsym"}, sorted(debs)
    machines = ob.deb_elf_machines(debs["libogg0"])
    library = REAL_LIBRARY.format(triplet=TRIPLETS[arch])
    assert machines == {library: ob.ELF_MACHINES[arch]}, machines
    log = backend.build_log(project, "Debian_12", arch, name)
    for line in REAL_TESTS_PASSED:
        assert line in log, (arch, line, log[-3000:])


def test_accelerator_follows_its_compiler_source(backend, workdir, standin_uploaded, farm):
    """accel_standin.py's check. It is the module's first test so that it
    runs while the emulated builds of the others keep the ARM groups busy."""
    times = accel_standin.check(backend, workdir / "standin", standin_uploaded, BUILD_TIMEOUT_S)
    record("accel from source: toycc, accelerator, user built", f"{times['first round']:.0f} s")
    record(
        "accel from source: toycc bumped -> accelerator rebuilt by OBS",
        f"{times['accelerator rebuilt']:.0f} s",
    )


def test_real_package_builds_on_our_worker_groups(backend, workdir, lab_uploaded, farm):
    name = REAL_PACKAGE[0]
    results = backend.wait_builds(
        "lab", "Debian_12", name, list(ARCHS), BUILD_TIMEOUT_S, since=lab_uploaded
    )
    seconds = {a: r.job_seconds or r.wall_seconds for a, r in results.items()}
    for arch, result in results.items():
        if result.status != "succeeded":
            print(backend.build_log("lab", "Debian_12", arch, name)[-4000:])
    assert {a: r.status for a, r in results.items()} == dict.fromkeys(ARCHS, "succeeded"), {
        a: r.details for a, r in results.items()
    }
    built_by = {a: r.workerid for a, r in results.items()}
    assert built_by == {a: f"{farm.host}:{GROUP_OF[a]}-1" for a in ARCHS}

    for arch in ARCHS:
        assert_real_build(
            backend, "lab", arch, real_debs("lab", arch, workdir / "out" / arch, backend)
        )
    for arch in ARCHS:
        ratio = "" if arch == "x86_64" else f" ({seconds[arch] / seconds['x86_64']:.1f}x native)"
        record(
            f"{name} build {arch} (job on worker, beside the others)",
            f"{seconds[arch]:.0f} s{ratio}",
        )


def test_jobhistory_of_the_real_backend_imports(backend, workdir):
    """The `_jobhistory` importer (tools/jobhistory.py) on what this backend
    answers for the x86_64 build of the test above (it needs that build: run
    the module, not this test alone). The workload it writes must load and
    carry the job's own duration. Set OBS_FARM_RECORD_JOBHISTORY=FILE to keep
    the answer (the unit tier's tests/data/jobhistory/ fixture was recorded
    so, from two builds of hello-obs)."""
    name = REAL_PACKAGE[0]
    xml = backend.rep("GET", "/build/lab/Debian_12/x86_64/_jobhistory", {"limit": "1000"})
    if os.environ.get("OBS_FARM_RECORD_JOBHISTORY"):
        Path(os.environ["OBS_FARM_RECORD_JOBHISTORY"]).write_bytes(xml)
    raw = [dict(e.attrib) for e in ET.fromstring(xml).findall("jobhist")]
    ours = [j for j in raw if j.get("package") == name and j.get("code") == "succeeded"]
    assert len(ours) == 1, f"expected the x86_64 build of {name} from the test above: {raw}"
    job = ours[0]

    history = workdir / "history.xml"
    history.write_bytes(xml)
    out = workdir / "lab.yaml"
    code = jobhistory.main(["--name", "lab", "--out", str(out), f"Debian_12/x86_64={history}"])
    assert code == 0
    workload = load_workload(str(out))
    assert [(j.repository, j.arch, j.package) for j in workload.jobs] == [
        ("Debian_12", "x86_64", name)
    ]
    want = (int(job["endtime"]) - int(job["starttime"])) / 60
    assert workload.jobs[0].minutes == pytest.approx(want, abs=0.001)
    assert 0 < workload.jobs[0].minutes < BUILD_TIMEOUT_S / 60
    assert yaml.safe_load(out.read_text())["repositories"] == [
        {"name": "Debian_12", "architectures": ["x86_64"], "packages": 1}
    ]


# --------------------------------------------------------------------------- accelerated


BUILD_ID_PATH = re.compile(r"(/usr/lib/debug/\.build-id/)[0-9a-f]{2}/([0-9a-f]{38}\.debug)?$")
#: What an accelerated build may change in the shipped library, and why: the
#: cross compiler's .comment names its own Debian revision (12.2.0-14, the
#: native one 12.2.0-14+deb12u1); dh_strip moves .comment to the detached
#: debug file, but the build-id was computed over the file with it, and
#: .gnu_debuglink carries the CRC of that debug file. Every other section
#: must be byte for byte the same.
ELF_MAY_DIFFER = {".note.gnu.build-id", ".gnu_debuglink"}


def without_build_id(path: str) -> str:
    """A detached debug file's path (or its directory) with the build-id
    replaced by a placeholder."""
    return BUILD_ID_PATH.sub(lambda m: m[1] + "XX/" + ("ID.debug" if m[2] else ""), path)


def deb_manifest(deb: Path) -> tuple[list[str], dict[str, str]]:
    """A .deb's paths with their modes, and the control fields that state its
    relationships and identity. Detached debug files are named by build-id,
    so their names are replaced by a placeholder."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    files = sorted(
        f"{line.split()[0]} {without_build_id(line.split()[5])}" for line in listing.splitlines()
    )
    control = debian_base.parse_control(
        subprocess.run(
            ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
        ).stdout
    )
    fields = ("Package", "Version", "Architecture", "Depends", "Pre-Depends", "Provides")
    return files, {f: control.get(f, "") for f in fields}


def elf_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF file (32 or 64 bit)."""
    assert data[:4] == b"\x7fELF" and data[5] == 1, "not a little-endian ELF file"
    wide = data[4] == 2
    shoff, shentsize, shnum, shstrndx = (
        struct.unpack_from("<Q", data, 0x28)[0]
        if wide
        else struct.unpack_from("<I", data, 0x20)[0],
        *struct.unpack_from("<HHH", data, 0x3A if wide else 0x2E),
    )
    headers = []
    for i in range(shnum):
        at = shoff + i * shentsize
        if wide:
            name, kind, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, at)
        else:
            name, kind, _, _, offset, size = struct.unpack_from("<IIIIII", data, at)
        headers.append((name, kind, offset, size))
    strtab = headers[shstrndx]
    names = data[strtab[2] : strtab[2] + strtab[3]]
    out = {}
    for name, kind, offset, size in headers[1:]:
        label = names[name : names.index(b"\0", name)].decode()
        out[label] = b"" if kind == 8 else data[offset : offset + size]  # 8: SHT_NOBITS
    return out


def test_accelerated_builds_match_the_emulated_ones(backend, workdir, accel_uploaded, farm):
    """The accelerator the way a farm's users get it: the obs-farm-accel source
    package built by OBS on x86_64 from Debian 12's cross toolchains, handed
    to the ARM architectures by the project's ExportFilter and installed in
    their build roots by Support (accel/prjconf). The real package then
    builds for armv7l with the accelerator (ACCEL_ARCHS), its self-tests run
    (emulated) and pass, and it gives the same files and relationships as the
    emulated builds of test_real_package_builds_on_our_worker_groups, and a
    library whose sections are those of the emulated build's except the ones
    ELF_MAY_DIFFER names. (obs-farm-accel and this build were uploaded by
    the accel_uploaded fixture, before the workers started, so that they
    build beside the others on the module's workers.)"""
    name = REAL_PACKAGE[0]
    since = accel_uploaded
    accel = backend.wait_build(
        ACCEL_PROJECT, "Debian_12", "x86_64", "obs-farm-accel", BUILD_TIMEOUT_S, since
    )
    if accel.status != "succeeded":
        print(backend.build_log(ACCEL_PROJECT, "Debian_12", "x86_64", "obs-farm-accel")[-4000:])
    assert accel.status == "succeeded", accel.details
    results = backend.wait_builds(
        ACCEL_PROJECT, "Debian_12", name, list(ACCEL_ARCHS), BUILD_TIMEOUT_S, since
    )
    record("obs-farm-accel build x86_64 (job on worker)", f"{accel.job_seconds or 0:.0f} s")
    versions = (
        r"gcc-12 12\.2\.0-14\+deb12u1 and binutils 2\.40-2 in the build root; "
        r"accelerator built from gcc-12 12\.2\.0-14 and binutils 2\.40-2$"
    )
    for arch, result in results.items():
        log = backend.build_log(ACCEL_PROJECT, "Debian_12", arch, name)
        assert result.status == "succeeded", (result.details, log[-4000:])
        triplet = TRIPLETS[arch]
        lines = [line for line in log.splitlines() if "obs-farm-accel:" in line]
        # One line when the accelerator is installed, one more each time its
        # file triggers switch a tool installed after it: build-essential's
        # g++ comes later, so the last line, the one the build ran with,
        # has cc1plus.
        line = re.compile(
            rf"obs-farm-accel: accelerating {re.escape(triplet)} \(revision skew allowed\): "
            r"cc1( cc1plus)? as ld\.bfd; " + versions
        )
        assert lines and all(line.search(x) for x in lines), lines or log[-4000:]
        assert " cc1 cc1plus as ld.bfd; " in lines[-1], lines
        record(
            f"{name} build {arch} accelerated (job on worker)", f"{result.job_seconds or 0:.0f} s"
        )
        fast = real_debs(ACCEL_PROJECT, arch, workdir / "accel" / arch, backend)
        slow = real_debs("lab", arch, workdir / "emulated" / arch, backend)
        assert_real_build(backend, ACCEL_PROJECT, arch, fast)
        assert set(fast) == set(slow)
        for package in fast:
            assert deb_manifest(fast[package]) == deb_manifest(slow[package]), package
        library = REAL_LIBRARY.format(triplet=triplet)
        acc, emu = (elf_sections(ob.deb_files(d["libogg0"])[library]) for d in (fast, slow))
        assert set(acc) == set(emu)
        differ = {s for s in acc if acc[s] != emu[s]}
        # ... because of what each compiler wrote into .comment (kept in the
        # detached debug file, the one .debug file of libogg0-dbgsym).
        comments = {}
        for kind, d in (("acc", fast), ("emu", slow)):
            (debug,) = [
                f for p, f in ob.deb_files(d["libogg0-dbgsym"]).items() if p.endswith(".debug")
            ]
            comments[kind] = elf_sections(debug)[".comment"]
        assert differ <= ELF_MAY_DIFFER, sorted(differ)
        assert b"GCC: (Debian 12.2.0-14) 12.2.0" in comments["acc"], comments
        assert b"GCC: (Debian 12.2.0-14+deb12u1) 12.2.0" in comments["emu"], comments
