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
builds hello-obs through it on them for x86_64 (emulated builds on these
same worker groups are test_farm_builds.py's: one more would not fit the
tier's time) and checks the result, the VM reboots and
everything comes back from the data disk, and `./check` fails, naming it,
once one architecture's scheduler is stopped. No obs unit is failed, at
either boot.

Builds need one more piece of the farm's network on this host: the
dispatcher hands a job to a worker with `port=5252`, and bs_worker fetches
new worker and build code from http://<the address the dispatcher connected
from>:5252 (bs_worker, `getcode`). On Azure that address is the server's
private one (VNet traffic is not NATed). Behind QEMU's user network the
connection arrives from the host's 127.0.0.1, so the VM's repserver is also
forwarded to 127.0.0.1:5252 (the integration lock keeps that port free).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
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
#: What ./check --build builds here: the native architecture. ./check builds
#: every architecture the same way (its unit tests cover the per-architecture
#: project and constraints); emulated builds on the same worker groups are
#: test_farm_builds.py's. The armv7l build cost about 130 s of a tier that
#: must stay under 60 minutes (208 s for two, measured in a fresh-clone run).
BUILD_ARCHS = ("x86_64",)
HOSTNAME = "obs-server-it"
VM_TIMEOUT_S = 3600
CLOUD_INIT_TIMEOUT_S = 1500
READY_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 1500
DATA_DISK_SIZE = "8G"
CHECK_PRJ = "obs-farm-check"  # the project ./check --build makes


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


def failed_obs_units(ssh: sv.Ssh) -> list[str]:
    """obs-server's and the farm's failed units (every failed unit is printed)."""
    out = ssh.out("systemctl --failed --no-legend --plain --full")
    print("failed units:", out or "none")
    units = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [u for u in units if u.startswith("obs")]


def assert_postinst_extras_masked(ssh: sv.Ssh) -> None:
    """What obs-server's postinst enables that the farm does not run."""
    for unit in ("obssigner", "obsscheduler@i586", "obsscheduler@armv7hl"):
        state = ssh.run(f"systemctl is-enabled {unit}", check=False).stdout.strip()
        active = ssh.run(f"systemctl is-active {unit}", check=False).stdout.strip()
        assert (state, active) == ("masked", "inactive"), (unit, state, active)


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
    # The repserver forward is on 127.0.0.1:5252, where bs_worker fetches code
    # updates from (see the module's docstring).
    assert not ob.port_open(sv.REPSERVER_PORT), "127.0.0.1:5252 is taken (integration lock?)"
    ssh_port, rep_fwd, src_fwd = vm.free_port(), sv.REPSERVER_PORT, vm.free_port()
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
        assert_postinst_extras_masked(ssh)
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
        assert failed_obs_units(ssh) == []
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

                # -- ./check --build: everything passes, hello-obs built
                extra = ["--build", "--build-timeout", str(BUILD_TIMEOUT_S)]
                extra += [a for arch in BUILD_ARCHS for a in ("--arch", arch)]
                t0 = time.monotonic()
                # The host runs no sshd: worker health is asked after the reboot.
                res = run_check(outputs, ssh_key, ssh_port, *extra, "--no-worker-health")
                t["check"] = time.monotonic() - t0
                if res.returncode != 0:
                    for arch in BUILD_ARCHS:
                        with contextlib.suppress(ob.HarnessError):
                            log = backend.build_log(CHECK_PRJ, "check", arch, "hello-obs")
                            print(f"--- {arch} build log\n{log[-3000:]}")
                    for p in workers.logs.iterdir():
                        print(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}")
                assert res.returncode == 0, res.stdout + res.stderr
                lines = res.stdout.splitlines()
                assert not [line for line in lines if line.startswith("FAIL")]
                # The dev stack has no scaler; everything else is checked.
                assert [line for line in lines if line.startswith("SKIP")] == [
                    "SKIP worker health: not asked (--no-worker-health)",
                    "SKIP scaler: this farm has no scaler",
                ]
                for arch in BUILD_ARCHS:
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

            assert failed_obs_units(ssh) == []
            assert_postinst_extras_masked(ssh)

            # -- ./check passes again; then one scheduler stops and it says so
            res = run_check(outputs, ssh_key, ssh_port, "--no-worker-health")
            assert res.returncode == 0, res.stdout + res.stderr
            ssh.out("sudo systemctl stop obsscheduler@aarch64")
            # This time ./check also logs in to the worker machine through
            # the server: the VM's sshd connects to the host's worker
            # address, and the host has no sshd, so that line fails too.
            res = run_check(outputs, ssh_key, ssh_port)
            assert res.returncode == 1, res.stdout + res.stderr
            fails = [line for line in res.stdout.splitlines() if line.startswith("FAIL")]
            health = f"FAIL worker health {pool.name} {host}: "
            health_lines = [line for line in fails if line.startswith(health)]
            assert len(health_lines) == 1, fails
            assert health_lines[0].startswith(
                f"{health}cannot read /run/obs-farm/worker-health.json on "
                f"{sv.host_address_in_guest(settings)} through the server: "
            ), health_lines
            # The server's sshd tried the host's worker address (the SSH hop
            # works); nothing answers SSH there.
            assert any(
                words in health_lines[0]
                for words in ("refused", "open failed", "Connection closed")
            ), health_lines
            fails = [line for line in fails if not line.startswith(health)]
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
    record(
        f"server VM: ./check --build (hello-obs for {' and '.join(BUILD_ARCHS)})",
        f"{t['check']:.0f} s",
    )
    record("server VM: reboot to backend ready", f"{t['reboot ready']:.0f} s")


def sv_units() -> list[str]:
    return ["obssrcserver", "obsrepserver", "obsdispatcher", "obspublisher", "obswarden"]
