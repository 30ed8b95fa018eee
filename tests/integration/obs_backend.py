"""A throw-away OBS backend on 127.0.0.1 for integration tests.

Runs Debian's obs-server 2.9.4 daemons (bs_srcserver, bs_repserver, one
bs_sched per architecture, bs_dispatch, bs_publish) from a private copy of
/usr/lib/obs/server whose BSConfig.pm is the project's rendered one with only
paths and addresses changed, and whose BSServer.pm binds the loopback
interface: OBS has no authentication, so a test must never expose its ports.

Everything the harness starts is tracked by PID (each daemon runs in its own
session) and stopped on exit together with its children, e.g. the AJAX
children of the source and repository servers and the build processes of
workers.  Mounts made below a worker's build root are unmounted too.

Typical use::

    with ObsBackend(bsconfig_text, workdir) as obs:
        obs.setup_debian_project(["x86_64", "aarch64"])
        obs.create_project("lab", "Debian_12", [("Debian:12", "main")], archs)
        obs.create_package("lab", "hello-obs", HELLO_OBS)
        obs.start_host_worker(obs.fetch_worker_code(), 1, "aarch64", 7001)
        result = obs.wait_build("lab", "Debian_12", "aarch64", "hello-obs", 900)
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal
from xml.sax.saxutils import quoteattr

from tools.check import NO_SOURCE_YET

try:  # tests/ importable as a package (python -m pytest from the repo root)
    from tests.integration import debian_base
except ImportError:  # pytest's default "prepend" import of this folder
    import debian_base  # type: ignore[no-redef, unused-ignore]

LOOPBACK = "127.0.0.1"
SERVER_CODE = Path("/usr/lib/obs/server")
SCHEDULER_ARCHES: tuple[str, ...] = ("x86_64", "aarch64", "armv7l")

#: Final package states in a build result; anything else is still moving.
FINAL_STATES = frozenset({"succeeded", "failed", "unresolvable", "broken", "disabled", "excluded"})

#: binfmt_misc handler each emulated OBS architecture needs on x86-64.
BINFMT_HANDLERS: dict[str, str] = {"aarch64": "qemu-aarch64", "armv7l": "qemu-arm"}

#: ELF e_machine values of the OBS architectures.
ELF_MACHINES: dict[str, int] = {"x86_64": 62, "aarch64": 183, "armv7l": 40}

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


class HarnessError(RuntimeError):
    """Something in the test backend did not behave; the message says what."""


class BuildTimeout(HarnessError):
    """A build did not reach a final state within its time limit."""


# ---------------------------------------------------------------------------
# BSConfig.pm and BSServer.pm rewriting (pure functions, unit-testable)
# ---------------------------------------------------------------------------

_BSDIR = re.compile(
    r"""^(?P<lhs>[ \t]*our[ \t]+\$bsdir[ \t]*=[ \t]*)(?P<q>['"])(?P<value>[^'"]+)(?P=q)""", re.M
)
_SERVER_URL = re.compile(
    r"""^(?P<lhs>[ \t]*our[ \t]+\$(?P<var>\w*server)[ \t]*=[ \t]*)(?P<q>['"])"""
    r"""https?://(?P<host>[^:/'"]+)(?P<port>:\d+)?(?P<rest>[^'"]*)(?P=q)""",
    re.M,
)
_HOSTNAME = re.compile(r"^(?P<lhs>[ \t]*my[ \t]+\$hostname[ \t]*=[ \t]*)[^;\n]+;", re.M)
_IPACCESS = re.compile(r"^(?P<lhs>[ \t]*our[ \t]+\$ipaccess[ \t]*=[ \t]*\{)", re.M)
_SERVICEDISPATCH = re.compile(r"^([ \t]*our[ \t]+\$servicedispatch[ \t]*=[ \t]*)[^;\n]+;", re.M)
_URL_HOST = re.compile(r"\b[a-z][a-z0-9+.-]*://\$?\{?([A-Za-z0-9_.\-\[\]:]+?)\}?(?=[:/'\"]|$)")

_OVERRIDES = """
# --- obs_backend test harness: loopback-only instance -----------------------
our $servicedispatch = 0;
1;
"""


def _sub_required(
    pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str, what: str
) -> str:
    new, count = pattern.subn(repl, text)
    if count == 0:
        raise HarnessError(
            f"BSConfig substitution for {what} did not match (pattern {pattern.pattern!r})"
        )
    return new


def render_bsconfig(text: str, bsdir: Path) -> str:
    """Point a production BSConfig.pm at `bsdir` and at 127.0.0.1.

    Only paths and addresses change: `$bsdir` (and literal paths below the old
    one), every `our $...server = "http://HOST:PORT"` URL, Debian's
    `my $hostname`, an `$ipaccess` entry letting 127.0.0.1 act as client and
    worker, and `$servicedispatch = 0` (no source-service daemon runs here).
    """
    old = _BSDIR.search(text)
    if not old:
        raise HarnessError(
            "BSConfig substitution for $bsdir did not match: no `our $bsdir = '...';`"
        )
    text = _sub_required(_BSDIR, lambda m: f"{m['lhs']}'{bsdir}'", text, "$bsdir")
    old_dir = re.escape(old["value"].rstrip("/"))
    text = re.sub(rf"""(['"]){old_dir}(?=[/'"])""", lambda m: m[1] + str(bsdir), text)

    servers = {m["var"] for m in _SERVER_URL.finditer(text)}
    for required in ("srcserver", "reposerver"):
        if required not in servers:
            raise HarnessError(
                f'BSConfig substitution for ${required} did not match: no `our ${required} = "http://HOST:PORT"`'
            )
    text = _SERVER_URL.sub(
        lambda m: f"{m['lhs']}{m['q']}http://{LOOPBACK}{m['port'] or ''}{m['rest']}{m['q']}", text
    )
    text = _HOSTNAME.sub(lambda m: f"{m['lhs']}'{LOOPBACK}';", text)
    text = _sub_required(
        _IPACCESS,
        lambda m: (
            m["lhs"]
            + "\n  '127\\.0\\.0\\.1' => 'rw,worker',  # obs_backend: loopback test instance"
        ),
        text,
        "$ipaccess",
    )
    text = _SERVICEDISPATCH.sub(lambda m: f"{m[1]}0;", text)
    text = text.rstrip() + "\n" + _OVERRIDES
    _check_only_loopback(text)
    return text


def _check_only_loopback(text: str) -> None:
    """Fail if an uncommented URL still names a host other than loopback."""
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        for host in _URL_HOST.findall(code):
            if host not in (LOOPBACK, "localhost"):
                raise HarnessError(
                    f"BSConfig line {number} still names host {host!r}: {line.strip()}"
                )


# What a patched bind uses. Every process on this host binds 127.0.0.1. The
# one exception is a bs_worker inside a test VM booted from our worker
# cloud-init (which writes /etc/obs-farm/worker.env): it binds the VM's own
# interfaces, which the host reaches only through QEMU's port forwards on
# 127.0.0.1, so that the dispatcher can connect back to it.
BIND_EXPR = (
    "(($0 =~ m{bs_worker$} && -e '/etc/obs-farm/worker.env') ? INADDR_ANY : INADDR_LOOPBACK)"
)


def patch_bsserver(text: str) -> str:
    """Make every daemon (and host workers running this copy's code) bind 127.0.0.1."""
    patched, count = re.subn(r"\bINADDR_ANY\b", BIND_EXPR, text)
    if count == 0 or re.search(r"sockaddr_in\([^)]*, INADDR_ANY\)", patched):
        raise HarnessError(
            "BSServer.pm: no INADDR_ANY bind to patch; daemons would not be loopback-only"
        )
    return patched


# ---------------------------------------------------------------------------
# Process handling
# ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def _family(root: int) -> set[int]:
    """`root`, its descendants, and anything still in its session.

    Children that daemonize get re-parented to init but keep the session id
    of the process we started, so both relations are followed.
    """
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _proc_stat(int(entry))):
            table[int(entry)] = st
    members = {root} if root in table else set()
    members |= {pid for pid, (_, sid) in table.items() if sid == root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return members


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_tree(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a started process and everything it spawned: TERM, wait, KILL."""
    root = popen.pid
    deadline = time.monotonic() + grace
    _signal_all(_family(root), signal.SIGTERM)
    while time.monotonic() < deadline:
        popen.poll()
        if not _living(_family(root)):
            return
        time.sleep(0.2)
    for _ in range(10):
        family = _family(root)
        popen.poll()
        if not _living(family):
            return
        _signal_all(family, signal.SIGKILL)
        time.sleep(0.3)
    popen.poll()
    left = _living(_family(root))
    if left:
        raise HarnessError(f"processes {sorted(left)} of pid {root} survived SIGKILL")


def _living(pids: Iterable[int]) -> set[int]:
    """Drop zombies: they are dead, only waiting for their parent."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


@dataclass
class ManagedProcess:
    """A daemon we started, with its own session and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        return cls(name, popen, log)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        kill_tree(self.popen, grace)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> float:
    """Poll `predicate` until true; return seconds waited or raise with `what`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            extra = on_timeout() if on_timeout else ""
            raise HarnessError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f"\n{extra}" if extra else "")
            )
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(proc: ManagedProcess, port: int, timeout: float) -> float:
    """Wait for a daemon's port, failing fast (with its log) if it died."""

    def ready() -> bool:
        if not proc.alive():
            raise HarnessError(
                f"{proc.name} exited with {proc.popen.returncode} before opening port {port}:\n{proc.log_tail()}"
            )
        return port_open(port)

    return wait_until(ready, timeout, f"{proc.name} on {LOOPBACK}:{port}", 0.2, proc.log_tail)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_below(root: Path) -> list[str]:
    """Unmount (lazily) whatever a killed build left mounted below `root`."""
    points = mounts_below(root)
    for point in points:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return points


