"""The OBS server booted for real: the backend flavor's user-data in a VM.

A Debian bookworm VM (QEMU, software emulation) boots the server user-data
the program renders for the dev stack, byte for byte, with a second virtual
disk as the data disk. QEMU's user network gives the guest the server's
private address and shows it the host at a worker-subnet address (see
server_vm.py), so no address in the user-data, BSConfig.pm or farm.pm is
changed. Azure's platform pieces are played by the test: a udev rule (NoCloud
vendor-data) names the data disk /dev/disk/azure/scsi1/lun0, and the
run-command script runs as root over SSH after cloud-init, as Azure's run
command does.

Then the dev stack's worker groups (obs-farm-worker.sh on the host, as in
test_farm_builds.py) register with the VM's backend, `./check --build`
builds hello-obs on them for x86_64, aarch64 and armv7l and checks the
result, the VM reboots and everything comes back from the data disk, and
`./check` fails, naming it, once one architecture's scheduler is stopped.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import cloudinit
from components.topology import azure_worker_pool, server_private_ip
from tests.integration import obs_backend as ob
from tests.integration import server_vm as sv
from tests.integration import vm
from tests.integration.farm import record, require_host, scratch_dir, wait_registered
from tests.integration.test_farm_builds import GROUP_OF, FarmWorkers
from tools.offline import run_program

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("x86_64", "aarch64", "armv7l")
HOSTNAME = "obs-server-it"
VM_TIMEOUT_S = 3600
CLOUD_INIT_TIMEOUT_S = 1500
READY_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 1800
DATA_DISK_SIZE = "8G"
CHECK_PRJ = "obs-farm-check"  # the project ./check --build makes
#: Builds through the VM need 127.0.0.1:5252 on the host (see the relay in
#: the test): off unless OBS_FARM_SERVER_VM_BUILDS=1. Not yet seen passing.
BUILDS = os.environ.get("OBS_FARM_SERVER_VM_BUILDS") == "1"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    require_host()
    with scratch_dir("obs-farm-server-vm-") as path:
        yield path


@pytest.fixture(scope="module")
def ssh_key(workdir: Path) -> Path:
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def program_run(workdir: Path) -> tuple[str, Path]:
    """The dev stack's program under mocks: the server VM's customData as
    registered, and its exports as `pulumi stack output --json` prints them."""
    run = run_program("dev", sv.server_config())
    custom_data = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    path = workdir / "outputs.json"
    path.write_text(json.dumps(run.outputs, indent=2))
    return base64.b64decode(custom_data).decode(), path


def run_check(outputs: Path, key: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "tools.check", "dev", "--outputs", str(outputs),
        "--host", "127.0.0.1", "--port", str(port), "--user", "debian", "-i", str(key),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", *extra,
    ]  # fmt: skip
    res = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S + 300
    )
    print(f"$ ./check {' '.join(extra)} -> {res.returncode}\n{res.stdout}{res.stderr}")
    return res


def wait_backend_ready(ssh: sv.Ssh, units: list[str], timeout: float) -> float:
    """Seconds until every unit is active and every scheduler runs (repserver's view)."""
    t0 = time.monotonic()
    probe = f"systemctl is-active --quiet {' '.join(units)} && curl -fsS http://127.0.0.1:5252/workerstatus"
    while True:
        res = ssh.run(probe, timeout=60, check=False)
        if res.returncode == 0:
            daemons = ob.parse_workerstatus(res.stdout.encode()).daemons
            if all(daemons.get(f"scheduler:{a}") == "running" for a in ARCHS):
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"backend not ready within {timeout}s: {res.stdout[-1500:]} {res.stderr}"
            )
        time.sleep(5)


def refused_from_worker_range(url: str) -> bool:
    """Whether the backend refuses the host (a worker-subnet address to it)."""
    try:
        ob._fetch(url, timeout=30)
    except ob.HarnessError as err:
        return "access denied" in str(err)
    return False


