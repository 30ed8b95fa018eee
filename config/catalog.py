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
