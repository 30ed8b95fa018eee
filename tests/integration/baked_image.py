"""Bake a worker image the way the image services do, cached by its content.

Azure VM Image Builder and EC2 Image Builder both boot a stock image, run the
customization on the running machine, deprovision it and capture its disk.
Here: the VM harness's cached base image (stock Debian with cloud-init) boots
with a cloud-config that only writes and runs the provisioning script
(components/provision.py); once cloud-init reports done, the script runs a
second time (it must change nothing), then `--deprovision`, and the machine
powers off. Its disk, flattened to raw, is the baked image.

The image is cached in `$OBS_FARM_TEST_CACHE/vm/bookworm-amd64-baked-worker-<key>/`
(`disk.img`, `vmlinuz`, `initrd.img`, `recipe.json`). The key hashes the
image content hash (script and package list), the base image's key and
this procedure, so editing any of them bakes again; deleting the directory
does too. A bake of an older key is deleted once a new one is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from components.provision import (
    DEPROVISION_ARG,
    PROVISION_SCRIPT_INSTALL_PATH,
    image_content_hash,
    image_version,
    provision_script,
)
from tests.integration import vm

PREFIX = "bookworm-amd64-baked-worker-"
BAKE_TIMEOUT_S = 1800
CLOUD_INIT_TIMEOUT_S = 1500
#: What the captured disk must not carry (checked on the image itself).
MACHINE_SPECIFIC = (
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/home/debian/.ssh/authorized_keys",
    "/var/lib/cloud/instance",
    "/var/lib/cloud/seed",
    "/var/log/cloud-init.log",
)


def bake_user_data() -> str:
    """The image build's only instructions: write the script, run it."""
    doc = {
        "write_files": [
            {
                "path": PROVISION_SCRIPT_INSTALL_PATH,
                "content": provision_script(),
                "owner": "root:root",
                "permissions": "0755",
            }
        ],
        "runcmd": [[PROVISION_SCRIPT_INSTALL_PATH]],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, width=4096)


def bake_key(base_image: Path) -> str:
    recipe = {
        "image_content_hash": image_content_hash(),
        "base_image_key": vm.image_info(base_image)["key"],
        "procedure": inspect.getsource(_bake) + bake_user_data(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def baked_worker_image(base_image: Path, cache_dir: Path = vm.DEFAULT_CACHE_DIR) -> Path:
    """The baked image's disk.img for this script, package list and base image."""
    key = bake_key(base_image)

    def build(work: Path, out: Path) -> None:
        out.mkdir()
        info = _bake(base_image, out)
        info.update(key=key, base_image=str(base_image))
        (out / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")

    # A bake of an older key goes once the new one is in place.
    return vm.cached_image(
        cache_dir, f"{PREFIX}{key[:16]}", build, lambda other, _: other.name.startswith(PREFIX)
    )


def _bake(base_image: Path, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    keydir = Path(tempfile.mkdtemp(prefix="obsfarm-bake-ssh-"))
    try:
        key = keydir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        port = vm.free_port()
        meta = {"local-hostname": "obsw-bake", "public-keys": [key.with_suffix(".pub").read_text()]}
        with vm.boot(bake_user_data(), meta, [(port, 22)], BAKE_TIMEOUT_S, image=base_image) as run:
            report = run.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
            if (report.status, report.errors) != ("done", []):
                raise vm.VmError(
                    f"provisioning failed: {report.status} {report.errors}\n"
                    + run.console_log()[-4000:]
                )
            provisioned = run.seconds_since_start()
            # Idempotent: a second run installs nothing and changes nothing.
            again = _ssh(key, port, f"sudo {PROVISION_SCRIPT_INSTALL_PATH}")
            if " 0 newly installed" not in again.stdout or again.returncode != 0:
                raise vm.VmError(f"second provisioning run: {again.stdout}{again.stderr}")
            # Deprovision and power off in one session: it removes the login key.
            done = _ssh(
                key,
                port,
                f"sudo {PROVISION_SCRIPT_INSTALL_PATH} {DEPROVISION_ARG} && sudo systemctl poweroff",
            )
            if "deprovisioned" not in done.stdout:
                raise vm.VmError(f"deprovisioning: {done.returncode} {done.stdout}{done.stderr}")
            run.wait_for_poweroff(300)
            vm._check_run(
                ["qemu-img", "convert", "-O", "raw", str(run.overlay), str(out / "disk.img")], 900
            )
    finally:
        shutil.rmtree(keydir, ignore_errors=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(base_image.parent / name, out / name)
    _check_deprovisioned(out / "disk.img")
    return {
        "image_content_hash": image_content_hash(),
        "image_version": image_version(),
        "base_image_key": vm.image_info(base_image)["key"],
        "provisioned_seconds": round(provisioned, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def guest_file(disk: Path, path: str) -> bytes | None:
    """A file of a raw ext4 image (None if absent), read with debugfs."""
    proc = subprocess.run(
        ["debugfs", "-c", "-R", f'cat "{path}"', str(disk)], capture_output=True, timeout=120
    )
    if b"not found" in proc.stderr.lower() or b"file not found" in proc.stderr.lower():
        return None
    if proc.returncode != 0:
        raise vm.VmError(f"debugfs cat {path}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def guest_exists(disk: Path, path: str) -> bool:
    proc = subprocess.run(
        ["debugfs", "-c", "-R", f'stat "{path}"', str(disk)], capture_output=True, timeout=120
    )
    return b"not found" not in proc.stderr.lower()


def _check_deprovisioned(disk: Path) -> None:
    """The captured disk carries no identity of the machine it was baked on."""
    problems = [p for p in MACHINE_SPECIFIC if guest_exists(disk, p)]
    machine_id = guest_file(disk, "/etc/machine-id")
    if machine_id is None or machine_id.strip():
        problems.append(f"/etc/machine-id is {machine_id!r}, not empty")
    lists = subprocess.run(
        ["debugfs", "-c", "-R", "ls -l /var/lib/apt/lists", str(disk)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    if "_InRelease" in lists or "_Packages" in lists:
        problems.append("apt lists left in /var/lib/apt/lists")
    if not guest_exists(disk, "/usr/bin/qemu-aarch64-static"):
        problems.append("no qemu-aarch64-static: the packages are not in the image")
    if problems:
        raise vm.VmError(f"baked image {disk} is not clean: {problems}")


def _ssh(key: Path, port: int, command: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        "ssh", "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
        "debian@127.0.0.1", command,
    ]  # fmt: skip
    with contextlib.suppress(subprocess.TimeoutExpired):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    raise vm.VmTimeout(f"ssh {command!r} took more than 900 s")
