"""Pieces of the scaler's integration tests: the scaler's configuration from
a stack's topology, "machines" (a stand-in's VM or a moto instance become a
set of worker groups on this host, with their own hostname and ports), a
switchable proxy in front of the repserver, and the scaler process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from components.scaler import AwsTarget, AzureTarget, render_scaler_config
from components.topology import WorkerPool, worker_pools
from config import load_settings
from tests.integration import obs_backend as ob
from tests.integration.farm import write_worker_conf
from tests.integration.vm import free_port
from tools.offline import read_stack_config

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "cloud-init"
SCALER_DIR = REPO / "scaler"


def stack_pools(stack: str) -> list[WorkerPool]:
    return worker_pools(load_settings(read_stack_config(stack)))


def scaler_config(
    stack: str, repserver: str, bsdir: Path, targets: dict[str, dict[str, Any]], **top: Any
) -> dict[str, Any]:
    """scaler.json for a stack, rendered by the program's own renderer
    (components.scaler.render_scaler_config, what the install run command
    writes on the server). `targets` maps a pool's name to its cloud block;
    only the repserver and $bsdir of this test's backend, and `top`, differ."""
    settings = load_settings(read_stack_config(stack))
    azure = aws = None
    for block in targets.values():
        if "scaleSet" in block:
            azure = AzureTarget(block["subscriptionId"], block["resourceGroup"], block["scaleSet"])
        else:
            aws = AwsTarget(
                block["region"],
                block["autoScalingGroup"],
                block["lifecycleHook"],
                block["roleArn"],
                block["webIdentityAudience"],
            )
    doc: dict[str, Any] = json.loads(
        render_scaler_config(settings.scaler, worker_pools(settings), azure, aws)
    )
    assert {p["name"] for p in doc["pools"]} == set(targets), (doc["pools"], targets)
    return {**doc, "repserver": repserver, "bsdir": str(bsdir), **top}


