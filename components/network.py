"""FarmNetwork: the Azure side of the farm's network.

Creates: the resource group, one virtual network, a server subnet and a
worker subnet each with its own network security group, and a NAT gateway
(with its public IP) that gives the worker subnet outbound access for
packages. The NSGs deny every inbound connection that is not listed: SSH,
HTTPS and (appliance) the published repositories on port 82 only from the
admin ranges, the OBS backend ports only from the worker
subnet, the worker ports only from the server. Azure's default rule would
otherwise let every address in the virtual network (and anything peered or
linked to it later) reach the unauthenticated backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import network, resources

from components.topology import BACKEND_PORTS, WORKER_PORT_RANGE

DENY_ALL_PRIORITY = 4096


@dataclass(frozen=True)
class FarmNetworkArgs:
    location: str
    address_space: str
    server_subnet: str
    worker_subnet: str
    server_address: str
    admin_cidrs: tuple[str, ...]
    tags: dict[str, str]
    # Every range OBS workers connect from (Azure and, over the VPN, AWS).
    worker_sources: tuple[str, ...]
    # GatewaySubnet for a VPN gateway; None when the farm has no VPN.
    gateway_subnet: str | None = None
    # The appliance publishes built repositories over HTTP on this port
    # (Apache); admins reach it like the web UI. None: nothing listens.
    repository_port: int | None = None


def _rule(
    name: str, priority: int, sources: list[str], dest: str, ports: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "priority": priority,
        "direction": "Inbound",
        "access": "Allow",
        "protocol": "Tcp",
        "source_address_prefixes": sources,
        "source_port_range": "*",
        "destination_address_prefix": dest,
        "destination_port_ranges": ports,
    }


_DENY_ALL = {
    "name": "deny-all-other-inbound",
    "priority": DENY_ALL_PRIORITY,
    "direction": "Inbound",
    "access": "Deny",
    "protocol": "*",
    "source_address_prefix": "*",
    "source_port_range": "*",
    "destination_address_prefix": "*",
    "destination_port_range": "*",
}


def server_rules(args: FarmNetworkArgs) -> list[dict[str, Any]]:
    rules = []
    if args.admin_cidrs:
        admins = list(args.admin_cidrs)
        rules.append(_rule("ssh-from-admins", 100, admins, args.server_subnet, ["22"]))
        rules.append(_rule("https-from-admins", 110, admins, args.server_subnet, ["443"]))
        if args.repository_port:
            rules.append(
                _rule(
                    "obs-repositories-from-admins",
                    120,
                    admins,
                    args.server_subnet,
                    [str(args.repository_port)],
                )
            )
    # The source service (5152) stays local to the server.
    worker_facing = [str(p) for p in BACKEND_PORTS if p != 5152]
    rules.append(
        _rule(
            "obs-backend-from-workers",
            200,
            list(args.worker_sources),
            args.server_address,
            worker_facing,
        )
    )
    rules.append(_DENY_ALL)
    return rules


def worker_rules(args: FarmNetworkArgs) -> list[dict[str, Any]]:
    # Workers have no public address: SSH reaches them only through the
    # server (`ssh -J`), so only the server subnet may connect.
    rules = [_rule("ssh-from-server-subnet", 100, [args.server_subnet], args.worker_subnet, ["22"])]
    lo, hi = WORKER_PORT_RANGE
    # The dispatcher connects back to each worker's registered port.
    rules.append(
        _rule(
            "obs-dispatcher-to-workers",
            200,
            [f"{args.server_address}/32"],
            args.worker_subnet,
            [f"{lo}-{hi}"],
        )
    )
    rules.append(_DENY_ALL)
    return rules


class FarmNetwork(pulumi.ComponentResource):
    resource_group_name: pulumi.Output[str]
    resource_group_id: pulumi.Output[str]
    server_subnet_id: pulumi.Output[str]
    worker_subnet_id: pulumi.Output[str]
    vnet_name: pulumi.Output[str]
    gateway_subnet_id: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: FarmNetworkArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:azure:FarmNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        common = {"location": args.location, "tags": args.tags}
        # The farm's own group: `pulumi destroy` deletes it and all it holds; what
        # must outlive the farm lives in the KeptData group.
        rg = resources.ResourceGroup(f"{name}-farm-rg", **common, opts=child)
        common["resource_group_name"] = rg.name
        vnet = network.VirtualNetwork(
            f"{name}-vnet",
            address_space={"address_prefixes": [args.address_space]},
            **common,
            opts=child,
        )
        server_nsg = network.NetworkSecurityGroup(
            f"{name}-server-nsg", security_rules=server_rules(args), **common, opts=child
        )
        worker_nsg = network.NetworkSecurityGroup(
            f"{name}-worker-nsg", security_rules=worker_rules(args), **common, opts=child
        )
        # Flexible scale-set VMs get no default outbound access; apt needs it.
        nat_ip = network.PublicIPAddress(
            f"{name}-nat-ip",
            sku={"name": "Standard"},
            public_ip_allocation_method="Static",
            **common,
            opts=child,
        )
        nat = network.NatGateway(
            f"{name}-nat",
            sku={"name": "Standard"},
            public_ip_addresses=[{"id": nat_ip.id}],
            **common,
            opts=child,
        )
        server_subnet = network.Subnet(
            f"{name}-server-subnet",
            resource_group_name=rg.name,
            virtual_network_name=vnet.name,
            address_prefix=args.server_subnet,
            network_security_group={"id": server_nsg.id},
            opts=child,
        )
        worker_subnet = network.Subnet(
            f"{name}-worker-subnet",
            resource_group_name=rg.name,
            virtual_network_name=vnet.name,
            address_prefix=args.worker_subnet,
            network_security_group={"id": worker_nsg.id},
            nat_gateway={"id": nat.id},
            default_outbound_access=False,
            # Azure updates one subnet of a virtual network at a time.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server_subnet]),
        )
        self.gateway_subnet_id = None
        if args.gateway_subnet:
            # Azure requires this exact name for a VPN gateway's subnet; no
            # NSG may be attached to it.
            gateway_subnet = network.Subnet(
                f"{name}-gateway-subnet",
                subnet_name="GatewaySubnet",
                resource_group_name=rg.name,
                virtual_network_name=vnet.name,
                address_prefix=args.gateway_subnet,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[worker_subnet]),
            )
            self.gateway_subnet_id = gateway_subnet.id
        self.resource_group_name = rg.name
        self.resource_group_id = rg.id
        self.server_subnet_id = server_subnet.id
        self.worker_subnet_id = worker_subnet.id
        self.vnet_name = vnet.name
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "resource_group_id": self.resource_group_id,
                "server_subnet_id": self.server_subnet_id,
                "worker_subnet_id": self.worker_subnet_id,
                "vnet_name": self.vnet_name,
                "gateway_subnet_id": self.gateway_subnet_id,
            }
        )
