"""Per-architecture sets of Debian bookworm .debs for an OBS `:full` tree.

An OBS build root is assembled by the worker from binary packages the
scheduler finds in the base project's `:full` directory.  For a Debian base
that is "minbase" (Priority required + Essential) plus the build toolchain and
their dependency closure.  We resolve that closure with the host's own apt,
pointed at private state directories and told to pretend it runs on the
target architecture, so no dpkg foreign-architecture is added to the host and
the archive address is only ever read from the host's apt configuration
(never written into this repository).

The result is cached under `$OBS_FARM_TEST_CACHE/obs-lab/debian-base/<arch>/<key>/`, where
the key hashes the requested package list and the host's apt sources, so a
second run is instant and a changed package list triggers a fresh download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: OBS scheduler architecture -> Debian architecture.
OBS_TO_DEBIAN_ARCH: dict[str, str] = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
}

#: What a dsc build needs on top of minbase.
BUILD_PACKAGES: tuple[str, ...] = ("build-essential", "dpkg-dev", "fakeroot")

#: Requested explicitly so apt satisfies `usrmerge | usr-is-merged` with the
#: inert metapackage instead of usrmerge (which converts the root on install).
EXTRA_PACKAGES: tuple[str, ...] = ("usr-is-merged",)

#: Packages the prjconf tells OBS to ignore; they never enter Preinstall.
IGNORED_PACKAGES: tuple[str, ...] = ("usr-is-merged",)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Outside the clone, so a fresh clone (CI) reuses what an earlier run built;
# entries are keyed by a hash of their recipe and rebuilt when absent.
TEST_CACHE = Path(os.environ.get("OBS_FARM_TEST_CACHE", "/var/cache/obs-farm-tests"))
DEFAULT_CACHE_ROOT = TEST_CACHE / "obs-lab"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
CACHE_FORMAT = 1

_CONTROL_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Priority",
    "Essential",
    "Depends",
    "Pre-Depends",
    "Provides",
)


class DebianBaseError(RuntimeError):
    """Raised when the base package set cannot be resolved or downloaded."""


@dataclass(frozen=True)
class DebPackage:
    """Control data of one downloaded .deb, enough to compute closures."""

    name: str
    version: str
    arch: str
    filename: str
    priority: str = ""
    essential: bool = False
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""


@dataclass(frozen=True)
class BaseSet:
    """A complete, cached set of .debs for one Debian architecture."""

    debian_arch: str
    debs_dir: Path
    packages: tuple[DebPackage, ...]

    def deb_paths(self) -> list[Path]:
        """Absolute paths of all .debs, sorted by file name."""
        return sorted(self.debs_dir / p.filename for p in self.packages)

    def names(self) -> set[str]:
        """Binary package names in the set."""
        return {p.name for p in self.packages}

    def preinstall(self, ignore: Iterable[str] = IGNORED_PACKAGES) -> list[str]:
        """Priority-required/Essential packages plus their dependency closure."""
        return preinstall_closure(self.packages, ignore)


def obs_to_debian_arch(arch: str) -> str:
    """Map an OBS scheduler arch (x86_64, aarch64, armv7l) to Debian's name."""
    if arch in OBS_TO_DEBIAN_ARCH.values():
        return arch
    try:
        return OBS_TO_DEBIAN_ARCH[arch]
    except KeyError:
        raise DebianBaseError(f"no Debian architecture known for OBS arch {arch!r}") from None


def host_sources_text(path: Path = HOST_SOURCES) -> str:
    """The host's deb822 apt sources; the only place the archive is named."""
    if not path.is_file():
        raise DebianBaseError(f"{path} not found: cannot tell which Debian archive to use")
    text = path.read_text()
    if not re.search(r"^Suites:.*\bbookworm\b", text, re.M):
        raise DebianBaseError(f"{path} has no bookworm suite")
    return text


