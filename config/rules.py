"""Rules that relate several settings, each message naming every key involved."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from config.catalog import (
    AARCH32_FAMILIES,
    AZURE_RESERVED_ASNS,
    AZURE_VM_SIZES,
    GRAVITON_TYPES,
    MIN_GIB_PER_WORKER_INSTANCE,
    NO_AARCH32_FAMILIES,
    PRIVATE_ASN_RANGES,
    AzureVmSize,
    GravitonType,
)
from config.model import FarmSettings, GravitonSettings

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


def graviton_types(g: GravitonSettings) -> list[GravitonType]:
    return [GRAVITON_TYPES[t] for t in g.instance_types if t in GRAVITON_TYPES]


def graviton_archs(settings: FarmSettings) -> dict[str, str]:
    """Architecture -> native|emulated for the Graviton pool (empty: none)."""
    g = settings.graviton
    if settings.mode == "intel-only" or g is None:
        return {}
    out = {}
    if "aarch64" in settings.architectures:
        out["aarch64"] = "native"
    if "armv7hl" in settings.architectures:
        if g.armv7hl_emulated:
            out["armv7hl"] = "emulated"
        elif all(t.aarch32 for t in graviton_types(g)):
            out["armv7hl"] = "native"
        # else: hybrid leaves armv7hl to the emulated Azure pool; native
        # mode refuses this configuration in _graviton().
    return out


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
    if settings.mode != "intel-only":
        subnets["gatewaySubnet"] = ipaddress.ip_network(n.gateway_subnet)
        if subnets["gatewaySubnet"].prefixlen > 27:
            yield (
                f"{NS}:network.gatewaySubnet {n.gateway_subnet} must be /27 or larger "
                f"(Azure VPN gateway)"
            )
    for key, net in subnets.items():
        if net.version != space.version or not net.subnet_of(space):  # type: ignore[arg-type]
            yield f"{NS}:network.{key} {net} must lie inside {NS}:network.addressSpace {space}"
    keys = list(subnets)
    for i, k1 in enumerate(keys):
        for k2 in keys[i + 1 :]:
            if subnets[k1].overlaps(subnets[k2]):
                yield f"{NS}:network.{k1} {subnets[k1]} overlaps {NS}:network.{k2} {subnets[k2]}"
    a, b = subnets["serverSubnet"], subnets["azureWorkerSubnet"]
    if a.prefixlen > 28:
        yield f"{NS}:network.serverSubnet {a} must be /28 or larger (Azure keeps 5 addresses)"
    # Azure reserves five addresses in every subnet.
    room = b.num_addresses - 5
    if room < settings.azure_workers.max_vms:
        yield (
            f"{NS}:network.azureWorkerSubnet {b} has room for {room} VMs; "
            f"{NS}:azureWorkers.maxVms is {settings.azure_workers.max_vms}"
        )


def _graviton_capacity(settings: FarmSettings, g: GravitonSettings) -> Iterator[str]:
    groups = len(graviton_archs(settings))
    if not groups:
        return
    instances = g.instances_per_arch * groups
    cpus = instances * g.jobs_per_instance
    for t in graviton_types(g):
        if cpus > t.vcpus:
            yield (
                f"{NS}:graviton.instancesPerArch x jobsPerInstance x architectures "
                f"({g.instances_per_arch} x {g.jobs_per_instance} x {groups} = {cpus}) "
                f"overcommits {NS}:graviton.instanceTypes {t.name} ({t.vcpus} vCPUs)"
            )
        elif instances * MIN_GIB_PER_WORKER_INSTANCE > t.memory_gib:
            yield (
                f"{NS}:graviton.instancesPerArch ({instances} instances in all) needs "
                f"{instances * MIN_GIB_PER_WORKER_INSTANCE} GiB at "
                f"{MIN_GIB_PER_WORKER_INSTANCE} GiB per instance; "
                f"{NS}:graviton.instanceTypes {t.name} has {t.memory_gib} GiB"
            )


def _graviton(settings: FarmSettings) -> Iterator[str]:
    g = settings.graviton
    mode = settings.mode
    if mode == "intel-only":
        if g is not None:
            yield (
                f"{NS}:graviton is set but {NS}:mode is intel-only, which deploys nothing "
                f"on AWS; set {NS}:mode to hybrid or native, or remove {NS}:graviton"
            )
        return
    if settings.aws_region is None:
        yield f"aws:region is required when {NS}:mode is {mode} (the Graviton pools' region)"
    if g is None:
        yield (
            f"{NS}:graviton is required when {NS}:mode is {mode}; "
            f"at least: instanceTypes (e.g. [c7g.8xlarge])"
        )
        return
    for i, name in enumerate(g.instance_types):
        if name not in GRAVITON_TYPES:
            families = ", ".join(sorted(AARCH32_FAMILIES + NO_AARCH32_FAMILIES))
            yield (
                f"{NS}:graviton.instanceTypes[{i}] must be a supported Graviton type "
                f"(families {families}; sizes medium to 24xlarge); got {name!r}"
            )
    if len(graviton_types(g)) != len(g.instance_types):
        return
    no32 = [t.name for t in graviton_types(g) if not t.aarch32]
    if mode == "native" and "armv7hl" in settings.architectures and no32 and not g.armv7hl_emulated:
        yield (
            f"{NS}:graviton.instanceTypes {', '.join(no32)} cannot build armv7hl natively: "
            f"their CPUs (Graviton4) do not run 32-bit ARM code. Use families "
            f"{', '.join(AARCH32_FAMILIES)}, or set {NS}:graviton.armv7hlEmulated: true"
        )
    if not graviton_archs(settings):
        yield (
            f"{NS}:mode {mode} with {NS}:architectures {list(settings.architectures)} puts "
            f"nothing on Graviton; add aarch64 or armv7hl, or use mode intel-only"
        )
    if g.min_instances > g.max_instances:
        yield (
            f"{NS}:graviton.minInstances ({g.min_instances}) must not exceed "
            f"{NS}:graviton.maxInstances ({g.max_instances})"
        )
    if g.on_demand_base > g.max_instances:
        yield (
            f"{NS}:graviton.onDemandBase ({g.on_demand_base}) must not exceed "
            f"{NS}:graviton.maxInstances ({g.max_instances})"
        )
    zones = g.availability_zones
    if zones and (len(zones) != 2 or len(set(zones)) != 2):
        yield f"{NS}:graviton.availabilityZones must name two different zones; got {list(zones)}"
    elif (
        zones and settings.aws_region and not all(z.startswith(settings.aws_region) for z in zones)
    ):
        yield (
            f"{NS}:graviton.availabilityZones {list(zones)} must be zones of "
            f"aws:region {settings.aws_region}"
        )
    yield from _graviton_capacity(settings, g)


def aws_subnets(settings: FarmSettings) -> dict[str, str]:
    """The AWS VPC's quarters: two private (workers) and two public (NAT)."""
    vpc = ipaddress.ip_network(settings.network.aws_vpc_cidr)
    quarters = [str(q) for q in vpc.subnets(prefixlen_diff=2)]
    return dict(zip(("private-a", "private-b", "public-a", "public-b"), quarters, strict=True))


