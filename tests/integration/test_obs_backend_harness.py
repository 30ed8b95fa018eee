"""Tests of the OBS backend harness (obs_backend.py, debian_base.py).

The fast tests check the BSConfig/BSServer rewriting and the ELF reader.  The
integration test runs a real OBS backend on 127.0.0.1, fills a Debian 12 base
project, starts one chroot worker per architecture on this host (aarch64 and
armv7l under qemu-user via binfmt_misc) and builds tests/data/hello-obs on
each.  Run it with
`venv/bin/python -m pytest -m integration tests/integration/test_obs_backend_harness.py -s`
(-s shows the measured timings).  It needs root and the apt packages listed
in README-harness.md.  Environment knobs:
OBSFARM_HARNESS_ARCHES (default "x86_64 aarch64 armv7l"),
OBSFARM_HARNESS_BSCONFIG (default /etc/obs/BSConfig.pm),
OBSFARM_HARNESS_KEEP=1 keeps the work directory for a post-mortem.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ importable as a package (python -m pytest from the repo root)
    from tests.integration import obs_backend as ob
except ImportError:  # pytest's default "prepend" import of this folder
    import obs_backend as ob  # type: ignore[no-redef, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
HELLO_OBS = REPO / "tests" / "data" / "hello-obs"
BUILD_TIMEOUT_S = 1500
APT_PACKAGES = "obs-server obs-worker obs-build qemu-user-static binfmt-support dpkg-dev cpio"

# Trimmed from Debian 12's /etc/obs/BSConfig.pm (obs-server 2.9.4).
DEBIAN_BSCONFIG = """\
package BSConfig;
use Net::Domain;
use Socket;
my $hostname = Net::Domain::hostfqdn() || 'localhost';
my $ip = quotemeta inet_ntoa(inet_aton($hostname) || inet_aton("localhost"));
our $ipaccess = {
   '127\\..*' => 'rw', # only the localhost can write to the backend
   "^$ip" => 'rw',    # Permit IP of FQDN
   '.*' => 'worker',  # build results can be delivered from any client in the network
};
our $srcserver = "http://$hostname:5352";
our $reposerver = "http://$hostname:5252";
our $serviceserver = "http://$hostname:5152";
#our $workersrcserver = "http://$hostname:5353";
our $servicedir = "/usr/lib/obs/service/";
our $bsdir = '/srv/obs';
our $bsuser = 'obsrun';
our $bsgroup = 'obsrun';
our $rundir = "$bsdir/run";
our $logdir = "$bsdir/log";
our $servicedispatch = 1;
1;
"""


# --------------------------------------------------------------------------- fast


def test_render_points_paths_and_servers_at_the_test_instance(tmp_path: Path) -> None:
    text = ob.render_bsconfig(DEBIAN_BSCONFIG, tmp_path / "srv")

    assert f"our $bsdir = '{tmp_path / 'srv'}';" in text
    assert 'our $srcserver = "http://127.0.0.1:5352";' in text
    assert 'our $reposerver = "http://127.0.0.1:5252";' in text
    assert "my $hostname = '127.0.0.1';" in text
    assert "'127\\.0\\.0\\.1' => 'rw,worker'" in text
    assert "our $servicedispatch = 1;" not in text
    assert text.rstrip().endswith("our $servicedispatch = 0;\n1;")
    assert "/srv/obs" not in text


def test_render_accepts_the_projects_bsconfig(tmp_path: Path) -> None:
    from components.cloudinit import render_bsconfig
    from config import load_settings
    from tools.offline import read_stack_config

    rendered = render_bsconfig(load_settings(read_stack_config("dev")))
    text = ob.render_bsconfig(rendered, tmp_path / "srv")

    assert "10.40.1.10" not in text
    assert f"'{tmp_path / 'srv'}'" in text


def test_render_fails_clearly_when_a_substitution_does_not_match(tmp_path: Path) -> None:
    without_repserver = re.sub(r"^our \$reposerver.*$", "", DEBIAN_BSCONFIG, flags=re.M)
    with pytest.raises(ob.HarnessError, match=r"\$reposerver did not match"):
        ob.render_bsconfig(without_repserver, tmp_path)
    with pytest.raises(ob.HarnessError, match=r"\$bsdir did not match"):
        ob.render_bsconfig(DEBIAN_BSCONFIG.replace("our $bsdir", "my $bsdir"), tmp_path)


def test_render_refuses_a_config_that_still_names_another_host(tmp_path: Path) -> None:
    extra = DEBIAN_BSCONFIG + 'our $stageserver = "rsync://obs.example.org/x";\n'
    with pytest.raises(ob.HarnessError, match=r"obs\.example\.org"):
        ob.render_bsconfig(extra, tmp_path)


def test_bsserver_patch_binds_loopback_or_fails() -> None:
    src = "bind($s, sockaddr_in(0, INADDR_ANY));\nbind($s, sockaddr_in($port, INADDR_ANY));\n"
    assert ob.patch_bsserver(src).count("INADDR_LOOPBACK") == 2
    with pytest.raises(ob.HarnessError, match="INADDR_ANY"):
        ob.patch_bsserver("bind($s, sockaddr_in($port, $addr));\n")


def test_elf_machine_reads_both_byte_orders() -> None:
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = (183).to_bytes(2, "little")
    assert ob.elf_machine(bytes(header)) == ob.ELF_MACHINES["aarch64"]
    header[5] = 2
    header[18:20] = (40).to_bytes(2, "big")
    assert ob.elf_machine(bytes(header)) == ob.ELF_MACHINES["armv7l"]
    assert ob.elf_machine(b"#!/bin/sh\n" + bytes(20)) is None


def test_workerstatus_parsing() -> None:
    xml = b"""<workerstatus clients="2">
      <idle workerid="lab-x86_64:1" hostarch="x86_64" uri="http://127.0.0.1:7001"/>
      <building workerid="lab-aarch64:2" hostarch="aarch64" uri="http://127.0.0.1:7002"
                project="lab" repository="Debian_12" package="hello-obs" arch="aarch64"
                starttime="1"/>
      <down workerid="lab-armv7l:3" hostarch="armv7l"/>
      <waiting arch="aarch64" jobs="4"/>
      <partition><daemon type="scheduler" arch="aarch64" state="running"/></partition>
    </workerstatus>"""
    status = ob.parse_workerstatus(xml)

    assert [w.workerid for w in status.idle] == ["lab-x86_64:1"]
    assert status.building[0].package == "hello-obs"
    assert status.down[0].hostarch == "armv7l"
    assert status.waiting == {"aarch64": 4}
    assert status.daemons == {"scheduler:aarch64": "running"}


# --------------------------------------------------------------------------- integration


def _selected_arches() -> list[str]:
    arches = os.environ.get("OBSFARM_HARNESS_ARCHES", "x86_64 aarch64 armv7l").split()
    unknown = set(arches) - set(ob.ELF_MACHINES)
    if unknown:
        raise ValueError(f"OBSFARM_HARNESS_ARCHES: unknown {sorted(unknown)}")
    return arches


def _require_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (daemons drop to obsrun; chroot builds; binfmt_misc)")
    tools = ["dpkg-source", "dpkg-deb", "cpio", "apt-get", "update-binfmts"]
    missing = [t for t in tools if not shutil.which(t)]
    if missing or not (ob.SERVER_CODE / "bs_srcserver").exists():
        pytest.skip(f"missing {missing or 'obs-server'}: apt-get install {APT_PACKAGES}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ob.LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def bsconfig_text() -> str:
    path = Path(os.environ.get("OBSFARM_HARNESS_BSCONFIG", "/etc/obs/BSConfig.pm"))
    if not path.is_file():
        pytest.skip(f"{path} missing: apt-get install obs-server")
    return path.read_text()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """World-searchable (obsrun must reach $bsdir), outside pytest's 0700 tmp."""
    path = Path(tempfile.mkdtemp(prefix="obs-harness-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    if os.environ.get("OBSFARM_HARNESS_KEEP") == "1":
        print(f"\nkept {path}")
    else:
        ob.unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
def test_hello_obs_builds_on_native_and_emulated_workers(bsconfig_text: str, workdir: Path) -> None:
    _require_host()
    arches = _selected_arches()
    project, repo, package = "lab", "Debian_12", "hello-obs"
    timings: dict[str, float] = {}
    pids: list[int] = []

    t0 = time.monotonic()
    with ob.Binfmt(arches), ob.ObsBackend(bsconfig_text, workdir) as obs:
        timings["backend start"] = time.monotonic() - t0
        obs.setup_debian_project(arches)
        obs.create_project(project, repo, [("Debian:12", "main")], arches)
        timings["Debian:12 setup (debs + :full scan)"] = (
            obs.timings["debian_base"] + obs.timings["full_tree_scan"]
        )

        t1 = time.monotonic()
        boot = obs.fetch_worker_code()
        workers = [
            obs.start_host_worker(boot, i, arch, _free_port(), hostlabels=[ob.arch_hostlabel(arch)])
            for i, arch in enumerate(arches, 1)
        ]
        timings["workers registered"] = time.monotonic() - t1
        idle = {w.workerid: w.hostarch for w in obs.workerstatus().idle}
        assert idle == {w.workerid: w.arch for w in workers}

        since = time.time()
        # Pinned, else the aarch64 worker may take the armv7l job (BSCando).
        pinning = {"_constraints": ob.pin_arches_constraints(arches)}
        obs.create_package(project, package, HELLO_OBS, extra_files=pinning)
        results = obs.wait_builds(project, repo, package, arches, BUILD_TIMEOUT_S, since=since)
        pids = [p.popen.pid for p in obs.processes] + [w.process.popen.pid for w in obs.workers]

        for arch, result in results.items():
            timings[f"build {arch} (request to result)"] = result.wall_seconds
            timings[f"build {arch} (job on worker)"] = result.job_seconds or 0.0
            if result.status != "succeeded":
                print(
                    f"\n--- {arch} build log tail\n{obs.build_log(project, repo, arch, package)[-4000:]}"
                )
        assert {a: r.status for a, r in results.items()} == dict.fromkeys(arches, "succeeded")
        assert {a: r.hostarch for a, r in results.items()} == {a: a for a in arches}

        for arch in arches:
            debs = obs.fetch_binaries(project, repo, arch, package, workdir / "out" / arch, "*.deb")
            assert len(debs) == 1, debs
            machines = ob.deb_elf_machines(debs[0])
            assert machines == {"./usr/bin/hello-obs": ob.ELF_MACHINES[arch]}, (arch, machines)

        stopped = workers[0]
        obs.stop_worker(stopped)
        entry = obs.workerstatus().find(stopped.workerid)
        assert entry is not None and entry.state == "down", entry
        t2 = time.monotonic()
    timings["stop everything"] = time.monotonic() - t2

    assert not ob.still_running(pids), "processes left running"
    assert obs.config is not None
    assert not ob.port_open(obs.config.srcport) and not ob.port_open(obs.config.repport)
    assert not ob.mounts_below(workdir), "mounts left below the work directory"
    print("\nmeasured:")
    for what, seconds in timings.items():
        print(f"  {what:40s} {seconds:7.1f} s")
