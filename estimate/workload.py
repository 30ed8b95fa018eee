"""Workloads: what a rebuild of an archive asks of the farm (pure data).

A workload file (`workloads/<name>.yaml`) lists repositories with their
architectures and package counts, and either

- `buildMinutes`: a distribution of native build minutes (lognormal, with
  its calibration written next to it), turned into one deterministic job
  list by quantiles: package i of n gets the (i + 0.5) / n quantile, the
  same minutes for each architecture it is built for; or
- `jobs`: measured minutes per package and architecture, as
  `tools/jobhistory.py` imports them from an OBS job history, with
  `measured` saying how each architecture was built (`native` or
  `emulated`; emulated minutes are turned back into native minutes with
  the model's emulation slowdown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

WORKLOAD_DIR = Path(__file__).resolve().parents[1] / "workloads"
ARCHS = ("x86_64", "armv7hl", "aarch64")
# OBS scheduler architecture -> repository architecture (obs-farm's names).
ARCH_ALIASES = {"armv7l": "armv7hl", "x86_64": "x86_64", "aarch64": "aarch64", "armv7hl": "armv7hl"}


class WorkloadError(ValueError):
    """A workload file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Repository:
    name: str
    architectures: tuple[str, ...]
    packages: int


@dataclass(frozen=True)
class Job:
    repository: str
    arch: str
    package: str
    # Native build minutes (x86-64 vCPU at jobsPerInstance = reference_jobs).
    minutes: float
    # When the job enters the queue, in minutes from the rebuild's start (the
    # model's default: everything at once).
    ready_minutes: float = 0.0


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    repositories: tuple[Repository, ...]
    jobs: tuple[Job, ...]
    # `make -j` the minutes were measured or calibrated at.
    reference_jobs: int
    source: Path | None = None

    def jobs_for(self, arch: str) -> list[Job]:
        return [j for j in self.jobs if j.arch == arch]

    @property
    def architectures(self) -> tuple[str, ...]:
        present = {j.arch for j in self.jobs}
        return tuple(a for a in ARCHS if a in present)

    @property
    def build_count(self) -> int:
        return len(self.jobs)


def lognormal_minutes(n: int, median: float, sigma: float, cap: float) -> list[float]:
    """n quantiles of a lognormal distribution, longest first, capped at `cap`."""
    dist = NormalDist()
    values = [min(cap, median * math.exp(sigma * dist.inv_cdf((i + 0.5) / n))) for i in range(n)]
    return sorted(values, reverse=True)


def _req(doc: dict[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise WorkloadError(f"{where}: `{key}` is required")
    return doc[key]


def _number(value: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
        raise WorkloadError(f"{where} must be a number above {minimum:g}; got {value!r}")
    return float(value)


def _arch(value: Any, where: str) -> str:
    if value not in ARCH_ALIASES:
        raise WorkloadError(f"{where} must be one of {', '.join(ARCHS)}; got {value!r}")
    return ARCH_ALIASES[value]


def parse_workload(doc: Any, name: str, source: Path | None = None) -> Workload:
    where = str(source or name)
    if not isinstance(doc, dict):
        raise WorkloadError(f"{where}: must be a YAML mapping")
    repos = []
    for i, r in enumerate(_req(doc, "repositories", where) or []):
        rw = f"{where}: repositories[{i}]"
        if not isinstance(r, dict):
            raise WorkloadError(f"{rw} must be a mapping")
        archs = tuple(_arch(a, f"{rw}.architectures") for a in _req(r, "architectures", rw))
        count = _req(r, "packages", rw)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise WorkloadError(f"{rw}.packages must be a whole number; got {count!r}")
        repos.append(Repository(str(_req(r, "name", rw)), archs, count))
    if not repos:
        raise WorkloadError(f"{where}: `repositories` lists nothing")
    ref_jobs = doc.get("referenceJobsPerInstance", 2)
    if isinstance(ref_jobs, bool) or not isinstance(ref_jobs, int) or ref_jobs < 1:
        raise WorkloadError(f"{where}: referenceJobsPerInstance must be an integer >= 1")
    if ("buildMinutes" in doc) == ("jobs" in doc):
        raise WorkloadError(f"{where}: give exactly one of `buildMinutes` and `jobs`")
    if "buildMinutes" in doc:
        jobs = _synthetic_jobs(doc["buildMinutes"], repos, f"{where}: buildMinutes")
    else:
        jobs = _measured_jobs(doc["jobs"], repos, f"{where}: jobs")
    return Workload(
        name=str(doc.get("name", name)),
        description=str(doc.get("description", "")).strip(),
        repositories=tuple(repos),
        jobs=tuple(jobs),
        reference_jobs=ref_jobs,
        source=source,
    )


def _synthetic_jobs(spec: Any, repos: list[Repository], where: str) -> list[Job]:
    if not isinstance(spec, dict) or spec.get("distribution") != "lognormal":
        raise WorkloadError(f"{where}.distribution must be lognormal")
    median = _number(_req(spec, "medianMinutes", where), f"{where}.medianMinutes")
    sigma = _number(_req(spec, "sigma", where), f"{where}.sigma")
    cap = _number(_req(spec, "maxMinutes", where), f"{where}.maxMinutes")
    jobs = []
    for repo in repos:
        minutes = lognormal_minutes(repo.packages, median, sigma, cap)
        for i, m in enumerate(minutes):
            jobs += [Job(repo.name, a, f"{repo.name}-{i:05d}", m) for a in repo.architectures]
    return jobs


def _measured_jobs(entries: Any, repos: list[Repository], where: str) -> list[Job]:
    known = {r.name: r for r in repos}
    jobs = []
    for i, e in enumerate(entries or []):
        ew = f"{where}[{i}]"
        if not isinstance(e, dict):
            raise WorkloadError(f"{ew} must be a mapping")
        repo = str(_req(e, "repository", ew))
        if repo not in known:
            raise WorkloadError(f"{ew}.repository {repo!r} is not in `repositories`")
        arch = _arch(_req(e, "arch", ew), f"{ew}.arch")
        if arch not in known[repo].architectures:
            raise WorkloadError(f"{ew}.arch {arch} is not an architecture of {repo}")
        minutes = _number(_req(e, "minutes", ew), f"{ew}.minutes")
        jobs.append(Job(repo, arch, str(_req(e, "package", ew)), minutes))
    if not jobs:
        raise WorkloadError(f"{where} lists nothing")
    return jobs


def load_workload(name_or_path: str, directory: Path = WORKLOAD_DIR) -> Workload:
    """A workload by name (workloads/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise WorkloadError(
            f"no workload {name_or_path!r}: not a file, and workloads/ has {', '.join(known)}"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise WorkloadError(f"{path}: not valid YAML ({err})") from None
    return parse_workload(doc, path.stem, path)