def _aws_network(settings: FarmSettings) -> Iterator[str]:
    n = settings.network
    vpc = ipaddress.ip_network(n.aws_vpc_cidr)
    space = ipaddress.ip_network(n.address_space)
    if vpc.version != 4 or not 16 <= vpc.prefixlen <= 24:
        yield f"{NS}:network.awsVpcCidr must be an IPv4 range from /16 to /24; got {vpc}"
        return
    if vpc.overlaps(space):
        yield (
            f"{NS}:network.awsVpcCidr {vpc} overlaps {NS}:network.addressSpace {space}; "
            f"the VPN routes between them, so they must be disjoint"
        )
    g = settings.graviton
    if g is not None:
        # AWS keeps five addresses in each subnet; two private subnets.
        room = 2 * (ipaddress.ip_network(aws_subnets(settings)["private-a"]).num_addresses - 5)
        if room < g.max_instances:
            yield (
                f"{NS}:network.awsVpcCidr {vpc} has room for {room} workers; "
                f"{NS}:graviton.maxInstances is {g.max_instances}"
            )


def _server_tls(settings: FarmSettings) -> Iterator[str]:
    cert, key = bool(settings.tls_certificate), bool(settings.tls_private_key)
    if cert != key:
        given, missing = (
            ("tlsCertificate", "tlsPrivateKey") if cert else ("tlsPrivateKey", "tlsCertificate")
        )
        yield (
            f"{NS}:{given} is set but {NS}:{missing} is not: "
            f"give both, or neither for a self-signed certificate"
        )
    if (cert or key) and settings.server.flavor != "appliance":
        yield (
            f"{NS}:tlsCertificate/tlsPrivateKey are for the appliance's HTTPS; "
            f"{NS}:server.flavor is {settings.server.flavor}, which serves no HTTPS"
        )