def cache_key(debian_arch: str, packages: Sequence[str], sources: str) -> str:
    """Stable key: changes when the package list, arch or sources change."""
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "arch": debian_arch,
            "packages": sorted(set(packages)),
            "sources": sources,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_base(
    arch: str,
    packages: Sequence[str] = BUILD_PACKAGES + EXTRA_PACKAGES,
    cache_root: Path = DEFAULT_CACHE_ROOT,
) -> BaseSet:
    """Return the cached base set for `arch`, downloading it on a cache miss.

    `arch` may be an OBS or a Debian architecture name.  `packages` are added
    to the Priority-required/Essential set of that architecture.
    """
    debian_arch = obs_to_debian_arch(arch)
    sources = host_sources_text()
    key = cache_key(debian_arch, packages, sources)
    target = cache_root / "debian-base" / debian_arch / key
    manifest = target / "manifest.json"
    if manifest.is_file():
        return _load_manifest(debian_arch, target)
    apt = _PrivateApt(cache_root / "apt" / debian_arch, debian_arch)
    apt.update()
    wanted = sorted(set(apt.required_and_essential()) | set(packages))

    def fill(staging: Path) -> None:
        apt.download(wanted, staging)
        _write_manifest(staging, debian_arch, wanted, _scan_debs(staging))

    _publish(target, fill)
    return _load_manifest(debian_arch, target)


def ensure_exact(
    arch: str, packages: Sequence[str], cache_root: Path = DEFAULT_CACHE_ROOT
) -> list[Path]:
    """The named packages of `arch` alone, without their dependencies (e.g. a
    cross toolchain to take binaries from), cached like ensure_base."""
    debian_arch = obs_to_debian_arch(arch)
    key = cache_key(debian_arch, packages, host_sources_text())
    target = cache_root / "exact" / debian_arch / key
    if not (target / "complete").is_file():
        apt = _PrivateApt(cache_root / "apt" / debian_arch, debian_arch)
        apt.update()

        def fill(staging: Path) -> None:
            apt.fetch(packages, staging)
            (staging / "complete").write_text("\n".join(sorted(packages)) + "\n")

        _publish(target, fill)
    return sorted(target.glob("*.deb"))


def ensure_source(name: str, version: str, cache_root: Path = DEFAULT_CACHE_ROOT) -> list[Path]:
    """A real Debian source package (its .dsc and the files it names), as
    `apt-get source --download-only NAME=VERSION` fetches it with private apt
    state: apt checks every file against the signed Sources index. Cached
    like ensure_base; the host's sources are read, with `Types: deb-src`."""
    sources = re.sub(r"^Types:.*$", "Types: deb-src", host_sources_text(), flags=re.M)
    key = cache_key("source", [f"{name}={version}"], sources)
    target = cache_root / "sources" / name / key
    if not (target / "complete").is_file():
        root = _mkdir(cache_root / "apt" / "source")
        listing = root / "debian-src.sources"
        listing.write_text(sources)
        apt = _PrivateApt(root, "amd64", sources=listing)
        apt.update()

        def fill(staging: Path) -> None:
            apt.run("apt-get", "source", "--download-only", "-q", f"{name}={version}", cwd=staging)
            (staging / "complete").write_text(f"{name}={version}\n")

        _publish(target, fill)
    return sorted(p for p in target.iterdir() if p.name != "complete")


def source_build_depends(source: Path) -> list[str]:
    """Binary package names a source package's build needs as obs-build
    reads them, from its .dsc or its debian/control (only the source stanza
    has Build-Depends fields): every Build-Depends field (Indep too:
    obs-build 20210120 installs it), no build profile counted out, the first
    of each set of alternatives. Virtual names (debhelper-compat) are left
    for apt to resolve."""
    fields = parse_control(source.read_text())
    relations = ", ".join(
        fields.get(f, "") for f in ("Build-Depends", "Build-Depends-Arch", "Build-Depends-Indep")
    )
    names = set()
    for group in relations.split(","):
        first = group.split("|")[0].strip()
        if first:
            names.add(re.split(r"[\s(\[<:]", first, maxsplit=1)[0])
    return sorted(names)


