"""A worker VM booted from our cloud-init registers with a real OBS backend.

A Debian bookworm amd64 VM (debootstrap image, cached; QEMU with software
emulation) boots the `dev` stack's worker user-data unchanged except the
server address, which becomes 10.0.2.2, the host as QEMU's user network
shows it. The backend runs on the host's 127.0.0.1 with the server's
rendered BSConfig; the workers' fixed ports are forwarded from 127.0.0.1 so
the dispatcher can connect back. Everything is read from the real systems:
cloud-init's own status, /proc/sys/fs/binfmt_misc inside the VM, systemd,
the backend's /workerstatus and each worker's own /worker endpoint.

The stock VM is then rebooted once (the guest runs `reboot`; the harness
boots the same disk again): every group must come back by itself with the
same worker ids and the binfmt handlers still carrying F.

Last, the baked path (issue 9): a worker image baked from the base image as
the image services bake one (baked_image.py, cached by content), booted
with the same pool's user-data in its baked form. Every group must
register and cloud-init must be clean; its boot-to-all-registered is
printed beside the stock boot's, with the ratio. The failure paths run in
that same VM, not in a boot of their own (the user-data is the same):
emulation is broken the two ways the farm must survive (qemu-aarch64
re-registered without the F flag, qemu-arm removed), and cloud-init's own
step that starts the groups must fail, the emulated groups refuse (also
when started by hand), the x86_64 group stays. Then qemu-aarch64's
interpreter goes for good and the VM reboots: armv7hl comes back, aarch64
stays out, and that boot is loud too (a failed obs-farm-workers.service,
so `systemctl is-system-running` says degraded, and
/run/obs-farm/worker-health.json names the group).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import provision
from components.cloudinit import render_worker_user_data
from components.topology import WorkerGroup, WorkerPool, azure_worker_pool
from config import load_settings
from tests.integration import baked_image, vm
from tests.integration import obs_backend as ob
from tests.integration.farm import (
    answers,
    farm_backend,
    record,
    require_host,
    scratch_dir,
    wait_registered,
)
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

HOST_FROM_VM = "10.0.2.2"
HOSTNAME = "obsw-it"
BOOT_TIMEOUT_S = 1500
CLOUD_INIT_TIMEOUT_S = 1200
REGISTER_TIMEOUT_S = 300
# Boot to all workers registered, per image kind, for the baked/stock ratio.
BOOT_TO_REGISTERED: dict[str, float] = {}

BREAK_EMULATION = """#!/bin/sh
# Run as root in a booted worker: breaks emulation the two ways the farm
# must survive.
set -e
echo "obs-farm-test: breaking emulation"
echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
echo ':qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:P' > /proc/sys/fs/binfmt_misc/register
echo -1 > /proc/sys/fs/binfmt_misc/qemu-arm
"""


@pytest.fixture(scope="module")
def pool() -> WorkerPool:
    return azure_worker_pool(load_settings(read_stack_config("dev")))


@pytest.fixture(scope="module")
def backend() -> Iterator[ob.ObsBackend]:
    require_host()
    settings = load_settings(read_stack_config("dev"))
    with scratch_dir("obs-farm-vm-") as workdir, farm_backend(settings, workdir) as obs:
        yield obs


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def image() -> Path:
    t0 = time.monotonic()
    path = vm.build_image()
    built = vm.image_info(path).get("build_seconds")
    record("VM image build (debootstrap)", f"{built} s" if built else "?")
    record("VM image ready this run (0 when cached)", f"{time.monotonic() - t0:.0f} s")
    return path


def user_data(pool: WorkerPool) -> str:
    """The dev stack's worker user-data; only the server address differs."""
    text = render_worker_user_data(pool, HOST_FROM_VM)
    assert text == render_worker_user_data(pool, "10.40.1.10").replace("10.40.1.10", HOST_FROM_VM)
    return text


def forwards(pool: WorkerPool, ssh_port: int) -> list[tuple[int, int]]:
    return [(p, p) for g in pool.groups for p in g.ports()] + [(ssh_port, 22)]


def ssh_command(key: Path, port: int, command: str) -> list[str]:
    return [
        "ssh", "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
        "debian@127.0.0.1", command,
    ]  # fmt: skip


def ssh(key: Path, port: int, command: str) -> str:
    res = subprocess.run(
        ssh_command(key, port, command), capture_output=True, text=True, timeout=120
    )
    if res.returncode != 0:
        raise AssertionError(f"ssh {command!r} failed ({res.returncode}): {res.stderr}")
    return res.stdout


