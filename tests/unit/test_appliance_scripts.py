"""The appliance flavor's scripts, executed for real with the openSUSE side stubbed.

openSUSE's repositories are not reachable here, so zypper, systemctl,
upstream's setup-appliance.sh, the API's `bin/rails`, chown (to users this
host does not have) and the data-disk script (tested on a real loop device in
test_scripts.py) are recording stubs. Everything else runs: the scripts
themselves, sed on a my.cnf, install/mktemp/mv, and openssl on real
certificates. What the stubs cannot show (Leap's real my.cnf, the packages,
the API) is listed in README.md under "Not verified here".
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from components import cloudinit
from config import load_settings
from tests.conftest import raw_config
from tests.helpers.tls import make_pair

SETUP = cloudinit.TEMPLATE_DIR / "appliance-setup.sh"
# The lines of openSUSE's /etc/my.cnf that setup-appliance.sh's sed relies on
# (a commented default datadir in [mysqld]); not copied from a Leap system.
MY_CNF = """[client]
socket = /run/mysql/mysql.sock

[mysqld]
socket = /run/mysql/mysql.sock
# datadir = /var/lib/mysql
log-error = /var/log/mysql/mysqld.log

!includedir /etc/my.cnf.d
"""
UPSTREAM_ISSUE_LINE = '* "Admin"/"root" user password is "opensuse" by default.\n'


def stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


class Host:
    """A server's filesystem under tmp, with a log of every stubbed call."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "calls.log"
        self.srv = root / "srv/obs"
        self.etc = root / "etc/obs-farm"
        self.obs_lib = root / "usr/lib/obs/server"
        self.api = root / "srv/www/obs/api"
        self.my_cnf = root / "etc/my.cnf"
        self.issue = root / "etc/issue"
        self.bin = root / "bin"
        s = load_settings(raw_config())
        doc = yaml.safe_load(cloudinit.server_user_data(s))
        for f in doc["write_files"]:
            if f["path"].startswith("/etc/obs-farm/"):
                target = self.etc / Path(f["path"]).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f["content"])
        self.my_cnf.write_text(MY_CNF)
        self.issue.write_text("Welcome to OBS\n" + UPSTREAM_ISSUE_LINE)
        (self.obs_lib).mkdir(parents=True)
        (self.obs_lib / "BSConfig.pm").write_text("# the package's BSConfig\n")
        log = self.log
        stub(
            self.bin / "obs-farm-prepare-data-disk",
            f'echo "prepare-data-disk $*" >> {log}\nmkdir -p "$2"\n',
        )
        stub(
            self.bin / "zypper",
            f'echo "zypper $*" >> {log}\n'
            'if [ "$2" = removerepo ]; then exit "${ZYPPER_HAS_REPO:-6}"; fi\n',
        )
        stub(self.bin / "systemctl", f'echo "systemctl $*" >> {log}\n')
        stub(self.bin / "chown", f'echo "chown $*" >> {log}\n')
        # setup-appliance: records what it finds, creates the database on a
        # blank disk as mysql_install_db would.
        stub(
            self.obs_lib / "setup-appliance.sh",
            f'echo "setup-appliance $* datadir=$(grep -E "^datadir" {self.my_cnf} | sed "s/.*= *//")" >> {log}\n'
            f"mkdir -p {self.srv}/MySQL {self.srv}/certs\n"
            'exit "${SETUP_STATUS:-0}"\n',
        )
        # The API's rails runner: records its argv and what the file it was
        # handed holds, and that nobody but root could read it.
        stub(
            self.api / "bin/rails",
            f'echo "rails $1 <ruby> ${{*: -1}} RAILS_ENV=$RAILS_ENV" >> {log}\n'
            'f=${*: -1}\n'
            f'stat -c %a "$f" > {root}/rails-saw-mode\n'
            f'cat "$f" > {root}/rails-saw-password\n'
            'exit "${RAILS_STATUS:-0}"\n',
        )  # fmt: skip

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        full = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "OBS_FARM_CONF_DIR": str(self.etc),
            "OBS_FARM_SRV": str(self.srv),
            "OBS_FARM_OBS_LIB": str(self.obs_lib),
            "OBS_FARM_API_DIR": str(self.api),
            "OBS_FARM_MY_CNF": str(self.my_cnf),
            "OBS_FARM_MY_CNF_D": str(self.root / "etc/my.cnf.d"),
            "OBS_FARM_ISSUE": str(self.issue),
            **env,
        }
        return subprocess.run([str(SETUP)], capture_output=True, text=True, env=full, timeout=60)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def index(calls: list[str], prefix: str) -> int:
    found = [i for i, c in enumerate(calls) if c.startswith(prefix)]
    assert found, f"no call starting with {prefix!r} in {calls}"
    return found[0]


