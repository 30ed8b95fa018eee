"""SiteToSiteVpn: the private IPsec link between the Azure VNet and the AWS VPC.

The OBS backend speaks unauthenticated HTTP and the dispatcher connects back
to each worker's own address, so AWS workers and the Azure server must reach
each other privately and without NAT.

Creates, on Azure: a zone-redundant Standard public IP and a route-based VPN
gateway in the GatewaySubnet, and per AWS tunnel a local network gateway (the
tunnel's outside address, the AWS VPC range) and an IPsec connection. On
AWS: a virtual private gateway attached to the VPC, a customer gateway (the
Azure gateway's address), a static-route VPN connection with two tunnels, its
route to the Azure address space, and that route in the workers' route
table. The two tunnels' pre-shared keys are generated (pulumi-random) and
stay Pulumi secrets end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random
from pulumi_azure_native import network

TUNNELS = (1, 2)


@dataclass(frozen=True)
class SiteToSiteVpnArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    gateway_subnet_id: pulumi.Input[str]
    gateway_sku: str
    azure_address_space: str
    aws_vpc_id: pulumi.Input[str]
    aws_vpc_cidr: str
    aws_route_table_id: pulumi.Input[str]
    azure_tags: dict[str, str]
    aws_tags: dict[str, str]


def preshared_key(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """A 40-character key AWS accepts (letters and digits, not starting with 0)."""
    password = random.RandomPassword(
        name, length=39, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(password.result.apply(lambda r: f"k{r}"))


class SiteToSiteVpn(pulumi.ComponentResource):
    azure_gateway_ip: pulumi.Output[str]
    tunnel_addresses: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: SiteToSiteVpnArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:link:SiteToSiteVpn", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg, loc = args.resource_group_name, args.location
        gw_ip = network.PublicIPAddress(
            f"{name}-azure-gw-ip",
            resource_group_name=rg,
            location=loc,
            sku={"name": "Standard"},
            public_ip_allocation_method="Static",
            zones=["1", "2", "3"],
            tags=args.azure_tags,
            opts=child,
        )
        gateway = network.VirtualNetworkGateway(
            f"{name}-azure-gw",
            resource_group_name=rg,
            location=loc,
            gateway_type="Vpn",
            vpn_type="RouteBased",
            vpn_gateway_generation="Generation1",
            sku={"name": args.gateway_sku, "tier": args.gateway_sku},
            active_active=False,
            enable_bgp=False,
            ip_configurations=[
                {
                    "name": "default",
                    "private_ip_allocation_method": "Dynamic",
                    "subnet": {"id": args.gateway_subnet_id},
                    "public_ip_address": {"id": gw_ip.id},
                }
            ],
            tags=args.azure_tags,
            # Creating an Azure VPN gateway takes 30-45 minutes.
            opts=pulumi.ResourceOptions(
                parent=self, custom_timeouts=pulumi.CustomTimeouts(create="90m")
            ),
        )
        vgw = aws.ec2.VpnGateway(
            f"{name}-aws-vgw", vpc_id=args.aws_vpc_id, tags=args.aws_tags, opts=child
        )
        cgw = aws.ec2.CustomerGateway(
            f"{name}-aws-cgw",
            bgp_asn="65000",
            ip_address=gw_ip.ip_address.apply(lambda ip: ip or ""),
            type="ipsec.1",
            tags=args.aws_tags,
            opts=child,
        )
        keys = {n: preshared_key(f"{name}-psk{n}", self) for n in TUNNELS}
        connection = aws.ec2.VpnConnection(
            f"{name}-aws-vpn",
            vpn_gateway_id=vgw.id,
            customer_gateway_id=cgw.id,
            type="ipsec.1",
            static_routes_only=True,
            tunnel1_preshared_key=keys[1],
            tunnel2_preshared_key=keys[2],
            tunnel1_ike_versions=["ikev2"],
            tunnel2_ike_versions=["ikev2"],
            tags=args.aws_tags,
            opts=child,
        )
        aws.ec2.VpnConnectionRoute(
            f"{name}-aws-vpn-route",
            vpn_connection_id=connection.id,
            destination_cidr_block=args.azure_address_space,
            opts=child,
        )
        aws.ec2.Route(
            f"{name}-aws-to-azure",
            route_table_id=args.aws_route_table_id,
            destination_cidr_block=args.azure_address_space,
            gateway_id=vgw.id,
            opts=child,
        )
        addresses = {1: connection.tunnel1_address, 2: connection.tunnel2_address}
        for n in TUNNELS:
            local = network.LocalNetworkGateway(
                f"{name}-azure-lng{n}",
                resource_group_name=rg,
                location=loc,
                gateway_ip_address=addresses[n],
                local_network_address_space={"address_prefixes": [args.aws_vpc_cidr]},
                tags=args.azure_tags,
                opts=child,
            )
            network.VirtualNetworkGatewayConnection(
                f"{name}-azure-conn{n}",
                resource_group_name=rg,
                location=loc,
                connection_type="IPsec",
                connection_protocol="IKEv2",
                virtual_network_gateway1={"id": gateway.id},
                local_network_gateway2={"id": local.id},
                shared_key=keys[n],
                # Tunnel 1 is preferred; tunnel 2 takes over when it drops.
                routing_weight=10 * n,
                tags=args.azure_tags,
                opts=child,
            )
        self.azure_gateway_ip = gw_ip.ip_address.apply(lambda ip: ip or "")
        self.tunnel_addresses = [addresses[n] for n in TUNNELS]
        self.register_outputs(
            {"azure_gateway_ip": self.azure_gateway_ip, "tunnel_addresses": self.tunnel_addresses}
        )
