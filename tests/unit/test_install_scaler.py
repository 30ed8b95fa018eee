"""The scaler's run-command script, executed for real on this machine.

What would touch the host is redirected: the install prefix, /etc/obs-farm,
the systemd unit directory and os-release are directories in tmp, systemctl
and cloud-init are recorders. The package is unpacked from the script
itself, the venv is created by the real interpreter (python3 on "Debian",
python3.11 on "openSUSE Leap") and pip really runs; the fixture package's
requirements are empty so that nothing is fetched from PyPI here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components import cloudinit
from components.scaler import render_install_scaler, render_scaler_config
from components.topology import worker_pools
from config import load_settings
from policy.rules import Resource, no_secrets_in_user_data
from tests.conftest import raw_config

MAIN = """import json, os, sys
path = os.environ["OBS_FARM_SCALER_CONFIG"]
print("obs-farm-scaler fixture", sys.version_info[:2], len(json.load(open(path))["pools"]))
"""


def fixture_package(root: Path, marker: str = "v1") -> Path:
    pkg = root / "obs_farm_scaler"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'VERSION = "{marker}"\n')
    (pkg / "__main__.py").write_text(MAIN)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"\0")
    (root / "requirements.txt").write_text("# no runtime dependencies in the fixture\n")
    return root


def config_json() -> str:
    s = load_settings(raw_config(scaler={"pollSeconds": 3}))
    from components.scaler import AzureTarget

    return render_scaler_config(s.scaler, worker_pools(s), AzureTarget("sub", "rg", "vmss"))


class Host:
    """A server's filesystem in tmp, and the recorders the script calls."""

    def __init__(self, tmp: Path, os_id: str = "debian"):
        self.tmp = tmp
        self.prefix = tmp / "opt" / "obs-farm-scaler"
        self.conf = tmp / "etc" / "obs-farm"
        self.units = tmp / "etc" / "systemd" / "system"
        self.units.mkdir(parents=True)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.calls = tmp / "calls.log"
        for name in ("systemctl", "cloud-init", "apt-get", "zypper"):
            stub = self.bin / name
            stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.calls}\n')
            stub.chmod(0o755)
        self.os_release = tmp / "os-release"
        self.set_os(os_id)

    def set_os(self, os_id: str) -> None:
        version = {"debian": "12", "opensuse-leap": "15.6"}.get(os_id, "1")
        self.os_release.write_text(f'ID="{os_id}"\nVERSION_ID="{version}"\n')

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "OBS_FARM_SCALER_PREFIX": str(self.prefix),
            "OBS_FARM_CONF_DIR": str(self.conf),
            "OBS_FARM_UNIT_DIR": str(self.units),
            "OBS_FARM_OS_RELEASE": str(self.os_release),
            "OBS_FARM_SYSTEMCTL": str(self.bin / "systemctl"),
            "OBS_FARM_CLOUD_INIT": str(self.bin / "cloud-init"),
        }

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        path = self.tmp / "script.sh"
        path.write_text(script)
        path.chmod(0o755)
        self.calls.write_text("")
        return subprocess.run(
            [str(path)], capture_output=True, text=True, env=self.env(), timeout=300
        )

    def recorded(self) -> list[str]:
        return [line for line in self.calls.read_text().splitlines() if line]


def shellcheck(text: str, tmp: Path) -> None:
    path = tmp / "check.sh"
    path.write_text(text)
    res = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Host, Path, subprocess.CompletedProcess[str], str]:
    """One install on a 'Debian' host, shared by the checks below."""
    tmp = tmp_path_factory.mktemp("server")
    pkg = fixture_package(tmp / "src")
    host = Host(tmp)
    config = config_json()
    res = host.run(render_install_scaler(True, config, pkg))
    return host, pkg, res, config


def test_install_creates_venv_package_config_and_unit(installed):
    host, _, res, config = installed
    assert res.returncode == 0, res.stderr
    assert host.recorded() == [
        "cloud-init status --wait",
        "systemctl daemon-reload",
        "systemctl enable obs-farm-scaler.service",
        "systemctl restart obs-farm-scaler.service",
    ]
    lib = host.prefix / "lib"
    assert sorted(p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()) == [
        "obs_farm_scaler/__init__.py",
        "obs_farm_scaler/__main__.py",
        "requirements.txt",
    ]
    scaler_json = host.conf / "scaler.json"
    assert scaler_json.read_text() == config
    assert oct(scaler_json.stat().st_mode & 0o777) == "0o644"
    assert json.loads(scaler_json.read_text())["pollSeconds"] == 3
    unit = host.units / "obs-farm-scaler.service"
    assert unit.read_text() == cloudinit.template("obs-farm-scaler.service")
    assert "journalctl -u obs-farm-scaler.service -f" in res.stdout
    leftovers = [p.name for p in [*host.prefix.iterdir(), *host.units.iterdir()]]
    assert sorted(leftovers) == [
        "lib",
        "obs-farm-scaler.service",
        "requirements.installed",
        "venv",
    ]


def test_the_installed_service_command_runs(installed):
    """ExecStart of the unit, with its environment, against what was installed."""
    host, _, _, _ = installed
    unit = (host.units / "obs-farm-scaler.service").read_text()
    env_lines = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("Env")]
    env = dict(e.split("=", 1) for e in env_lines)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[1:] == ["-m", "obs_farm_scaler"]
    # The unit names the real paths; run the same command under the tmp prefix.
    argv[0] = argv[0].replace("/opt/obs-farm-scaler", str(host.prefix))
    env["PYTHONPATH"] = env["PYTHONPATH"].replace("/opt/obs-farm-scaler", str(host.prefix))
    env["OBS_FARM_SCALER_CONFIG"] = str(host.conf / "scaler.json")
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "obs-farm-scaler fixture (3, 11) 1"