def still_running(pids: Iterable[int]) -> set[int]:
    """Live processes among `pids` and their families (for leak checks)."""
    found: set[int] = set()
    for pid in pids:
        found |= _living(_family(pid))
    return found


# ---------------------------------------------------------------------------
# Results and status structures
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerEntry:
    """One worker as the repserver sees it."""

    state: str  # idle, building, down, dead, away
    workerid: str
    hostarch: str
    uri: str = ""
    project: str = ""
    package: str = ""
    arch: str = ""


@dataclass
class WorkerStatus:
    """Parsed `GET /workerstatus` of the repserver."""

    workers: list[WorkerEntry] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    daemons: dict[str, str] = field(default_factory=dict)  # "scheduler:aarch64" -> state

    def by_state(self, state: str) -> list[WorkerEntry]:
        return [w for w in self.workers if w.state == state]

    @property
    def idle(self) -> list[WorkerEntry]:
        return self.by_state("idle")

    @property
    def building(self) -> list[WorkerEntry]:
        return self.by_state("building")

    @property
    def down(self) -> list[WorkerEntry]:
        return self.by_state("down")

    def find(self, workerid: str) -> WorkerEntry | None:
        return next((w for w in self.workers if w.workerid == workerid), None)


@dataclass(frozen=True)
class BuildResult:
    """Outcome of one package build as wait_build saw it."""

    status: str
    wall_seconds: float  # from the start of waiting (or `since`) to the final state
    job_seconds: float | None  # endtime - starttime of the job on the worker
    details: str = ""
    workerid: str = ""
    hostarch: str = ""


