"""Rendered cloud-init: validated by cloud-init itself, scripts by shellcheck,
BSConfig by Perl with the same match OBS's BSStdServer performs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from components import cloudinit
from components.topology import azure_worker_pool, server_private_ip
from config import load_settings
from policy.rules import Resource, no_secrets_in_user_data
from tests.conftest import raw_config
from tests.helpers.cloudinit import check_cloud_config, shellcheck, written_content

SCRIPTS = sorted(cloudinit.TEMPLATE_DIR.glob("*.sh"))


def settings(**overrides):
    return load_settings(raw_config(**overrides))


def worker_doc(**overrides) -> tuple[str, dict]:
    s = settings(**overrides)
    text = cloudinit.render_worker_user_data(azure_worker_pool(s), server_private_ip(s))
    return text, yaml.safe_load(text)


def files_of(doc: dict) -> dict[str, dict]:
    return {f["path"]: f for f in doc["write_files"]}


def env_of(text: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    return {k: v.strip('"') for k, v in pairs}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck_and_start_strict(script: Path):
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    assert shellcheck(script) == ""


@pytest.mark.parametrize("flavor", ["appliance", "backend"])
def test_server_user_data_is_valid_cloud_config(flavor):
    text = cloudinit.server_user_data(settings(server={"flavor": flavor}))
    assert check_cloud_config(text) == []
    doc = yaml.safe_load(text)
    paths = files_of(doc)
    setup = {"appliance": "obs-farm-appliance-setup", "backend": "obs-farm-server-setup"}[flavor]
    assert doc["runcmd"] == [[f"/usr/local/sbin/{setup}"]]
    assert paths[f"/usr/local/sbin/{setup}"]["permissions"] == "0755"
    assert (
        paths["/usr/local/sbin/obs-farm-prepare-data-disk"]["content"]
        == (cloudinit.TEMPLATE_DIR / "prepare-data-disk.sh").read_text()
    )
    env = env_of(paths["/etc/obs-farm/server.env"]["content"])
    # apply-farm tells the flavors apart by this; a backend without it is the default.
    assert env.get("FLAVOR", "backend") == flavor
    # Only the frontend needed Docker, and there is none on the backend now.
    assert "docker.io" not in doc.get("packages", [])


def test_backend_flavor_keeps_the_debian_renderer():
    s = settings(server={"flavor": "backend"})
    assert cloudinit.server_user_data(s) == cloudinit.render_server_user_data(s)
    # The Debian renderer does not depend on the flavor: other tests render it as is.
    assert cloudinit.render_server_user_data(settings()) == cloudinit.render_server_user_data(s)


def test_appliance_installs_upstreams_2_10_for_leap_15_6():
    doc = yaml.safe_load(cloudinit.server_user_data(settings()))
    env = env_of(files_of(doc)["/etc/obs-farm/server.env"]["content"])
    assert env["OBS_REPO_URL"] == (
        "https://download.opensuse.org/repositories/OBS:/Server:/2.10/15.6/"
    )
    assert env["DATA_DISK_DEVICE"] == "/dev/disk/azure/scsi1/lun0"
    bsconfig = files_of(doc)["/etc/obs-farm/BSConfig.pm"]["content"]
    assert bsconfig == cloudinit.render_bsconfig(settings())


@pytest.mark.parametrize("archs", [["x86_64"], ["x86_64", "armv7hl", "aarch64"], ["aarch64"]])
def test_worker_user_data_is_valid_cloud_config(archs):
    text, _ = worker_doc(architectures=archs)
    assert check_cloud_config(text) == []


def test_schema_check_catches_a_misspelt_module():
    _, doc = worker_doc()
    doc["runcmnd"] = doc.pop("runcmd")
    bad = "#cloud-config\n" + yaml.safe_dump(doc)
    assert any("runcmnd" in p for p in check_cloud_config(bad))


def test_schema_check_catches_a_wrong_type():
    assert check_cloud_config("#cloud-config\nruncmd: 5\n") != []


def test_worker_ships_the_scripts_verbatim_and_executable():
    _, doc = worker_doc()
    files = files_of(doc)
    for path, name in [
        ("/usr/local/sbin/obs-farm-worker", "obs-farm-worker.sh"),
        ("/usr/local/sbin/obs-farm-worker-setup", "obs-farm-worker-setup.sh"),
        ("/usr/local/sbin/obs-farm-check-binfmt", "check-binfmt.sh"),
        ("/usr/local/sbin/obs-farm-evict", "obs-farm-evict.py"),
    ]:
        assert written_content(files[path]) == cloudinit.template(name)
        assert files[path]["permissions"] == "0755"
    for unit in ("obs-farm-worker@.service", "obs-farm-workers.service", "obs-farm-evict.service"):
        assert files[f"/etc/systemd/system/{unit}"]["content"] == cloudinit.template(unit)
    # The groups start from a unit that runs at every boot, not once from runcmd.
    assert doc["runcmd"][-2:] == [
        ["systemctl", "enable", "--now", "obs-farm-evict.service"],
        ["systemctl", "enable", "--now", "obs-farm-workers.service"],
    ]


def test_worker_groups_match_the_topology():
    _, doc = worker_doc(
        azureWorkers={"instancesPerArch": 3, "jobsPerInstance": 1, "cacheSizeMb": 4096}
    )
    files = files_of(doc)
    worker = env_of(files["/etc/obs-farm/worker.env"]["content"])
    assert worker["REPO_SERVER"] == "http://10.40.1.10:5252"
    assert worker["OBS_VM_TYPE"] == "none"
    aarch64 = env_of(files["/etc/obs-farm/groups/aarch64.env"]["content"])
    assert aarch64 == {
        "HOSTARCH": "aarch64",
        "INSTANCES": "3",
        "JOBS": "1",
        "PORT_BASE": "41200",
        "EXECUTION": "emulated",
        "CHECK": "obs-farm-check-binfmt qemu-aarch64",
        "NATIVEONLY_UNLESS_AARCH32": "0",
        "HOSTLABELS": "obs-farm-emulated obs-farm-aarch64",
        "CACHE_SIZE_MB": "4096",
    }
    x86 = env_of(files["/etc/obs-farm/groups/x86_64.env"]["content"])
    assert (x86["EXECUTION"], x86["CHECK"]) == ("native", "")


def test_emulation_checks_only_where_a_group_is_emulated():
    # The packages (qemu included) are the provisioning script's, the same on
    # every pool (tests/unit/test_provision.py); the checks follow the groups.
    _, x86_only = worker_doc(architectures=["x86_64"])
    _, mixed = worker_doc()
    assert "packages" not in x86_only and "packages" not in mixed
    assert not any(p.startswith("/etc/obs-farm/groups/a") for p in files_of(x86_only))
    assert "/usr/local/sbin/obs-farm-check-binfmt" not in files_of(x86_only)
    assert "/usr/local/sbin/obs-farm-check-binfmt" in files_of(mixed)


def test_server_env_names_disk_and_schedulers():
    doc = yaml.safe_load(
        cloudinit.render_server_user_data(settings(architectures=["x86_64", "armv7hl"]))
    )
    env = env_of(files_of(doc)["/etc/obs-farm/server.env"]["content"])
    assert env["DATA_DISK_DEVICE"] == "/dev/disk/azure/scsi1/lun0"
    assert "SCHEDULER_ARCHS" not in env  # follows the workers: run command


def test_server_user_data_ignores_worker_settings():
    base = cloudinit.render_server_user_data(settings())
    for other in (
        settings(architectures=["x86_64"]),
        settings(azureWorkers={"vmSize": "Standard_D32ds_v5", "maxVms": 9, "spot": True}),
        settings(network={"azureWorkerSubnet": "10.40.32.0/20"}),
    ):
        assert cloudinit.render_server_user_data(other) == base


def test_appliance_user_data_ignores_worker_settings():
    base = cloudinit.server_user_data(settings())
    for other in (
        settings(architectures=["x86_64"]),
        settings(azureWorkers={"vmSize": "Standard_D32ds_v5", "maxVms": 9, "spot": True}),
        settings(network={"azureWorkerSubnet": "10.40.32.0/20"}),
    ):
        assert cloudinit.server_user_data(other) == base


def test_no_secret_material_in_user_data(tls_pair):
    cert, key = tls_pair
    raw = raw_config(tlsCertificate=cert, tlsPrivateKey=key)
    s = load_settings(raw, secret_keys=["obs-farm:tlsPrivateKey"])
    texts = [
        cloudinit.server_user_data(s),
        cloudinit.render_server_user_data(s),
        worker_doc()[0],
        cloudinit.render_apply_farm(s),
    ]
    for text in texts:
        assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text
        # The same check the no-secrets-in-user-data policy applies.
        res = Resource("aws:ec2/launchTemplate:LaunchTemplate", "doc", {"userData": text})
        assert no_secrets_in_user_data(res, {}) == []


def test_fill_refuses_missing_and_leftover_markers():
    with pytest.raises(ValueError, match="no marker @@B@@"):
        cloudinit.fill("@@A@@", {"A": "1", "B": "2"})
    with pytest.raises(ValueError, match="left unfilled"):
        cloudinit.fill("@@A@@ @@C@@", {"A": "1"})


def _perl_access(bsconfig: str, peers: list[str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "BSConfig.pm").write_text(bsconfig)
    # The same test OBS's BSStdServer::authorize applies to each peer.
    code = r"""