def test_server_vm_boots_serves_the_farm_and_survives_a_reboot(workdir, ssh_key):
    settings = sv.server_settings()
    server_ip = server_private_ip(settings)
    user_data, outputs = program_run(workdir)
    # Byte for byte what the program gives Azure for the dev stack.
    assert user_data == cloudinit.render_server_user_data(settings)
    assert "/dev/disk/azure/scsi1/lun0" in user_data and server_ip in user_data
    image = sv.image()
    data_disk = workdir / "data-disk.raw"
    subprocess.run(["truncate", "-s", DATA_DISK_SIZE, str(data_disk)], check=True)
    ssh_port, rep_fwd, src_fwd = vm.free_port(), vm.free_port(), vm.free_port()
    ssh = sv.Ssh(ssh_key, ssh_port)
    meta = {"local-hostname": HOSTNAME, "public-keys": [ssh_key.with_suffix(".pub").read_text()]}
    units = [*sv_units(), *(f"obsscheduler@{a}" for a in ARCHS)]
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    pool = dataclasses.replace(azure_worker_pool(settings), work_dir=str(workdir / "farm" / "work"))
    want = {wid: g for g in pool.groups for wid in g.worker_ids(host)}
    t: dict[str, float] = {}

    with (
        ob.Binfmt(ARCHS),
        sv.server_address_on_host(
            server_ip, {sv.REPSERVER_PORT: rep_fwd, sv.SRCSERVER_PORT: src_fwd}
        ),
        vm.boot(
            user_data,
            meta,
            [(ssh_port, 22), (rep_fwd, sv.REPSERVER_PORT), (src_fwd, sv.SRCSERVER_PORT)],
            VM_TIMEOUT_S,
            image=image,
            vendor_data=sv.AZURE_DISK_NAME_VENDOR_SCRIPT,
            extra_drives=[data_disk],
            user_net=sv.user_net(settings),
        ) as run,
    ):
        # -- first boot: cloud-init, the data disk, obs-server with our BSConfig
        report = run.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
        t["cloud-init"] = run.seconds_since_start()
        assert (report.status, report.errors) == ("done", []), run.console_log()[-4000:]
        ssh.wait(120)
        log = ssh.out("sudo cat /var/log/cloud-init-output.log")
        assert log.count("is blank; creating ext4") == 1, log[-3000:]
        assert ssh.out("findmnt -n -o SOURCE,FSTYPE /srv/obs").split() == ["/dev/vdc", "ext4"]
        uuid = ssh.out("sudo blkid -p -s UUID -o value /dev/vdc").strip()
        assert f"UUID={uuid} /srv/obs ext4" in ssh.out("cat /etc/fstab")
        assert ssh.out("cat /etc/obs/BSConfig.pm") == cloudinit.render_bsconfig(settings)
        # obs-server went onto the mounted disk: its tree is on /dev/vdc.
        assert ssh.out("findmnt -n -o SOURCE -T /srv/obs/run").strip() == "/dev/vdc"
        for unit in sv_units():
            path = ssh.out(f"systemctl show -p FragmentPath --value {unit}").strip()
            # obs-server's own unit file, no override of ours
            assert path.endswith(f"/lib/systemd/system/{unit}.service"), (unit, path)
            assert ssh.out(f"systemctl is-active {unit}").strip() == "active", unit
        print("failed units:", ssh.run("systemctl --failed --no-legend", check=False).stdout)
        # Before the run command, no worker range is allowed in.
        rep_on_server_ip = f"http://{server_ip}:{sv.REPSERVER_PORT}"
        assert refused_from_worker_range(f"{rep_on_server_ip}/getworkercode")

        # -- the run command, as Azure delivers it: root, after cloud-init
        script = cloudinit.render_apply_farm(settings)
        res = ssh.run("sudo bash -s", stdin=script.encode(), timeout=600)
        print(res.stdout)
        assert ssh.out("cat /etc/obs-farm/farm.pm").rstrip("\n") == cloudinit.render_farm_pm(
            settings
        )
        wait_backend_ready(ssh, units, READY_TIMEOUT_S)
        t["backend ready"] = run.seconds_since_start()
        assert not refused_from_worker_range(f"{rep_on_server_ip}/getworkercode")

        # -- the Debian base into the VM's backend; workers on the host
        tunnel = [(vm.free_port(), sv.SRCSERVER_PORT), (vm.free_port(), sv.REPSERVER_PORT)]
        backend = sv.VmBackend(
            ssh, tunnel[0][0], tunnel[1][0], workdir / "base", sv.host_address_in_guest(settings)
        )
        workers = FarmWorkers(settings, workdir / "farm", rep_on_server_ip)
        try:
            with ssh.tunnel(tunnel):
                t0 = time.monotonic()
                backend.setup_debian_project(list(ARCHS), rescan_timeout=900)
                t["debian base"] = time.monotonic() - t0
                t0 = time.monotonic()
                workers.start()
                idle = wait_registered(backend, set(want), 300)
                t["registered"] = time.monotonic() - t0
                logs = {
                    p.name: p.read_text(errors="replace")[-1500:] for p in workers.logs.iterdir()
                }
                assert set(idle) == set(want), (sorted(idle), logs)
                guest_sees_host = sv.host_address_in_guest(settings)
                for wid, entry in idle.items():
                    assert entry.hostarch == want[wid].scheduler_arch
                    assert entry.uri.startswith(f"http://{guest_sees_host}:"), entry.uri

                # -- ./check: everything passes (builds: see BUILDS below)
                extra = ("--build", "--build-timeout", str(BUILD_TIMEOUT_S)) if BUILDS else ()
                t0 = time.monotonic()
                if BUILDS:
                    # bs_worker fetches code updates from http://<dispatcher's
                    # address as it sees it>:5252; behind QEMU's NAT that is
                    # the host's 127.0.0.1 (on Azure: the server's address).
                    relay = sv.Relay("127.0.0.1", sv.REPSERVER_PORT, rep_fwd)
                try:
                    res = run_check(outputs, ssh_key, ssh_port, *extra)
                finally:
                    if BUILDS:
                        relay.close()
                t["check"] = time.monotonic() - t0
                assert res.returncode == 0, res.stdout + res.stderr
                lines = res.stdout.splitlines()
                assert not [line for line in lines if line.startswith("FAIL")]
                # The dev stack has no scaler; everything else is checked.
                assert [line for line in lines if line.startswith("SKIP")] == [
                    "SKIP scaler: this farm has no scaler"
                ]
                for arch in ARCHS if BUILDS else ():
                    assert any(line.startswith(f"PASS build {arch}:") for line in lines), arch
                    # ... and independently: who built what, and the ELF machine.
                    jobs = backend.job_history(CHECK_PRJ, "check", arch, "hello-obs")
                    assert jobs and jobs[-1]["workerid"] == f"{host}:{GROUP_OF[arch]}-1", jobs
                    debs = backend.fetch_binaries(
                        CHECK_PRJ, "check", arch, "hello-obs", workdir / "out" / arch, "*.deb"
                    )
                    assert len(debs) == 1, debs
                    machines = ob.deb_elf_machines(debs[0])
                    assert machines == {"./usr/bin/hello-obs": ob.ELF_MACHINES[arch]}
                marker = "obs-farm-test: written before the reboot"
                ssh.run("sudo tee /srv/obs/obs-farm-test-marker >/dev/null", stdin=marker.encode())

            # -- reboot (the host's workers keep running, as on a farm)
            ssh.fire("sudo systemctl reboot")
            run.restart(timeout=300)
            ssh.wait(900)
            wait_backend_ready(ssh, units, READY_TIMEOUT_S)
            t["reboot ready"] = run.seconds_since_start()
            assert ssh.out("findmnt -n -o SOURCE,FSTYPE /srv/obs").split() == ["/dev/vdc", "ext4"]
            assert ssh.out("sudo blkid -p -s UUID -o value /dev/vdc").strip() == uuid
            # What a replacement VM's first boot does with the same disk:
            again = ssh.out(
                "sudo /usr/local/sbin/obs-farm-prepare-data-disk /dev/disk/azure/scsi1/lun0 /srv/obs"
            )
            assert "already holds ext4; keeping its data" in again, again
            assert ssh.out("cat /srv/obs/obs-farm-test-marker") == marker
            # Every obs-server unit waits for the data disk (no daemon writes
            # a new tree onto the OS disk before /srv/obs is mounted).
            for unit in ("obssrcserver", "obsrepserver", "obsdispatcher", "obsscheduler@aarch64"):
                needs = ssh.out(f"systemctl show -p RequiresMountsFor --value {unit}.service")
                assert "/srv/obs" in needs.split(), (unit, needs)
            with ssh.tunnel(tunnel):
                # Registrations live on the data disk; workers also re-announce
                # themselves every 5 minutes.
                idle = wait_registered(backend, set(want), 360)
                assert set(idle) == set(want), sorted(idle)

            # -- ./check passes again; then one scheduler stops and it says so
            res = run_check(outputs, ssh_key, ssh_port)
            assert res.returncode == 0, res.stdout + res.stderr
            ssh.out("sudo systemctl stop obsscheduler@aarch64")
            res = run_check(outputs, ssh_key, ssh_port)
            assert res.returncode == 1, res.stdout + res.stderr
            fails = [line for line in res.stdout.splitlines() if line.startswith("FAIL")]
            assert fails and all("aarch64" in line for line in fails), fails
            assert any(line.startswith("FAIL daemon obsscheduler@aarch64:") for line in fails)
            ssh.fire("sudo systemctl poweroff")
            run.wait_for_poweroff(300)
        finally:
            workers.stop()

    record("server VM: boot to cloud-init done (TCG)", f"{t['cloud-init']:.0f} s")
    record("server VM: boot to backend ready (after run command)", f"{t['backend ready']:.0f} s")
    record("server VM: Debian base into its backend", f"{t['debian base']:.0f} s")
    record("server VM: host worker groups registered", f"{t['registered']:.0f} s")
    what = "./check --build (hello-obs on 3 arches)" if BUILDS else "./check (no builds)"
    record(f"server VM: {what}", f"{t['check']:.0f} s")
    record("server VM: reboot to backend ready", f"{t['reboot ready']:.0f} s")


def sv_units() -> list[str]:
    return ["obssrcserver", "obsrepserver", "obsdispatcher", "obspublisher", "obswarden"]
