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
    # Accelerated networking (SR-IOV NIC); Microsoft lists it as required
    # for the v5 sizes and supported on Dsv2/Fsv2 sizes with 2+ vCPUs.
    accelerated_networking: bool = True


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


# Azure refuses these as a VM's adminUsername (OSProfile.adminUsername,
# "Disallowed values", in the compute API definition; the unit tests compare
# this list with the installed azure-mgmt-compute model's own text).
AZURE_RESERVED_ADMIN_NAMES: frozenset[str] = frozenset(
    {
        "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3",
        "admin1", "1", "123", "a", "actuser", "adm", "admin2", "aspnet", "backup",
        "console", "david", "guest", "john", "owner", "root", "server", "sql", "support",
        "support_388945a0", "sys", "test2", "test3", "user4", "user5",
    }
)  # fmt: skip

# Private BGP ASNs (RFC 6996), the only ones both clouds accept here.
PRIVATE_ASN_RANGES = ((64512, 65534), (4200000000, 4294967294))
# ASNs Azure keeps for itself (VPN gateway default 65515, Route Server and
# friends 65517-65520); a peer with one of them is refused or never peers.
AZURE_RESERVED_ASNS = frozenset({65515, 65517, 65518, 65519, 65520})

# Every AWS region in botocore's partitions data (all partitions), for
# validating aws:region offline; tests/unit/test_regions.py keeps it equal
# to the installed botocore's list.
AWS_REGIONS: frozenset[str] = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "cn-north-1",
        "cn-northwest-1",
        "eu-central-1",
        "eu-central-2",
        "eu-isoe-west-1",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eusc-de-east-1",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "me-west-1",
        "mx-central-1",
        "sa-east-1",
        "sa-west-1",
        "us-east-1",
        "us-east-2",
        "us-gov-east-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-iso-west-1",
        "us-isob-east-1",
        "us-isob-west-1",
        "us-isof-east-1",
        "us-isof-south-1",
        "us-west-1",
        "us-west-2",
    }
)
