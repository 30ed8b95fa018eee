"""The OBS server VM of the integration tier: its settings, network and access.

The VM boots the server user-data exactly as the program renders it. Instead
of changing addresses in it, QEMU's user network is laid out like the farm's
Azure network: the guest gets the server's private address by DHCP, and the
host appears to the guest at a worker-subnet address, so the BSConfig
`$ipaccess` rules and farm.pm's worker ranges apply to the host's workers as
they do on Azure. Going the other way, the workers on the host must reach the
server address that the backend puts into every job (`$reposerver`,
`$srcserver`): that address is added to the host's loopback for the test,
and a small TCP relay on it forwards the two backend ports to QEMU's
loopback-only forwards. The repserver's forward itself sits on 127.0.0.1:5252:
bs_worker fetches worker and build code updates from the address the
dispatcher's connection came from, and behind QEMU's NAT that is the host's
127.0.0.1 (on Azure it is the server's private address).

Administration (projects, packages, the Debian base repository) goes through
an SSH tunnel, so the backend sees it coming from the server itself, as it
does for an operator on the VM. Nothing here needs the farm's scripts to
behave differently than on a real cloud.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import shlex
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from components.topology import server_private_ip
from config import FarmSettings, load_settings
from tests.integration import debian_base, vm
from tests.integration import obs_backend as ob
from tools.offline import read_stack_config

#: What the server image has pre-installed: the server user-data's own
#: packages and
#: obs-server's dependencies and recommends, but NOT obs-server itself: the
#: setup script installs it after mounting the data disk, and that ordering
#: is part of what the test checks.
SERVER_IMAGE_PACKAGES: tuple[str, ...] = (
    "curl",
    "adduser",
    "diffutils",
    "git",
    "libbssolv-perl",
    "libcompress-raw-zlib-perl",
    "libfile-sync-perl",
    "libjson-xs-perl",
    "libnet-ssleay-perl",
    "libsocket-msghdr-perl",
    "libxml-parser-perl",
    "libxml-simple-perl",
    "obs-build",
    "obs-productconverter",
    "patch",
    "reprepro",
    "dpkg-dev",
    "gnupg2",
    "lvm2",
)

SRCSERVER_PORT = 5352
REPSERVER_PORT = 5252
DATA_DEVICE_IN_GUEST = "vdc"  # root vda, seed vdb, then extra_drives

#: NoCloud vendor-data: the name Azure's udev rules (in its images) give the
#: data disk at LUN 0. A vendor script runs before the user's runcmd; the rule
#: file stays for later boots, as Azure's does.
AZURE_DISK_NAME_VENDOR_SCRIPT = f"""#!/bin/sh
# obs-farm test VM: what Azure's platform udev rules provide.
set -e
cat > /etc/udev/rules.d/66-obs-farm-test-azure-lun.rules <<'EOF'
KERNEL=="{DATA_DEVICE_IN_GUEST}", SUBSYSTEM=="block", SYMLINK+="disk/azure/scsi1/lun0"
EOF
udevadm control --reload
udevadm trigger --action=add --sysname-match={DATA_DEVICE_IN_GUEST}
udevadm settle
ls -l /dev/disk/azure/scsi1/lun0
"""


def server_config() -> dict[str, str]:
    """The dev stack's config with `server.flavor: backend`: the Debian server
    this machine can boot (the appliance's openSUSE repositories are not
    reachable here)."""
    config = read_stack_config("dev")
    server = json.loads(config.get("obs-farm:server", "{}"))
    config["obs-farm:server"] = json.dumps({**server, "flavor": "backend"})
    return config


def server_settings() -> FarmSettings:
    """The settings the server VM test renders everything from."""
    return load_settings(server_config())


def host_address_in_guest(settings: FarmSettings) -> str:
    """Where the guest sees the host: the first usable Azure address of the
    worker subnet (Azure reserves the first four), so the host is a worker."""
    subnet = ipaddress.IPv4Network(settings.network.azure_worker_subnet)
    return str(subnet.network_address + 4)


def user_net(settings: FarmSettings) -> str:
    """QEMU user-network options: the farm's address space, the server's
    address for the guest, the host at a worker address."""
    return (
        f"net={settings.network.address_space},host={host_address_in_guest(settings)},"
        f"dhcpstart={server_private_ip(settings)}"
    )


# --------------------------------------------------------------------------- ssh


class Ssh:
    """ssh to the VM through its forwarded port, as the image's default user."""

    def __init__(self, key: Path, port: int, user: str = "debian") -> None:
        self.key = key
        self.port = port
        self.user = user

    def options(self) -> list[str]:
        return [
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=15",
        ]  # fmt: skip

    def command(self, remote: str) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-p", str(self.port), *self.options(),
            f"{self.user}@127.0.0.1", remote,
        ]  # fmt: skip

    def run(
        self, remote: str, timeout: float = 300, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.command(remote),
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"ssh {remote!r} failed ({res.returncode}): {res.stderr.strip()} {res.stdout[-2000:]}"
            )
        return res

    def fire(self, remote: str) -> None:
        """Run a command that may cut the connection (reboot, poweroff)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run(remote, timeout=60, check=False)

    def out(self, remote: str, timeout: float = 300) -> str:
        return self.run(remote, timeout).stdout

    def wait(self, timeout: float) -> float:
        """Wait until sshd answers; return the seconds waited."""
        t0 = time.monotonic()
        while True:
            if self.run("true", timeout=60, check=False).returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"ssh to the VM did not answer within {timeout}s")
            time.sleep(5)

    @contextlib.contextmanager
    def tunnel(self, forwards: Sequence[tuple[int, int]]) -> Iterator[None]:
        """Local forwards 127.0.0.1:local -> the guest's 127.0.0.1:remote."""
        args = [
            a for local, remote in forwards for a in ("-L", f"127.0.0.1:{local}:127.0.0.1:{remote}")
        ]
        proc = subprocess.Popen(
            [
                "ssh",
                "-N",
                "-i",
                str(self.key),
                "-p",
                str(self.port),
                *self.options(),
                "-o",
                "ExitOnForwardFailure=yes",
                *args,
                f"{self.user}@127.0.0.1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not all(ob.port_open(local) for local, _ in forwards):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = (
                        proc.stderr.read().decode()
                        if proc.stderr and proc.poll() is not None
                        else ""
                    )
                    raise AssertionError(f"ssh tunnel {forwards} did not come up: {err}")
                time.sleep(0.5)
            yield
        finally:
            ob.kill_tree(proc, grace=5)


# --------------------------------------------------------------------------- relay


@contextlib.contextmanager
def loopback_address(address: str) -> Iterator[None]:
    """`address`/32 on the host's lo for the duration (removed after).
    `replace`, not `add`: a run killed part-way leaves the address behind,
    and the next run must not fail on it."""
    subprocess.run(["ip", "addr", "replace", f"{address}/32", "dev", "lo"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


class Relay:
    """TCP relay: listen on (address, port), connect to 127.0.0.1:target."""

    def __init__(self, address: str, port: int, target: int) -> None:
        self.target = target
        self.sock = socket.create_server((address, port), reuse_port=False)
        self.sock.settimeout(0.5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pair, args=(client,), daemon=True).start()

    def _pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def server_address_on_host(address: str, ports: dict[int, int]) -> Iterator[None]:
    """The server's private address on the host, its backend ports relayed
    to the VM's forwards ({guest port: host forward port})."""
    with loopback_address(address):
        relays = [Relay(address, port, target) for port, target in ports.items()]
        try:
            yield
        finally:
            for relay in relays:
                relay.close()


# --------------------------------------------------------------------------- backend


class VmBackend(ob.ObsBackend):
    """The VM's own backend, driven through an SSH tunnel (from the server's
    loopback, so with its 'rw' access); the daemons belong to the VM."""

    def __init__(self, ssh: Ssh, srcport: int, repport: int, workdir: Path, host_ip: str) -> None:
        super().__init__("", workdir)
        self.ssh = ssh
        self.host_ip = host_ip
        self.config = ob._Config(
            bsdir=Path("/srv/obs"),
            srcserver=f"http://127.0.0.1:{srcport}",
            reposerver=f"http://127.0.0.1:{repport}",
            bsuser="obsrun",
            bsgroup="obsrun",
            extra_ports=(),
        )

    def start(self) -> None:  # the VM's systemd runs the daemons
        pass

    def stop(self) -> None:
        pass

    def _fill_full_tree(
        self, project: str, repo: str, arch: str, base: debian_base.BaseSet
    ) -> None:
        """The cached .debs, pulled by the VM from a one-shot HTTP server on the host."""
        tar_path = self.workdir / f"{arch}.tar"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path, "w") as tar:
            for deb in base.deb_paths():
                tar.add(deb, arcname=deb.name)
        full = f"/srv/obs/build/{project}/{repo}/{arch}/:full"
        with _serve_dir(self.workdir) as port:
            # As the backend's user, so every directory it makes is its own.
            self.ssh.out(
                f"sudo -u obsrun mkdir -p {shlex.quote(full)} && "
                f"curl -fsS http://{self.host_ip}:{port}/{arch}.tar | "
                f"sudo -u obsrun tar -x -C {shlex.quote(full)}",
                timeout=600,
            )
        tar_path.unlink()
        self.ssh.out(
            f"sudo /usr/lib/obs/server/bs_admin --rescan-repository {shlex.quote(project)} "
            f"{shlex.quote(repo)} {shlex.quote(arch)}",
            timeout=300,
        )

    def _wait_full_scanned(self, project: str, repo: str, arch: str, timeout: float) -> None:
        d = shlex.quote(f"/srv/obs/build/{project}/{repo}/{arch}")
        ob.wait_until(
            lambda: (
                self.ssh.run(f"test -e {d}/:full.solv -o -e {d}/:bininfo", check=False).returncode
                == 0
            ),
            timeout,
            f"the VM's scheduler {arch} to scan {project}/{repo}",
            3.0,
            lambda: self.ssh.out("sudo tail -n 5 /srv/obs/log/scheduler_*.log", 60),
        )


@contextlib.contextmanager
def _serve_dir(directory: Path) -> Iterator[int]:
    """Plain HTTP on the host's 127.0.0.1 (the guest reaches it through QEMU)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def image() -> Path:
    """The cached server image (built once per recipe)."""
    return vm.build_image(extra_packages=SERVER_IMAGE_PACKAGES)