use lib shift @ARGV; require BSConfig;
for my $peer (@ARGV) {
  my %a;
  for my $re (sort keys %$BSConfig::ipaccess) {
    next unless $peer =~ /^$re$/s;
    $a{$_} = 1 for split(',', $BSConfig::ipaccess->{$re});
  }
  print "$peer ", (join(',', sort keys %a) || '-'), "\n";
}
print "srcserver $BSConfig::srcserver\nreposerver $BSConfig::reposerver\nbsdir $BSConfig::bsdir\n";
"""
    out = subprocess.run(
        ["perl", "-e", code, str(tmp_path), *peers], check=True, capture_output=True, text=True
    )
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def apply_farm(s, tmp_path: Path, cloud_init_status: int = 0) -> subprocess.CompletedProcess[str]:
    """Run the rendered run-command script with systemctl and cloud-init stubbed."""
    script = tmp_path / "apply-farm.sh"
    script.write_text(cloudinit.render_apply_farm(s))
    script.chmod(0o755)
    log = tmp_path / "systemctl.log"
    (tmp_path / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (tmp_path / "cloud-init").write_text(f"#!/bin/sh\nexit {cloud_init_status}\n")
    for stub in ("systemctl", "cloud-init"):
        (tmp_path / stub).chmod(0o755)
    env = {
        **os.environ,
        "OBS_FARM_CONF_DIR": str(tmp_path / "etc"),
        "OBS_FARM_SYSTEMCTL": str(tmp_path / "systemctl"),
        "OBS_FARM_CLOUD_INIT": str(tmp_path / "cloud-init"),
    }
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)


def test_apply_farm_sets_schedulers_and_worker_ranges(tmp_path):
    res = apply_farm(settings(architectures=["x86_64", "armv7hl"]), tmp_path)
    assert res.returncode == 0, res.stderr
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert "enable --now obsscheduler@x86_64.service" in calls
    assert "enable --now obsscheduler@armv7l.service" in calls
    assert "disable --now obsscheduler@aarch64.service" in calls
    assert calls[-1] == "restart obssrcserver.service obsrepserver.service obsdispatcher.service"
    assert (tmp_path / "etc" / "schedulers").read_text() == "x86_64 armv7l\n"
    assert "worker ranges: 1" in res.stdout


def test_apply_farm_waits_for_first_boot_and_stops_if_it_failed(tmp_path):
    res = apply_farm(settings(), tmp_path, cloud_init_status=1)
    assert res.returncode == 1
    assert "cloud-init did not finish cleanly" in res.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "systemctl.log").exists()


def test_bsconfig_ipaccess_allows_exactly_the_worker_subnet(tmp_path):
    s = settings(network={"azureWorkerSubnet": "10.40.16.0/20"})
    assert apply_farm(s, tmp_path).returncode == 0  # writes etc/farm.pm for real
    access = _perl_access(
        cloudinit.render_bsconfig(s, farm_pm=str(tmp_path / "etc" / "farm.pm")),
        [
            "127.0.0.1",
            "::1",
            "10.40.1.10",
            "10.40.16.0",
            "10.40.31.255",
            "10.40.15.255",
            "10.40.32.1",
            "10.40.1.11",
            "10.40.1.100",
            "203.0.113.7",
            "110.40.16.1",
        ],
        tmp_path,
    )
    assert access["127.0.0.1"] == access["::1"] == access["10.40.1.10"] == "rw"
    assert access["10.40.16.0"] == access["10.40.31.255"] == "worker"
    for outsider in [
        "10.40.15.255",
        "10.40.32.1",
        "10.40.1.11",
        "10.40.1.100",
        "203.0.113.7",
        "110.40.16.1",
    ]:
        assert access[outsider] == "-", outsider
    assert access["srcserver"] == "http://10.40.1.10:5352"
    assert access["reposerver"] == "http://10.40.1.10:5252"
    assert access["bsdir"] == "/srv/obs"


@pytest.mark.parametrize(
    ("cidr", "inside", "outside"),
    [
        ("10.0.0.0/8", "10.255.1.2", "11.0.0.1"),
        ("172.16.0.0/12", "172.31.0.1", "172.32.0.1"),
        ("192.168.4.0/22", "192.168.7.255", "192.168.8.0"),
        ("10.1.2.3/32", "10.1.2.3", "10.1.2.30"),
    ],
)
def test_cidr_regex_matches_exactly_the_range(cidr, inside, outside, tmp_path):
    rx = cloudinit.cidr_regex(cidr)
    bsconfig = f"package BSConfig;\nour $ipaccess = {{ '{rx}' => 'worker' }};\nour $srcserver='';our $reposerver='';our $bsdir='';\n1;\n"
    access = _perl_access(bsconfig, [inside, outside], tmp_path)
    assert (access[inside], access[outside]) == ("worker", "-")