def test_first_boot_installs_upstreams_obs_on_the_data_disk(host):
    res = host.run()
    assert res.returncode == 0, res.stderr
    calls = host.calls()
    # mkfs.ext4 for a blank disk, then the disk, before anything else.
    assert calls[:2] == [
        "zypper --non-interactive install --no-recommends e2fsprogs",
        f"prepare-data-disk /dev/disk/azure/scsi1/lun0 {host.srv}",
    ]
    url = "https://download.opensuse.org/repositories/OBS:/Server:/2.10/15.6/"
    assert f"zypper --non-interactive addrepo --refresh {url} OBS_Server_2.10" in calls
    install = index(calls, "zypper --non-interactive install --type pattern OBS_Server")
    # The disk is mounted before any package writes to /srv/obs.
    assert index(calls, "prepare-data-disk") < install
    # setup-appliance runs non-interactively, after the packages, and already
    # finds MariaDB's datadir on the data disk.
    setup = index(calls, "setup-appliance")
    assert calls[setup] == (f"setup-appliance --non-interactive --force datadir={host.srv}/MySQL")
    assert install < setup
    assert "systemctl enable --now obswarden.service obs-api-support.target" in calls
    # The farm's BSConfig where the SUSE packages read it; the packaged one kept.
    assert (host.obs_lib / "BSConfig.pm").read_text() == (host.etc / "BSConfig.pm").read_text()
    assert (host.obs_lib / "BSConfig.pm.package").read_text() == "# the package's BSConfig\n"
    assert "bind-address = 127.0.0.1" in (host.root / "etc/my.cnf.d/obs-farm.cnf").read_text()
    # An empty datadir for mysql.service to initialise, owned by mysql, root-only.
    assert f"chown mysql:mysql {host.srv}/MySQL" in calls
    assert index(calls, f"chown mysql:mysql {host.srv}/MySQL") < setup
    assert stat.S_IMODE((host.srv / "MySQL").stat().st_mode) == 0o700


def test_admin_password_is_made_on_the_vm_kept_on_the_disk_and_shown_nowhere(host):
    res = host.run()
    assert res.returncode == 0, res.stderr
    secret = host.srv / "obs-farm/admin-password"
    password = secret.read_text()
    assert len(password) == 32 and password.isalnum()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    # The API got it through a root-only file, never argv or the environment.
    assert (host.root / "rails-saw-password").read_text() == password
    assert (host.root / "rails-saw-mode").read_text().strip() == "600"
    rails = [c for c in host.calls() if c.startswith("rails")]
    assert rails == [f"rails runner <ruby> {secret}.new RAILS_ENV=production"]
    assert index(host.calls(), "setup-appliance") < index(host.calls(), "rails")
    assert password not in res.stdout + res.stderr + host.log.read_text()
    # Upstream's login banner names its default password; it now points here.
    issue = host.issue.read_text()
    assert "opensuse" not in issue and str(secret) in issue and password not in issue


def test_a_replaced_vm_keeps_the_database_and_the_password(host):
    assert host.run().returncode == 0
    password = (host.srv / "obs-farm/admin-password").read_text()
    (host.srv / "obs-farm/farm.pm").write_text("+{ '10\\.40\\.16\\.\\d+' => 'worker' };\n")
    # A new VM: fresh OS disk (my.cnf, BSConfig, repos), the same data disk.
    new = Host(host.root / "vm2")
    new.srv.parent.mkdir(parents=True, exist_ok=True)
    os.rename(host.srv, new.srv)
    res = new.run()
    assert res.returncode == 0, res.stderr
    calls = new.calls()
    assert (new.srv / "obs-farm/admin-password").read_text() == password
    assert not any(c.startswith("rails") for c in calls)
    # MariaDB is pointed at the existing database before setup-appliance
    # looks (it then migrates instead of initialising), and the files are
    # handed to this VM's mysql user.
    assert f"datadir={new.srv}/MySQL" in calls[index(calls, "setup-appliance")]
    assert f"chown -R mysql:mysql {new.srv}/MySQL" in calls
    # The worker ranges apply-farm left on the disk are back before the backend starts.
    assert (new.etc / "farm.pm").read_text() == "+{ '10\\.40\\.16\\.\\d+' => 'worker' };\n"


def test_a_first_boot_without_worker_ranges_on_the_disk_writes_none(host):
    assert host.run().returncode == 0
    assert not (host.etc / "farm.pm").exists()


