"""Boot a throw-away Debian bookworm VM with real cloud-init, for integration tests.

obs-farm's product is cloud-init user-data.  The only honest test of it is to
hand it to the real cloud-init of a real Debian system and look at what that
system did, so this module:

* builds (once, cached) a raw ext4 disk image with debootstrap that looks to
  cloud-init like a cloud image: cloud-init, ifupdown + DHCP, openssh, sudo,
  the tools its modules call, the NoCloud datasource, the host's own apt
  sources (the archive address is read from the host, never written here);
* boots it under ``qemu-system-x86_64 -accel tcg -cpu max`` (the /dev/kvm of
  this machine cannot run a stock kernel) with a NoCloud seed built by
  ``cloud-localds`` and a fresh instance-id, on a qcow2 overlay so the cached
  base image is never written;
* reports cloud-init's outcome twice: while the VM runs, a unit baked into the
  image prints ``cloud-init status --wait --long`` and result.json to the
  serial console; after power-off, files are read straight from the overlay
  with ``debugfs`` (no mounts).

Every wait is bounded and every timeout error carries the tail of the serial
console, because "timed out" alone says nothing about a VM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Outside the clone, so a fresh clone (CI) reuses what an earlier run built;
# entries are keyed by a hash of their recipe and rebuilt when absent.
TEST_CACHE = Path(os.environ.get("OBS_FARM_TEST_CACHE", "/var/cache/obs-farm-tests"))
DEFAULT_CACHE_DIR = TEST_CACHE / "vm"
HOST_DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_SOURCES_LIST = Path("/etc/apt/sources.list")

SUITE = "bookworm"
ARCH = "amd64"
IMAGE_SIZE = "6G"
#: Upper bound for one image build (debootstrap alone takes 2-3 minutes here).
BUILD_TIMEOUT_S = 45 * 60
#: Kernel command line: root is the whole virtio disk (no partition table);
#: panic=-1 turns a kernel panic into a reboot, which -no-reboot turns into a
#: qemu exit, so a broken boot ends quickly instead of hanging until timeout.
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1"
#: Added unless a boot asks for a verbose console.  Every character on the
#: emulated UART costs a VM exit: measured here, the kernel and systemd
#: messages made boot-to-cloud-init-done 80-86 s instead of 46-53 s.
#: cloud-init's own output and the report still reach the console.
QUIET_APPEND = "quiet"

#: What the image contains.  The first group is the LAB-NOTES recipe that is
#: known to boot; python3-cffi-backend must be named because debootstrap does
#: not resolve virtual packages.  The second group is what a Debian cloud image
#: also ships and cloud-init modules call: curl/wget for runcmd and apt keys,
#: gnupg for apt `sources:` keys, fdisk (cc_disk_setup), cloud-guest-utils
#: (growpart), tzdata (cc_timezone), apt-utils (debconf without warnings),
#: procps/less/iputils-ping for debugging.
BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "ca-certificates",
    "sudo",
    "netbase",
    "kmod",
    "e2fsprogs",
    "openssh-server",
    "python3-cffi-backend",
    "curl",
    "wget",
    "gnupg",
    "fdisk",
    "cloud-guest-utils",
    "tzdata",
    "apt-utils",
    "procps",
    "less",
    "iputils-ping",
)

#: Console markers printed by the reporter unit baked into the image.
STATUS_MARKER = "OBSFARM-CLOUDINIT-STATUS"
RESULT_MARKER = "OBSFARM-CLOUDINIT-RESULT"

#: The whole image recipe after package selection.  It runs as root inside a
#: private mount namespace (unshare -m), so anything mounted under $ROOT (by
#: debootstrap or by us) disappears with the process even if it is killed.
#: Inputs come from the environment: SUITE ARCH MIRROR PACKAGES (comma list)
#: EXTRA_PACKAGES (space list, may be empty) ROOT OUT IMAGE_SIZE.
#: Its text is part of the cache key: edit it and the image is rebuilt.
BUILD_SCRIPT = r"""
set -euo pipefail

debootstrap --variant=minbase --arch="$ARCH" --components=main \
    --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR"

# apt: the host's own sources and settings (same archive and snapshot as the
# host, and no archive address written by this repository).
rm -f "$ROOT/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$f" ]; then cp "$f" "$ROOT$f"; fi
done
cp -a /etc/apt/apt.conf.d/. "$ROOT/etc/apt/apt.conf.d/"