def _publish(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a staging directory beside `target`, then rename it into place, so
    an interrupted download never looks complete; older keys are pruned."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=_mkdir(target.parent)))
    try:
        fill(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune_other_keys(target)


def _prune_other_keys(keep: Path) -> None:
    """Drop sets cached for an older package list, so the cache stays bounded."""
    for sibling in keep.parent.iterdir():
        if sibling != keep and sibling.is_dir() and not sibling.name.startswith("."):
            shutil.rmtree(sibling, ignore_errors=True)


def preinstall_closure(
    packages: Iterable[DebPackage], ignore: Iterable[str] = IGNORED_PACKAGES
) -> list[str]:
    """Names of required/Essential packages and everything they depend on.

    OBS installs Preinstall packages by unpacking them before anything else,
    so the list must be closed under Depends/Pre-Depends.  Alternatives are
    resolved to the first one present in the set (what apt picked).
    """
    pkgs = {p.name: p for p in packages}
    providers = _providers(pkgs.values())
    ignored = set(ignore)
    todo = [p.name for p in pkgs.values() if p.priority == "required" or p.essential]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in ignored:
            continue
        seen.add(name)
        pkg = pkgs[name]
        for group in _dependency_groups(pkg.pre_depends, pkg.depends):
            choice = _pick_alternative(group, pkgs, providers, ignored)
            if choice and choice not in seen:
                todo.append(choice)
    return sorted(seen)


# -- apt in private directories ---------------------------------------------


class _PrivateApt:
    """The host's apt with its own lists/status/archives for one Debian arch.

    The host's apt.conf.d stays in effect (proxies, snapshot validity
    settings); only sources, state and cache locations are redirected.
    """

    def __init__(self, root: Path, debian_arch: str, sources: Path = HOST_SOURCES) -> None:
        self.root = root
        self.arch = debian_arch
        self.sources = sources
        for sub in ("lists/partial", "archives/partial", "no-source-parts"):
            _mkdir(root / sub)
        (root / "status").touch()

    def _options(self, archives: Path | None = None) -> list[str]:
        archives = archives or self.root / "archives"
        opts = {
            "APT::Architecture": self.arch,
            "APT::Architectures::": self.arch,
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": self.root / "status",
            "Dir::State::extended_states": self.root / "extended_states",
            "Dir::Cache::Archives": archives,
            # The host file is read in place: the archive address is not copied.
            "Dir::Etc::SourceList": self.sources,
            "Dir::Etc::SourceParts": self.root / "no-source-parts",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "APT::Sandbox::User": "root",
            "APT::Install-Recommends": "false",
            "Debug::NoLocking": "true",
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def run(
        self, tool: str, *args: str, archives: Path | None = None, cwd: Path | None = None
    ) -> str:
        cmd = [tool, *self._options(archives), *args]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, cwd=cwd)
        if proc.returncode != 0:
            raise DebianBaseError(
                f"{tool} {args[0]} for {self.arch} failed "
                f"({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def update(self, attempts: int = 3) -> None:
        """Fetch the Packages indexes of the target architecture.

        Retried because a mirror caught mid-sync serves indexes whose size
        does not match the Release file for a while.  If only an update or
        security suite stays broken, carry on with the release suite: the
        toolchain is complete without point updates, so a build test must not
        fail over them.
        """
        for attempt in range(1, attempts + 1):
            try:
                self.run("apt-get", "update", "-q", "-o", "Acquire::Retries=3")
                return
            except DebianBaseError as err:
                if attempt < attempts:
                    time.sleep(5 * attempt)
                elif self._has_release_index():
                    warnings.warn(
                        f"continuing without some {self.arch} indexes: {err}", stacklevel=2
                    )
                else:
                    raise

    def _has_release_index(self) -> bool:
        pattern = re.compile(rf"_dists_bookworm_main_binary-{re.escape(self.arch)}_Packages")
        return any(pattern.search(p.name) for p in (self.root / "lists").iterdir())

    def required_and_essential(self) -> list[str]:
        """Candidate packages with Priority required or Essential: yes (minbase)."""
        names = []
        for stanza in self.run("apt-cache", "dumpavail").split("\n\n"):
            fields = parse_control(stanza)
            if fields.get("Priority") == "required" or fields.get("Essential") == "yes":
                names.append(fields["Package"])
        if not names:
            raise DebianBaseError(f"no required packages found for {self.arch}")
        return sorted(set(names))

    def fetch(self, packages: Sequence[str], dest: Path) -> None:
        """Download exactly these packages' candidate .debs into `dest`."""
        self.run("apt-get", "download", *packages, cwd=dest)

    def download(self, packages: Sequence[str], dest: Path) -> None:
        """Resolve the closure as if installing into an empty root; keep .debs."""
        _mkdir(dest / "partial")
        self.run("apt-get", "install", "-y", "-q", "--download-only", *packages, archives=dest)
        (dest / "partial").rmdir()
        (dest / "lock").unlink(missing_ok=True)


# -- manifest ---------------------------------------------------------------


def _scan_debs(directory: Path) -> list[DebPackage]:
    """Read each .deb's control fields with dpkg-deb."""
    debs = []
    for path in sorted(directory.glob("*.deb")):
        out = subprocess.run(
            ["dpkg-deb", "--field", str(path), *_CONTROL_FIELDS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        f = parse_control(out)
        debs.append(
            DebPackage(
                name=f["Package"],
                version=f["Version"],
                arch=f["Architecture"],
                filename=path.name,
                priority=f.get("Priority", ""),
                essential=f.get("Essential") == "yes",
                depends=f.get("Depends", ""),
                pre_depends=f.get("Pre-Depends", ""),
                provides=f.get("Provides", ""),
            )
        )
    if not debs:
        raise DebianBaseError(f"apt downloaded no .debs into {directory}")
    return debs


def _write_manifest(
    directory: Path, arch: str, wanted: Sequence[str], debs: Sequence[DebPackage]
) -> None:
    data = {
        "format": CACHE_FORMAT,
        "arch": arch,
        "requested": list(wanted),
        "packages": [asdict(d) for d in debs],
    }
    (directory / "manifest.json").write_text(json.dumps(data, indent=1))


def _load_manifest(arch: str, directory: Path) -> BaseSet:
    data = json.loads((directory / "manifest.json").read_text())
    pkgs = tuple(DebPackage(**p) for p in data["packages"])
    missing = [p.filename for p in pkgs if not (directory / p.filename).is_file()]
    if missing:
        raise DebianBaseError(f"cache {directory} is incomplete (e.g. {missing[0]}); delete it")
    return BaseSet(debian_arch=arch, debs_dir=directory, packages=pkgs)


# -- control-field helpers --------------------------------------------------


def parse_control(text: str) -> dict[str, str]:
    """Parse one deb822 stanza (continuation lines folded into the value)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _dependency_groups(*fields: str) -> list[list[str]]:
    """`a (>= 1) | b, c:any` -> [['a', 'b'], ['c']] (names only)."""
    groups = []
    for field in fields:
        for clause in filter(None, (c.strip() for c in field.split(","))):
            alts = [re.split(r"[\s(:\[]", a.strip(), maxsplit=1)[0] for a in clause.split("|")]
            groups.append([a for a in alts if a])
    return groups


def _providers(pkgs: Iterable[DebPackage]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for p in pkgs:
        for group in _dependency_groups(p.provides):
            for virtual in group:
                table.setdefault(virtual, []).append(p.name)
    return table


def _pick_alternative(
    group: Sequence[str],
    pkgs: dict[str, DebPackage],
    providers: dict[str, list[str]],
    ignored: set[str],
) -> str | None:
    for name in group:
        if name in ignored:
            return None
        if name in pkgs:
            return name
        for provider in providers.get(name, []):
            if provider not in ignored:
                return provider
    return None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":  # manual use: python debian_base.py aarch64 ...
    import sys

    for a in sys.argv[1:] or list(OBS_TO_DEBIAN_ARCH):
        t0 = time.monotonic()
        base = ensure_base(a)
        print(
            f"{a}: {len(base.packages)} debs in {base.debs_dir} "
            f"({time.monotonic() - t0:.1f}s), preinstall {len(base.preinstall())}"
        )
