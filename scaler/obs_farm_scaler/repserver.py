"""The OBS backend as the scaler sees it: /workerstatus, and draining a machine.

Drain mechanism (read in obs-server 2.9.4's bs_repserver, bs_dispatch and
bs_worker; 2.10 is the same in these places):

- The scaler runs on the server and cannot run `bs_worker --exit` or write a
  worker's `nextstate=exit` state file: both need the worker machine's
  statedir. bs_worker's own HTTP interface has no exit or drain call (its
  routes are /info, /worker, /logfile, /kill, /discard, /kiwitree, PUT
  /build), and the repserver's `/worker?state=exit` is a `!worker` route that
  the server's $ipaccess does not grant to 127.0.0.1 (it is `rw` only).
- So the scaler does on the server's disk what the repserver itself does:
  1. a `$bsdir/workers/disable/<host>:` entry. bs_repserver matches each name
     there as a prefix of the worker id whenever a worker reports idle and
     files that worker under `down` instead of `idle`, so a drained worker
     that finishes a build, restarts or re-reports (every 300 s) never
     becomes dispatchable again. The trailing ':' keeps `vm1` from matching
     `vm10`.
  2. it moves the machine's entries from `workers/idle/` to `workers/down/`
     with rename(2), exactly as bs_repserver's updateworkerdata does for a
     disabled or exiting worker and as bs_dispatch does for a worker it
     cannot reach. bs_dispatch re-reads `workers/idle/<name>` right before it
     sends a job (assignjob: "worker is gone!"), so from then on no new job
     goes to the machine; a dispatch already past that read finishes within
     its 10 s PUT timeout and shows as <building>, which the decision's
     CONFIRM_SECONDS wait and re-check catch.
  The workers keep running; the machine is deleted afterwards. This needs
  write access to `$bsdir/workers` (the scaler runs as root or obsrun).
"""

from __future__ import annotations

import os
import re
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from .model import Worker, WorkerStatus

# Worker hosts are hostnames (Azure computer names, EC2 instance ids); the
# disable entry's name is used by bs_repserver as a regular expression.
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
MARK = "obs-farm-scaler\n"
STATES = ("idle", "building", "down", "dead", "away")


class RepserverError(RuntimeError):
    pass


def parse_workerstatus(xml: bytes) -> WorkerStatus:
    """BSXML::workerstatus; <blocked> jobs need no capacity and are skipped."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise RepserverError(f"/workerstatus is not XML: {e}") from e
    if root.tag != "workerstatus":
        raise RepserverError(f"/workerstatus answered <{root.tag}>, not <workerstatus>")
    workers: list[Worker] = []
    waiting: dict[str, int] = {}
    for el in root:
        a = el.attrib
        if el.tag in STATES:
            wid = a.get("workerid") or a.get("uri", "")
            workers.append(Worker(wid, el.tag, a.get("hostarch", ""), a.get("uri", "")))
        elif el.tag == "waiting":
            waiting[a["arch"]] = waiting.get(a["arch"], 0) + int(a.get("jobs", "0"))
    return WorkerStatus(tuple(workers), waiting)


def fetch_workerstatus(repserver: str, timeout: float = 10.0) -> WorkerStatus:
    try:
        with urllib.request.urlopen(f"{repserver}/workerstatus", timeout=timeout) as resp:
            body = resp.read()
    except OSError as e:
        raise RepserverError(f"{repserver}/workerstatus: {e}") from e
    return parse_workerstatus(body)


class Workers:
    """`$bsdir/workers`: drain a machine, and clean up after it is gone."""

    def __init__(self, bsdir: str | Path):
        self.dir = Path(bsdir) / "workers"

    def _mkdir(self, name: str) -> Path:
        path = self.dir / name
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            st = self.dir.stat()
            os.chown(path, st.st_uid, st.st_gid)
        return path

    @staticmethod
    def _check(host: str) -> None:
        if not HOST_RE.match(host):
            raise ValueError(f"refusing to drain host {host!r}: not a plain hostname")

    def _entries(self, state: str, host: str) -> list[Path]:
        """`workers/<state>/<hostarch>:<host>:<arch>-<n>` files of a host."""
        d = self.dir / state
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.name.split(":", 1)[-1].startswith(f"{host}:"))

    def drain(self, host: str) -> list[str]:
        """Stop OBS dispatching to `host`; returns the worker entries moved to down."""
        self._check(host)
        entry = self._mkdir("disable") / f"{host}:"
        tmp = entry.with_name(f".{host}.tmp")
        tmp.write_text(MARK)
        st = self.dir.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
        tmp.replace(entry)
        down = self._mkdir("down")
        moved = []
        for p in self._entries("idle", host):
            try:
                p.rename(down / p.name)
                moved.append(p.name)
            except FileNotFoundError:
                pass  # the dispatcher took it (-> building) or the worker re-reported
        return moved

    def drained_hosts(self) -> set[str]:
        d = self.dir / "disable"
        if not d.is_dir():
            return set()
        hosts = set()
        for p in d.iterdir():
            if p.name.endswith(":") and p.read_text(errors="replace") == MARK:
                hosts.add(p.name[:-1])
        return hosts

    @staticmethod
    def _kind(entry: Path) -> tuple[str, tuple[str, ...]]:
        """(hostarch, host labels) of a `workers/<state>/` entry."""
        hostarch = entry.name.split(":", 1)[0]
        try:
            root = ET.fromstring(entry.read_bytes())
        except (OSError, ET.ParseError):
            return hostarch, ()
        return hostarch, tuple(sorted(h.text or "" for h in root.findall("hostlabel")))

    def forget(self, host: str) -> None:
        """After the machine is gone: our disable entry, and its down entries
        except the last of their kind.

        bs_dispatch (checkconstraints) fails a job at once when no registered
        worker (idle, building, away or down) satisfies its _constraints. So
        one down entry per (hostarch, host labels) stays, which keeps a job
        pinned to a pool that shrank to zero waiting for the scaler instead of
        failed. The scaler ignores it: no cloud lists its host.
        """
        self._check(host)
        others: set[tuple[str, tuple[str, ...]]] = set()
        for state in ("idle", "building", "away", "down"):
            d = self.dir / state
            if d.is_dir():
                others |= {
                    self._kind(p)
                    for p in d.iterdir()
                    if not p.name.startswith(".")
                    and not p.name.split(":", 1)[-1].startswith(f"{host}:")
                }
        for state in ("down", "dead"):
            for p in self._entries(state, host):
                kind = self._kind(p)
                if state == "down" and kind not in others:
                    others.add(kind)  # the last of its kind stays
                    continue
                p.unlink(missing_ok=True)
        (self.dir / "disable" / f"{host}:").unlink(missing_ok=True)