@pytest.mark.parametrize("had_repo", ["0", "6"], ids=["repo-present", "repo-absent"])
def test_the_repository_is_added_once_with_this_url(host, had_repo):
    res = host.run(ZYPPER_HAS_REPO=had_repo)
    assert res.returncode == 0, res.stderr
    assert [c for c in host.calls() if "addrepo" in c] == [
        "zypper --non-interactive addrepo --refresh "
        "https://download.opensuse.org/repositories/OBS:/Server:/2.10/15.6/ OBS_Server_2.10"
    ]
    assert index(host.calls(), "zypper --non-interactive removerepo OBS_Server_2.10") < index(
        host.calls(), "zypper --non-interactive addrepo"
    )


def test_no_datadir_to_move_stops_before_setup_appliance(host):
    host.my_cnf.write_text("[mysqld]\nsocket = /run/mysql/mysql.sock\n")
    res = host.run()
    assert res.returncode == 1
    assert "could not set MariaDB's datadir" in res.stderr
    assert not any(c.startswith("setup-appliance") for c in host.calls())


def test_a_failed_setup_appliance_fails_the_boot_without_a_password(host):
    res = host.run(SETUP_STATUS="1")
    assert res.returncode == 1
    assert not (host.srv / "obs-farm/admin-password").exists()
    assert not any(c.startswith("rails") for c in host.calls())


def test_a_failed_password_change_leaves_no_password_file(host):
    res = host.run(RAILS_STATUS="1")
    assert res.returncode == 1
    assert not (host.srv / "obs-farm/admin-password").exists()


# --- apply-farm on the appliance ----------------------------------------------


class Appliance:
    """What apply-farm touches on an appliance, under tmp, with stubs."""

    def __init__(self, root: Path, archs: list[str]):
        self.root = root
        self.etc = root / "etc/obs-farm"
        self.srv = root / "srv/obs"
        self.obs_lib = root / "usr/lib/obs/server"
        self.sysconfig = root / "etc/sysconfig/obs-server"
        self.bin = root / "bin"
        self.log = root / "calls.log"
        self.archs = archs
        self.etc.mkdir(parents=True)
        (self.etc / "server.env").write_text('FLAVOR="appliance"\n')
        (self.srv / "obs-farm").mkdir(parents=True)
        (self.srv / "obs-farm/admin-password").write_text("s3cretAdminPassw0rd")
        (self.srv / "certs").mkdir()
        (self.srv / "certs/server.example.crt").write_text("self-signed\n")
        (self.srv / "certs/server.crt").symlink_to("server.example.crt")
        self.sysconfig.parent.mkdir(parents=True)
        self.sysconfig.write_text('OBS_SCHEDULER_ARCHITECTURES=""\nOBS_API_AUTOSETUP="no"\n')
        log = self.log
        stub(self.bin / "systemctl", f'echo "systemctl $*" >> {log}\n')
        stub(self.bin / "cloud-init", "exit 0\n")
        # curl: records its arguments and the config it reads from stdin.
        stub(
            self.bin / "curl",
            f'echo "curl $*" >> {log}\ncat > {root}/curl-config\n',
        )
        # bs_admin: the schedulers configuration.xml names, once the API wrote it.
        stub(
            self.obs_lib / "bs_admin",
            f'[ -e {root}/curl-config ] && echo "${{CONFIGURED:-}}"\n',
        )

    def run(self, s, **env: str) -> subprocess.CompletedProcess[str]:
        script = self.root / "apply-farm.sh"
        script.write_text(cloudinit.render_apply_farm(s))
        script.chmod(0o755)
        full = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "OBS_FARM_CONF_DIR": str(self.etc),
            "OBS_FARM_SYSTEMCTL": str(self.bin / "systemctl"),
            "OBS_FARM_CLOUD_INIT": str(self.bin / "cloud-init"),
            "OBS_FARM_SRV": str(self.srv),
            "OBS_FARM_OBS_LIB": str(self.obs_lib),
            "OBS_FARM_SYSCONFIG": str(self.sysconfig),
            "OBS_FARM_SCHEDULER_WAIT": "5",
            "CONFIGURED": " ".join(reversed(self.archs)),
            **env,
        }
        return subprocess.run([str(script)], capture_output=True, text=True, env=full, timeout=60)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def settings_for(archs: list[str]):
    return load_settings(raw_config(architectures=archs))