def parse_workerstatus(xml: bytes) -> WorkerStatus:
    """Turn the repserver's workerstatus XML into a WorkerStatus."""
    root = ET.fromstring(xml)
    status = WorkerStatus()
    for element in root:
        tag, a = element.tag, element.attrib
        if tag in ("idle", "building", "down", "dead", "away"):
            status.workers.append(
                WorkerEntry(
                    state=tag,
                    workerid=a.get("workerid", ""),
                    hostarch=a.get("hostarch", ""),
                    uri=a.get("uri", ""),
                    project=a.get("project", ""),
                    package=a.get("package", ""),
                    arch=a.get("arch", ""),
                )
            )
        elif tag in ("waiting", "blocked"):
            getattr(status, tag)[a["arch"]] = int(a.get("jobs", "0"))
        elif tag == "partition":
            for daemon in element.findall("daemon"):
                key = daemon.get("type", "") + (
                    f":{daemon.get('arch')}" if daemon.get("arch") else ""
                )
                status.daemons[key] = daemon.get("state", "")
    return status


# ---------------------------------------------------------------------------
# binfmt_misc and ELF helpers
# ---------------------------------------------------------------------------


class Binfmt:
    """Make sure qemu-user-static handlers with the F flag are registered.

    Mounts binfmt_misc and enables handlers only when missing, and puts the
    machine back as it was found on close: handlers it enabled are removed,
    handlers that were there are registered again if they vanished or
    changed meanwhile, and binfmt_misc is unmounted only if it was not
    mounted before (unmounting drops every handler, the host's too).
    """

    def __init__(self, arches: Iterable[str]) -> None:
        self.handlers = sorted({BINFMT_HANDLERS[a] for a in arches if a in BINFMT_HANDLERS})
        self.mounted = False
        self.enabled: list[str] = []
        self.before: dict[str, tuple[str, bool]] = {}

    def __enter__(self) -> Binfmt:
        try:
            self._ensure()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure(self) -> None:
        if not self.handlers:
            return
        if not (BINFMT_DIR / "status").exists():
            subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                check=True,
                capture_output=True,
            )
            self.mounted = True
        self.before = binfmt_snapshot()
        for name in self.handlers:
            if not (BINFMT_DIR / name).exists():
                proc = subprocess.run(
                    ["update-binfmts", "--enable", name], capture_output=True, text=True
                )
                if proc.returncode != 0 or not (BINFMT_DIR / name).exists():
                    raise HarnessError(
                        f"cannot register binfmt handler {name} (install qemu-user-static "
                        f"and binfmt-support): {proc.stderr.strip()}"
                    )
                self.enabled.append(name)
            self.check_flags(name)

    @staticmethod
    def check_flags(name: str) -> None:
        """F (fix-binary) is what lets chroots without qemu run foreign binaries."""
        info = (BINFMT_DIR / name).read_text()
        if not re.search(r"^enabled", info, re.M):
            raise HarnessError(f"binfmt handler {name} is registered but disabled")
        flags = re.search(r"^flags:\s*(\S*)", info, re.M)
        if not flags or "F" not in flags.group(1):
            raise HarnessError(f"binfmt handler {name} lacks the F flag: {info!r}")

    def close(self) -> None:
        for name in reversed(self.enabled):
            with contextlib.suppress(OSError):
                (BINFMT_DIR / name).write_text("-1")
        self.enabled.clear()
        if self.mounted:
            proc = subprocess.run(["umount", str(BINFMT_DIR)], capture_output=True, text=True)
            self.mounted = False
            if proc.returncode != 0:
                raise HarnessError(f"cannot unmount {BINFMT_DIR}: {proc.stderr.strip()}")
        elif self.before:
            binfmt_restore(self.before)
            self.before = {}


def binfmt_rule(name: str, entry: str) -> tuple[str, bool]:
    """The `register` line that recreates a handler from its /proc entry, and
    whether it was enabled."""
    fields: dict[str, str] = {}
    for line in entry.splitlines():
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    flags = fields.get("flags", "")

    def esc(hexes: str) -> str:
        return "".join(f"\\x{hexes[i : i + 2]}" for i in range(0, len(hexes), 2))

    if "extension" in fields:
        body = f"E::{fields['extension'].lstrip('.')}:"
    else:
        body = f"M:{fields.get('offset', '0')}:{esc(fields['magic'])}:{esc(fields.get('mask', ''))}"
    return f":{name}:{body}:{fields['interpreter']}:{flags}", "enabled" in fields


def binfmt_snapshot() -> dict[str, tuple[str, bool]]:
    """Every registered handler as a register line (kernel entries as found)."""
    return {
        p.name: binfmt_rule(p.name, p.read_text())
        for p in sorted(BINFMT_DIR.iterdir())
        if p.name not in ("register", "status")
    }


def binfmt_restore(before: dict[str, tuple[str, bool]]) -> list[str]:
    """Register again what `before` had and the kernel lost or changed."""
    now = binfmt_snapshot()
    restored = []
    for name, (rule, enabled) in before.items():
        if now.get(name) == (rule, enabled):
            continue
        if name in now:
            (BINFMT_DIR / name).write_text("-1")
        (BINFMT_DIR / "register").write_text(rule)
        if not enabled:
            (BINFMT_DIR / name).write_text("0")
        restored.append(name)
    return restored


def elf_machine(header: bytes) -> int | None:
    """e_machine of an ELF header (endianness from EI_DATA), None if not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order: Literal["little", "big"] = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], order)


def deb_files(deb: Path) -> dict[str, bytes]:
    """The regular files of a .deb's data archive, by path."""
    tar_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    files = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    return files


def deb_elf_machines(deb: Path) -> dict[str, int]:
    """Map each ELF member of a .deb's data archive to its e_machine."""
    found = {}
    for name, data in deb_files(deb).items():
        machine = elf_machine(data[:64])
        if machine is not None:
            found[name] = machine
    return found


# ---------------------------------------------------------------------------
# Workers on this host
# ---------------------------------------------------------------------------


def fetch_worker_code(reposerver: str, boot_dir: Path) -> Path:
    """Unpack the repserver's /getworkercode cpio into `boot_dir` (as bs_worker's boot does)."""
    boot_dir.mkdir(parents=True, exist_ok=True)
    data = _fetch(f"{reposerver}/getworkercode", timeout=60)
    subprocess.run(["cpio", "-idu", "--quiet"], input=data, cwd=boot_dir, check=True)
    xml_link = boot_dir / "XML"
    if not xml_link.exists():
        xml_link.symlink_to(".")
    worker = boot_dir / "bs_worker"
    if not worker.is_file():
        raise HarnessError(f"worker code from {reposerver} has no bs_worker")
    worker.chmod(0o755)  # the cpio carries it as 0644
    return boot_dir


