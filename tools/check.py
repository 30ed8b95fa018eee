"""Post-deploy acceptance check of a farm: is what `pulumi up` made working?

    ./check STACK [--build [--arch ARCH]...] [--no-worker-health] [--outputs FILE]
                  [--host H] [--port P] [--user U] [-i KEY] [-o SSH_OPTION]...

Reads the stack outputs (`pulumi stack output --json --show-secrets`, or
`--outputs FILE` holding the same JSON), reaches the server over SSH with the
admin key and prints one line per check, PASS, FAIL or SKIP with the reason:

- every backend daemon's systemd unit active (and the API's in the
  `appliance` flavor), each scheduler also `running` in the repserver's view;
- every pool's workers registered with the ids, architectures, ports and
  host labels the `topology` output promises, each answering the server on
  its own port (asked from the server: /workerstatus, /worker/<hostarch>:<id>,
  <worker uri>/worker);
- each worker machine's own health file (/run/obs-farm/worker-health.json,
  read over SSH through the server as the README's "Reaching the workers"
  does): a group whose check failed at boot is named with the file's reason;
- the scaler healthy, if the farm has one;
- /srv/obs mounted from the data disk at LUN 0 (and, where the Azure
  metadata service answers, that disk is the stack's `dataDiskId`);
- with `--build`: tests/data/hello-obs built for every architecture the farm
  serves (or those named with `--arch`), each .deb's binary of the right ELF
  machine.

Exit status: 0 if nothing failed, 1 if a check failed, 2 for a usage error
(no such stack, no pulumi CLI, unreadable outputs) with a one-line message.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import io
import json
import lzma
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HELLO_OBS = ROOT / "tests" / "data" / "hello-obs"
DATA_DISK_DEVICE = "/dev/disk/azure/scsi1/lun0"
DATA_MOUNT = "/srv/obs"
REPSERVER = "http://127.0.0.1:5252"
SRCSERVER = "http://127.0.0.1:5352"
IMDS_STORAGE = (
    "http://169.254.169.254/metadata/instance/compute/storageProfile?api-version=2021-02-01"
)
WORKER_HEALTH = "/run/obs-farm/worker-health.json"
#: The login user of Debian's AWS images, which cloud-init gives the admin key
#: on the farm's EC2 workers; Azure workers log in as adminUsername.
AWS_WORKER_USER = "admin"
SCALER_UNIT = "obs-farm-scaler.service"
SCALER_HEALTH = "/run/obs-farm/scaler.json"
#: The scaler's health file is rewritten on every poll; older than this means stuck.
SCALER_STALE_S = 300
BACKEND_UNITS = ("obssrcserver", "obsrepserver", "obsdispatcher", "obspublisher", "obswarden")
#: What upstream's appliance runs for the API and web UI (OBS 2.10 on openSUSE;
#: not exercised here: no openSUSE VM boots in this project's tests).
APPLIANCE_UNITS = ("apache2", "mysql", "memcached", "obs-api-support.target")
#: e_machine of the binary each scheduler architecture must produce.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "armv7l": 40}
CHECK_PROJECT = "obs-farm-check"
CHECK_PACKAGE = "hello-obs"


class UsageError(Exception):
    """A user mistake: printed as one line, exit 2."""


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    status: str  # PASS | FAIL | SKIP
    reason: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.reason}"


def passed(name: str, reason: str) -> Result:
    return Result(name, "PASS", reason)


def failed(name: str, reason: str) -> Result:
    return Result(name, "FAIL", reason)


def skipped(name: str, reason: str) -> Result:
    return Result(name, "SKIP", reason)


# --------------------------------------------------------------------------- outputs


def read_outputs(stack: str, outputs_file: Path | None, pulumi: str = "pulumi") -> dict[str, Any]:
    """The stack's outputs, from the Pulumi CLI or a file with the same JSON."""
    if outputs_file is not None:
        try:
            data = json.loads(outputs_file.read_text())
        except OSError as err:
            raise UsageError(f"cannot read --outputs {outputs_file}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise UsageError(f"--outputs {outputs_file} is not JSON: {err}") from None
    else:
        if shutil.which(pulumi) is None:
            raise UsageError(
                "the pulumi CLI is not installed (https://www.pulumi.com/docs/install/); "
                "./check reads the stack outputs with it, or pass --outputs FILE"
            )
        cmd = [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            message = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
            raise UsageError(f"cannot read the outputs of stack {stack!r}: {message}")
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise UsageError(f"pulumi printed no JSON for stack {stack!r}") from None
    if not isinstance(data, dict):
        raise UsageError("the stack outputs are not a JSON object")
    for key in ("serverPublicIp", "topology"):
        if key not in data:
            raise UsageError(
                f"the stack outputs have no {key!r}: has `pulumi up` run for this stack?"
            )
    return data


# --------------------------------------------------------------------------- expectations


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """One architecture group of a pool, as the topology output promises it."""

    arch: str
    scheduler_arch: str
    execution: str
    instances: int
    ports: tuple[int, int]

    @property
    def hostlabels(self) -> set[str]:
        return {*(f"obs-farm-{k}" for k in self.execution.split("+")), f"obs-farm-{self.arch}"}

    def id_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^(?P<host>.+):{re.escape(self.arch)}-(?P<n>\d+)$")


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    name: str
    cloud: str
    min_vms: int
    max_vms: int
    groups: tuple[GroupSpec, ...]

    def owns_host(self, host: str) -> bool:
        """AWS workers' hostnames are EC2 instance ids (scaler/CONTRACT.md)."""
        is_ec2 = re.fullmatch(r"i-[0-9a-f]{8,17}", host) is not None
        return is_ec2 if self.cloud == "aws" else not is_ec2


def pool_specs(topology: Sequence[dict[str, Any]]) -> list[PoolSpec]:
    pools = []
    for pool in topology:
        groups = tuple(
            GroupSpec(
                arch=a["arch"],
                scheduler_arch=a["schedulerArch"],
                execution=a["execution"],
                instances=int(a["instancesPerVm"]),
                ports=(int(a["ports"][0]), int(a["ports"][1])),
            )
            for a in pool["architectures"]
        )
        pools.append(
            PoolSpec(pool["pool"], pool["cloud"], int(pool["minVms"]), int(pool["maxVms"]), groups)
        )
    return pools


def scheduler_archs(pools: Iterable[PoolSpec]) -> list[str]:
    return sorted({g.scheduler_arch for p in pools for g in p.groups})


# --------------------------------------------------------------------------- repserver data


@dataclasses.dataclass(frozen=True)
class Worker:
    state: str
    workerid: str
    hostarch: str
    uri: str


def parse_workerstatus(xml: str) -> tuple[list[Worker], dict[str, str]]:
    """Workers and daemon states ("scheduler:aarch64" -> "running") of /workerstatus."""
    root = ET.fromstring(xml)
    workers, daemons = [], {}
    for el in root:
        if el.tag in ("idle", "building", "down", "dead", "away"):
            a = el.attrib
            workers.append(
                Worker(el.tag, a.get("workerid", ""), a.get("hostarch", ""), a.get("uri", ""))
            )
        elif el.tag == "partition":
            for d in el.findall("daemon"):
                key = d.get("type", "") + (f":{d.get('arch')}" if d.get("arch") else "")
                daemons[key] = d.get("state", "")
    return workers, daemons


@dataclasses.dataclass(frozen=True)
class Registration:
    """A worker's own registration (/worker/<hostarch>:<id>) and whether it answers."""

    hostlabels: frozenset[str]
    port: int | None
    answers: bool


def parse_registration(xml: str, answers: bool) -> Registration:
    root = ET.fromstring(xml)
    labels = frozenset(el.text or "" for el in root.iter("hostlabel"))
    port = root.get("port")
    return Registration(labels, int(port) if port and port.isdigit() else None, answers)


# --------------------------------------------------------------------------- evaluation (pure)


def evaluate_units(units: Sequence[str], states: Sequence[str]) -> list[Result]:
    return [
        passed(f"daemon {u}", "active")
        if s == "active"
        else failed(f"daemon {u}", f"systemd says {s or 'nothing'}")
        for u, s in zip(units, states, strict=True)
    ]


def evaluate_schedulers(archs: Sequence[str], daemons: dict[str, str]) -> list[Result]:
    results = []
    for arch in archs:
        state = daemons.get(f"scheduler:{arch}")
        name = f"scheduler {arch} (repserver's view)"
        if state == "running":
            results.append(passed(name, "running"))
        else:
            results.append(failed(name, f"state {state or 'not listed'} in /workerstatus"))
    return results


def evaluate_pool(
    pool: PoolSpec, workers: Sequence[Worker], registrations: dict[str, Registration]
) -> list[Result]:
    """One result per group of a pool, plus one for the pool's machine count.

    A pool whose minVms is 0 may have no machine running at all; then there
    is nothing to check and the line says SKIP (not a failure).
    """
    live = [w for w in workers if w.state not in ("down", "dead")]
    hosts: set[str] = set()
    for g in pool.groups:
        for w in live:
            m = g.id_pattern().match(w.workerid)
            if m and pool.owns_host(m["host"]):
                hosts.add(m["host"])
    name = f"workers {pool.name}"
    if not hosts:
        if pool.min_vms == 0:
            return [
                skipped(
                    name,
                    "no machine registered; minVms is 0, so the pool may be scaled to zero "
                    "(nothing to check until it scales up)",
                )
            ]
        return [failed(name, f"no machine registered; minVms is {pool.min_vms}")]
    results = []
    if len(hosts) < pool.min_vms:
        results.append(
            failed(name, f"{len(hosts)} machine(s) registered, minVms is {pool.min_vms}")
        )
    elif len(hosts) > pool.max_vms:
        results.append(failed(name, f"{len(hosts)} machines registered, maxVms is {pool.max_vms}"))
    else:
        results.append(passed(name, f"{len(hosts)} machine(s): {', '.join(sorted(hosts))}"))
    by_id = {w.workerid: w for w in live}
    for g in pool.groups:
        problems = []
        for host in sorted(hosts):
            for n in range(1, g.instances + 1):
                wid = f"{host}:{g.arch}-{n}"
                problems += _worker_problems(wid, g, by_id.get(wid), registrations.get(wid))
        gname = f"workers {pool.name} {g.arch}"
        count = len(hosts) * g.instances
        if problems:
            results.append(failed(gname, "; ".join(problems)))
        else:
            results.append(
                passed(
                    gname,
                    f"{count} worker(s) as {g.scheduler_arch}, ports {g.ports[0]}-{g.ports[1]}, "
                    f"labels {' '.join(sorted(g.hostlabels))}, each answering",
                )
            )
    return results


def _worker_problems(
    wid: str, g: GroupSpec, worker: Worker | None, reg: Registration | None
) -> list[str]:
    if worker is None:
        return [f"{wid} not registered"]
    problems = []
    if worker.hostarch != g.scheduler_arch:
        problems.append(f"{wid} registered as {worker.hostarch}, expected {g.scheduler_arch}")
    port = _port_of(worker.uri)
    if port is None or not g.ports[0] <= port <= g.ports[1]:
        problems.append(f"{wid} on port {port}, expected {g.ports[0]}-{g.ports[1]}")
    if reg is None:
        problems.append(f"{wid}: no registration at /worker/{worker.hostarch}:{wid}")
        return problems
    if not g.hostlabels <= reg.hostlabels:
        missing = " ".join(sorted(g.hostlabels - reg.hostlabels))
        problems.append(f"{wid} lacks host label(s) {missing}")
    if not reg.answers:
        problems.append(f"{wid} does not answer at {worker.uri}/worker (from the server)")
    return problems


def _port_of(uri: str) -> int | None:
    m = re.search(r":(\d+)/?$", uri)
    return int(m.group(1)) if m else None


@dataclasses.dataclass(frozen=True)
class Machine:
    """A worker machine of a pool, as its registered workers show it."""

    pool: str
    cloud: str
    host: str
    address: str
    groups: tuple[str, ...]  # the pool's group names, which its health file lists

    @property
    def check_name(self) -> str:
        return f"worker health {self.pool} {self.host}"


def worker_machines(pools: Sequence[PoolSpec], workers: Sequence[Worker]) -> list[Machine]:
    """Each machine with a live worker, its address from that worker's uri.

    A machine none of whose workers registered is not found here (the server
    knows no address for it); evaluate_pool reports its group missing.
    """
    machines: dict[tuple[str, str], Machine] = {}
    for pool in pools:
        for w in workers:
            if w.state in ("down", "dead") or not w.uri:
                continue
            for g in pool.groups:
                m = g.id_pattern().match(w.workerid)
                address = _address_of(w.uri)
                if m and pool.owns_host(m["host"]) and address:
                    key = (pool.name, m["host"])
                    machines.setdefault(
                        key,
                        Machine(
                            pool.name,
                            pool.cloud,
                            m["host"],
                            address,
                            tuple(gr.arch for gr in pool.groups),
                        ),
                    )
    return sorted(machines.values(), key=lambda m: (m.pool, m.host))


def _address_of(uri: str) -> str | None:
    m = re.match(r"^https?://([^/:]+|\[[^\]]+\]):\d+/?$", uri)
    return m.group(1).strip("[]") if m else None


def evaluate_worker_health(machine: Machine, text: str | None, error: str = "") -> Result:
    """`text`: the machine's health file, or None when it could not be read
    (`error` says why)."""
    name = machine.check_name
    if text is None:
        return failed(
            name, f"cannot read {WORKER_HEALTH} on {machine.address} through the server: {error}"
        )
    try:
        doc = json.loads(text)
        groups = {str(g["group"]): g for g in doc["groups"]}
        healthy = doc["healthy"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return failed(
            name, f"{WORKER_HEALTH} on {machine.address} is not what the workers write: {err!r}"
        )
    if doc.get("host") != machine.host:
        return failed(
            name,
            f"{WORKER_HEALTH} on {machine.address} is host {doc.get('host')!r}'s, "
            f"not {machine.host!r}'s",
        )
    problems = [
        f"group {g} {entry.get('state', '?')}: {entry.get('detail') or 'no detail'}"
        for g, entry in sorted(groups.items())
        if entry.get("state") != "started"
    ]
    problems += [
        f"group {g} not in the file (not set up on this machine)"
        for g in machine.groups
        if g not in groups
    ]
    if problems:
        return failed(name, f"at boot {doc.get('time', '?')}: " + "; ".join(problems))
    if healthy is not True:
        return failed(name, f"{WORKER_HEALTH} says unhealthy, naming no group")
    started = ", ".join(f"{g} ({groups[g].get('instances', '?')})" for g in sorted(groups))
    return passed(name, f"healthy at boot {doc.get('time', '?')}: started {started}")


def evaluate_data_disk(
    mount: str, lun_device: str, imds_json: str, data_disk_id: str | None
) -> Result:
    """`mount`: `findmnt -n -o SOURCE,FSTYPE /srv/obs` (source resolved);
    `lun_device`: readlink -f of the LUN 0 name; `imds_json`: the Azure
    metadata storage profile or empty."""
    name = f"data disk {DATA_MOUNT}"
    if not mount.strip():
        return failed(name, f"nothing mounted on {DATA_MOUNT}")
    source, _, fstype = mount.strip().partition(" ")
    if not lun_device.strip():
        return failed(name, f"{DATA_DISK_DEVICE} does not exist; {DATA_MOUNT} is on {source}")
    if source != lun_device.strip():
        return failed(
            name,
            f"{DATA_MOUNT} is on {source}, but the data disk "
            f"({DATA_DISK_DEVICE}) is {lun_device.strip()}",
        )
    reason = f"{source} ({fstype.strip()}) is the disk at LUN 0"
    if not imds_json.strip():
        return passed(name, reason + "; Azure metadata unavailable, disk id not compared")
    try:
        disks = json.loads(imds_json).get("dataDisks", [])
    except (json.JSONDecodeError, AttributeError):
        return passed(name, reason + "; Azure metadata unreadable, disk id not compared")
    lun0 = next((d for d in disks if str(d.get("lun")) == "0"), None)
    attached = ((lun0 or {}).get("managedDisk") or {}).get("id", "")
    if not data_disk_id:
        return passed(name, reason + "; no dataDiskId output to compare")
    if attached.lower() != data_disk_id.lower():
        return failed(name, f"LUN 0 holds {attached or 'no managed disk'}, not {data_disk_id}")
    return passed(name, reason + f", managed disk {data_disk_id}")


def evaluate_scaler(
    expected: bool | None, unit_known: bool, unit_state: str, age_s: float | None
) -> Result:
    """`expected`: the scalerEnabled output (None when the stack has none)."""
    name = "scaler"
    if not unit_known:
        if expected:
            return failed(name, f"the stack enables it but the server has no {SCALER_UNIT}")
        return skipped(name, "this farm has no scaler")
    if unit_state != "active":
        return failed(name, f"{SCALER_UNIT} is {unit_state}")
    if age_s is None:
        return failed(name, f"{SCALER_HEALTH} missing: no successful poll yet")
    if age_s > SCALER_STALE_S:
        return failed(name, f"last successful poll {age_s:.0f}s ago ({SCALER_HEALTH})")
    return passed(name, f"active, last successful poll {age_s:.0f}s ago")


# --------------------------------------------------------------------------- the server


class Server:
    """Runs shell commands on the server over SSH."""

    def __init__(
        self, host: str, user: str, port: int, identity: str | None, options: Sequence[str]
    ) -> None:
        self.base = ["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
        # The workers' sshd listens on 22; the admin key and the user's
        # options apply to them too.
        self.worker_base = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
        for extra in ([["-i", identity]] if identity else []) + [["-o", o] for o in options]:
            self.base += extra
            self.worker_base += extra
        self.target = f"{user}@{host}"

    def run(
        self, script: str, stdin: bytes | None = None, timeout: float = 120
    ) -> tuple[int, str, str]:
        return _ssh([*self.base, self.target, script], stdin, timeout)

    def run_on_worker(
        self, user: str, address: str, script: str, timeout: float = 60
    ) -> tuple[int, str, str]:
        """`script` on a worker machine, reached through the server (workers
        have no public address). ssh's -J would not pass this command line's
        -i, -p and -o options on to the server hop; a ProxyCommand does."""
        # ssh expands %-tokens in a ProxyCommand: ours are %h:%p, any other % is literal.
        hop = " ".join(
            [
                shlex.join(self.base).replace("%", "%%"),
                "-W",
                "%h:%p",
                shlex.quote(self.target).replace("%", "%%"),
            ]
        )
        cmd = [*self.worker_base, "-o", f"ProxyCommand={hop}", f"{user}@{address}", script]
        return _ssh(cmd, None, timeout)

    def out(self, script: str, timeout: float = 120) -> str:
        rc, out, err = self.run(script, timeout=timeout)
        if rc != 0:
            raise RemoteError(
                f"`{script[:60]}` failed on the server ({rc}): {' '.join(err.split())[:300]}"
            )
        return out


def _ssh(cmd: list[str], stdin: bytes | None, timeout: float) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one ssh command; 124 on timeout."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:.0f}s"
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


class RemoteError(Exception):
    """A command on the server failed; the check that ran it fails."""


def curl(url: str, *extra: str) -> str:
    return shlex.join(["curl", "-fsS", "--noproxy", "*", "-m", "30", *extra, url])


# --------------------------------------------------------------------------- checks


def daemon_units(flavor: str, archs: Sequence[str]) -> list[str]:
    if flavor == "appliance":
        # openSUSE's obs-server runs every scheduler from one unit; each
        # architecture's scheduler is then checked in the repserver's view.
        return [*BACKEND_UNITS, "obsscheduler", *APPLIANCE_UNITS]
    return [*BACKEND_UNITS, *(f"obsscheduler@{a}" for a in archs)]


def check_daemons(server: Server, flavor: str, archs: Sequence[str]) -> list[Result]:
    units = daemon_units(flavor, archs)
    # is-active exits non-zero when any unit is not active; its lines still count.
    rc, out, err = server.run(shlex.join(["systemctl", "is-active", *units]))
    states = out.split()
    if len(states) != len(units):
        return [failed("daemons", f"systemctl is-active gave no answer ({rc}): {err.strip()}")]
    results = evaluate_units(units, states)
    try:
        _, daemons = parse_workerstatus(server.out(curl(f"{REPSERVER}/workerstatus")))
    except (RemoteError, ET.ParseError) as err:
        return [*results, failed("repserver /workerstatus", str(err))]
    return results + evaluate_schedulers(archs, daemons)


def check_workers(server: Server, pools: Sequence[PoolSpec]) -> list[Result]:
    try:
        workers, _ = parse_workerstatus(server.out(curl(f"{REPSERVER}/workerstatus")))
    except (RemoteError, ET.ParseError) as err:
        return [failed("workers", f"cannot read /workerstatus: {err}")]
    live = [w for w in workers if w.state not in ("down", "dead") and w.uri]
    registrations = _registrations(server, live) if live else {}
    results = []
    for pool in pools:
        results += evaluate_pool(pool, workers, registrations)
    return results


def _registrations(server: Server, workers: Sequence[Worker]) -> dict[str, Registration]:
    """Each worker's registration and whether the server reaches it: one ssh."""
    lines = []
    for i, w in enumerate(workers):
        reg = curl(f"{REPSERVER}/worker/{w.hostarch}:{w.workerid}")
        ping = curl(f"{w.uri}/worker", "-m", "10", "-o", "/dev/null")
        lines.append(
            f"echo '=== {i}'; {reg} | base64 -w0 || true; echo; "
            f"if {ping} 2>/dev/null; then echo yes; else echo no; fi"
        )
    _, out, _ = server.run("\n".join(lines), timeout=60 + 15 * len(workers))
    found = {}
    for block in out.split("=== ")[1:]:
        head, _, rest = block.partition("\n")
        fields = rest.splitlines()
        if not head.strip().isdigit() or len(fields) < 2:
            continue
        w = workers[int(head)]
        try:
            xml = base64.b64decode(fields[0]).decode(errors="replace")
            found[w.workerid] = parse_registration(xml, fields[1].strip() == "yes")
        except (ValueError, ET.ParseError):
            continue
    return found


def check_worker_health(server: Server, pools: Sequence[PoolSpec], user: str) -> list[Result]:
    """Each registered machine's /run/obs-farm/worker-health.json, read over
    SSH through the server (Azure: as `user`; AWS: Debian's `admin`)."""
    try:
        workers, _ = parse_workerstatus(server.out(curl(f"{REPSERVER}/workerstatus")))
    except (RemoteError, ET.ParseError) as err:
        return [failed("worker health", f"cannot read /workerstatus: {err}")]
    results = []
    for machine in worker_machines(pools, workers):
        login = AWS_WORKER_USER if machine.cloud == "aws" else user
        rc, out, stderr = server.run_on_worker(login, machine.address, f"cat {WORKER_HEALTH}")
        if rc != 0:
            why = " ".join(stderr.split())[:300] or f"exit {rc}"
            results.append(evaluate_worker_health(machine, None, f"as {login}: {why}"))
        else:
            results.append(evaluate_worker_health(machine, out))
    return results


def check_scaler(server: Server, expected: bool | None) -> Result:
    script = (
        f"if systemctl cat {SCALER_UNIT} >/dev/null 2>&1; then echo known; else echo unknown; fi; "
        f"systemctl is-active {SCALER_UNIT} || true; "
        f"if [ -e {SCALER_HEALTH} ]; then echo $(( $(date +%s) - $(stat -c %Y {SCALER_HEALTH}) )); "
        "else echo none; fi"
    )
    rc, out, err = server.run(script)
    fields = out.split()
    if rc != 0 or len(fields) != 3:
        return failed("scaler", f"cannot ask the server ({rc}): {err.strip()}")
    age = None if fields[2] == "none" else float(fields[2])
    return evaluate_scaler(expected, fields[0] == "known", fields[1], age)


def check_data_disk(server: Server, data_disk_id: str | None) -> Result:
    script = (
        f"src=$(findmnt -n -o SOURCE {DATA_MOUNT} || true); "
        'if [ -n "$src" ]; then '
        f'echo "$(readlink -f "$src") $(findmnt -n -o FSTYPE {DATA_MOUNT})"; else echo; fi; '
        f"if [ -e {DATA_DISK_DEVICE} ]; then readlink -f {DATA_DISK_DEVICE}; else echo; fi; "
        f"curl -fsS --noproxy '*' -m 5 -H Metadata:true '{IMDS_STORAGE}' 2>/dev/null || true"
    )
    rc, out, err = server.run(script)
    if rc != 0:
        return failed(f"data disk {DATA_MOUNT}", f"cannot ask the server ({rc}): {err.strip()}")
    lines = [*out.split("\n", 2), "", ""]
    return evaluate_data_disk(lines[0], lines[1], lines[2], data_disk_id)


# --------------------------------------------------------------------------- --build


def build_constraints(archs: Sequence[str], group_of: dict[str, str]) -> str:
    """Each job architecture to the workers of its own group (by our host label),
    so armv7l is built by an armv7hl group, not an aarch64 one (BSCando)."""
    overwrites = "".join(
        f"<overwrite><conditions><arch>{a}</arch></conditions>"
        f"<hostlabel>obs-farm-{group_of[a]}</hostlabel></overwrite>"
        for a in archs
    )
    return f"<constraints>{overwrites}</constraints>\n"


def source_files(srcdir: Path = HELLO_OBS) -> dict[str, bytes]:
    """The .dsc and tarball of hello-obs, made by dpkg-source -b."""
    if shutil.which("dpkg-source") is None:
        raise UsageError("--build needs dpkg-source (apt-get install dpkg-dev)")
    with tempfile.TemporaryDirectory(prefix="obs-farm-check-") as tmp:
        work = Path(tmp) / srcdir.name
        shutil.copytree(srcdir, work)
        proc = subprocess.run(
            ["dpkg-source", "-b", work.name], cwd=tmp, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise UsageError(f"dpkg-source -b {srcdir} failed: {proc.stderr.strip()}")
        shutil.rmtree(work)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a System V/GNU ar archive (a .deb, a static library) by
    name; long names from GNU's `//` table are resolved, the symbol index
    `/` is kept as is."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    members: dict[str, bytes] = {}
    names = b""
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name, size = header[:16].decode().rstrip(), int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        if name == "//":
            names = body
        elif name.startswith("/") and name[1:].isdigit():
            start = int(name[1:])
            name = names[start : names.index(b"/\n", start)].decode()
        members[name.rstrip("/") or name] = body
        pos += 60 + size + (size % 2)
    return members


def elf_machines_of_deb(deb: bytes) -> dict[str, int]:
    """e_machine of every ELF file in a .deb's data archive (ar + tar.xz/gz)."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not a .deb (ar archive)")
    data = None
    for name, body in ar_members(deb).items():
        if name.startswith("data.tar"):
            data = lzma.decompress(body) if name.endswith(".xz") else body
            break
    if data is None:
        raise ValueError("no data.tar member")
    found = {}
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            head = handle.read(20) if handle else b""
            if head[:4] == b"\x7fELF" and len(head) >= 20:
                big = head[5] == 2
                found[member.name] = int.from_bytes(head[18:20], "big" if big else "little")
    return found


def check_build(
    server: Server,
    pools: Sequence[PoolSpec],
    base: str,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    only: Sequence[str] = (),
) -> list[Result]:
    """`only`: build just these architectures (checked by build_archs)."""
    archs = build_archs(pools, only)
    group_of = {g.scheduler_arch: g.arch for p in pools for g in p.groups}
    base_prj, _, base_repo = base.partition("/")
    prj = CHECK_PROJECT
    path = f"<path project='{base_prj}' repository='{base_repo}'/>"
    meta = (
        f"<project name='{prj}'><title>obs-farm ./check</title><description/>"
        f"<repository name='check'>{path}{''.join(f'<arch>{a}</arch>' for a in archs)}"
        "</repository></project>"
    )
    try:
        server.out(curl(f"{SRCSERVER}/source/{base_prj}/_meta", "-o", "/dev/null"))
    except RemoteError:
        return [
            failed("build", f"base project {base_prj} not found on the server (--base PRJ/REPO)")
        ]
    files = {**source_files(), "_constraints": build_constraints(archs, group_of).encode()}
    pkg_meta = f"<package name='{CHECK_PACKAGE}' project='{prj}'><title/><description/></package>"
    try:
        before = _srcmd5(server, prj)
        _put(server, f"/source/{prj}/_meta", meta.encode())
        _put(server, f"/source/{prj}/{CHECK_PACKAGE}/_meta", pkg_meta.encode())
        for name, content in files.items():
            _put(server, f"/source/{prj}/{CHECK_PACKAGE}/{name}?rev=upload", content)
        # The server's clock: job times are the server's, and ours may differ.
        started = float(server.out("date +%s"))
        server.out(
            curl(f"{SRCSERVER}/source/{prj}/{CHECK_PACKAGE}?cmd=commit&rev=upload", "-X", "POST")
        )
        if _srcmd5(server, prj) == before:
            # Same sources as an earlier ./check: no new build unless asked.
            # (Asking always would restart a job the commit already started.)
            server.out(
                curl(f"{SRCSERVER}/build/{prj}?cmd=rebuild&package={CHECK_PACKAGE}", "-X", "POST")
            )
    except RemoteError as err:
        return [failed("build", f"cannot submit {CHECK_PACKAGE}: {err}")]
    return _wait_and_inspect(server, prj, archs, started, timeout_s, clock)


def build_archs(pools: Sequence[PoolSpec], only: Sequence[str]) -> list[str]:
    served = scheduler_archs(pools)
    unknown = sorted(set(only) - set(served))
    if unknown:
        raise UsageError(
            f"--arch {', '.join(unknown)}: this farm builds {', '.join(served)} "
            "(scheduler architectures)"
        )
    return [a for a in served if a in only] if only else served


def _srcmd5(server: Server, prj: str) -> str | None:
    rc, out, _ = server.run(curl(f"{SRCSERVER}/source/{prj}/{CHECK_PACKAGE}"))
    try:
        return ET.fromstring(out).get("srcmd5") if rc == 0 else None
    except ET.ParseError:
        return None


def _put(server: Server, path: str, content: bytes) -> None:
    rc, _, err = server.run(
        curl(f"{SRCSERVER}{path}", "-X", "PUT", "--data-binary", "@-"), stdin=content
    )
    if rc != 0:
        raise RemoteError(f"PUT {path}: {' '.join(err.split())[:300]}")


def _wait_and_inspect(
    server: Server,
    prj: str,
    archs: Sequence[str],
    started: float,
    timeout_s: float,
    clock: Callable[[], float],
) -> list[Result]:
    deadline = clock() + timeout_s
    final: dict[str, tuple[str, str]] = {}
    while len(final) < len(archs) and clock() < deadline:
        for arch in archs:
            if arch in final:
                continue
            state = _build_state(server, prj, arch, started)
            if state:
                final[arch] = state
        if len(final) < len(archs):
            time.sleep(10)
    results = []
    for arch in archs:
        name = f"build {arch}"
        if arch not in final:
            results.append(failed(name, f"no result within {timeout_s:.0f}s"))
            continue
        code, worker = final[arch]
        if code != "succeeded":
            results.append(
                failed(
                    name, f"{code} (log: {REPSERVER}/build/{prj}/check/{arch}/{CHECK_PACKAGE}/_log)"
                )
            )
            continue
        results.append(_inspect_deb(server, prj, arch, worker))
    return results


# What the srcserver reports for a package whose meta exists but whose first
# commit the scheduler has not processed yet: the meta is written before the
# files, so a poll right after the commit can still see it. Not a result.
NO_SOURCE_YET = "no source uploaded"


def _build_state(server: Server, prj: str, arch: str, started: float) -> tuple[str, str] | None:
    """(code, worker) once this arch's build is final and newer than `started`."""
    try:
        res = ET.fromstring(
            server.out(curl(f"{SRCSERVER}/build/{prj}/_result?package={CHECK_PACKAGE}&arch={arch}"))
        )
        hist = ET.fromstring(
            server.out(
                curl(f"{REPSERVER}/build/{prj}/check/{arch}/_jobhistory?package={CHECK_PACKAGE}")
            )
        )
    except (RemoteError, ET.ParseError):
        return None
    result = res.find("result")
    status = result.find("status") if result is not None else None
    if (
        result is None
        or status is None
        or result.get("dirty")
        or result.get("state") == "scheduling"
    ):
        return None
    code = status.get("code", "")
    if code == "broken" and status.findtext("details") == NO_SOURCE_YET:
        return None  # the scheduler has not yet seen the commit made before `started`
    if code in ("unresolvable", "broken", "excluded", "disabled"):
        return code + (f": {status.findtext('details')}" if status.findtext("details") else ""), ""
    if code not in ("succeeded", "failed"):
        return None
    jobs = [j for j in hist.findall("jobhist") if float(j.get("endtime", "0")) >= started]
    if not jobs:
        return None
    return code, jobs[-1].get("workerid", "")


def _inspect_deb(server: Server, prj: str, arch: str, worker: str) -> Result:
    name = f"build {arch}"
    base = f"{REPSERVER}/build/{prj}/check/{arch}/{CHECK_PACKAGE}"
    try:
        listing = ET.fromstring(server.out(curl(base)))
        debs = [
            b.get("filename", "")
            for b in listing.findall("binary")
            if b.get("filename", "").endswith(".deb")
        ]
        if not debs:
            return failed(name, "succeeded but produced no .deb")
        encoded = server.out(f"{curl(f'{base}/{debs[0]}')} | base64 -w0", timeout=300)
        machines = elf_machines_of_deb(base64.b64decode(encoded))
    except (RemoteError, ET.ParseError, ValueError) as err:
        return failed(name, f"cannot inspect the result: {err}")
    want = ELF_MACHINES.get(arch)
    wrong = {f: m for f, m in machines.items() if m != want}
    if not machines:
        return failed(name, f"{debs[0]} holds no ELF file")
    if wrong:
        return failed(name, f"{debs[0]}: ELF machine {wrong}, expected {want}")
    return passed(
        name,
        f"succeeded on {worker or 'a worker'}; {debs[0]}: "
        f"{len(machines)} ELF file(s), e_machine {want}",
    )


# --------------------------------------------------------------------------- main


def run_checks(
    args: argparse.Namespace, outputs: dict[str, Any], emit: Callable[[Result], None]
) -> bool:
    pools = pool_specs(outputs["topology"])
    host = args.host or outputs["serverPublicIp"]
    user = args.user or outputs.get("adminUsername") or "obsadmin"
    server = Server(host, user, args.port, args.identity, args.ssh_option)
    ok = True

    def report(results: Iterable[Result]) -> None:
        nonlocal ok
        for r in results:
            ok = ok and r.status != "FAIL"
            emit(r)

    rc, _, err = server.run("true", timeout=60)
    if rc != 0:
        report(
            [
                failed(
                    "ssh",
                    f"cannot log in as {user}@{host}:{args.port}: {' '.join(err.split())[:300]}",
                )
            ]
        )
        return False
    report([passed("ssh", f"{user}@{host}:{args.port}")])
    flavor = outputs.get("serverFlavor") or "backend"
    report(check_daemons(server, flavor, scheduler_archs(pools)))
    report(check_workers(server, pools))
    if args.no_worker_health:
        report([skipped("worker health", "not asked (--no-worker-health)")])
    else:
        report(check_worker_health(server, pools, user))
    report([check_scaler(server, outputs.get("scalerEnabled"))])
    report([check_data_disk(server, outputs.get("dataDiskId"))])
    if args.build:
        report(check_build(server, pools, args.base, args.build_timeout, only=args.arch))
    return ok


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./check", description=__doc__.split("\n\n")[0])
    p.add_argument("stack", help="the Pulumi stack to check")
    p.add_argument("--outputs", type=Path, help="stack outputs JSON instead of asking pulumi")
    p.add_argument(
        "--build", action="store_true", help="also build hello-obs for every architecture"
    )
    p.add_argument(
        "--arch",
        action="append",
        default=[],
        help="with --build: build only for this scheduler architecture (repeatable; "
        "default: every one the farm serves)",
    )
    p.add_argument(
        "--no-worker-health",
        action="store_true",
        help="do not log in to the worker machines to read their health files",
    )
    p.add_argument(
        "--base", default="Debian:12/main", help="PROJECT/REPO the build uses (default %(default)s)"
    )
    p.add_argument(
        "--build-timeout", type=float, default=2400, help="seconds (default %(default)s)"
    )
    p.add_argument("--host", help="server address (default: the serverPublicIp output)")
    p.add_argument("--port", type=int, default=22, help="SSH port (default %(default)s)")
    p.add_argument("--user", help="SSH user (default: the adminUsername output, else obsadmin)")
    p.add_argument("-i", "--identity", help="SSH private key (the admin key)")
    p.add_argument("-o", "--ssh-option", action="append", default=[], help="extra ssh -o option")
    args = p.parse_args(argv)
    if "/" not in args.base:
        p.error(f"--base must be PROJECT/REPO, got {args.base!r}")
    if args.arch and not args.build:
        p.error("--arch needs --build")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        outputs = read_outputs(args.stack, args.outputs)
        if args.arch:
            build_archs(pool_specs(outputs["topology"]), args.arch)  # before logging in
        if shutil.which("ssh") is None:
            raise UsageError("ssh is not installed (apt-get install openssh-client)")
        ok = run_checks(args, outputs, lambda r: print(r.line(), flush=True))
    except UsageError as err:
        print(f"./check: {err}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError) as err:
        print(
            f"./check: the stack outputs are not what this version expects: {err!r}",
            file=sys.stderr,
        )
        return 2
    print("all checks passed" if ok else "some checks FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