if [ -n "$EXTRA_PACKAGES" ]; then
    # Pre-installed packages: no daemons started in the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    mount -t proc proc "$ROOT/proc"
    chroot "$ROOT" apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -q $EXTRA_PACKAGES
    umount "$ROOT/proc"
    rm -f "$ROOT/usr/sbin/policy-rc.d"
fi
chroot "$ROOT" apt-get clean
find "$ROOT/var/lib/apt/lists" -type f -delete

# Identity: nothing a booted instance should inherit.
echo localhost > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
: > "$ROOT/etc/resolv.conf"
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*

# cc_locale fails without a locale setting; C.UTF-8 needs no locales package.
echo 'LANG=C.UTF-8' > "$ROOT/etc/default/locale"
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' > "$ROOT/etc/fstab"
cat > "$ROOT/etc/network/interfaces" <<'EOF'
# cloud-init writes the eth0 stanza to interfaces.d/50-cloud-init
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
EOF

cat > "$ROOT/etc/cloud/cloud.cfg.d/90_obsfarm_test_vm.cfg" <<'EOF'
# obs-farm test VM: the harness always attaches a NoCloud seed (cidata).
datasource_list: [ NoCloud, None ]
# Keep the apt sources baked into the image, as Debian cloud images do.
apt:
  preserve_sources_list: true
EOF

cat > "$ROOT/usr/local/sbin/obsfarm-cloudinit-report" <<'EOF'
#!/bin/sh
# Print cloud-init's final outcome on the console, so a test can follow a
# running VM; the same text goes to /var/log/obsfarm-cloudinit-report.log.
out=$(cloud-init status --wait --long 2>&1)
rc=$?
status=$(printf '%s\n' "$out" | sed -n 's/^status: *//p' | head -n 1)
result=$(python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
    /var/lib/cloud/data/result.json 2>/dev/null || echo null)
report=$(
    printf '%s\n' "$out" | grep -v '^\.*$' | sed 's/^/OBSFARM-CLOUDINIT-LONG: /'
    printf 'OBSFARM-CLOUDINIT-RESULT: %s\n' "$result"
    printf 'OBSFARM-CLOUDINIT-STATUS: %s rc=%s\n' "${status:-unknown}" "$rc"
)
printf '%s\n' "$report" > /dev/console
printf '%s\n' "$report" > /var/log/obsfarm-cloudinit-report.log
EOF
chmod 0755 "$ROOT/usr/local/sbin/obsfarm-cloudinit-report"

# No default dependencies: started early, and not stopped when power_state
# starts the shutdown, so the report is not cut off by it.
cat > "$ROOT/etc/systemd/system/obsfarm-cloudinit-report.service" <<'EOF'
[Unit]
Description=Report cloud-init's final status on the console (obs-farm test VM)
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/obsfarm-cloudinit-report

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf ../obsfarm-cloudinit-report.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/obsfarm-cloudinit-report.service"

# qemu boots the kernel and initrd copied out below, never the guest's /boot,
# so a package that triggers update-initramfs (lvm2, pulled in by obs-worker)
# would spend ~10 minutes of emulated CPU on an unused file.  Kernel package
# installs (update-initramfs -c) are not affected.
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$ROOT/etc/initramfs-tools/update-initramfs.conf"