class Machine:
    """One cloud machine's worker groups, run by obs-farm-worker.sh on this
    host with `hostname` answering the machine's name and the group ports
    moved by `offset` so several machines fit on one host."""

    def __init__(self, pool: WorkerPool, host: str, root: Path, reposerver: str, offset: int,
                 code_dir: Path):  # fmt: skip
        self.host = host
        self.pool = dataclasses.replace(pool, work_dir=str(root / "work"))
        self.root = root
        conf = root / "etc"
        write_worker_conf(self.pool, conf, reposerver, code_dir, offset)
        sbin = root / "sbin"
        sbin.mkdir()
        (sbin / "obs-farm-check-binfmt").symlink_to(SCRIPTS / "check-binfmt.sh")
        # The stand-in machines are Graviton2/3 (hybrid's c7g/m6g): AArch32 at
        # EL0. This host cannot answer that for real (its armv7 runs under
        # qemu-arm, which the real check rightly refuses), so the shim says yes.
        (sbin / "obs-farm-check-aarch32").write_text("#!/bin/sh\nexit 0\n")
        (sbin / "obs-farm-check-aarch32").chmod(0o755)
        (sbin / "hostname").write_text(f"#!/bin/sh\necho {host}\n")
        (sbin / "hostname").chmod(0o755)
        self.env = {**os.environ, "OBS_FARM_CONF_DIR": str(conf),
                    "PATH": f"{sbin}:{os.environ['PATH']}"}  # fmt: skip
        self.logs = root / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker_ids(self) -> set[str]:
        return {wid for g in self.pool.groups for wid in g.worker_ids(self.host)}

    def build_root(self, workerid: str) -> Path:
        """The build root of this machine's worker `<host>:<group>-<n>`, where
        obs-farm-worker.sh puts it (`<work_dir>/<group>/<n>/root`)."""
        host, instance = workerid.split(":", 1)
        assert host == self.host, (workerid, self.host)
        group, n = instance.rsplit("-", 1)
        return Path(self.pool.work_dir) / group / n / "root"

    def start(self) -> None:
        for g in self.pool.groups:
            for n in range(1, g.instances + 1):
                log = (self.logs / f"{g.arch}-{n}.log").open("wb")
                self.procs.append(
                    subprocess.Popen(
                        [str(SCRIPTS / "obs-farm-worker.sh"), "run", f"{g.arch}-{n}"],
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def vanish(self) -> None:
        """What deleting the VM does to its workers: gone, no goodbye."""
        for proc in self.procs:
            ob.kill_tree(proc, grace=5.0)
        ob.unmount_below(self.root)


class Fleet:
    """Machines of several pools, started and stopped as the clouds say."""

    def __init__(self, root: Path, reposerver: str):
        self.root = root
        self.reposerver = reposerver
        self.code_dir = root / "worker-code"
        self.machines: dict[str, Machine] = {}
        self.events: list[tuple[float, str, str]] = []  # (time, "start"/"stop", host)
        self.lock = threading.Lock()
        self.count = 0

    def start(self, pool: WorkerPool, host: str) -> Machine:
        with self.lock:
            self.count += 1
            # a directory per start: a machine may come back under its name
            m = Machine(pool, host, self.root / f"{host}-{self.count}", self.reposerver,
                        1000 * self.count,
                        self.code_dir)  # fmt: skip
            self.machines[host] = m
            self.events.append((time.time(), "start", host))
        m.start()
        return m

    def stop(self, host: str) -> None:
        with self.lock:
            m = self.machines.pop(host, None)
            self.events.append((time.time(), "stop", host))
        if m:
            m.vanish()

    def stop_all(self) -> None:
        for host in list(self.machines):
            self.stop(host)


class SwitchProxy:
    """A TCP proxy to the repserver that the test can switch off: while off,
    connections are refused (its listening socket is closed), as when the
    repserver is down."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.sock = sock
        self.thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self.thread.start()

    def off(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None
        if self.thread:
            self.thread.join(timeout=5)

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe_pair, args=(client,), daemon=True).start()

    def _pipe_pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)


class ScalerProcess:
    """`python -m obs_farm_scaler` as the systemd unit runs it, with the
    stand-ins' endpoints in its environment."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str]):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "scaler.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.health = workdir / "health.json"
        self.log_path = workdir / "scaler.log"
        self.env = {**os.environ, **env, "PYTHONPATH": str(SCALER_DIR), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ScalerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "obs_farm_scaler", "--config", str(self.config_path),
             "--health", str(self.health)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=SCALER_DIR,
        )  # fmt: skip
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            tail = "\n".join(self.log().splitlines()[-80:])
            print(f"--- scaler log ({self.log_path}), last lines ---\n{tail}\n---")
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health_data(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.health.read_text()))
        except (OSError, ValueError):
            return None

    def polls(self) -> int:
        return self.log().count("pool=")


class MotoWatcher:
    """Turns the moto group's instances into machines (and back), polling
    DescribeAutoScalingGroups like an instance booting would show up."""

    def __init__(self, client: Any, group: str, pool: WorkerPool, fleet: Fleet):
        self.client, self.group, self.pool, self.fleet = client, group, pool, fleet
        self.stop_event = threading.Event()
        self.capacity_changes: list[tuple[float, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MotoWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        known: set[str] = set()
        last = None
        while not self.stop_event.is_set():
            try:
                g = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])[
                    "AutoScalingGroups"
                ][0]
            except Exception:
                time.sleep(0.3)
                continue
            if g["DesiredCapacity"] != last:
                self.capacity_changes.append((time.time(), g["DesiredCapacity"]))
                last = g["DesiredCapacity"]
            live = {
                i["InstanceId"]
                for i in g["Instances"]
                if i["LifecycleState"] in ("Pending", "InService")
            }
            for host in sorted(live - known):
                self.fleet.start(self.pool, host)
            for host in sorted(known - live):
                self.fleet.stop(host)
            known = live
            time.sleep(0.3)
