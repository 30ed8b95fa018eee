"""obs-farm: an Open Build Service farm on Azure, with optional AWS Graviton
worker pools linked by a site-to-site VPN (see README.md).

Composes only: settings, then components, then exports.
"""

import pulumi
import pulumi_aws as aws

from components.aws_network import AwsNetwork, AwsNetworkArgs
from components.aws_workers import GravitonPool, GravitonPoolArgs
from components.azure_workers import AzureWorkerPool, AzureWorkerPoolArgs
from components.backup import DiskBackup, DiskBackupArgs
from components.cloudinit import (
    render_apply_farm,
    render_worker_user_data,
    server_user_data,
)
from components.common import farm_tags
from components.images import (
    AwsWorkerImage,
    AwsWorkerImageArgs,
    AzureWorkerImage,
    AzureWorkerImageArgs,
    pool_image,
)
from components.kept_data import KeptData, KeptDataArgs
from components.network import FarmNetwork, FarmNetworkArgs
from components.scaler import AwsPoolRef, AzurePoolRef, FarmScaler, FarmScalerArgs
from components.server import (
    APPLIANCE_REPOSITORY_PORT,
    BackendWorkers,
    BackendWorkersArgs,
    ObsServer,
    ObsServerArgs,
    server_image,
    tls_parameters,
)
from components.topology import server_private_ip, worker_cidrs, worker_pools
from components.vpn import SiteToSiteVpn, SiteToSiteVpnArgs
from config import ConfigError, load_settings_from_pulumi
from config.catalog import AZURE_VM_SIZES
from config.rules import aws_subnets

try:
    settings = load_settings_from_pulumi()
except ConfigError as err:
    # RunError ends the program with the message alone: no traceback for a
    # user mistake, and nothing is created.
    raise pulumi.RunError(f"invalid stack config:\n{err}") from None

for warning in settings.warnings:
    pulumi.log.warn(warning)

stack = pulumi.get_stack()
server_ip = server_private_ip(settings)
pools = {p.cloud: p for p in worker_pools(settings)}


def tags(role: str) -> dict[str, str]:
    return farm_tags(stack, settings.mode, role)


net = FarmNetwork(
    "obs",
    FarmNetworkArgs(
        location=settings.location,
        address_space=settings.network.address_space,
        server_subnet=settings.network.server_subnet,
        worker_subnet=settings.network.azure_worker_subnet,
        server_address=server_ip,
        admin_cidrs=settings.admin_cidrs,
        tags=tags("network"),
        worker_sources=tuple(worker_cidrs(settings)),
        gateway_subnet=settings.network.gateway_subnet if "aws" in pools else None,
        repository_port=(
            APPLIANCE_REPOSITORY_PORT if settings.server.flavor == "appliance" else None
        ),
    ),
)

# What outlives the farm: the data disk, its backups. Stacks from before this
# group existed kept everything in the FarmNetwork's `obs-rg`; the alias
# adopts that group as the kept one (README: "Upgrading from one resource
# group").
kept = KeptData(
    "obs-data",
    KeptDataArgs(
        location=settings.location,
        tags=tags("data"),
        previous=(
            pulumi.create_urn(
                "obs-rg",
                "azure-native:resources:ResourceGroup",
                parent=pulumi.create_urn("obs", "obs-farm:azure:FarmNetwork"),
            ),
        ),
    ),
)

server = ObsServer(
    "obs-server",
    ObsServerArgs(
        resource_group_name=net.resource_group_name,
        location=settings.location,
        subnet_id=net.server_subnet_id,
        private_ip=server_ip,
        vm_size=settings.server.vm_size,
        os_disk_size_gb=settings.server.os_disk_size_gb,
        data_disk_size_gb=settings.server.data_disk_size_gb,
        admin_username=settings.admin_username,
        ssh_public_key=settings.ssh_public_key,
        user_data=server_user_data(settings),
        tags=tags("server"),
        image_reference=server_image(settings.server.flavor),
        data_resource_group_name=kept.resource_group_name,
        existing_data_disk_id=settings.server.existing_data_disk_id,
        accelerated_networking=AZURE_VM_SIZES[settings.server.vm_size].accelerated_networking,
    ),
)

if settings.server.backup_retention_days:
    DiskBackup(
        "obs-data-backup",
        DiskBackupArgs(
            resource_group_name=kept.resource_group_name,
            resource_group_id=kept.resource_group_id,
            location=settings.location,
            disk_id=server.data_disk_id,
            disk_name=server.data_disk_name,
            retention_days=settings.server.backup_retention_days,
            tags=tags("server"),
        ),
    )

backend = BackendWorkers(
    "obs-backend",
    BackendWorkersArgs(
        resource_group_name=net.resource_group_name,
        location=settings.location,
        vm_name=server.vm_name,
        script=render_apply_farm(settings),
        tags=tags("server"),
        protected_parameters=tls_parameters(settings.tls_certificate, settings.tls_private_key),
    ),
)

# Capacity belongs to obs-farm-scaler; the clouds' CPU rules only scale out,
# and only when the scaler is turned off.
cpu_fallback = not settings.scaler.enabled
azure_pool_ref: AzurePoolRef | None = None
aws_pool_ref: AwsPoolRef | None = None