@dataclass
class HostWorker:
    """One bs_worker instance on this host (chroot builds)."""

    workerid: str
    arch: str
    port: int
    boot_dir: Path
    root_dir: Path
    state_dir: Path
    process: ManagedProcess

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def answers(self) -> bool:
        """A killed worker still shows as idle in /workerstatus; ask it directly."""
        try:
            _fetch(f"{self.uri}/worker", timeout=5)
            return True
        except (OSError, HarnessError):
            return False

    def request_exit(self) -> subprocess.Popen[bytes] | None:
        """Start `bs_worker --exit`: the worker tells the server it is down.

        An idle worker notices only at its next poll (about 10 s), so callers
        stopping several workers should request all exits before waiting.
        """
        if not self.process.alive():
            return None
        return subprocess.Popen(
            [str(self.boot_dir / "bs_worker"), "--statedir", str(self.state_dir), "--exit"],
            cwd=self.boot_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(
        self, timeout: float = 30.0, exit_request: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Wait (bounded) for a clean `--exit`, then kill by PID and unmount leftovers."""
        request = exit_request or self.request_exit()
        if request is not None:
            try:
                request.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_tree(request, 1.0)
        self.process.stop()
        unmount_below(self.root_dir)


def start_host_worker(
    boot_dir: Path,
    instance_id: int,
    arch: str,
    port: int,
    *,
    reposerver: str,
    workdir: Path,
    jobs: int = 1,
    cachesize_mb: int = 4096,
    hostlabels: Sequence[str] = (),
    host_name: str = "lab",
    timeout: float = 60.0,
    status: Callable[[], WorkerStatus] | None = None,
) -> HostWorker:
    """Start `bs_worker` from `boot_dir` for `arch` on 127.0.0.1:`port`.

    Returns once the worker answers on its port and (if `status` is given)
    the repserver lists it as idle.  Emulated arches need Binfmt first:
    bs_worker itself checks nothing and would only fail builds later.
    """
    require_binfmt(arch)
    base = workdir / f"{arch}-{instance_id}"
    root, state, cache = base / "root", base / "state", workdir / f"cache-{arch}"
    for d in (root, state, cache):
        d.mkdir(parents=True, exist_ok=True)
    workerid = f"{host_name}-{arch}:{instance_id}"
    argv = [
        str(boot_dir / "bs_worker"),
        "--hardstatus",
        "--root",
        str(root),
        "--statedir",
        str(state),
        "--id",
        workerid,
        "--reposerver",
        reposerver,
        "--jobs",
        str(jobs),
        "--cachedir",
        str(cache),
        "--cachesize",
        str(cachesize_mb),
        "--port",
        str(port),
    ]
    if arch != os.uname().machine:
        argv += ["--arch", arch]
    for label in hostlabels:
        argv += ["--hostlabel", label]
    proc = ManagedProcess.start(f"bs_worker {workerid}", argv, base / "worker.log", cwd=boot_dir)
    worker = HostWorker(workerid, arch, port, boot_dir, root, state, proc)
    try:
        wait_for_port(proc, port, timeout)
        if status is not None:

            def registered() -> bool:
                entry = status().find(workerid)
                return entry is not None and entry.state == "idle"

            wait_until(
                registered, timeout, f"worker {workerid} to register as idle", 1.0, proc.log_tail
            )
    except BaseException:
        worker.stop()
        raise
    return worker


def require_binfmt(arch: str) -> None:
    """Refuse to start an emulated worker without a usable F-flag handler."""
    handler = BINFMT_HANDLERS.get(arch)
    if handler is None:
        return
    if not (BINFMT_DIR / handler).exists():
        raise HarnessError(f"no binfmt handler {handler} for {arch}: use Binfmt([{arch!r}]) first")
    Binfmt.check_flags(handler)


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

# Loopback traffic must never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 60) -> bytes:
    """One HTTP request; OBS error replies become a HarnessError with their summary."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        summary = re.search(r"<summary>(.*?)</summary>", text, re.S)
        raise HarnessError(
            f"{method} {url}: HTTP {err.code}: {summary.group(1) if summary else text[:500]}"
        ) from None


def _url(base: str, path: str, params: Sequence[tuple[str, str]] | Mapping[str, str] = ()) -> str:
    quoted = urllib.parse.quote(path)
    query = urllib.parse.urlencode(
        list(params.items()) if isinstance(params, Mapping) else list(params)
    )
    return f"{base}{quoted}" + (f"?{query}" if query else "")


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    """Values read back from the rendered BSConfig.pm by Perl itself."""

    bsdir: Path
    srcserver: str
    reposerver: str
    bsuser: str
    bsgroup: str
    extra_ports: tuple[int, ...]

    @property
    def srcport(self) -> int:
        return _port_of(self.srcserver, 5352)

    @property
    def repport(self) -> int:
        return _port_of(self.reposerver, 5252)


def _port_of(url: str, default: int) -> int:
    return urllib.parse.urlsplit(url).port or default


class ObsBackend:
    """OBS source server, repository server, schedulers, dispatcher, publisher.

    `bsconfig_text` is the BSConfig.pm the project renders for its server;
    `workdir` receives the code copy (server/), the data ($bsdir = srv/), the
    daemon logs (logs/) and worker directories (workers/).  It must be
    traversable by the backend user, since the daemons drop root privileges.
    """

    def __init__(
        self,
        bsconfig_text: str,
        workdir: Path,
        *,
        scheduler_arches: Sequence[str] = SCHEDULER_ARCHES,
        publisher: bool = True,
        server_code: Path = SERVER_CODE,
        start_timeout: float = 60.0,
    ) -> None:
        self.bsconfig_text = bsconfig_text
        self.workdir = Path(workdir).resolve()
        self.scheduler_arches = tuple(scheduler_arches)
        self.publisher = publisher
        self.server_code = server_code
        self.start_timeout = start_timeout
        self.code_dir = self.workdir / "server"
        self.bsdir = self.workdir / "srv"
        self.log_dir = self.workdir / "logs"
        self.worker_dir = self.workdir / "workers"
        self.processes: list[ManagedProcess] = []
        self.workers: list[HostWorker] = []
        self.timings: dict[str, float] = {}
        self.config: _Config | None = None

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> ObsBackend:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Prepare the code copy and start all daemons; on failure stop what started."""
        t0 = time.monotonic()
        try:
            self._prepare()
            self._start_daemons()
        except BaseException:
            self.stop()
            raise
        self.timings["backend_start"] = time.monotonic() - t0

    def stop(self) -> None:
        """Stop workers, then daemons in reverse start order; verify nothing is left."""
        errors = []
        exits = [(worker, worker.request_exit()) for worker in self.workers]
        for worker, request in exits:
            try:
                worker.stop(exit_request=request)
            except Exception as err:  # keep stopping the rest
                errors.append(f"{worker.workerid}: {err}")
        self.workers.clear()
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as err:
                errors.append(f"{proc.name}: {err}")
        leftovers = [p.name for p in self.processes if p.alive()]
        self.processes.clear()
        if errors or leftovers:
            raise HarnessError(f"unclean stop: {errors} still alive: {leftovers}")

    # -- preparation ---------------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _copy_server_code(self.server_code, self.code_dir)
        bsserver = self.code_dir / "BSServer.pm"
        bsserver.write_text(patch_bsserver(bsserver.read_text()))
        (self.code_dir / "BSConfig.pm").write_text(render_bsconfig(self.bsconfig_text, self.bsdir))
        self.config = self._read_back_config()
        self.bsdir.mkdir(exist_ok=True)
        shutil.chown(self.bsdir, self.config.bsuser, self.config.bsgroup)
        _check_traversable(self.bsdir, self.config.bsuser)
        _check_traversable(self.code_dir / "bs_srcserver", self.config.bsuser)

    def _read_back_config(self) -> _Config:
        """Evaluate the rendered BSConfig.pm with Perl and check what matters."""
        names = [
            "bsdir",
            "srcserver",
            "reposerver",
            "servicedispatch",
            "bsuser",
            "bsgroup",
            "rundir",
            "logdir",
            "workersrcserver",
            "workerreposerver",
        ]
        script = (
            'require BSConfig; no strict "refs"; for my $n (@ARGV) '
            '{ my $v = ${"BSConfig::$n"}; print "$n=", (defined $v ? $v : ""), "\\n" }'
        )
        proc = subprocess.run(
            ["perl", "-I", str(self.code_dir), "-e", script, *names],
            capture_output=True,
            text=True,
            cwd=self.code_dir,
        )
        if proc.returncode != 0:
            raise HarnessError(f"rendered BSConfig.pm does not load: {proc.stderr.strip()}")
        values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        problems = []
        if Path(values["bsdir"]) != self.bsdir:
            problems.append(f"$bsdir is {values['bsdir']}")
        for name in ("srcserver", "reposerver", "workersrcserver", "workerreposerver"):
            if values[name] and urllib.parse.urlsplit(values[name]).hostname != LOOPBACK:
                problems.append(f"${name} is {values[name]}")
        for name in ("rundir", "logdir"):
            if values[name] and not Path(values[name]).is_relative_to(self.bsdir):
                problems.append(f"${name} is {values[name]}, outside {self.bsdir}")
        if values["servicedispatch"] not in ("", "0"):
            problems.append(f"$servicedispatch is {values['servicedispatch']}")
        if problems:
            raise HarnessError(
                "rendered BSConfig.pm is not a loopback test config: " + "; ".join(problems)
            )
        extra = tuple(
            _port_of(values[n], 0) for n in ("workersrcserver", "workerreposerver") if values[n]
        )
        return _Config(
            self.bsdir,
            values["srcserver"],
            values["reposerver"],
            values["bsuser"] or "root",
            values["bsgroup"] or "root",
            extra,
        )

    # -- daemons -------------------------------------------------------------

    def _daemon(self, name: str, *args: str) -> ManagedProcess:
        log = self.log_dir / (name if not args else f"{name}-{'-'.join(args)}").replace("/", "_")
        proc = ManagedProcess.start(
            " ".join([name, *args]),
            [str(self.code_dir / name), *args],
            log.with_suffix(".log"),
            cwd=self.code_dir,
        )
        self.processes.append(proc)
        return proc

    def _start_daemons(self) -> None:
        cfg = self._cfg
        for port in (cfg.srcport, cfg.repport, *cfg.extra_ports):
            if port_open(port):
                raise HarnessError(
                    f"port {port} on {LOOPBACK} is already in use; another OBS running?"
                )
        for name, port in (("bs_srcserver", cfg.srcport), ("bs_repserver", cfg.repport)):
            self.timings[name] = wait_for_port(self._daemon(name), port, self.start_timeout)
        for arch in self.scheduler_arches:
            self._daemon("bs_sched", arch)
        self._daemon("bs_dispatch")
        if self.publisher:
            self._daemon("bs_publish")
        self.timings["schedulers"] = wait_until(
            self._schedulers_running,
            self.start_timeout,
            "schedulers to start",
            0.5,
            self._daemon_logs,
        )

    def _schedulers_running(self) -> bool:
        for proc in self.processes:
            if not proc.alive():
                raise HarnessError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
                )
        states = self.workerstatus().daemons
        return all(states.get(f"scheduler:{a}") == "running" for a in self.scheduler_arches)

    def _daemon_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(10)}" for p in self.processes)

    @property
    def _cfg(self) -> _Config:
        if self.config is None:
            raise HarnessError("backend not started")
        return self.config

    @property
    def srcserver(self) -> str:
        return self._cfg.srcserver.rstrip("/")

    @property
    def reposerver(self) -> str:
        return self._cfg.reposerver.rstrip("/")

    # -- HTTP helpers --------------------------------------------------------

    def src(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        data: bytes | None = None,
        timeout: float = 120,
    ) -> bytes:
        """Request to the source server."""
        return _fetch(_url(self.srcserver, path, params), method, data, timeout)

    def rep(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        data: bytes | None = None,
        timeout: float = 120,
    ) -> bytes:
        """Request to the repository server."""
        return _fetch(_url(self.reposerver, path, params), method, data, timeout)

    # -- projects and packages -----------------------------------------------

    def create_project(
        self,
        project: str,
        repo: str,
        paths: Sequence[tuple[str, str]],
        archs: Sequence[str],
        prjconf: str | None = None,
    ) -> None:
        """Create or replace a project with one repository."""
        path_xml = "".join(
            f"<path project={quoteattr(p)} repository={quoteattr(r)}/>" for p, r in paths
        )
        arch_xml = "".join(f"<arch>{a}</arch>" for a in archs)
        meta = (
            f"<project name={quoteattr(project)}><title/><description/>"
            f"<repository name={quoteattr(repo)}>{path_xml}{arch_xml}</repository></project>"
        )
        self.src("PUT", f"/source/{project}/_meta", data=meta.encode())
        if prjconf is not None:
            self.src("PUT", f"/source/{project}/_config", data=prjconf.encode())

    def setup_debian_project(
        self,
        archs: Sequence[str],
        project: str = "Debian:12",
        repo: str = "main",
        rescan_timeout: float = 180.0,
    ) -> dict[str, debian_base.BaseSet]:
        """Base project with a Debian bookworm `:full` tree per arch.

        The .debs come from debian_base (cached); the prjconf's Preinstall is
        the required/Essential closure common to all arches.
        """
        t0 = time.monotonic()
        bases = {arch: debian_base.ensure_base(arch) for arch in archs}
        self.timings["debian_base"] = time.monotonic() - t0
        preinstall = sorted(set.intersection(*(set(b.preinstall()) for b in bases.values())))
        # The repository directories exist, owned by the backend's user, before
        # the project does: a scheduler that handles the project event while
        # they are still root's dies on `:schedulerstate.dirty: Permission
        # denied` (a CI run lost the x86_64 scheduler that way).
        for arch in archs:
            (self.bsdir / "build" / project / repo / arch / ":full").mkdir(
                parents=True, exist_ok=True
            )
        _chown_dirs(self.bsdir / "build", self._cfg.bsuser, self._cfg.bsgroup)
        self.create_project(project, repo, [], archs, debian_prjconf(preinstall))
        t1 = time.monotonic()
        for arch, base in bases.items():
            self._fill_full_tree(project, repo, arch, base)
        for arch in archs:
            self._wait_full_scanned(project, repo, arch, rescan_timeout)
        self.timings["full_tree_scan"] = time.monotonic() - t1
        return bases

    def add_to_full(
        self,
        project: str,
        repo: str,
        arch: str,
        base: debian_base.BaseSet,
        timeout: float = 180.0,
    ) -> None:
        """Add a further base set to an existing `:full` tree and wait until the
        scheduler has read it again (it rewrites `:full.solv`)."""
        solv = self.bsdir / "build" / project / repo / arch / ":full.solv"
        before = solv.stat().st_mtime_ns if solv.exists() else 0
        self._fill_full_tree(project, repo, arch, base)
        wait_until(
            lambda: solv.exists() and solv.stat().st_mtime_ns != before,
            timeout,
            f"scheduler {arch} to rescan {project}/{repo}",
            1.0,
            lambda: self._daemon_logs(),
        )

    def _fill_full_tree(
        self, project: str, repo: str, arch: str, base: debian_base.BaseSet
    ) -> None:
        full = self.bsdir / "build" / project / repo / arch / ":full"
        full.mkdir(parents=True, exist_ok=True)
        for deb in base.deb_paths():
            target = full / deb.name
            if not target.exists():
                _link_or_copy(deb, target)
        _chown_dirs(self.bsdir / "build" / project, self._cfg.bsuser, self._cfg.bsgroup)
        self._bs_admin("--rescan-repository", project, repo, arch)

    def _bs_admin(self, *args: str) -> None:
        proc = subprocess.run(
            [str(self.code_dir / "bs_admin"), *args],
            cwd=self.code_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise HarnessError(f"bs_admin {' '.join(args)} failed: {proc.stderr.strip()}")

    def _wait_full_scanned(self, project: str, repo: str, arch: str, timeout: float) -> None:
        """The scheduler writes the repository's solv cache when it has scanned :full."""
        repo_dir = self.bsdir / "build" / project / repo / arch
        wait_until(
            lambda: (repo_dir / ":full.solv").exists() or (repo_dir / ":bininfo").exists(),
            timeout,
            f"scheduler {arch} to scan {project}/{repo}",
            1.0,
            lambda: self._daemon_logs(),
        )

    def put_package_meta(
        self,
        project: str,
        name: str,
        build_archs: Sequence[str] | None = None,
        use_for_build: bool = True,
    ) -> None:
        """Create or change a package's meta: `build_archs` limits it to those
        scheduler architectures; `use_for_build=False` keeps its results out
        of other packages' build roots."""
        flags = (
            "<build><disable/>"
            + "".join(f"<enable arch={quoteattr(a)}/>" for a in build_archs)
            + "</build>"
            if build_archs is not None
            else ""
        )
        if not use_for_build:
            flags += "<useforbuild><disable/></useforbuild>"
        meta = (
            f"<package name={quoteattr(name)} project={quoteattr(project)}>"
            f"<title/><description/>{flags}</package>"
        )
        self.src("PUT", f"/source/{project}/{name}/_meta", data=meta.encode())

    def create_package(
        self,
        project: str,
        name: str,
        srcdir: Path | Sequence[Path],
        extra_files: Mapping[str, str | bytes] | None = None,
        build_archs: Sequence[str] | None = None,
        use_for_build: bool = True,
    ) -> str:
        """Upload a dsc package built from `srcdir` with dpkg-source, or given
        as its files (a .dsc and what it names); return the new srcmd5.

        `extra_files` go next to the .dsc, e.g. `{"_constraints": ...}`.
        `build_archs` and `use_for_build` go into its meta (put_package_meta).
        All files land in one commit, so the scheduler sees one new revision.
        """
        self.put_package_meta(project, name, build_archs, use_for_build)
        files: dict[str, bytes] = {
            k: v.encode() if isinstance(v, str) else v for k, v in (extra_files or {}).items()
        }
        if isinstance(srcdir, Path):
            with tempfile.TemporaryDirectory(prefix="obs-dsc-") as tmp:
                files.update({p.name: p.read_bytes() for p in build_dsc(srcdir, Path(tmp))})
        else:
            files.update({p.name: p.read_bytes() for p in srcdir})
        for filename, content in files.items():
            self.src("PUT", f"/source/{project}/{name}/{filename}", {"rev": "upload"}, content)
        answer = self.src(
            "POST",
            f"/source/{project}/{name}",
            {"cmd": "commit", "rev": "upload", "comment": "obs_backend upload"},
        )
        return ET.fromstring(answer).findtext("srcmd5") or ""

    def rebuild(
        self, project: str, package: str, arch: str | None = None, repo: str | None = None
    ) -> float:
        """Trigger a rebuild; returns the wall-clock time to pass to wait_build(since=...)."""
        params = [("cmd", "rebuild"), ("package", package)]
        params += [("arch", arch)] if arch else []
        params += [("repository", repo)] if repo else []
        now = time.time()
        self.src("POST", f"/build/{project}", params)
        return now

    # -- results -------------------------------------------------------------

    def package_status(
        self, project: str, repo: str, arch: str, package: str
    ) -> tuple[str, str, bool]:
        """(code, details, dirty) of one package from the srcserver's _result."""
        xml = self.src(
            "GET",
            f"/build/{project}/_result",
            [("repository", repo), ("arch", arch), ("package", package)],
        )
        for result in ET.fromstring(xml).findall("result"):
            dirty = result.get("dirty") is not None or result.get("state") == "scheduling"
            for status in result.findall("status"):
                if status.get("package") == package:
                    return status.get("code", ""), status.findtext("details") or "", dirty
        return "unknown", "", True

    def job_history(self, project: str, repo: str, arch: str, package: str) -> list[dict[str, str]]:
        xml = self.rep("GET", f"/build/{project}/{repo}/{arch}/_jobhistory", {"package": package})
        return [dict(e.attrib) for e in ET.fromstring(xml).findall("jobhist")]

    def wait_build(
        self,
        project: str,
        repo: str,
        arch: str,
        package: str,
        timeout: float,
        since: float | None = None,
        interval: float = 2.0,
    ) -> BuildResult:
        """Wait until one package reaches a final state (bounded by `timeout`).

        `since` is the time.time() at which the build was requested (rebuild()
        returns it): older results are ignored and wall time counts from it.
        """
        return self.wait_builds(project, repo, package, [arch], timeout, since, interval)[arch]

    def wait_builds(
        self,
        project: str,
        repo: str,
        package: str,
        archs: Sequence[str],
        timeout: float,
        since: float | None = None,
        interval: float = 2.0,
    ) -> dict[str, BuildResult]:
        """Wait for a package on several arches at once, so each wall time is
        measured when that arch finishes, not when the previous wait ended."""
        origin = since if since is not None else time.time()
        deadline = time.monotonic() + timeout
        results: dict[str, BuildResult] = {}
        while len(results) < len(archs):
            for arch in archs:
                if arch not in results:
                    result = self._final_result(project, repo, arch, package, since, origin)
                    if result:
                        results[arch] = result
            if len(results) == len(archs):
                break
            if time.monotonic() > deadline:
                pending = {
                    a: self.package_status(project, repo, a, package)[:2]
                    for a in archs
                    if a not in results
                }
                raise BuildTimeout(
                    f"{project}/{repo}/{package}: no final state after {timeout:.0f}s for "
                    f"{pending}; workers: {self.workerstatus()}"
                )
            time.sleep(interval)
        return results

    def _final_result(
        self, project: str, repo: str, arch: str, package: str, since: float | None, origin: float
    ) -> BuildResult | None:
        """The BuildResult if the package is in a final, fresh state, else None."""
        code, details, dirty = self.package_status(project, repo, arch, package)
        if code not in FINAL_STATES or dirty:
            return None
        if code == "broken" and details == NO_SOURCE_YET:
            # create_package writes the meta before its one commit; the
            # scheduler may report the package before it has seen the commit.
            return None
        job = self._last_job(project, repo, arch, package, since)
        if since is not None and job is None and code in ("succeeded", "failed"):
            return None  # still the result of an earlier build
        return BuildResult(
            status=code,
            wall_seconds=time.time() - origin,
            job_seconds=float(job["endtime"]) - float(job["starttime"]) if job else None,
            details=details,
            workerid=job.get("workerid", "") if job else "",
            hostarch=job.get("hostarch", "") if job else "",
        )

    def _last_job(
        self, project: str, repo: str, arch: str, package: str, since: float | None
    ) -> dict[str, str] | None:
        jobs = [
            j
            for j in self.job_history(project, repo, arch, package)
            if since is None or float(j.get("endtime", 0)) >= since
        ]
        return jobs[-1] if jobs else None

    def build_log(self, project: str, repo: str, arch: str, package: str) -> str:
        return self.rep("GET", f"/build/{project}/{repo}/{arch}/{package}/_log").decode(
            errors="replace"
        )

    def live_log(self, project: str, repo: str, arch: str, package: str) -> str:
        """The build log so far; of a job being built, the worker's copy
        (`nostream`: the repserver would otherwise stream until the build ends)."""
        path = f"/build/{project}/{repo}/{arch}/{package}/_log"
        return self.rep("GET", path, {"nostream": "1"}).decode(errors="replace")

    def fetch_binaries(
        self, project: str, repo: str, arch: str, package: str, dest: Path, pattern: str = "*"
    ) -> list[Path]:
        """Download a package's built files (matching `pattern`) into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        listing = ET.fromstring(self.rep("GET", f"/build/{project}/{repo}/{arch}/{package}"))
        paths = []
        for binary in listing.findall("binary"):
            name = binary.get("filename", "")
            if name and fnmatch.fnmatch(name, pattern):
                target = dest / name
                target.write_bytes(
                    self.rep("GET", f"/build/{project}/{repo}/{arch}/{package}/{name}")
                )
                paths.append(target)
        return paths

    def workerstatus(self) -> WorkerStatus:
        """Workers (idle/building/down...) and per-arch waiting jobs, from the repserver."""
        return parse_workerstatus(self.rep("GET", "/workerstatus", timeout=30))

    # -- workers -------------------------------------------------------------

    def fetch_worker_code(self, boot_dir: Path | None = None) -> Path:
        """The worker code this backend serves (it binds loopback, like the daemons)."""
        return fetch_worker_code(self.reposerver, boot_dir or self.worker_dir / "boot")

    def start_host_worker(
        self,
        boot_dir: Path,
        instance_id: int,
        arch: str,
        port: int,
        *,
        jobs: int = 1,
        cachesize_mb: int = 4096,
        hostlabels: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> HostWorker:
        """Start a worker against this backend; it is stopped with the backend."""
        worker = start_host_worker(
            boot_dir,
            instance_id,
            arch,
            port,
            reposerver=self.reposerver,
            workdir=self.worker_dir,
            jobs=jobs,
            cachesize_mb=cachesize_mb,
            hostlabels=hostlabels,
            timeout=timeout,
            status=self.workerstatus,
        )
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker: HostWorker) -> None:
        worker.stop()
        self.workers.remove(worker)


# ---------------------------------------------------------------------------
# Helpers used by ObsBackend
# ---------------------------------------------------------------------------


def debian_prjconf(
    preinstall: Sequence[str], required: Sequence[str] = debian_base.BUILD_PACKAGES
) -> str:
    """Project config for a Debian base project (see LAB-NOTES)."""
    ignores = "".join(f"Ignore: {name}\n" for name in debian_base.IGNORED_PACKAGES)
    return (
        "Repotype: debian\n"
        "Type: dsc\n"
        "Binarytype: deb\n"
        "Patterntype: none\n"
        "Order: base-passwd:base-files\n"
        f"Preinstall: {' '.join(preinstall)}\n"
        f"Required: {' '.join(required)}\n"
        f"{ignores}"
        # usr-is-merged's preinst fails: OBS build roots are not merged-/usr.
        "Ignore: init-system-helpers:usr-is-merged\n"
        "Prefer: mawk\n"
    )


def arch_hostlabel(arch: str) -> str:
    """Host label start_host_worker(hostlabels=...) gives a worker dedicated to `arch`."""
    return f"obs-harness-{arch}"


def pin_arches_constraints(archs: Iterable[str]) -> str:
    """A package `_constraints` sending each arch's jobs to workers labelled for it.

    bs_dispatch lets an aarch64 worker take armv7l jobs (BSCando, through
    linux32); without pinning, which worker builds what is a race, and the
    armv7l worker may never be exercised.
    """
    overwrites = "".join(
        f"<overwrite><conditions><arch>{a}</arch></conditions>"
        f"<hostlabel>{arch_hostlabel(a)}</hostlabel></overwrite>"
        for a in archs
    )
    return f"<constraints>{overwrites}</constraints>\n"


def build_dsc(srcdir: Path, outdir: Path) -> list[Path]:
    """Run dpkg-source -b on a copy of `srcdir`; return the .dsc and its files."""
    work = outdir / srcdir.name
    shutil.copytree(srcdir, work, symlinks=True)
    proc = subprocess.run(
        ["dpkg-source", "-b", work.name], cwd=outdir, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise HarnessError(f"dpkg-source -b {srcdir} failed:\n{proc.stderr}")
    shutil.rmtree(work)
    files = sorted(p for p in outdir.iterdir() if p.is_file())
    if not any(p.suffix == ".dsc" for p in files):
        raise HarnessError(f"dpkg-source produced no .dsc from {srcdir}")
    return files


def _copy_server_code(src: Path, dst: Path) -> None:
    """Copy the server code; re-point symlinks that would dangle in the copy.

    The package's `build -> ../../obs-build` and `BSConfig.pm -> /etc/obs/...`
    are relative to /usr/lib/obs/server; internal links such as
    worker/BSServer.pm -> ../BSServer.pm must keep pointing into the copy so
    that the worker code served by the repserver carries the loopback patch.
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    (dst / "BSConfig.pm").unlink()  # replaced by the rendered config
    for link in _walk_symlinks(dst):
        target = Path(os.path.normpath(link.parent / os.readlink(link)))
        if not target.is_relative_to(dst) or not os.path.lexists(target):
            rel = link.relative_to(dst)
            link.unlink()
            link.symlink_to((src / rel).resolve())


def _walk_symlinks(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                yield path


def _check_traversable(path: Path, user: str) -> None:
    """The daemons drop to `user`: every ancestor must let it through."""
    if user == "root":
        return
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & 0o001 and not _owned_by(parent, user):
            raise HarnessError(
                f"{parent} (mode {oct(mode & 0o777)}) is not traversable by {user}; "
                "use a workdir under a world-searchable directory"
            )


def _owned_by(path: Path, user: str) -> bool:
    try:
        return path.owner() == user
    except KeyError:
        return False


def _chown_dirs(root: Path, user: str, group: str) -> None:
    """The scheduler writes its caches next to :full; the .debs only need to be
    readable (and may be hard links into the shared cache, so leave them be)."""
    for dirpath, _dirnames, _filenames in os.walk(root):
        shutil.chown(dirpath, user, group)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link from the cache when possible (cheap); copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)
