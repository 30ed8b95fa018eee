"""Machine sizes obs-farm knows how to size workers for.

The table is deliberately closed: validating vCPU overcommit, Premium SSD
support and the local temp disk needs facts the Azure API would otherwise have
to be asked for at plan time, and settings are validated offline.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class AzureVmSize:
    name: str
    vcpus: int
    memory_gib: int
    premium_ssd: bool
    # Local temp disk (GiB) that Azure mounts at /mnt; 0 = none, build roots
    # then live on the OS disk.
    temp_disk_gib: int
    retires: datetime.date | None = None
    successor: str | None = None


def _sizes(*sizes: AzureVmSize) -> dict[str, AzureVmSize]:
    return {s.name: s for s in sizes}


_DSV2_RETIRES = datetime.date(2028, 5, 1)
_FSV2_RETIRES = datetime.date(2028, 11, 15)

# Only SCSI-attached sizes: the v6 families need an NVMe disk controller and
# Gen2 images with NVMe device naming, which the data-disk script does not
# handle yet.
AZURE_VM_SIZES: dict[str, AzureVmSize] = _sizes(
    # The source design's server; retiring.
    AzureVmSize("Standard_DS14_v2", 16, 112, True, 224, _DSV2_RETIRES, "Standard_D16s_v5"),
    # The source design's workers; retiring.
    AzureVmSize("Standard_F8s_v2", 8, 16, True, 64, _FSV2_RETIRES, "Standard_D8ds_v5"),
    AzureVmSize("Standard_F16s_v2", 16, 32, True, 128, _FSV2_RETIRES, "Standard_D16ds_v5"),
    AzureVmSize("Standard_F32s_v2", 32, 64, True, 256, _FSV2_RETIRES, "Standard_D32ds_v5"),
    AzureVmSize("Standard_F48s_v2", 48, 96, True, 384, _FSV2_RETIRES, "Standard_D48ds_v5"),
    AzureVmSize("Standard_F64s_v2", 64, 128, True, 512, _FSV2_RETIRES, "Standard_D64ds_v5"),
    # General purpose, no temp disk.
    AzureVmSize("Standard_D2s_v5", 2, 8, True, 0),
    AzureVmSize("Standard_D4s_v5", 4, 16, True, 0),
    AzureVmSize("Standard_D8s_v5", 8, 32, True, 0),
    AzureVmSize("Standard_D16s_v5", 16, 64, True, 0),
    AzureVmSize("Standard_D32s_v5", 32, 128, True, 0),
    # General purpose with a local temp disk: the workers' default family.
    AzureVmSize("Standard_D4ds_v5", 4, 16, True, 150),
    AzureVmSize("Standard_D8ds_v5", 8, 32, True, 300),
    AzureVmSize("Standard_D16ds_v5", 16, 64, True, 600),
    AzureVmSize("Standard_D32ds_v5", 32, 128, True, 1200),
    AzureVmSize("Standard_D48ds_v5", 48, 192, True, 1800),
    AzureVmSize("Standard_D64ds_v5", 64, 256, True, 2400),
    # Memory optimised, for a server with a large archive.
    AzureVmSize("Standard_E8s_v5", 8, 64, True, 0),
    AzureVmSize("Standard_E16s_v5", 16, 128, True, 0),
    AzureVmSize("Standard_E32s_v5", 32, 256, True, 0),
)

# Each OBS worker instance unpacks a build root and runs the package's build
# and test suite (C++ and its tests under qemu are the hungry ones); the
# source design ran 15 instances in 64 GiB, about 4.3 GiB each.
MIN_GIB_PER_WORKER_INSTANCE = 4


@dataclass(frozen=True)
class GravitonType:
    name: str
    vcpus: int
    memory_gib: int
    generation: int
    # Whether the CPU runs 32-bit ARM (AArch32) code at EL0, which native
    # armv7hl builds need (OBS runs them under the linux32 personality).
    aarch32: bool


# family -> (Graviton generation, GiB per vCPU, AArch32 at EL0), per AWS's
# Graviton guide and Arm's core documentation: Graviton1 (Cortex-A72) and
# Graviton2/3 (Neoverse N1/V1) run AArch32 user space; Graviton4 (Neoverse
# V2) does not.
_GRAVITON_FAMILIES = {
    "a1": (1, 2, True),
    "c6g": (2, 2, True),
    "m6g": (2, 4, True),
    "r6g": (2, 8, True),
    "t4g": (2, 4, True),
    "c7g": (3, 2, True),
    "m7g": (3, 4, True),
    "r7g": (3, 8, True),
    "c8g": (4, 2, False),
    "m8g": (4, 4, False),
    "r8g": (4, 8, False),
}
_SIZES = {
    "medium": 1,
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "12xlarge": 48,
    "16xlarge": 64,
    "24xlarge": 96,
}
# Largest size each family offers (a1 stops at 4xlarge, t4g at 2xlarge,
# Graviton2/3 at 16xlarge).
_LARGEST = {
    "a1": "4xlarge",
    "t4g": "2xlarge",
    "c8g": "24xlarge",
    "m8g": "24xlarge",
    "r8g": "24xlarge",
}


def _graviton_types() -> dict[str, GravitonType]:
    types = {}
    for family, (gen, gib_per_cpu, aarch32) in _GRAVITON_FAMILIES.items():
        largest = _SIZES[_LARGEST.get(family, "16xlarge")]
        for size, vcpus in _SIZES.items():
            if vcpus > largest:
                continue
            name = f"{family}.{size}"
            types[name] = GravitonType(name, vcpus, vcpus * gib_per_cpu, gen, aarch32)
    return types


GRAVITON_TYPES: dict[str, GravitonType] = _graviton_types()
AARCH32_FAMILIES = tuple(f for f, (_, _, a32) in _GRAVITON_FAMILIES.items() if a32)
NO_AARCH32_FAMILIES = tuple(f for f, (_, _, a32) in _GRAVITON_FAMILIES.items() if not a32)
