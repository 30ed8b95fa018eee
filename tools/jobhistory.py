"""Turn OBS job histories into a workload file of per-package native minutes.

    python -m tools.jobhistory --name NAME [--out FILE] [--emulated ARCH ...]
        REPOSITORY/ARCH=HISTORY.xml [REPOSITORY/ARCH=HISTORY.xml ...]

Each HISTORY.xml is what the OBS API (or the repserver) answers to
`GET /build/<project>/<repository>/<arch>/_jobhistory?limit=N`: a
`<jobhistlist>` of `<jobhist package= starttime= endtime= code= .../>`.
Give a large `limit`: the backend returns only the last 100 jobs without one
(bs_repserver's getjobhistory). For each package the last `succeeded` job
counts; failed and unfinished jobs are left out (and counted in the file's
description). `--emulated ARCH` says that ARCH was built under qemu on the
farm the history comes from: its minutes are divided by the model's
emulation slowdown to give native minutes.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml

from estimate.slowdowns import EMULATED
from estimate.workload import ARCH_ALIASES, WORKLOAD_DIR, WorkloadError, parse_workload


@dataclass(frozen=True)
class HistoryEntry:
    package: str
    code: str
    starttime: int
    endtime: int
    workerid: str

    @property
    def minutes(self) -> float:
        return (self.endtime - self.starttime) / 60.0


def parse_jobhistory(xml: bytes | str) -> list[HistoryEntry]:
    """The jobs of one `_jobhistory` answer, oldest first (as OBS lists them)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise WorkloadError(f"job history is not XML ({err})") from None
    if root.tag != "jobhistlist":
        raise WorkloadError(f"job history must be a <jobhistlist>; got <{root.tag}>")
    entries = []
    for e in root.findall("jobhist"):
        try:
            start, end = int(e.get("starttime", "")), int(e.get("endtime", ""))
        except ValueError:
            continue  # a job without times tells nothing about duration
        entries.append(
            HistoryEntry(e.get("package", ""), e.get("code", ""), start, end, e.get("workerid", ""))
        )
    return entries


def last_successes(entries: list[HistoryEntry]) -> dict[str, HistoryEntry]:
    """Package -> its last succeeded job (later entries win)."""
    out: dict[str, HistoryEntry] = {}
    for e in entries:
        if e.code == "succeeded" and e.endtime > e.starttime and e.package:
            out[e.package] = e
    return out


def build_workload(
    name: str, histories: dict[tuple[str, str], bytes], emulated: set[str]
) -> dict[str, object]:
    """Workload document from {(repository, arch): history XML}."""
    jobs: list[dict[str, object]] = []
    archs: dict[str, list[str]] = {}
    counts: dict[str, set[str]] = {}
    skipped = 0
    for (repo, raw_arch), xml in sorted(histories.items()):
        arch = ARCH_ALIASES.get(raw_arch)
        if arch is None:
            allowed = ", ".join(sorted(ARCH_ALIASES))
            raise WorkloadError(f"{repo}/{raw_arch}: architecture must be one of {allowed}")
        entries = parse_jobhistory(xml)
        best = last_successes(entries)
        skipped += len({e.package for e in entries} - set(best))
        factor = EMULATED[arch].factor if arch in emulated else 1.0
        archs.setdefault(repo, []).append(arch)
        counts.setdefault(repo, set()).update(best)
        for package, e in sorted(best.items()):
            jobs.append(
                {
                    "repository": repo,
                    "arch": arch,
                    "package": package,
                    "minutes": round(e.minutes / factor, 3),
                }
            )
    note = (
        f"Imported by tools/jobhistory.py on {datetime.date.today().isoformat()} from "
        f"{len(histories)} job histories: the last succeeded job of each package; "
        f"{skipped} package(s) without a succeeded job left out."
    )
    if emulated:
        note += (
            " Built under emulation there, divided by the model's slowdown: "
            + ", ".join(f"{a} /{EMULATED[a].factor:g}" for a in sorted(emulated))
            + "."
        )
    return {
        "name": name,
        "description": note,
        "referenceJobsPerInstance": 2,
        "repositories": [
            {"name": r, "architectures": a, "packages": len(counts[r])} for r, a in archs.items()
        ],
        "jobs": jobs,
    }


def _parse_source(text: str) -> tuple[str, str, Path]:
    spec, sep, file = text.partition("=")
    repo, slash, arch = spec.partition("/")
    if not sep or not slash or not repo or not arch:
        raise WorkloadError(f"expected REPOSITORY/ARCH=FILE; got {text!r}")
    return repo, arch, Path(file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobhistory", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", metavar="REPOSITORY/ARCH=FILE")
    parser.add_argument("--name", required=True, help="workload name")
    parser.add_argument("--out", type=Path, help="output file (default workloads/NAME.yaml)")
    parser.add_argument(
        "--emulated",
        action="append",
        default=[],
        metavar="ARCH",
        help="ARCH was built under qemu in this history (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        histories = {}
        for text in args.sources:
            repo, arch, path = _parse_source(text)
            histories[(repo, arch)] = path.read_bytes()
        emulated = {ARCH_ALIASES.get(a, a) for a in args.emulated}
        bad = sorted(emulated - set(EMULATED))
        if bad:
            raise WorkloadError(f"--emulated must name {', '.join(EMULATED)}; got {bad}")
        doc = build_workload(args.name, histories, emulated)
        parse_workload(doc, args.name)  # what we write must load
    except (WorkloadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or WORKLOAD_DIR / f"{args.name}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    print(f"wrote {out}: {len(doc['jobs'])} jobs")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
