"""Which worker pools the farm has and what each VM runs (pure; no Pulumi).

The topology is the contract between the settings, the cloud-init of each
pool, the firewall rules and the `topology` stack output: ports, worker ids
and native/emulated decisions are made here once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from config.catalog import AZURE_VM_SIZES
from config.model import ALL_ARCHS, FarmSettings
from config.rules import aws_subnets, azure_worker_archs, graviton_archs

# OBS names the 32-bit ARM scheduler/worker architecture armv7l; the
# repository architecture users configure is armv7hl.
SCHEDULER_ARCH = {"x86_64": "x86_64", "armv7hl": "armv7l", "aarch64": "aarch64"}
# binfmt_misc handler names that Debian's qemu-user-static registers.
QEMU_HANDLER = {"armv7hl": "qemu-arm", "aarch64": "qemu-aarch64"}

# Worker instance n (1-based) of an architecture group listens on
# WORKER_PORT_BASE + PORT_STRIDE * index(arch) + n; the index is fixed by
# ALL_ARCHS, so dropping an architecture never moves another group's ports.
WORKER_PORT_BASE = 41000
PORT_STRIDE = 100
WORKER_PORT_RANGE = (WORKER_PORT_BASE, WORKER_PORT_BASE + PORT_STRIDE * len(ALL_ARCHS) - 1)

# OBS backend ports (see OBS-NOTES): srcserver, repserver, their worker-only
# variants, and the source service.
REPSERVER_PORT = 5252
BACKEND_PORTS = (5152, 5252, 5253, 5352, 5353)


@dataclass(frozen=True)
class WorkerGroup:
    arch: str  # repository architecture: x86_64, armv7hl, aarch64
    instances: int
    jobs: int
    emulated: bool
    cache_size_mb: int
    # The worker machine's own architecture (uname -m).
    host_arch: str = "x86_64"
    # Emulated, with the OBS project's accelerator (host-native compiler
    # proper and binutils) expected in its build roots.
    accelerated: bool = False

    @property
    def execution(self) -> str:
        """native, emulated or emulated+accel (the topology output's words)."""
        if not self.emulated:
            return "native"
        return "emulated+accel" if self.accelerated else "emulated"

    @property
    def scheduler_arch(self) -> str:
        return SCHEDULER_ARCH[self.arch]

    @property
    def check(self) -> str:
        """The command that must succeed before this group may register.

        Emulated groups need their binfmt handler with the F flag; native
        armv7 on arm64 needs a CPU that really runs 32-bit ARM code.
        """
        if self.emulated:
            return f"obs-farm-check-binfmt {QEMU_HANDLER[self.arch]}"
        if self.arch == "armv7hl" and self.host_arch == "aarch64":
            return "obs-farm-check-aarch32"
        return ""

    @property
    def arm32_guard(self) -> bool:
        """Native aarch64 workers on arm64 must not take armv7l jobs the CPU cannot run.

        OBS lets an aarch64 worker build armv7l (BSCando, via linux32) and its
        worker marks itself native-only just for Cavium CPUs; on Graviton4
        such a job would fail. The worker instance checks the CPU at start.
        """
        return self.arch == "aarch64" and self.host_arch == "aarch64" and not self.emulated

    @property
    def port_base(self) -> int:
        return WORKER_PORT_BASE + PORT_STRIDE * ALL_ARCHS.index(self.arch)

    def ports(self) -> range:
        return range(self.port_base + 1, self.port_base + self.instances + 1)

    @property
    def hostlabels(self) -> tuple[str, ...]:
        """Labels a project's _constraints can pin jobs with, e.g. keep
        packages whose test suites time out under qemu on native workers."""
        kinds = self.execution.split("+")
        return (*(f"obs-farm-{k}" for k in kinds), f"obs-farm-{self.arch}")

    def worker_ids(self, hostname: str) -> list[str]:
        """The ids this group's instances register with on host `hostname`."""
        return [f"{hostname}:{self.arch}-{n}" for n in range(1, self.instances + 1)]


@dataclass(frozen=True)
class WorkerPool:
    name: str
    cloud: str
    vm_size: str
    min_vms: int
    max_vms: int
    spot: bool
    groups: tuple[WorkerGroup, ...]
    # Where build roots and caches live on the VM.
    work_dir: str

    @property
    def instances_per_vm(self) -> int:
        return sum(g.instances for g in self.groups)

    @property
    def emulated_per_vm(self) -> int:
        return sum(g.instances for g in self.groups if g.emulated)

    def to_output(self) -> dict[str, Any]:
        return {
            "pool": self.name,
            "cloud": self.cloud,
            "vmSize": self.vm_size,
            "minVms": self.min_vms,
            "maxVms": self.max_vms,
            "spot": self.spot,
            "architectures": [
                {
                    "arch": g.arch,
                    "schedulerArch": g.scheduler_arch,
                    "execution": g.execution,
                    "check": g.check,
                    "instancesPerVm": g.instances,
                    "jobsPerInstance": g.jobs,
                    "ports": [g.ports().start, g.ports().stop - 1],
                }
                for g in self.groups
            ],
        }


def server_private_ip(settings: FarmSettings) -> str:
    """The server's static private address: the subnet's 10th address.

    Static so that worker cloud-init, BSConfig and the firewall can name it
    at render time, and so that it survives replacing the server VM.
    """
    subnet = ipaddress.ip_network(settings.network.server_subnet)
    return str(subnet.network_address + 10)


def azure_worker_pool(settings: FarmSettings) -> WorkerPool:
    w = settings.azure_workers
    size = AZURE_VM_SIZES[w.vm_size]
    groups = tuple(
        WorkerGroup(
            arch=arch,
            instances=w.instances_per_arch,
            jobs=w.jobs_per_instance,
            emulated=arch != "x86_64",
            cache_size_mb=w.cache_size_mb,
            accelerated=arch in w.accelerate,
        )
        for arch in azure_worker_archs(settings)
    )
    return WorkerPool(
        name="azure-x86",
        cloud="azure",
        vm_size=w.vm_size,
        min_vms=w.min_vms,
        max_vms=w.max_vms,
        spot=w.spot,
        groups=groups,
        # Azure mounts the local temp disk on /mnt; sizes without one keep
        # build roots on the OS disk.
        work_dir="/mnt/obs-worker" if size.temp_disk_gib else "/var/lib/obs-worker",
    )


def graviton_pool(settings: FarmSettings) -> WorkerPool | None:
    g = settings.graviton
    archs = graviton_archs(settings)
    if g is None or not archs:
        return None
    groups = tuple(
        WorkerGroup(
            arch=arch,
            instances=g.instances_per_arch,
            jobs=g.jobs_per_instance,
            emulated=execution == "emulated",
            cache_size_mb=g.cache_size_mb,
            host_arch="aarch64",
        )
        for arch, execution in sorted(archs.items(), key=lambda kv: ALL_ARCHS.index(kv[0]))
    )
    return WorkerPool(
        name="aws-graviton",
        cloud="aws",
        vm_size=",".join(g.instance_types),
        min_vms=g.min_instances,
        max_vms=g.max_instances,
        spot=g.spot,
        groups=groups,
        # The launch template sizes the root volume for build roots.
        work_dir="/var/lib/obs-worker",
    )


def worker_pools(settings: FarmSettings) -> list[WorkerPool]:
    """Every pool that builds something; an Azure pool with no group is left out."""
    pools = [azure_worker_pool(settings), graviton_pool(settings)]
    return [p for p in pools if p is not None and p.groups]


def worker_cidrs(settings: FarmSettings) -> list[str]:
    """Address ranges OBS workers connect from (for $ipaccess and firewalls)."""
    cidrs = []
    if azure_worker_archs(settings):
        cidrs.append(settings.network.azure_worker_subnet)
    if graviton_pool(settings) is not None:
        subnets = aws_subnets(settings)
        cidrs += [subnets["private-a"], subnets["private-b"]]
    return cidrs


def scheduler_archs(settings: FarmSettings) -> list[str]:
    return [SCHEDULER_ARCH[a] for a in settings.architectures]
