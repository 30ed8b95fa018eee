"""SiteToSiteVpn: the private IPsec link between the Azure VNet and the AWS VPC.

The OBS backend speaks unauthenticated HTTP and the dispatcher connects back
to each worker's own address, so AWS workers and the Azure server must reach
each other privately and without NAT.

The design is Microsoft's for Azure and AWS with BGP ("How to connect AWS
and Azure using a BGP-enabled VPN gateway"): two tunnels to one network need
BGP, and local network gateways' prefixes must not overlap.

Creates, on Azure: two zone-redundant Standard public IPs and an
active-active, BGP-enabled route-based VPN gateway in the GatewaySubnet
(its own ASN, custom APIPA BGP addresses on each instance), and per AWS
tunnel (four) a local network gateway (the tunnel's outside address, the AWS
peer's BGP address as its only, /32, prefix, the AWS ASN) and a BGP IPsec
connection. On AWS: a virtual private gateway (Amazon-side ASN) attached to
the VPC, a customer gateway per Azure instance (the Azure ASN), a dynamic
(BGP) VPN connection to each with two tunnels whose inside CIDRs are the
APIPA /30s Azure expects, and route propagation into the workers' route
table. Routes are learned both ways: Azure learns the VPC range, AWS the
Azure address space. The four pre-shared keys are generated (pulumi-random)
and stay Pulumi secrets end to end.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random
from pulumi_azure_native import authorization, network

# Azure's custom BGP (APIPA) addresses must lie in 169.254.21.0 - 169.254.22.255.
AZURE_APIPA_RANGE = (ipaddress.ip_address("169.254.21.0"), ipaddress.ip_address("169.254.22.255"))
INSTANCES = (0, 1)  # Azure gateway instances, one AWS VPN connection each
TUNNELS = (1, 2)  # tunnels of an AWS VPN connection


@dataclass(frozen=True)
class Tunnel:
    instance: int  # the Azure gateway instance (and AWS connection) it belongs to
    number: int  # AWS tunnel number in that connection
    inside_cidr: str  # AWS tunnel inside CIDR (/30)
    aws_bgp_ip: str  # AWS side's BGP address (first host of the /30)
    azure_bgp_ip: str  # Azure side's custom BGP address (second host)

    @property
    def key(self) -> str:
        return f"{self.instance + 1}-{self.number}"


def tunnel_plan() -> list[Tunnel]:
    """Microsoft's APIPA plan: tunnel n of instance i uses 169.254.(20+n).(4i)/30."""
    plan = []
    for i in INSTANCES:
        for n in TUNNELS:
            net = ipaddress.ip_network(f"169.254.{20 + n}.{4 * i}/30")
            aws_ip, azure_ip = list(net.hosts())
            plan.append(Tunnel(i, n, str(net), str(aws_ip), str(azure_ip)))
    return plan


def instance_bgp_ips(plan: list[Tunnel], instance: int) -> list[str]:
    return [t.azure_bgp_ip for t in plan if t.instance == instance]


def connection_bgp_ips(plan: list[Tunnel], tunnel: Tunnel) -> dict[int, str]:
    """Per Azure instance, the custom BGP address a connection uses: the
    tunnel's own on its instance, the same tunnel number's on the other."""
    return {
        i: next(t.azure_bgp_ip for t in plan if t.instance == i and t.number == tunnel.number)
        for i in INSTANCES
    }


@dataclass(frozen=True)
class SiteToSiteVpnArgs:
    resource_group_name: pulumi.Input[str]
    location: str
    gateway_subnet_id: pulumi.Input[str]
    gateway_sku: str
    azure_asn: int
    aws_asn: int
    aws_vpc_id: pulumi.Input[str]
    aws_route_table_id: pulumi.Input[str]
    azure_tags: dict[str, str]
    aws_tags: dict[str, str]


