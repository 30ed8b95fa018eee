"""Rules that relate several settings, each message naming every key involved."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from config.catalog import AZURE_VM_SIZES, MIN_GIB_PER_WORKER_INSTANCE, AzureVmSize
from config.model import FarmSettings

NS = "obs-farm"


def _size(key: str, name: str, problems: list[str]) -> AzureVmSize | None:
    size = AZURE_VM_SIZES.get(name)
    if size is None:
        problems.append(
            f"{NS}:{key} must be one of the supported Azure sizes "
            f"({', '.join(sorted(AZURE_VM_SIZES))}); got {name!r}"
        )
    elif not size.premium_ssd:
        problems.append(f"{NS}:{key} {name!r} does not support Premium SSD")
    return size


def azure_worker_archs(settings: FarmSettings) -> tuple[str, ...]:
    """Architectures the Azure x86-64 pool builds in this mode."""
    if settings.mode == "native":
        return tuple(a for a in settings.architectures if a == "x86_64")
    return settings.architectures


def _worker_capacity(settings: FarmSettings, size: AzureVmSize) -> Iterator[str]:
    w = settings.azure_workers
    archs = azure_worker_archs(settings)
    instances = w.instances_per_arch * len(archs)
    cpus = instances * w.jobs_per_instance
    if cpus > size.vcpus:
        yield (
            f"{NS}:azureWorkers.instancesPerArch x jobsPerInstance x architectures "
            f"({w.instances_per_arch} x {w.jobs_per_instance} x {len(archs)} = {cpus}) "
            f"overcommits {NS}:azureWorkers.vmSize {size.name} ({size.vcpus} vCPUs); "
            f"lower them or pick a larger size"
        )
    need_gib = instances * MIN_GIB_PER_WORKER_INSTANCE
    if need_gib > size.memory_gib:
        yield (
            f"{NS}:azureWorkers.instancesPerArch ({w.instances_per_arch} per architecture, "
            f"{instances} in all) needs {need_gib} GiB at {MIN_GIB_PER_WORKER_INSTANCE} GiB "
            f"per instance; {NS}:azureWorkers.vmSize {size.name} has {size.memory_gib} GiB"
        )


def _network(settings: FarmSettings) -> Iterator[str]:
    n = settings.network
    space = ipaddress.ip_network(n.address_space)
    subnets = {
        "serverSubnet": ipaddress.ip_network(n.server_subnet),
        "azureWorkerSubnet": ipaddress.ip_network(n.azure_worker_subnet),
    }
    for key, net in subnets.items():
        if net.version != space.version or not net.subnet_of(space):  # type: ignore[arg-type]
            yield (f"{NS}:network.{key} {net} must lie inside {NS}:network.addressSpace {space}")
    a, b = subnets["serverSubnet"], subnets["azureWorkerSubnet"]
    if a.overlaps(b):
        yield f"{NS}:network.serverSubnet {a} overlaps {NS}:network.azureWorkerSubnet {b}"
    if a.prefixlen > 28:
        yield f"{NS}:network.serverSubnet {a} must be /28 or larger (Azure keeps 5 addresses)"
    # Azure reserves five addresses in every subnet.
    room = b.num_addresses - 5
    if room < settings.azure_workers.max_vms:
        yield (
            f"{NS}:network.azureWorkerSubnet {b} has room for {room} VMs; "
            f"{NS}:azureWorkers.maxVms is {settings.azure_workers.max_vms}"
        )


def cross_field_errors(settings: FarmSettings) -> list[str]:
    problems: list[str] = []
    if settings.mode != "intel-only":
        problems.append(
            f"{NS}:mode {settings.mode!r} needs AWS Graviton worker pools, which this "
            f"version does not deploy yet; allowed now: intel-only"
        )
    _size("server.vmSize", settings.server.vm_size, problems)
    worker_size = _size("azureWorkers.vmSize", settings.azure_workers.vm_size, problems)
    w = settings.azure_workers
    if w.min_vms > w.max_vms:
        problems.append(
            f"{NS}:azureWorkers.minVms ({w.min_vms}) must not exceed "
            f"{NS}:azureWorkers.maxVms ({w.max_vms})"
        )
    if worker_size is not None:
        problems.extend(_worker_capacity(settings, worker_size))
    problems.extend(_network(settings))
    return problems


def warnings_for(settings: FarmSettings) -> list[str]:
    found = []
    for key, name in (
        ("server.vmSize", settings.server.vm_size),
        ("azureWorkers.vmSize", settings.azure_workers.vm_size),
    ):
        size = AZURE_VM_SIZES[name]
        if size.retires:
            found.append(
                f"{NS}:{key} {name} retires on {size.retires.isoformat()} and new "
                f"subscriptions may be refused it; successor: {size.successor}"
            )
    if not settings.admin_cidrs:
        found.append(
            f"{NS}:adminCidrs is empty: nobody can reach SSH or the web UI/API "
            f"(add your admin ranges to open them)"
        )
    return found