if "azure" in pools:
    # Worker images (README, "Worker images"): the user's, a baked one, or stock.
    azure_image = pool_image(settings, "azure")
    azure_image_reference: dict[str, pulumi.Input[str]] | None = (
        {"id": azure_image.image_id} if azure_image.kind == "user" else None
    )
    if azure_image.kind == "baked":
        baked_azure = AzureWorkerImage(
            "obs-image",
            AzureWorkerImageArgs(
                resource_group_name=net.resource_group_name,
                resource_group_id=net.resource_group_id,
                location=settings.location,
                tags=tags("image"),
            ),
        )
        azure_image_reference = {"id": baked_azure.image_version_id}
    azure_pool = AzureWorkerPool(
        pools["azure"].name,
        AzureWorkerPoolArgs(
            resource_group_name=net.resource_group_name,
            location=settings.location,
            subnet_id=net.worker_subnet_id,
            pool=pools["azure"],
            os_disk_size_gb=settings.azure_workers.os_disk_size_gb,
            admin_username=settings.admin_username,
            ssh_public_key=settings.ssh_public_key,
            user_data=render_worker_user_data(pools["azure"], server_ip, baked=azure_image.baked),
            tags=tags("worker"),
            cpu_scale_out_fallback=cpu_fallback,
            image_reference=azure_image_reference,
        ),
    )
    azure_pool_ref = AzurePoolRef(azure_pool.scale_set_id, azure_pool.scale_set_name)

if "aws" in pools and settings.graviton and settings.aws_region and net.gateway_subnet_id:
    graviton = settings.graviton
    region = settings.aws_region
    # An explicit provider: intel-only stacks never configure AWS at all.
    aws_provider = aws.Provider("aws", region=region)
    aws_opts = pulumi.ResourceOptions(providers={"aws": aws_provider})
    subnets = aws_subnets(settings)
    aws_net = AwsNetwork(
        "obs-aws",
        AwsNetworkArgs(
            vpc_cidr=settings.network.aws_vpc_cidr,
            subnets=subnets,
            zones=graviton.availability_zones or (f"{region}a", f"{region}b"),  # type: ignore[arg-type]
            server_address=server_ip,
            server_subnet=settings.network.server_subnet,
            tags=tags("network"),
        ),
        aws_opts,
    )
    vpn = SiteToSiteVpn(
        "obs-link",
        SiteToSiteVpnArgs(
            resource_group_name=net.resource_group_name,
            location=settings.location,
            gateway_subnet_id=net.gateway_subnet_id,
            gateway_sku=settings.network.vpn_gateway_sku,
            azure_asn=settings.network.azure_asn,
            aws_asn=settings.network.aws_asn,
            aws_vpc_id=aws_net.vpc_id,
            aws_route_table_id=aws_net.private_route_table_id,
            azure_tags=tags("vpn"),
            aws_tags=tags("vpn"),
        ),
        aws_opts,
    )
    aws_image = pool_image(settings, "aws")
    aws_image_id: pulumi.Input[str] | None = aws_image.image_id or None
    if aws_image.kind == "baked":
        aws_image_id = AwsWorkerImage(
            "obs-aws-image",
            AwsWorkerImageArgs(
                region=region,
                subnet_id=aws_net.private_subnet_ids[0],
                security_group_id=aws_net.worker_security_group_id,
                # A type the stack already uses is one the region offers.
                build_instance_type=graviton.instance_types[0],
                tags=tags("image"),
            ),
            aws_opts,
        ).ami_id
    graviton_pool = GravitonPool(
        pools["aws"].name,
        GravitonPoolArgs(
            pool=pools["aws"],
            instance_types=graviton.instance_types,
            on_demand_base=graviton.on_demand_base,
            volume_size_gb=graviton.volume_size_gb,
            subnet_ids=aws_net.private_subnet_ids,
            security_group_id=aws_net.worker_security_group_id,
            user_data=render_worker_user_data(
                pools["aws"], server_ip, settings.ssh_public_key, baked=aws_image.baked
            ),
            tags=tags("worker"),
            cpu_scale_out_fallback=cpu_fallback,
            image_id=aws_image_id,
        ),
        aws_opts,
    )
    aws_pool_ref = AwsPoolRef(
        region=region,
        group_name=graviton_pool.group_name,
        group_arn=graviton_pool.group_arn,
        lifecycle_hook_name=graviton_pool.lifecycle_hook_name,
        provider=aws_provider,
    )
    pulumi.export(
        "vpn", {"azureGatewayIps": vpn.azure_gateway_ips, "awsTunnels": vpn.tunnel_addresses}
    )

FarmScaler(
    "obs-scaler",
    FarmScalerArgs(
        settings=settings.scaler,
        pools=list(pools.values()),
        resource_group_name=net.resource_group_name,
        resource_group_id=net.resource_group_id,
        location=settings.location,
        server_vm_name=server.vm_name,
        server_principal_id=server.principal_id,
        azure_pool=azure_pool_ref,
        aws_pool=aws_pool_ref,
        azure_tags=tags("server"),
        aws_tags=tags("scaler"),
        after=[backend],
    ),
)

pulumi.export("serverPublicIp", server.public_ip)
pulumi.export("serverPrivateIp", server.private_ip)
pulumi.export("resourceGroup", net.resource_group_name)
pulumi.export("dataResourceGroup", kept.resource_group_name)
pulumi.export("topology", [p.to_output() for p in pools.values()])
# For ./check (tools/check.py): whom to log in as, which disk must hold
# /srv/obs, and which daemons the server runs. `flavor` arrives with the
# appliance server; until then every server is the Debian backend.
pulumi.export("adminUsername", settings.admin_username)
pulumi.export("dataDiskId", server.data_disk_id)
pulumi.export("serverFlavor", settings.server.flavor)
