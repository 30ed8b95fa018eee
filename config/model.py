"""The typed, validated farm settings (stack config namespace `obs-farm`).

Shapes and per-field rules live on the pydantic models; rules that relate
several settings (overcommit, ranges inside ranges) live in `config.rules`,
so each message can name every key involved.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from config.catalog import AWS_REGIONS, AZURE_RESERVED_ADMIN_NAMES

Mode = Literal["intel-only", "hybrid", "native"]
Arch = Literal["x86_64", "armv7hl", "aarch64"]
# appliance: upstream's complete OBS (API, web UI, backend) on openSUSE Leap;
# backend: Debian's backend only, for a frontend that runs elsewhere.
ServerFlavor = Literal["appliance", "backend"]
ALL_ARCHS: tuple[Arch, ...] = ("x86_64", "armv7hl", "aarch64")

_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
    )


PositiveInt = Annotated[int, Field(ge=1)]

_DISK_ID = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"/resourceGroups/[-\w.()]{1,90}/providers/Microsoft\.Compute/disks/[-\w.]{1,80}",
    re.IGNORECASE,
)


class ServerSettings(_Model):
    vm_size: str = "Standard_D16s_v5"
    os_disk_size_gb: Annotated[int, Field(ge=30, le=4095)] = 64
    # Azure managed disks: 4 GiB .. 32 TiB; OBS keeps sources, build results
    # and published repositories here, so small disks are a mistake.
    data_disk_size_gb: Annotated[int, Field(ge=32, le=32767)] = 1024
    flavor: ServerFlavor = "appliance"
    # Daily Azure Disk Backup snapshots of the data disk kept this many days;
    # 0 turns backups off.
    backup_retention_days: Annotated[int, Field(ge=0, le=360)] = 7
    # Attach this existing managed disk (one a destroyed farm kept) as
    # /srv/obs instead of creating a new data disk. Empty: create one.
    existing_data_disk_id: str = ""

    @field_validator("existing_data_disk_id")
    @classmethod
    def _disk_id(cls, value: str) -> str:
        if value and not _DISK_ID.fullmatch(value):
            raise ValueError(
                "must be a managed disk's resource id, /subscriptions/<subscription id>/"
                "resourceGroups/<group>/providers/Microsoft.Compute/disks/<name> "
                f"(`az disk show --query id`); got {value!r}"
            )
        return value


class AzureWorkerSettings(_Model):
    vm_size: str = "Standard_D16ds_v5"
    instances_per_arch: Annotated[int, Field(ge=1, le=64)] = 2
    jobs_per_instance: Annotated[int, Field(ge=1, le=64)] = 2
    min_vms: Annotated[int, Field(ge=0, le=1000)] = 1
    max_vms: Annotated[int, Field(ge=1, le=1000)] = 3
    spot: bool = False
    os_disk_size_gb: Annotated[int, Field(ge=30, le=4095)] = 128
    # OBS_CACHE_SIZE per architecture group, in MiB.
    cache_size_mb: Annotated[int, Field(ge=512)] = 8192
    # Emulated architectures whose groups are labelled for accelerated builds
    # (README, "Accelerated emulation"): the OBS project's accelerator package
    # runs the host's compiler proper and binutils inside their build roots.
    accelerate: tuple[Arch, ...] = ()


class GravitonSettings(_Model):
    instance_types: Annotated[tuple[str, ...], Field(min_length=1)]
    instances_per_arch: Annotated[int, Field(ge=1, le=64)] = 2
    jobs_per_instance: Annotated[int, Field(ge=1, le=64)] = 2
    min_instances: Annotated[int, Field(ge=0, le=1000)] = 0
    max_instances: Annotated[int, Field(ge=1, le=1000)] = 3
    spot: bool = True
    # Instances always bought on demand, below any Spot capacity.
    on_demand_base: Annotated[int, Field(ge=0, le=1000)] = 0
    # Build armv7hl under qemu-arm instead of natively (for CPUs without
    # AArch32, such as Graviton4).
    armv7hl_emulated: Annotated[bool, Field(alias="armv7hlEmulated")] = False
    volume_size_gb: Annotated[int, Field(ge=30, le=16384)] = 200
    cache_size_mb: Annotated[int, Field(ge=512)] = 8192
    # Two availability zones of aws:region; default: <region>a and <region>b.
    availability_zones: tuple[str, ...] = ()


_AZURE_IMAGE_ID = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"/resourceGroups/[-\w.()]{1,90}/providers/Microsoft\.Compute/"
    r"(?:galleries/[\w.]{1,80}/images/[-\w.]{1,80}(?:/versions/\d{1,10}\.\d{1,10}\.\d{1,10})?"
    r"|images/[-\w.]{1,80})",
    re.IGNORECASE,
)
_AMI_ID = re.compile(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})")


class ImageSettings(_Model):
    """Which image worker machines boot (README, "Worker images")."""

    # Build worker images with the clouds' own image services (Azure VM Image
    # Builder, EC2 Image Builder) from cloud-init/provision-worker.sh; off:
    # stock Debian 12, provisioned by cloud-init at every machine's first boot.
    bake: bool = False
    # An image built elsewhere from the same provisioning script; wins over
    # `bake` for its cloud. Empty: none.
    azure_image_id: str = ""
    aws_ami_id: str = ""

    @field_validator("azure_image_id")
    @classmethod
    def _azure_image(cls, value: str) -> str:
        if value and not _AZURE_IMAGE_ID.fullmatch(value):
            raise ValueError(
                "must be the resource id of an Azure Compute Gallery image version "
                "(/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Compute/"
                "galleries/<gallery>/images/<definition>/versions/<x.y.z>), of an image "
                "definition (its latest version; .../images/<definition>) or of a managed "
                "image (.../providers/Microsoft.Compute/images/<name>); "
                f"got {value!r}"
            )
        return value

    @field_validator("aws_ami_id")
    @classmethod
    def _ami(cls, value: str) -> str:
        if value and not _AMI_ID.fullmatch(value):
            raise ValueError(
                f"must be an AMI id, ami- and 8 or 17 lowercase hex digits; got {value!r}"
            )
        return value


class ScalerSettings(_Model):
    """obs-farm-scaler on the server: pool capacity follows the OBS job queue."""

    # false: no scaler; the clouds' CPU rules only scale out (see README).
    enabled: bool = True
    # How often the scaler reads /workerstatus; the reaction time is bounded by it.
    poll_seconds: Annotated[int, Field(ge=1, le=10)] = 5
    # A machine all of whose worker instances stayed idle this long is drained
    # and deleted.
    idle_minutes: Annotated[int, Field(ge=1, le=1440)] = 10
    # A machine the cloud lists that has registered no worker this long after
    # it started counts as unhealthy (what the scaler does then: scaler/).
    unhealthy_minutes: Annotated[int, Field(ge=1, le=240)] = 5


class EstimateSettings(_Model):
    """Only for the rebuild estimate (`./plan --workload`); deploys nothing."""

    # Minutes from a capacity request to the new machine's workers registered,
    # per worker pool (azure-x86, aws-graviton); unset: estimate/farm.py's default.
    boot_minutes: dict[str, Any] = {}

    @field_validator("boot_minutes")
    @classmethod
    def _boot(cls, value: dict[str, Any]) -> dict[str, Any]:
        from estimate.farm import check_boot_minutes

        return check_boot_minutes(value)


class NetworkSettings(_Model):
    address_space: str = "10.40.0.0/16"
    server_subnet: str = "10.40.1.0/24"
    azure_worker_subnet: str = "10.40.16.0/20"
    # Azure's VPN gateway lives in a subnet that must be named GatewaySubnet.
    gateway_subnet: str = "10.40.255.0/27"
    aws_vpc_cidr: str = "10.41.0.0/16"
    vpn_gateway_sku: Literal["VpnGw1AZ", "VpnGw2AZ", "VpnGw3AZ"] = "VpnGw1AZ"
    # BGP over the VPN (hybrid/native): the Azure gateway's ASN and the AWS
    # virtual private gateway's (Amazon side) ASN, both private, different.
    azure_asn: int = 65000
    aws_asn: int = 64512

    @field_validator(
        "address_space", "server_subnet", "azure_worker_subnet", "gateway_subnet", "aws_vpc_cidr"
    )
    @classmethod
    def _cidr(cls, value: str) -> str:
        _parse_cidr(value)
        return value


def _parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"must be a CIDR such as 10.40.0.0/16 ({err}); got {value!r}") from None


def _check_admin_cidr(value: str) -> str:
    net = _parse_cidr(value)
    # SSH and the web UI face these ranges: anything as wide as a /8 (or /32
    # for IPv6) is the Internet in practice.
    minimum = 8 if net.version == 4 else 32
    if net.prefixlen < minimum:
        raise ValueError(
            f"must be a range no wider than /{minimum} (it opens SSH and the web UI); got {value!r}"
        )
    return value


def _check_ssh_public_key(value: str) -> str:
    text = value.strip()
    if "PRIVATE KEY" in text:
        raise ValueError("is a private key; give the public key (the .pub file)")
    if "\n" in text or "\r" in text:
        raise ValueError(
            "must be a single OpenSSH public key line; it has a line break "
            f"(line 2: {text.splitlines()[1][:24]!r}); give one key, the whole .pub line"
        )
    parts = text.split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        raise ValueError(
            "must be an OpenSSH public key line starting with one of "
            f"{', '.join(_SSH_KEY_TYPES[:3])}, ...; got {text[:24]!r}"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ValueError("has a key body that is not valid base64") from None
    # The blob starts with the key type as an SSH string: a length-prefixed
    # name that must match the line's own type.
    if len(blob) < 4:
        raise ValueError("has a key body that is too short")
    n = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + n].decode("ascii", "replace") != parts[0]:
        raise ValueError(f"has a key body that is not a {parts[0]} key")
    # The key material follows the type: at least one more non-empty field.
    rest = blob[4 + n :]
    if len(rest) < 5 or int.from_bytes(rest[:4], "big") == 0:
        raise ValueError("has a key body that is truncated (no key material)")
    return text


AdminCidr = Annotated[str, AfterValidator(_check_admin_cidr)]


def _check_pem(kind: str, value: str) -> str:
    """A PEM block of `kind` (CERTIFICATE, PRIVATE KEY); empty means unset."""
    if not value:
        return value
    if kind == "PRIVATE KEY":
        # PKCS#8, RSA and EC keys; never an OpenSSH key, which Apache cannot read.
        found = re.search(r"-----BEGIN ((?:RSA |EC )?PRIVATE KEY)-----", value)
    else:
        found = re.search(rf"-----BEGIN ({kind})-----", value)
    if found is None or f"-----END {found.group(1)}-----" not in value:
        raise ValueError(f"must be a PEM {kind.lower()} (-----BEGIN {kind}-----...)")
    return value.strip() + "\n"


TlsCertificate = Annotated[str, AfterValidator(lambda v: _check_pem("CERTIFICATE", v))]
TlsPrivateKey = Annotated[str, AfterValidator(lambda v: _check_pem("PRIVATE KEY", v))]


class FarmSettings(_Model):
    mode: Mode = "intel-only"
    architectures: tuple[Arch, ...] = ALL_ARCHS
    ssh_public_key: str
    admin_cidrs: tuple[AdminCidr, ...] = ()
    admin_username: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "obsadmin"
    server: ServerSettings = ServerSettings()
    azure_workers: AzureWorkerSettings = AzureWorkerSettings()
    network: NetworkSettings = NetworkSettings()
    graviton: GravitonSettings | None = None
    # The appliance's HTTPS certificate (PEM, chain after the certificate)
    # and its key, a Pulumi secret; both empty: a self-signed certificate
    # made on the server.
    tls_certificate: TlsCertificate = ""
    tls_private_key: TlsPrivateKey = ""
    scaler: ScalerSettings = ScalerSettings()
    images: ImageSettings = ImageSettings()
    # azure-native:location and aws:region (outside our namespace, validated
    # with the rest).
    location: Annotated[str, Field(pattern=r"^[a-z0-9]+$")] = "westeurope"
    aws_region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")] | None = None
    # Warnings for the plan and `pulumi up` (retiring sizes, ...); not config.
    warnings: tuple[str, ...] = ()
    # Negotiated prices replacing entries of the rebuild estimate's price
    # table (estimate/prices.yaml); not used by anything deployed.
    prices: dict[str, Any] = {}
    # Rebuild-estimate parameters (boot time per pool); deploys nothing.
    estimate: EstimateSettings = EstimateSettings()

    @field_validator("architectures")
    @classmethod
    def _archs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"must list at least one of {', '.join(ALL_ARCHS)}")
        dupes = sorted({a for a in value if value.count(a) > 1})
        if dupes:
            raise ValueError(f"lists {', '.join(dupes)} more than once")
        # Canonical order, so reordering the list changes nothing deployed.
        return tuple(a for a in ALL_ARCHS if a in value)

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh(cls, value: str) -> str:
        return _check_ssh_public_key(value)

    @field_validator("admin_username")
    @classmethod
    def _admin(cls, value: str) -> str:
        if value in AZURE_RESERVED_ADMIN_NAMES:
            raise ValueError(
                f"{value!r} is a name Azure reserves for VMs' admin user "
                "(root, admin, administrator, user, test, guest, ... 32 in all); pick another"
            )
        return value

    @field_validator("aws_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and value not in AWS_REGIONS:
            close = difflib.get_close_matches(value, sorted(AWS_REGIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"must be an AWS region such as eu-central-1; got {value!r}{hint}")
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, Any]) -> dict[str, Any]:
        from estimate.prices import check_override

        return check_override(value)