def poweroff(key: Path, port: int, run: vm.VmRun) -> None:
    """Power the VM off from inside; ssh itself may see the connection drop."""
    subprocess.run(
        ssh_command(key, port, "sudo systemctl poweroff"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    run.wait_for_poweroff(300)


def reboot(key: Path, port: int, run: vm.VmRun) -> None:
    """`reboot` in the guest; qemu (-no-reboot) exits and boots the same disk again."""
    subprocess.run(ssh_command(key, port, "sudo systemctl reboot"), capture_output=True, timeout=60)
    run.restart(300)


def wait_ssh(key: Path, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(ssh_command(key, port, "true"), capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"no ssh after {timeout:.0f} s")
        time.sleep(5)


def health(key: Path, port: int) -> dict:
    return json.loads(ssh(key, port, "cat /run/obs-farm/worker-health.json"))


def workerid_at(uri: str) -> str:
    """The id the worker behind `uri` answers with now (not what the repserver remembers)."""
    try:
        with urllib.request.urlopen(f"{uri}/worker", timeout=10) as resp:
            return ET.fromstring(resp.read()).get("workerid", "")
    except OSError:
        return ""


def handler_flags(key: Path, port: int, handler: str) -> str:
    entry = ssh(key, port, f"cat /proc/sys/fs/binfmt_misc/{handler}")
    assert "enabled" in entry, entry
    return next(
        line.split(":", 1)[1].strip() for line in entry.splitlines() if line.startswith("flags:")
    )


def test_worker_vm_registers_every_group(backend, pool, ssh_key, image):
    ssh_port = vm.free_port()
    meta = {"local-hostname": HOSTNAME, "public-keys": [ssh_key.with_suffix(".pub").read_text()]}
    want = {wid: g for g in pool.groups for wid in g.worker_ids(HOSTNAME)}
    with vm.boot(
        user_data(pool), meta, forwards(pool, ssh_port), BOOT_TIMEOUT_S, image=image
    ) as run:
        # Workers start in cloud-init's last step: wait for them first, so
        # both times below are measured from boot.
        idle = wait_registered(backend, set(want), CLOUD_INIT_TIMEOUT_S)
        registered = run.seconds_since_start()
        report = run.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
        cloud_init_done = run.seconds_since_start()
        assert (report.status, report.errors) == ("done", []), run.console_log()[-4000:]
        assert set(idle) == set(want), (
            sorted(idle),
            ssh(ssh_key, ssh_port, "sudo journalctl -u 'obs-farm-worker@*' --no-pager | tail -50"),
        )
        assert_as_promised(idle, want)

        for handler in ("qemu-aarch64", "qemu-arm"):
            assert "F" in handler_flags(ssh_key, ssh_port, handler)
        assert ssh(ssh_key, ssh_port, "systemctl is-active docker").strip() == "active"
        units = ssh(
            ssh_key,
            ssh_port,
            "systemctl is-active 'obs-farm-worker@x86_64-1' 'obs-farm-worker@aarch64-1' 'obs-farm-worker@armv7hl-1'",
        )
        assert units.split() == ["active"] * 3
        assert "status: done" in ssh(ssh_key, ssh_port, "cloud-init status --long")
        assert health(ssh_key, ssh_port)["healthy"] is True
        uris = {wid: e.uri for wid, e in idle.items()}

        # A reboot (platform maintenance): every group comes back by itself.
        reboot(ssh_key, ssh_port, run)
        back = {}
        deadline = time.monotonic() + REGISTER_TIMEOUT_S * 2
        while set(back) != set(want) and time.monotonic() < deadline:
            back = {w: u for w, u in uris.items() if workerid_at(u) == w}
            time.sleep(3)
        rebooted = run.seconds_since_start()
        assert set(back) == set(want), (
            sorted(back),
            run.console_log()[-3000:],
        )
        idle = wait_registered(backend, set(want), REGISTER_TIMEOUT_S)
        assert set(idle) == set(want), sorted(idle)
        assert {w: e.uri for w, e in idle.items()} == uris
        for handler in ("qemu-aarch64", "qemu-arm"):
            assert "F" in handler_flags(ssh_key, ssh_port, handler), handler
        assert system_state(ssh_key, ssh_port) == "running", ssh(
            ssh_key, ssh_port, "systemctl --failed --no-legend"
        )
        h = health(ssh_key, ssh_port)
        assert h["healthy"] is True, h
        assert {g["group"]: g["state"] for g in h["groups"]} == dict.fromkeys(
            (g.arch for g in pool.groups), "started"
        )
        poweroff(ssh_key, ssh_port, run)
    BOOT_TO_REGISTERED["stock"] = registered
    record("worker VM: boot to cloud-init done (TCG)", f"{cloud_init_done:.0f} s")
    record(f"worker VM: boot to all {len(want)} workers registered", f"{registered:.0f} s")
    record("worker VM: reboot to every worker answering again", f"{rebooted:.0f} s")


def assert_as_promised(idle: dict[str, ob.WorkerEntry], want: dict[str, WorkerGroup]) -> None:
    """Each registration has the topology's architecture and port, and answers."""
    for wid, entry in idle.items():
        assert entry.hostarch == want[wid].scheduler_arch
        assert int(entry.uri.rsplit(":", 1)[1]) in want[wid].ports()
        assert answers(entry.uri), f"{wid} registered but {entry.uri}/worker does not answer"


def system_state(key: Path, port: int) -> str:
    """`systemctl is-system-running` once the boot has settled."""
    deadline = time.monotonic() + 120
    while True:
        state = ssh(key, port, "systemctl is-system-running || true").strip()
        if state not in ("initializing", "starting") or time.monotonic() > deadline:
            return state
        time.sleep(3)


def assert_loud(key: Path, port: int, up: set[str], down: set[str]) -> None:
    """The boot's health: a failed unit (degraded) and the health file."""
    assert system_state(key, port) == "degraded"
    assert ssh(key, port, "systemctl is-failed obs-farm-workers || true").strip() == "failed"
    h = health(key, port)
    assert h["healthy"] is False, h
    states = {g["group"]: g["state"] for g in h["groups"]}
    assert states == {**dict.fromkeys(up, "started"), **dict.fromkeys(down, "check-failed")}, h


# --- the baked image (issue 9) ---------------------------------------------


@pytest.fixture(scope="module")
def baked(image) -> Path:
    t0 = time.monotonic()
    path = baked_image.baked_worker_image(image)
    info = vm.image_info(path)
    record(
        "worker image bake (boot, provision, deprovision, capture)",
        f"{info['build_seconds']:.0f} s (provisioning done at {info['provisioned_seconds']:.0f} s)",
    )
    record("worker image ready this run (0 when cached)", f"{time.monotonic() - t0:.0f} s")
    record(
        "worker image version", f"{info['image_version']} (hash {info['image_content_hash'][:12]})"
    )
    return path


def test_baked_worker_vm_registers_and_refuses_broken_emulation_across_a_reboot(
    backend, pool, ssh_key, baked
):
    info = vm.image_info(baked)
    assert info["image_content_hash"] == provision.image_content_hash()
    text = render_worker_user_data(pool, HOST_FROM_VM, baked=True)
    assert text == render_worker_user_data(pool, "10.40.1.10", baked=True).replace(
        "10.40.1.10", HOST_FROM_VM
    )
    assert provision.PROVISION_SCRIPT_INSTALL_PATH not in text
    host = f"{HOSTNAME}-baked"
    ssh_port = vm.free_port()
    meta = {"local-hostname": host, "public-keys": [ssh_key.with_suffix(".pub").read_text()]}
    want = {wid: g for g in pool.groups for wid in g.worker_ids(host)}
    with vm.boot(text, meta, forwards(pool, ssh_port), BOOT_TIMEOUT_S, image=baked) as run:
        idle = wait_registered(backend, set(want), CLOUD_INIT_TIMEOUT_S)
        registered = run.seconds_since_start()
        report = run.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
        cloud_init_done = run.seconds_since_start()
        assert (report.status, report.errors) == ("done", []), run.console_log()[-4000:]
        assert set(idle) == set(want), (sorted(idle), run.console_log()[-3000:])
        assert_as_promised(idle, want)
        for handler in ("qemu-aarch64", "qemu-arm"):
            assert "F" in handler_flags(ssh_key, ssh_port, handler)
        assert "status: done" in ssh(ssh_key, ssh_port, "cloud-init status --long")
        assert health(ssh_key, ssh_port)["healthy"] is True
        # What the image brought: the packages, docker on, Debian's obsworker
        # off, and a fresh identity (the bake left /etc/machine-id empty).
        installed = ssh(ssh_key, ssh_port, "dpkg-query -W -f '${Package}\\n'").split()
        assert set(provision.provision_packages()) <= set(installed)
        assert ssh(ssh_key, ssh_port, "systemctl is-active docker").strip() == "active"
        enabled = ssh(ssh_key, ssh_port, "systemctl is-enabled obsworker.service || true")
        assert enabled.strip() == "disabled"
        assert len(ssh(ssh_key, ssh_port, "cat /etc/machine-id").strip()) == 32
        # Where a baked boot spends its time (printed with -s).
        print(ssh(ssh_key, ssh_port, "cloud-init analyze blame 2>&1 | head -n 12 || true"))
        print(ssh(ssh_key, ssh_port, "systemd-analyze blame --no-pager 2>&1 | head -n 12 || true"))

        # The checks still refuse broken emulation, in this same machine: the
        # emulated instances stop, emulation breaks the two ways the farm must
        # survive, and the groups are started again as at boot.
        emulated = ("aarch64", "armv7hl")
        units = " ".join(f"obs-farm-worker@{a}-1" for a in emulated)
        ssh(ssh_key, ssh_port, f"sudo systemctl stop {units}")
        ssh(ssh_key, ssh_port, f"sudo sh -c {shlex.quote(BREAK_EMULATION)}")
        # cloud-init's own step (runcmd: `systemctl enable --now
        # obs-farm-workers.service`) fails, and so does cloud-init at a first
        # boot with broken emulation.
        step = "sudo systemctl stop obs-farm-workers.service && sudo systemctl enable --now obs-farm-workers.service"
        res = subprocess.run(
            ssh_command(ssh_key, ssh_port, step), capture_output=True, text=True, timeout=300
        )
        assert res.returncode != 0, (res.stdout, res.stderr)
        log = ssh(ssh_key, ssh_port, "sudo journalctl -b -u obs-farm-workers --no-pager")
        assert "qemu-aarch64 lacks the F flag" in log
        assert "qemu-arm is not registered" in log
        assert "NOT started (check failed): aarch64 armv7hl" in log
        states = ssh(ssh_key, ssh_port, f"systemctl is-active {units} || true")
        assert states.split() == ["inactive", "inactive"]
        assert_loud(ssh_key, ssh_port, {"x86_64"}, set(emulated))
        # An instance started by hand refuses too, and says why.
        ssh(ssh_key, ssh_port, "sudo systemctl start obs-farm-worker@aarch64-1 || true")
        refused = "refusing to start emulated aarch64 worker 1"
        deadline = time.monotonic() + 60
        while refused not in (
            out := ssh(
                ssh_key, ssh_port, "sudo journalctl -b -u obs-farm-worker@aarch64-1 --no-pager"
            )
        ):
            assert time.monotonic() < deadline, out
            time.sleep(3)
        time.sleep(10)  # would an emulated worker come back late?
        listed = {w.workerid: w for w in backend.workerstatus().idle}
        assert not {f"{host}:{a}-1" for a in emulated} & set(listed)
        assert answers(listed[f"{host}:x86_64-1"].uri)

        # Break qemu-aarch64 for good (its interpreter gone, so no F
        # registration at boot) and reboot: armv7hl comes back, aarch64
        # stays out, and this boot says so too.
        ssh(ssh_key, ssh_port, "sudo mv /usr/libexec/qemu-binfmt/aarch64-binfmt-P /root/")
        reboot(ssh_key, ssh_port, run)
        back = {f"{host}:x86_64-1", f"{host}:armv7hl-1"}
        idle = wait_registered(backend, back, REGISTER_TIMEOUT_S * 2)
        assert set(idle) == back, (sorted(idle), run.console_log()[-3000:])
        wait_ssh(ssh_key, ssh_port, 120)
        assert "F" in handler_flags(ssh_key, ssh_port, "qemu-arm")
        assert_loud(ssh_key, ssh_port, {"x86_64", "armv7hl"}, {"aarch64"})
        # Loud on the console of this boot too (the unit logs to it).
        assert "qemu-aarch64 is not registered" in run.console_log()
        assert f"{host}:aarch64-1" not in {w.workerid for w in backend.workerstatus().idle}
        poweroff(ssh_key, ssh_port, run)
    BOOT_TO_REGISTERED["baked"] = registered
    record("worker VM (baked image): boot to cloud-init done", f"{cloud_init_done:.0f} s")
    record(
        f"worker VM (baked image): boot to all {len(want)} workers registered",
        f"{registered:.0f} s",
    )
    stock = BOOT_TO_REGISTERED.get("stock")
    record(
        "worker VM: baked/stock boot to all registered (goal <= 0.3)",
        f"{registered / stock:.2f} ({registered:.0f} s / {stock:.0f} s)"
        if stock
        else "n/a: the stock boot did not run in this session",
    )
