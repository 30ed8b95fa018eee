"""The worker provisioning script and the image version it defines (pure).

One script, `cloud-init/provision-worker.sh`, installs everything a worker
machine needs that is the same for every pool and farm; its package list
lives in `cloud-init/worker-packages.txt` and is rendered into it. The image
services run it to bake a worker image; cloud-init runs it at first boot on a
stock image. A worker image is named by `image_version()`, derived from the
rendered script alone (so from the script and its package list, and nothing
else in the repository): changing either makes a new image version, and
changing anything else (the per-pool user-data, the farm's worker scripts)
does not.

Versions come from a hash, so they are not ordered: refer to an image by its
exact version, never by the gallery's `latest`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
#: The script in this repository (relative to its root).
PROVISION_SCRIPT_PATH = "cloud-init/provision-worker.sh"
#: The package list in this repository (relative to its root).
PROVISION_PACKAGES_PATH = "cloud-init/worker-packages.txt"
#: Where cloud-init and the bake put the script on a worker machine.
PROVISION_SCRIPT_INSTALL_PATH = "/usr/local/sbin/obs-farm-provision-worker"
#: The argument that cleans a machine for capture.
DEPROVISION_ARG = "--deprovision"

_PACKAGES_MARKER = "@@PACKAGES@@"
#: Each of the three version numbers is below this: EC2 Image Builder takes
#: 0..2^30-1 for each assignable node of a semantic version (imagebuilder
#: service model, VersionNumber), Azure Compute Gallery 32-bit integers.
VERSION_PART_BITS = 30


def _repo_file(repo_path: str) -> Path:
    return TEMPLATE_DIR / Path(repo_path).name


def provision_packages() -> tuple[str, ...]:
    """The worker packages, in list order (comments and blank lines dropped)."""
    names = []
    for line in _repo_file(PROVISION_PACKAGES_PATH).read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not all(c.isalnum() or c in "+-.:" for c in name) or " " in name:
            raise ValueError(f"{PROVISION_PACKAGES_PATH}: not a package name: {name!r}")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"{PROVISION_PACKAGES_PATH}: a package is listed twice")
    return tuple(names)


def provision_script() -> str:
    """The script as it runs on a machine: the template with the package list in it."""
    text = _repo_file(PROVISION_SCRIPT_PATH).read_text()
    if text.count(_PACKAGES_MARKER) != 1:
        raise ValueError(f"{PROVISION_SCRIPT_PATH} must contain {_PACKAGES_MARKER} once")
    return text.replace(_PACKAGES_MARKER, "\n".join(f"  {p}" for p in provision_packages()))


def image_content_hash() -> str:
    """sha256 (hex) of the rendered script: the script and its package list, nothing else."""
    return hashlib.sha256(provision_script().encode()).hexdigest()


def version_from_hash(digest: str) -> str:
    """`major.minor.patch` from the first 90 bits of a hex digest, 30 bits each."""
    mask = (1 << VERSION_PART_BITS) - 1
    n = int(digest, 16) >> (len(digest) * 4 - 3 * VERSION_PART_BITS)
    parts = [(n >> (VERSION_PART_BITS * i)) & mask for i in (2, 1, 0)]
    return ".".join(str(p) for p in parts)


def image_version() -> str:
    """The worker image's version: an Azure gallery image version name and an
    EC2 Image Builder semantic version at once (three integers, each below 2^30)."""
    return version_from_hash(image_content_hash())
