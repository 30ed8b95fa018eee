"""obs-farm: an Open Build Service farm on Azure (see README.md).

Composes only: settings, then components, then exports.
"""

import pulumi

from components.azure_workers import AzureWorkerPool, AzureWorkerPoolArgs
from components.cloudinit import render_server_user_data, render_worker_user_data
from components.common import farm_tags
from components.network import FarmNetwork, FarmNetworkArgs
from components.server import ObsServer, ObsServerArgs
from components.topology import server_private_ip, worker_pools
from config import ConfigError, load_settings_from_pulumi

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
pools = worker_pools(settings)


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
        user_data=render_server_user_data(settings),
        tags=tags("server"),
    ),
)

for pool in pools:
    AzureWorkerPool(
        pool.name,
        AzureWorkerPoolArgs(
            resource_group_name=net.resource_group_name,
            location=settings.location,
            subnet_id=net.worker_subnet_id,
            pool=pool,
            os_disk_size_gb=settings.azure_workers.os_disk_size_gb,
            admin_username=settings.admin_username,
            ssh_public_key=settings.ssh_public_key,
            user_data=render_worker_user_data(pool, server_ip),
            tags=tags("worker"),
        ),
    )

pulumi.export("serverPublicIp", server.public_ip)
pulumi.export("serverPrivateIp", server.private_ip)
pulumi.export("resourceGroup", net.resource_group_name)
pulumi.export("topology", [p.to_output() for p in pools])
