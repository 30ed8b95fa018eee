"""The Graviton4 worker proof on an emulated arm64 machine, before and after a reboot.

Not part of CI (about 50 minutes of CPU on two cores); see README.md here.

Boots the `native` stack's launch-template user-data, with
`graviton.instanceTypes: [c8g.8xlarge]` and `armv7hlEmulated: true`, in
`qemu-system-aarch64 -M virt,gic-version=3 -cpu a64fx` (a CPU without
AArch32 at EL0, like Graviton4; Debian's kernel panics on a64fx with the
default GICv2) against the real OBS backend on the host's loopback, and checks:
- the AArch32 probe fails and every aarch64 and armv7hl worker registers,
  armv7hl with hostarch armv7l (under qemu-arm, F flag);
- the backend stores <nativeonly/> for the aarch64 workers;
- the same after `reboot` (qemu-arm comes back from /etc/binfmt.d), with the
  same worker ids, and /run/obs-farm/worker-health.json says healthy.
Prints the timings. Run from the repository root as root, under the
integration lock (binfmt_misc and the backend's ports are machine-wide).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from components.cloudinit import render_worker_user_data  # noqa: E402
from components.topology import graviton_pool  # noqa: E402
from config import load_settings  # noqa: E402
from tests.integration import vm  # noqa: E402
from tests.integration.farm import farm_backend, scratch_dir, wait_registered  # noqa: E402
from tests.integration.test_worker_vm import forwards, ssh, ssh_command  # noqa: E402
from tools.offline import read_stack_config  # noqa: E402

HOSTNAME = "i-0a64fx000000000a1"  # Graviton workers' hostname is their instance id
APPEND = "root=/dev/vda rw console=ttyAMA0 net.ifnames=0 panic=-1"


def settings():
    raw = read_stack_config("native")
    graviton = json.loads(raw["obs-farm:graviton"])
    graviton.update(instanceTypes=["c8g.8xlarge"], armv7hlEmulated=True)
    raw["obs-farm:graviton"] = json.dumps(graviton)
    return load_settings(raw)


def qemu_aarch64(image_dir: Path, run: vm.VmRun, hostfwd, cpus: int, memory_mb: int) -> list[str]:
    nic = "user,model=virtio-net-pci" + "".join(
        f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in hostfwd
    )
    return [
        "qemu-system-aarch64", "-M", "virt,gic-version=3", "-cpu", "a64fx", "-accel", "tcg",
        "-smp", str(cpus), "-m", str(memory_mb), "-nodefaults", "-nographic",
        "-monitor", "none", "-serial", f"file:{run.console_path}", "-no-reboot",
        "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
        "-append", APPEND,
        "-drive", f"file={run.overlay},if=virtio,format=qcow2",
        "-drive", f"file={run.seed},if=virtio,format=raw,readonly=on",
        "-device", "virtio-rng-pci", "-nic", nic,
    ]  # fmt: skip


def nativeonly(reposerver: str, workerid: str) -> bool:
    with urllib.request.urlopen(f"{reposerver}/worker/aarch64:{workerid}", timeout=30) as r:
        hw = ET.fromstring(r.read()).find("hardware")
    return hw is not None and hw.find("nativeonly") is not None


def check_boot(label, backend, pool, key, port, run, want, t0, timings) -> None:
    idle = wait_registered(backend, set(want), 3600)
    timings[f"{label}: boot to all {len(want)} workers registered"] = time.monotonic() - t0
    assert set(idle) == set(want), (sorted(set(want) - set(idle)), run.console_log()[-3000:])
    for wid, entry in idle.items():
        assert entry.hostarch == want[wid].scheduler_arch, (wid, entry)
        if want[wid].arch == "aarch64":
            assert nativeonly(backend.reposerver, wid), f"{wid}: no <nativeonly/> stored"
    probe = subprocess.run(
        ssh_command(key, port, "/usr/local/lib/obs-farm/aarch32-probe"), capture_output=True
    )
    qemu_arm = ssh(key, port, "cat /proc/sys/fs/binfmt_misc/qemu-arm")
    assert "flags: F" in qemu_arm and "/usr/bin/qemu-arm-static" in qemu_arm, qemu_arm
    # With qemu-arm registered the probe runs emulated (42); the group check
    # itself refuses when qemu-arm answers, so ask the worker's own log.
    log = ssh(key, port, "sudo journalctl -b --no-pager -u 'obs-farm-worker@aarch64-1'")
    assert "this CPU has no AArch32" in log, log[-2000:]
    health = json.loads(ssh(key, port, "cat /run/obs-farm/worker-health.json"))
    assert health["healthy"] is True, health
    print(f"{label}: probe exit {probe.returncode}, qemu-arm F, nativeonly, healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-dir", type=Path, default=Path("/var/cache/obs-farm-tests/arm64"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=6144)
    args = parser.parse_args()
    timings: dict[str, float] = {}
    if not (args.image_dir / "disk.img").exists():
        t0 = time.monotonic()
        subprocess.run(
            [str(REPO / "bench/arm64/build-image.sh"), str(args.image_dir)], check=True, cwd=REPO
        )
        timings["arm64 image build"] = time.monotonic() - t0
    s = settings()
    pool = graviton_pool(s)
    assert pool is not None
    want = {wid: g for g in pool.groups for wid in g.worker_ids(HOSTNAME)}
    key_dir = Path(tempfile.mkdtemp(prefix="obs-farm-arm64-key-"))
    key = key_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = vm.free_port()
    user_data = render_worker_user_data(pool, "10.0.2.2", key.with_suffix(".pub").read_text())
    meta = {"local-hostname": HOSTNAME, "public-keys": [key.with_suffix(".pub").read_text()]}
    with scratch_dir("obs-farm-arm64-") as work, farm_backend(s, work) as backend:
        run = vm.VmRun(work / "vm", args.image_dir / "disk.img", 4 * 3600)
        run.workdir.mkdir()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(args.image_dir / "disk.img"),
             "-F", "raw", str(run.overlay)], check=True,
        )  # fmt: skip
        vm._make_seed(run.seed, run.workdir, user_data, vm.with_instance_id(meta), None)
        try:
            t0 = time.monotonic()
            run.start(
                qemu_aarch64(args.image_dir, run, forwards(pool, port), args.cpus, args.memory_mb)
            )
            report = run.wait_for_cloud_init(3 * 3600)
            timings["first boot: cloud-init done"] = time.monotonic() - t0
            assert (report.status, report.errors) == ("done", []), run.console_log()[-4000:]
            check_boot("first boot", backend, pool, key, port, run, want, t0, timings)
            subprocess.run(ssh_command(key, port, "sudo systemctl reboot"), capture_output=True)
            run.restart(600)
            t1 = time.monotonic()
            check_boot("after reboot", backend, pool, key, port, run, want, t1, timings)
            subprocess.run(ssh_command(key, port, "sudo systemctl poweroff"), capture_output=True)
            run.wait_for_poweroff(600)
        finally:
            run.stop()
    for what, seconds in timings.items():
        print(f"{what:50s} {seconds:6.0f} s")


if __name__ == "__main__":
    main()