# Kernel and initrd are booted directly by qemu (no boot loader).
kernel=$(find "$ROOT/boot" -name 'vmlinuz-*' | sort -V | tail -n 1)
kver=${kernel##*/vmlinuz-}
mkdir -p "$OUT"
cp "$ROOT/boot/vmlinuz-$kver" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$OUT/initrd.img"

if grep -q " $ROOT/" /proc/self/mounts; then
    echo "still mounted under $ROOT; refusing to copy it into the image" >&2
    exit 1
fi
mkfs.ext4 -q -F -L obsfarm-root -d "$ROOT" "$OUT/disk.img" "$IMAGE_SIZE"
"""

BUILD_TOOLS = ("debootstrap", "unshare", "mkfs.ext4", "chroot")
BOOT_TOOLS = ("qemu-system-x86_64", "qemu-img", "cloud-localds", "debugfs")


class VmError(RuntimeError):
    """The VM or its image did not do what the test needed."""


class VmTimeout(VmError):
    """A bounded wait ran out; the message carries the console tail."""


# --------------------------------------------------------------------------- image


def host_mirror(sources: Path = HOST_DEBIAN_SOURCES, legacy: Path = HOST_SOURCES_LIST) -> str:
    """The Debian archive URI the host's apt uses for SUITE.

    Read at build time so the address lives only in the host's configuration.
    """
    if sources.is_file():
        mirror = mirror_from_deb822(sources.read_text(), SUITE)
        if mirror:
            return mirror
    if legacy.is_file():
        mirror = mirror_from_one_line(legacy.read_text(), SUITE)
        if mirror:
            return mirror
    raise VmError(f"no Debian '{SUITE}' source in {sources} or {legacy}")


def mirror_from_deb822(text: str, suite: str) -> str | None:
    """First URI of the first enabled deb822 stanza that carries `suite`."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def mirror_from_one_line(text: str, suite: str) -> str | None:
    """URI of the first `deb URI suite ...` line of a sources.list."""
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that determines an image's content, hashed into its cache key."""

    packages: tuple[str, ...] = BASE_PACKAGES
    extra_packages: tuple[str, ...] = ()
    script: str = BUILD_SCRIPT
    suite: str = SUITE
    arch: str = ARCH
    size: str = IMAGE_SIZE

    def key(self) -> str:
        """Stable sha256 of the recipe (package order in `extra_packages` ignored)."""
        data = dataclasses.asdict(self)
        data["extra_packages"] = sorted(set(self.extra_packages))
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def dir_name(self) -> str:
        """Cache directory name: flavour plus a short key."""
        flavour = "extra" if self.extra_packages else "base"
        return f"{self.suite}-{self.arch}-{flavour}-{self.key()[:16]}"


def build_image(cache_dir: Path = DEFAULT_CACHE_DIR, extra_packages: Sequence[str] = ()) -> Path:
    """Return the path of a cached raw disk image, building it if needed.

    The image directory also holds `vmlinuz`, `initrd.img` and `recipe.json`
    (with `build_seconds`).  The build happens in a temporary directory that
    is renamed into place only when complete, so an interrupted build is never
    reused; a lock serialises concurrent builders of the same recipe.
    """
    recipe = Recipe(extra_packages=tuple(sorted(set(extra_packages))))
    if not _image_complete(cache_dir / recipe.dir_name()):
        _require_root("building the VM image (debootstrap, mkfs -d)")
        _require_tools(BUILD_TOOLS)

    def superseded(other: Path, info: dict[str, Any]) -> bool:
        # An older recipe for the same extra packages (about 1 GB each).
        return "extra_packages" in info and (
            sorted(info["extra_packages"]) == sorted(recipe.extra_packages)
        )

    return cached_image(
        cache_dir,
        recipe.dir_name(),
        lambda work, out: _build_into(work, out, recipe, cache_dir),
        superseded,
    )


def cached_image(
    cache_dir: Path,
    name: str,
    build: Callable[[Path, Path], None],
    superseded: Callable[[Path, dict[str, Any]], bool],
) -> Path:
    """`cache_dir/name/disk.img`, built first if absent: the one cache of
    every image the tier boots (base, server, baked worker).

    `build(work, out)` fills `out` (disk.img, vmlinuz, initrd.img and, last,
    recipe.json), using `work` for scratch; `out` is renamed into place only
    when complete, so an interrupted build is never reused, and a lock
    serialises concurrent builders of the same name. Once in place, every
    other image directory for which `superseded(dir, its recipe.json)` holds
    is deleted (a VM still booted from one keeps its open file).
    """
    final = cache_dir / name
    if _image_complete(final):
        return final / "disk.img"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{name}.lock"):
        if _image_complete(final):
            return final / "disk.img"
        for stale in cache_dir.glob(f".tmp-{name}-*"):
            _rmtree_unmounted(stale)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache_dir))
        try:
            build(tmp, tmp / "out")
            os.rename(tmp / "out", final)
        finally:
            _rmtree_unmounted(tmp)
        for info_path in cache_dir.glob("*/recipe.json"):
            with contextlib.suppress(OSError, ValueError):
                other = info_path.parent
                if other != final and superseded(other, json.loads(info_path.read_text())):
                    _rmtree_unmounted(other)
                    (cache_dir / f"{other.name}.build.log").unlink(missing_ok=True)
    return final / "disk.img"