def preshared_key(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """A 40-character key AWS accepts (letters and digits, not starting with 0)."""
    password = random.RandomPassword(
        name, length=39, special=False, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(password.result.apply(lambda r: f"k{r}"))


def _ip(address: str | None) -> str:
    return address or ""


class SiteToSiteVpn(pulumi.ComponentResource):
    azure_gateway_ips: list[pulumi.Output[str]]
    tunnel_addresses: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: SiteToSiteVpnArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:link:SiteToSiteVpn", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rg, loc = args.resource_group_name, args.location
        plan = tunnel_plan()
        gw_ips = [
            network.PublicIPAddress(
                f"{name}-azure-gw-ip{i + 1}",
                resource_group_name=rg,
                location=loc,
                sku={"name": "Standard"},
                public_ip_allocation_method="Static",
                zones=["1", "2", "3"],
                tags=args.azure_tags,
                opts=child,
            )
            for i in INSTANCES
        ]
        # The BGP settings name the gateway's own IP configurations by id, so
        # the gateway's name is fixed rather than generated.
        gateway_name = f"{name}-azure-gw"
        subscription = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        ).subscription_id

        def ipconfig_id(instance: int) -> pulumi.Output[str]:
            return pulumi.Output.concat(
                "/subscriptions/", subscription, "/resourceGroups/", rg,
                f"/providers/Microsoft.Network/virtualNetworkGateways/{gateway_name}"
                f"/ipConfigurations/instance{instance}",
            )  # fmt: skip

        ipconfig_ids = {i: ipconfig_id(i) for i in INSTANCES}
        gateway = network.VirtualNetworkGateway(
            gateway_name,
            virtual_network_gateway_name=gateway_name,
            resource_group_name=rg,
            location=loc,
            gateway_type="Vpn",
            vpn_type="RouteBased",
            vpn_gateway_generation="Generation1",
            sku={"name": args.gateway_sku, "tier": args.gateway_sku},
            active_active=True,
            enable_bgp=True,
            bgp_settings={
                "asn": args.azure_asn,
                "bgp_peering_addresses": [
                    {
                        "ipconfiguration_id": ipconfig_ids[i],
                        "custom_bgp_ip_addresses": instance_bgp_ips(plan, i),
                    }
                    for i in INSTANCES
                ],
            },
            ip_configurations=[
                {
                    "name": f"instance{i}",
                    "private_ip_allocation_method": "Dynamic",
                    "subnet": {"id": args.gateway_subnet_id},
                    "public_ip_address": {"id": gw_ips[i].id},
                }
                for i in INSTANCES
            ],
            tags=args.azure_tags,
            # Creating an Azure VPN gateway takes 30-45 minutes.
            opts=pulumi.ResourceOptions(
                parent=self, custom_timeouts=pulumi.CustomTimeouts(create="90m")
            ),
        )
        vgw = aws.ec2.VpnGateway(
            f"{name}-aws-vgw",
            vpc_id=args.aws_vpc_id,
            amazon_side_asn=str(args.aws_asn),
            tags=args.aws_tags,
            opts=child,
        )
        # Routes the VPN learns by BGP (the Azure address space) reach the
        # workers' route table.
        aws.ec2.VpnGatewayRoutePropagation(
            f"{name}-aws-propagation",
            vpn_gateway_id=vgw.id,
            route_table_id=args.aws_route_table_id,
            opts=child,
        )
        keys = {t.key: preshared_key(f"{name}-psk{t.key}", self) for t in plan}
        outside: dict[str, pulumi.Output[str]] = {}
        for i in INSTANCES:
            cgw = aws.ec2.CustomerGateway(
                f"{name}-aws-cgw{i + 1}",
                bgp_asn=str(args.azure_asn),
                ip_address=gw_ips[i].ip_address.apply(_ip),
                type="ipsec.1",
                tags=args.aws_tags,
                opts=child,
            )
            t1, t2 = (t for t in plan if t.instance == i)
            connection = aws.ec2.VpnConnection(
                f"{name}-aws-vpn{i + 1}",
                vpn_gateway_id=vgw.id,
                customer_gateway_id=cgw.id,
                type="ipsec.1",
                static_routes_only=False,
                tunnel1_inside_cidr=t1.inside_cidr,
                tunnel2_inside_cidr=t2.inside_cidr,
                tunnel1_preshared_key=keys[t1.key],
                tunnel2_preshared_key=keys[t2.key],
                tunnel1_ike_versions=["ikev2"],
                tunnel2_ike_versions=["ikev2"],
                tags=args.aws_tags,
                opts=child,
            )
            outside[t1.key] = connection.tunnel1_address
            outside[t2.key] = connection.tunnel2_address
        for t in plan:
            local = network.LocalNetworkGateway(
                f"{name}-azure-lng{t.key}",
                resource_group_name=rg,
                location=loc,
                gateway_ip_address=outside[t.key],
                # With BGP the only prefix is the peer's own BGP address; the
                # VPC range is learned, so no two gateways overlap.
                local_network_address_space={"address_prefixes": [f"{t.aws_bgp_ip}/32"]},
                bgp_settings={"asn": args.aws_asn, "bgp_peering_address": t.aws_bgp_ip},
                tags=args.azure_tags,
                opts=child,
            )
            custom = connection_bgp_ips(plan, t)
            network.VirtualNetworkGatewayConnection(
                f"{name}-azure-conn{t.key}",
                resource_group_name=rg,
                location=loc,
                connection_type="IPsec",
                connection_protocol="IKEv2",
                virtual_network_gateway1={"id": gateway.id},
                local_network_gateway2={"id": local.id},
                shared_key=keys[t.key],
                enable_bgp=True,
                gateway_custom_bgp_ip_addresses=[
                    {"ip_configuration_id": ipconfig_ids[i], "custom_bgp_ip_address": custom[i]}
                    for i in INSTANCES
                ],
                tags=args.azure_tags,
                opts=child,
            )
        self.azure_gateway_ips = [ip.ip_address.apply(_ip) for ip in gw_ips]
        self.tunnel_addresses = [outside[t.key] for t in plan]
        self.register_outputs(
            {"azure_gateway_ips": self.azure_gateway_ips, "tunnel_addresses": self.tunnel_addresses}
        )