def _private_asn(asn: int) -> bool:
    return any(lo <= asn <= hi for lo, hi in PRIVATE_ASN_RANGES)


def _asns(settings: FarmSettings) -> Iterator[str]:
    n = settings.network
    ranges = " or ".join(f"{lo}..{hi}" for lo, hi in PRIVATE_ASN_RANGES)
    for key, asn in (("azureAsn", n.azure_asn), ("awsAsn", n.aws_asn)):
        if not _private_asn(asn):
            yield f"{NS}:network.{key} must be a private ASN ({ranges}); got {asn}"
        elif asn in AZURE_RESERVED_ASNS:
            reserved = ", ".join(str(a) for a in sorted(AZURE_RESERVED_ASNS))
            yield (
                f"{NS}:network.{key} {asn} is reserved by Azure ({reserved}); "
                f"pick another private ASN"
            )
    if n.azure_asn == n.aws_asn:
        yield (
            f"{NS}:network.azureAsn and {NS}:network.awsAsn must differ (eBGP between "
            f"the clouds); both are {n.aws_asn}"
        )


def _images(settings: FarmSettings) -> Iterator[str]:
    im = settings.images
    if im.azure_image_id and not azure_worker_archs(settings):
        yield (
            f"{NS}:images.azureImageId is set but the farm has no Azure worker pool "
            f"({NS}:mode {settings.mode} with {NS}:architectures "
            f"{list(settings.architectures)}); remove it"
        )
    if im.aws_ami_id and settings.mode == "intel-only":
        yield (
            f"{NS}:images.awsAmiId is set but {NS}:mode is intel-only, which has no AWS "
            f"worker pool; remove it, or set {NS}:mode to hybrid or native"
        )


def _accelerate(settings: FarmSettings) -> Iterator[str]:
    chosen = settings.azure_workers.accelerate
    emulated = [a for a in azure_worker_archs(settings) if a != "x86_64"]
    allowed = ", ".join(emulated) if emulated else "none in this configuration"
    for arch in sorted(set(chosen), key=chosen.index):
        if arch not in emulated:
            yield (
                f"{NS}:azureWorkers.accelerate lists {arch}, which the Azure pool does not "
                f"build under emulation ({NS}:mode {settings.mode}, {NS}:architectures "
                f"{list(settings.architectures)}); allowed: {allowed}"
            )
    if len(set(chosen)) != len(chosen):
        yield f"{NS}:azureWorkers.accelerate lists an architecture twice: {list(chosen)}"


def cross_field_errors(settings: FarmSettings) -> list[str]:
    problems: list[str] = list(_graviton(settings))
    problems.extend(_accelerate(settings))
    problems.extend(_images(settings))
    problems.extend(_server_tls(settings))
    if settings.mode != "intel-only":
        problems.extend(_aws_network(settings))
        problems.extend(_asns(settings))
    _size("server.vmSize", settings.server.vm_size, problems)
    worker_size = _size("azureWorkers.vmSize", settings.azure_workers.vm_size, problems)
    w = settings.azure_workers
    if w.min_vms > w.max_vms:
        problems.append(
            f"{NS}:azureWorkers.minVms ({w.min_vms}) must not exceed "
            f"{NS}:azureWorkers.maxVms ({w.max_vms})"
        )
    if worker_size is not None and azure_worker_archs(settings):
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