def image_info(image: Path) -> dict[str, Any]:
    """The recipe.json written next to a built image (packages, build_seconds...)."""
    info: dict[str, Any] = json.loads((image.parent / "recipe.json").read_text())
    return info


def _image_complete(image_dir: Path) -> bool:
    """recipe.json is written last, so its presence means a finished build."""
    return all(
        (image_dir / n).is_file() for n in ("disk.img", "vmlinuz", "initrd.img", "recipe.json")
    )


def _build_into(tmp: Path, out: Path, recipe: Recipe, cache_dir: Path) -> None:
    """Run BUILD_SCRIPT with its root in `tmp`, its image into `out`."""
    log_path = cache_dir / f"{recipe.dir_name()}.build.log"
    env = {
        **os.environ,
        "SUITE": recipe.suite,
        "ARCH": recipe.arch,
        "MIRROR": host_mirror(),
        "PACKAGES": ",".join(recipe.packages),
        "EXTRA_PACKAGES": " ".join(recipe.extra_packages),
        "ROOT": str(tmp / "root"),
        "OUT": str(out),
        "IMAGE_SIZE": recipe.size,
        "LC_ALL": "C.UTF-8",
    }
    started = time.monotonic()
    cmd = ["unshare", "--mount", "--propagation", "private", "bash", "-c", recipe.script]
    _run_logged(cmd, env, log_path, BUILD_TIMEOUT_S, what="VM image build")
    info = {
        **dataclasses.asdict(recipe),
        "key": recipe.key(),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    del info["script"]
    (out / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")


def _run_logged(
    cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float, what: str
) -> None:
    """Run `cmd` in its own process group with output to `log_path`, bounded in time.

    On timeout the whole group is killed (debootstrap and dpkg run as children).
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise VmError(
                f"{what} exceeded {timeout_s}s; log {log_path}:\n"
                f"{_tail(log_path.read_text(errors='replace'))}"
            ) from None
    if rc != 0:
        raise VmError(
            f"{what} failed (exit {rc}); log {log_path}:\n"
            f"{_tail(log_path.read_text(errors='replace'))}"
        )


def _rmtree_unmounted(path: Path) -> None:
    """rm -rf, but never through a mount point (e.g. a leaked /proc in a rootfs)."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    if any(line.split()[1].startswith(prefix) for line in mounts if len(line.split()) > 1):
        raise VmError(f"refusing to delete {path}: something is mounted below it")
    shutil.rmtree(path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive flock, bounded so a stuck builder elsewhere fails us clearly."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    with lock_path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VmTimeout(f"another build holds {lock_path}") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise VmError(f"{why} needs root")


def _require_tools(tools: Sequence[str]) -> None:
    """Fail early with the apt package hint rather than deep inside a build."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise VmError(
            f"missing tools {missing}; apt-get install debootstrap "
            "qemu-system-x86 qemu-utils cloud-image-utils e2fsprogs"
        )


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class CloudInitResult:
    """cloud-init's own record of a boot (result.json and status.json)."""

    result: dict[str, Any]
    status: dict[str, Any]

    @property
    def errors(self) -> list[str]:
        """Errors of the whole run (result.json v1.errors)."""
        return list(self.result.get("v1", {}).get("errors", []))

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclasses.dataclass(frozen=True)
class ConsoleReport:
    """What the reporter unit printed on the console when cloud-init finished."""

    status: str  # done | error | degraded ... as `cloud-init status` says
    exit_code: int  # of `cloud-init status --wait --long`
    result: dict[str, Any] | None  # result.json, None if it could not be read
    seconds_since_start: float  # when the harness saw it

    @property
    def errors(self) -> list[str]:
        return list((self.result or {}).get("v1", {}).get("errors", []))


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Package name -> version for packages whose Status is `install ok installed`."""
    installed: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line and not line.startswith(" ")
        )
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            installed[fields["Package"]] = fields.get("Version", "")
    return installed


# --------------------------------------------------------------------------- boot


def qemu_command(
    *,
    image_dir: Path,
    overlay: Path,
    seed: Path,
    console: Path,
    hostfwd: Sequence[tuple[int, int]],
    memory_mb: int,
    cpus: int,
    verbose_console: bool = False,
    extra_drives: Sequence[Path] = (),
    user_net: str = "",
) -> list[str]:
    """The qemu argv: TCG, direct kernel boot, serial to a file, loopback-only forwards.

    -nodefaults drops the floppy drive (NoCloud probes it: I/O errors) and the
    other default devices; the ones the guest needs are listed explicitly.
    """
    drives: list[str] = []
    for drive in extra_drives:
        fmt = "qcow2" if drive.suffix == ".qcow2" else "raw"
        drives += ["-drive", f"file={drive},if=virtio,format={fmt}"]
    nic = (
        "user,model=virtio-net-pci"
        + (f",{user_net}" if user_net else "")
        + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in hostfwd)
    )
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-no-reboot",
        "-kernel",
        str(image_dir / "vmlinuz"),
        "-initrd",
        str(image_dir / "initrd.img"),
        "-append",
        KERNEL_APPEND if verbose_console else f"{KERNEL_APPEND} {QUIET_APPEND}",
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-drive",
        f"file={seed},if=virtio,format=raw,readonly=on",
        *drives,
        "-device",
        "virtio-rng-pci",
        "-nic",
        nic,
    ]


class VmRun:
    """One running (then powered-off) VM; made by `boot()`, cleaned up by it."""

    def __init__(self, workdir: Path, image: Path, timeout_s: float) -> None:
        self.workdir = workdir
        self.image = image
        self.timeout_s = timeout_s
        self.overlay = workdir / "overlay.qcow2"
        self.seed = workdir / "seed.iso"
        self.console_path = workdir / "console.log"
        self.qemu_log = workdir / "qemu.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.powered_off_after: float | None = None
        self._watchdog: threading.Timer | None = None
        self._watchdog_fired = False
        self._raw: Path | None = None
        self.cmd: list[str] = []
        self.boots = 0

    # -- lifecycle (used by boot())

    def start(self, cmd: list[str]) -> None:
        """Start qemu and a watchdog that kills it after timeout_s."""
        self.cmd = cmd
        self.boots += 1
        self.console_path.touch()
        with self.qemu_log.open("wb") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        self._watchdog = threading.Timer(self.timeout_s, self._on_watchdog)
        self._watchdog.daemon = True
        self._watchdog.start()

    def stop(self) -> None:
        """Kill qemu by PID (if still running) and wait for it: no process is left."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.process is not None and self.process.poll() is None:
            _kill_group(self.process)

    def restart(self, timeout: float = 300) -> None:
        """Boot the same machine again once the guest has rebooted or powered off.

        qemu runs with -no-reboot, so a guest `reboot` ends the process; this
        starts it again on the same overlay and seed, so cloud-init sees the
        same instance-id (a reboot, not a first boot). The previous console is
        kept as console.<boot>.log and console_log() starts empty.
        """
        if not self.cmd:
            raise VmError("restart() before the VM was ever started")
        self.wait_for_poweroff(timeout)
        self.powered_off_after = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._raw = None
        shutil.copyfile(self.console_path, self.workdir / f"console.{self.boots}.log")
        self.console_path.write_bytes(b"")
        self.start(self.cmd)

    def _on_watchdog(self) -> None:
        self._watchdog_fired = True
        if self.process is not None and self.process.poll() is None:
            _kill_group(self.process)

    # -- while running

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def seconds_since_start(self) -> float:
        return time.monotonic() - self.started_at

    def console_log(self) -> str:
        """Everything the guest wrote to its serial console so far."""
        return self.console_path.read_text(errors="replace")

    def wait_for_console(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the console matches `pattern` (re.MULTILINE); raise with context."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.console_log())
            if match:
                return match
            if not self.running():
                # qemu may have written the last lines just before exiting
                match = regex.search(self.console_log())
                if match:
                    return match
                raise VmError(
                    f"VM stopped ({self._exit_reason()}) before the console "
                    f"matched {pattern!r}" + self._context()
                )
            if time.monotonic() > deadline:
                raise VmTimeout(
                    f"console did not match {pattern!r} within {timeout}s" + self._context()
                )
            time.sleep(0.5)

    def wait_for_cloud_init(self, timeout: float) -> ConsoleReport:
        """Wait for the reporter unit's console lines: cloud-init's final status."""
        match = self.wait_for_console(rf"^{STATUS_MARKER}: (\S+) rc=(\d+)", timeout)
        seen = self.seconds_since_start()
        result_match = re.search(rf"^{RESULT_MARKER}: (.*)$", self.console_log(), re.MULTILINE)
        result = None
        if result_match:
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(result_match.group(1).strip())
        return ConsoleReport(
            status=match.group(1),
            exit_code=int(match.group(2)),
            result=result,
            seconds_since_start=round(seen, 1),
        )

    def wait_for_poweroff(self, timeout: float) -> float:
        """Wait for the guest to power off (qemu exits 0); return seconds since start."""
        assert self.process is not None
        try:
            rc = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VmTimeout(f"VM did not power off within {timeout}s" + self._context()) from None
        if rc != 0 or self._watchdog_fired:
            raise VmError(f"VM did not power off cleanly ({self._exit_reason()})" + self._context())
        if self.powered_off_after is None:
            self.powered_off_after = round(self.seconds_since_start(), 1)
        return self.powered_off_after

    # -- after power-off: the guest's disk

    def read_file(self, path: str) -> bytes:
        """Content of a file in the guest's root fs, read with debugfs (no mount)."""
        out = self._debugfs(f'cat "{path}"', path)
        return out

    def read_text(self, path: str) -> str:
        return self.read_file(path).decode(errors="replace")

    def exists(self, path: str) -> bool:
        """Whether `path` exists in the guest's root fs."""
        try:
            self._debugfs(f'stat "{path}"', path)
        except FileNotFoundError:
            return False
        return True

    def cloud_init_result(self) -> CloudInitResult:
        """cloud-init's result.json and status.json from the powered-off disk."""
        return CloudInitResult(
            result=json.loads(self.read_file("/var/lib/cloud/data/result.json")),
            status=json.loads(self.read_file("/var/lib/cloud/data/status.json")),
        )

    def installed_packages(self) -> dict[str, str]:
        """Installed packages and versions, from the guest's dpkg status file."""
        return parse_dpkg_status(self.read_text("/var/lib/dpkg/status"))

    def _debugfs(self, request: str, path: str) -> bytes:
        if '"' in path or "\n" in path:
            raise ValueError(f"unsupported guest path {path!r}")
        proc = subprocess.run(
            ["debugfs", "-c", "-R", request, str(self._raw_disk())],
            capture_output=True,
            timeout=120,
            check=False,
        )
        err = proc.stderr.decode(errors="replace")
        if "not found" in err.lower():
            raise FileNotFoundError(f"{path} (in the guest)")
        if proc.returncode != 0 or "error" in err.lower():
            raise VmError(f"debugfs {request!r} failed: {err.strip()}")
        return proc.stdout

    def _raw_disk(self) -> Path:
        """The overlay flattened to raw (debugfs cannot read qcow2), once, after power-off.

        A VM that was killed leaves a journal to replay: e2fsck replays it on
        our private copy, so what we read is what the guest last committed.
        """
        if self.running():
            raise VmError("the guest's disk can only be read after it powered off")
        if self._raw is None:
            raw = self.workdir / "disk.raw"
            _check_run(["qemu-img", "convert", "-O", "raw", str(self.overlay), str(raw)], 600)
            header = _check_run(["dumpe2fs", "-h", str(raw)], 60)
            if "needs_recovery" in header:
                subprocess.run(
                    ["e2fsck", "-p", "-E", "journal_only", str(raw)],
                    capture_output=True,
                    timeout=300,
                    check=False,
                )
            self._raw = raw
        return self._raw

    # -- diagnostics

    def _exit_reason(self) -> str:
        if self._watchdog_fired:
            return f"killed by the harness after timeout_s={self.timeout_s}"
        rc = self.process.poll() if self.process else None
        return "still running" if rc is None else f"qemu exit code {rc}"

    def _context(self, lines: int = 40) -> str:
        qemu = self.qemu_log.read_text(errors="replace") if self.qemu_log.exists() else ""
        text = f"\n--- last {lines} console lines ({self.console_path}) ---\n"
        text += _tail(self.console_log(), lines)
        if qemu.strip():
            text += f"\n--- qemu output ---\n{_tail(qemu, 10)}"
        return text


@contextlib.contextmanager
def boot(
    user_data: str,
    meta_data: dict[str, Any] | None = None,
    hostfwd: Sequence[tuple[int, int]] = (),
    timeout_s: int = 900,
    memory_mb: int = 4096,
    cpus: int = 2,
    *,
    image: Path | None = None,
    keep_console: Path | None = None,
    verbose_console: bool = False,
    vendor_data: str | None = None,
    extra_drives: Sequence[Path] = (),
    user_net: str = "",
) -> Iterator[VmRun]:
    """Boot `image` (default: the base image) with this user-data; yield the VmRun.

    Each boot gets a new qcow2 overlay over the cached raw image and a new
    instance-id (unless meta_data sets one), so cloud-init treats it as a
    first boot and the cache is never modified.  `hostfwd` pairs are
    (host_port, guest_port), bound on 127.0.0.1 only.  qemu is killed after
    `timeout_s` whatever happens, and on exit; the temp dir is removed, the
    console log first copied to `keep_console` if given.  `verbose_console`
    keeps kernel and systemd messages on the console (slower boot).
    `vendor_data` goes into the seed as NoCloud vendor-data (what a cloud
    provider adds to the user's data). `extra_drives` (raw, or qcow2 by
    suffix) follow the seed as /dev/vdc, /dev/vdd, ...; they are the caller's
    and survive the boot (a data disk kept across VMs). `user_net` adds
    options to QEMU's user network (e.g. `net=10.40.0.0/16,host=...,
    dhcpstart=...`: the guest's address and the host's address as the guest
    sees it).
    """
    _require_tools(BOOT_TOOLS)
    image = image or build_image()
    workdir = Path(tempfile.mkdtemp(prefix="obsfarm-vm-"))
    run = VmRun(workdir, image, timeout_s)
    try:
        _check_run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(image),
                "-F",
                "raw",
                str(run.overlay),
            ],
            60,
        )
        _make_seed(run.seed, workdir, user_data, with_instance_id(meta_data), vendor_data)
        run.start(
            qemu_command(
                image_dir=image.parent,
                overlay=run.overlay,
                seed=run.seed,
                console=run.console_path,
                hostfwd=hostfwd,
                memory_mb=memory_mb,
                cpus=cpus,
                verbose_console=verbose_console,
                extra_drives=extra_drives,
                user_net=user_net,
            )
        )
        yield run
    finally:
        run.stop()
        if keep_console is not None and run.console_path.exists():
            keep_console.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.console_path, keep_console)
        shutil.rmtree(workdir, ignore_errors=True)


def with_instance_id(meta_data: dict[str, Any] | None) -> dict[str, Any]:
    """meta-data with a fresh instance-id and a hostname unless given."""
    meta = dict(meta_data or {})
    meta.setdefault("instance-id", f"iid-obsfarm-{uuid.uuid4().hex[:12]}")
    meta.setdefault("local-hostname", "obsfarm-test")
    return meta


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for hostfwd or a host-side server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _make_seed(
    seed: Path, workdir: Path, user_data: str, meta: dict[str, Any], vendor_data: str | None
) -> None:
    """NoCloud seed ISO (volume label cidata), as a cloud would offer it."""
    (workdir / "user-data").write_text(user_data)
    (workdir / "meta-data").write_text(json.dumps(meta, indent=2) + "\n")
    options: list[str] = []
    if vendor_data is not None:
        (workdir / "vendor-data").write_text(vendor_data)
        options = ["--vendor-data", str(workdir / "vendor-data")]
    cmd = ["cloud-localds", *options, str(seed), str(workdir / "user-data")]
    _check_run([*cmd, str(workdir / "meta-data")], 60)


# --------------------------------------------------------------------------- helpers


def _check_run(cmd: list[str], timeout_s: float) -> str:
    """Run a short tool; raise VmError with its output if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise VmTimeout(f"{shlex.join(cmd)} took more than {timeout_s}s") from None
    if proc.returncode != 0:
        raise VmError(
            f"{shlex.join(cmd)} failed ({proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL the process group led by `proc` (started with a new session)."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