def test_a_rerun_with_a_new_package_keeps_the_venv_and_requirements(installed, tmp_path):
    host, _, _, config = installed
    python = host.prefix / "venv" / "bin" / "python"
    before = (python.resolve().stat().st_ino, (host.prefix / "venv").stat().st_mtime_ns)
    stamp = (host.prefix / "requirements.installed").stat().st_mtime_ns
    pkg = fixture_package(tmp_path / "src2", marker="v2")
    res = host.run(render_install_scaler(True, config, pkg))
    assert res.returncode == 0, res.stderr
    assert (python.resolve().stat().st_ino, (host.prefix / "venv").stat().st_mtime_ns) == before
    assert (host.prefix / "requirements.installed").stat().st_mtime_ns == stamp
    init = host.prefix / "lib" / "obs_farm_scaler" / "__init__.py"
    assert init.read_text() == 'VERSION = "v2"\n'
    assert "systemctl restart obs-farm-scaler.service" in host.recorded()


def test_turning_the_scaler_off_stops_and_removes_it(installed, tmp_path):
    host, pkg, _, config = installed
    res = host.run(render_install_scaler(False))
    assert res.returncode == 0, res.stderr
    assert host.recorded() == [
        "cloud-init status --wait",
        "systemctl disable --now obs-farm-scaler.service",
        "systemctl daemon-reload",
    ]
    assert not (host.units / "obs-farm-scaler.service").exists()
    assert not (host.conf / "scaler.json").exists()
    assert "scaler stopped and removed" in res.stdout
    # ... and back on.
    res = host.run(render_install_scaler(True, config, pkg))
    assert res.returncode == 0, res.stderr
    assert (host.units / "obs-farm-scaler.service").exists()


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="no python3.11 on this host")
def test_opensuse_leap_uses_python311(tmp_path):
    host = Host(tmp_path, "opensuse-leap")
    res = host.run(render_install_scaler(True, config_json(), fixture_package(tmp_path / "src")))
    assert res.returncode == 0, res.stderr
    assert not [c for c in host.recorded() if c.startswith(("zypper", "apt-get"))]
    cfg = (host.prefix / "venv" / "pyvenv.cfg").read_text()
    assert "version = 3.11" in cfg or "version_info = 3.11" in cfg, cfg


def test_missing_venv_support_is_installed_from_the_distribution(tmp_path):
    """Debian without python3-venv: the script installs it, then goes on."""
    host = Host(tmp_path)
    marker = tmp_path / "python3-venv-installed"
    real = shutil.which("python3")
    assert real
    # python3 that cannot import ensurepip until "apt-get install python3-venv" ran.
    (host.bin / "python3").write_text(
        "#!/bin/sh\n"
        f'if [ ! -e {marker} ] && [ "$1" = -c ] && echo "$2" | grep -q ensurepip; then exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    (host.bin / "python3").chmod(0o755)
    (host.bin / "apt-get").write_text(
        f'#!/bin/sh\necho "apt-get $*" >> {host.calls}\ncase "$*" in *python3-venv*) touch {marker};; esac\n'
    )
    res = host.run(render_install_scaler(True, config_json(), fixture_package(tmp_path / "src")))
    assert res.returncode == 0, res.stderr
    assert host.recorded()[1:3] == ["apt-get update -q", "apt-get install -y -q python3-venv"]


def test_unsupported_os_and_a_package_without_main_fail_clearly(tmp_path):
    host = Host(tmp_path, "fedora")
    pkg = fixture_package(tmp_path / "src")
    res = host.run(render_install_scaler(True, config_json(), pkg))
    assert res.returncode == 1
    assert "unsupported server OS 'fedora'" in res.stderr
    host.set_os("debian")
    (pkg / "obs_farm_scaler" / "__main__.py").unlink()
    res = host.run(render_install_scaler(True, config_json(), pkg))
    assert res.returncode == 1
    assert "no obs_farm_scaler/__main__.py" in res.stderr
    assert not (host.units / "obs-farm-scaler.service").exists()
    assert not list(host.prefix.glob("lib*"))


def test_rendered_scripts_pass_shellcheck_and_carry_no_secret(tmp_path):
    pkg = fixture_package(tmp_path / "src")
    for script in (render_install_scaler(True, config_json(), pkg), render_install_scaler(False)):
        assert script.startswith("#!/bin/bash\n")
        shellcheck(script, tmp_path)
        res = Resource(
            "azure-native:compute:VirtualMachineRunCommandByVirtualMachine",
            "obs-scaler-install",
            {"source": {"script": script}},
        )
        assert no_secrets_in_user_data(res, {}) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_installed_unit_passes_systemd_analyze_verify(installed, tmp_path):
    """systemd's own parser: unknown directives or bad values are reported."""
    host, _, _, _ = installed
    text = (host.units / "obs-farm-scaler.service").read_text()
    unit = tmp_path / "obs-farm-scaler.service"
    unit.write_text(text.replace("/opt/obs-farm-scaler", str(host.prefix)))
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (res.returncode, res.stdout + res.stderr) == (0, "")
    unit.write_text(unit.read_text().replace("ProtectSystem=full", "ProtectSystem=fulll"))
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "fulll" in res.stdout + res.stderr  # the check can fail
