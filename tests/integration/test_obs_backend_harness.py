"""Tests of the OBS backend harness (obs_backend.py, debian_base.py).

Fast checks of the BSConfig/BSServer rewriting, the ELF reader and the
workerstatus parser. The harness runs for real in test_farm_builds.py and
test_worker_vm.py.
"""

from __future__ import annotations

import re
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
    patched = ob.patch_bsserver(src)
    assert patched.count(ob.BIND_EXPR) == 2
    assert "sockaddr_in(0, INADDR_ANY)" not in patched
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