def test_appliance_schedulers_go_through_the_api(tmp_path):
    box = Appliance(tmp_path, ["x86_64", "armv7l", "aarch64"])
    res = box.run(settings_for(["x86_64", "armv7hl", "aarch64"]))
    assert res.returncode == 0, res.stderr
    calls = box.calls()
    put = [c for c in calls if c.startswith("curl")]
    assert len(put) == 1
    assert "--config - -X PUT" in put[0] and put[0].endswith("https://127.0.0.1/configuration")
    assert (
        "<configuration><schedulers><arch>x86_64</arch><arch>x86_64</arch>"
        "<arch>armv7l</arch><arch>aarch64</arch></schedulers></configuration>"
    ) in put[0]
    # The Admin's credentials reach curl on stdin, not in its argv.
    assert (tmp_path / "curl-config").read_text() == 'user = "Admin:s3cretAdminPassw0rd"\n'
    assert "s3cretAdminPassw0rd" not in box.log.read_text() + res.stdout + res.stderr
    # One obsscheduler unit starts every architecture (no obsscheduler@ARCH).
    assert "systemctl enable obsscheduler.service" in calls
    assert "systemctl restart obsscheduler.service" in calls
    assert not any("obsscheduler@" in c for c in calls)
    assert calls[-1] == (
        "systemctl restart obssrcserver.service obsrepserver.service obsdispatcher.service"
    )
    assert 'OBS_SCHEDULER_ARCHITECTURES="x86_64 armv7l aarch64"' in box.sysconfig.read_text()
    assert "worker ranges: 1 (appliance)" in res.stdout
    # A copy on the data disk, for a replaced VM's first boot.
    assert (box.srv / "obs-farm/farm.pm").read_text() == (box.etc / "farm.pm").read_text()


def test_appliance_fails_when_the_backend_never_gets_the_schedulers(tmp_path):
    box = Appliance(tmp_path, ["x86_64"])
    res = box.run(settings_for(["x86_64", "aarch64"]), CONFIGURED="x86_64")
    assert res.returncode == 1
    assert "names schedulers 'x86_64', not 'x86_64 aarch64'" in res.stderr
    assert not any("restart obsscheduler" in c for c in box.calls())


def test_appliance_without_its_password_file_says_first_boot_did_not_finish(tmp_path):
    box = Appliance(tmp_path, ["x86_64"])
    (box.srv / "obs-farm/admin-password").unlink()
    res = box.run(settings_for(["x86_64"]))
    assert res.returncode == 1
    assert "first-boot setup did not finish" in res.stderr
    assert not any(c.startswith("curl") for c in box.calls())


def test_appliance_reports_an_api_that_refuses(tmp_path):
    box = Appliance(tmp_path, ["x86_64"])
    stub(box.bin / "curl", "cat >/dev/null; echo 'curl: (22) 401' >&2; exit 22\n")
    res = box.run(settings_for(["x86_64"]))
    assert res.returncode == 1
    assert "the API refused or did not answer PUT https://127.0.0.1/configuration" in res.stderr
    assert "s3cretAdminPassw0rd" not in res.stdout + res.stderr


def test_appliance_installs_a_supplied_certificate_without_logging_it(tmp_path, tls_pair):
    box = Appliance(tmp_path, ["x86_64"])
    cert, key = tls_pair
    res = box.run(settings_for(["x86_64"]), OBS_FARM_TLS_CERT=cert, OBS_FARM_TLS_KEY=key)
    assert res.returncode == 0, res.stderr
    certs = box.srv / "certs"
    assert not (certs / "server.crt").is_symlink()
    assert (certs / "server.crt").read_text() == cert
    assert (certs / "server.key").read_text() == key
    assert stat.S_IMODE((certs / "server.key").stat().st_mode) == 0o600
    assert "systemctl reload apache2.service" in box.calls()
    assert "HTTPS certificate installed: subject=CN = obs.example.org" in res.stdout
    body = key.splitlines()[1]
    assert body not in res.stdout + res.stderr + box.log.read_text()
    assert [p.name for p in certs.iterdir() if p.name.startswith(".")] == []


def test_appliance_refuses_a_key_that_is_not_the_certificates(tmp_path, tls_pair):
    box = Appliance(tmp_path, ["x86_64"])
    cert, _ = tls_pair
    _, other_key = make_pair("other.example.org")
    res = box.run(settings_for(["x86_64"]), OBS_FARM_TLS_CERT=cert, OBS_FARM_TLS_KEY=other_key)
    assert res.returncode == 1
    assert "do not belong together; keeping the current certificate" in res.stderr
    assert (box.srv / "certs/server.crt").is_symlink()
    assert not (box.srv / "certs/server.key").exists()
    assert other_key.splitlines()[1] not in res.stdout + res.stderr


def test_backend_apply_farm_ignores_the_appliance_paths(tmp_path):
    box = Appliance(tmp_path, ["x86_64"])
    (box.etc / "server.env").write_text('DATA_DISK_DEVICE="/dev/sdc"\n')
    res = box.run(settings_for(["x86_64"]))
    assert res.returncode == 0, res.stderr
    calls = box.calls()
    assert "systemctl enable --now obsscheduler@x86_64.service" in calls
    assert not any(c.startswith("curl") for c in calls)
    assert "(backend)" in res.stdout
