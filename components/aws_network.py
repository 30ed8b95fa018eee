"""AwsNetwork: the VPC the Graviton workers live in.

Creates: a VPC, an internet gateway, public and private subnets in two
availability zones, one NAT gateway (with its Elastic IP) in the first public
subnet, public and private route tables, and the workers' security group.
Workers get no public address: packages come through the NAT gateway, and
the OBS server reaches them (and they it) over the site-to-site VPN, whose
routes the SiteToSiteVpn component adds to the private route table.
Instances launched in the private subnets get resource-name hostnames (their
instance id), which the scaler relies on to find a worker's instance.

The security group admits only the dispatcher's connections from the OBS
server's address to the worker ports, and SSH from the server subnet (use
the server as the jump host). Everything else inbound is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.topology import WORKER_PORT_RANGE


@dataclass(frozen=True)
class AwsNetworkArgs:
    vpc_cidr: str
    subnets: dict[str, str]  # private-a, private-b, public-a, public-b
    zones: tuple[str, str]
    server_address: str
    server_subnet: str
    tags: dict[str, str]


def _named(tags: dict[str, str], name: str) -> dict[str, str]:
    return {**tags, "Name": name}


class AwsNetwork(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    private_route_table_id: pulumi.Output[str]
    worker_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: AwsNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("obs-farm:aws:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        t = args.tags
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=_named(t, f"{name}-vpc"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=_named(t, f"{name}-igw"), opts=child
        )
        subnets = {}
        for role, zone in (("a", args.zones[0]), ("b", args.zones[1])):
            for kind in ("private", "public"):
                key = f"{kind}-{role}"
                subnets[key] = aws.ec2.Subnet(
                    f"{name}-{key}",
                    vpc_id=vpc.id,
                    cidr_block=args.subnets[key],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    # Workers are named after their instance id (i-0123...),
                    # as the launch template asks; scaler/CONTRACT.md.
                    private_dns_hostname_type_on_launch=(
                        "resource-name" if kind == "private" else None
                    ),
                    tags=_named(t, f"{name}-{key}"),
                    opts=child,
                )
        eip = aws.ec2.Eip(
            f"{name}-nat-ip", domain="vpc", tags=_named(t, f"{name}-nat-ip"), opts=child
        )
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=eip.id,
            subnet_id=subnets["public-a"].id,
            tags=_named(t, f"{name}-nat"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}],
            tags=_named(t, f"{name}-public-rt"),
            opts=child,
        )
        # Routes to Azure are added by the VPN as separate Route resources;
        # inline routes here would fight them, so the default route is one too.
        private_rt = aws.ec2.RouteTable(
            f"{name}-private-rt", vpc_id=vpc.id, tags=_named(t, f"{name}-private-rt"), opts=child
        )
        aws.ec2.Route(
            f"{name}-private-default",
            route_table_id=private_rt.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=nat.id,
            opts=child,
        )
        for key, subnet in subnets.items():
            table = private_rt if key.startswith("private") else public_rt
            aws.ec2.RouteTableAssociation(
                f"{name}-{key}-rta", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )
        lo, hi = WORKER_PORT_RANGE
        sg = aws.ec2.SecurityGroup(
            f"{name}-workers",
            vpc_id=vpc.id,
            description="OBS workers: dispatcher callbacks from the OBS server only",
            ingress=[
                {
                    "description": "OBS dispatcher to worker ports",
                    "protocol": "tcp",
                    "from_port": lo,
                    "to_port": hi,
                    "cidr_blocks": [f"{args.server_address}/32"],
                },
                {
                    "description": "SSH through the OBS server",
                    "protocol": "tcp",
                    "from_port": 22,
                    "to_port": 22,
                    "cidr_blocks": [args.server_subnet],
                },
            ],
            egress=[
                {
                    "description": "packages (NAT) and the OBS backend (VPN)",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "cidr_blocks": ["0.0.0.0/0"],
                }
            ],
            tags=_named(t, f"{name}-workers"),
            opts=child,
        )
        self.vpc_id = vpc.id
        self.private_subnet_ids = [subnets["private-a"].id, subnets["private-b"].id]
        self.private_route_table_id = private_rt.id
        self.worker_security_group_id = sg.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "private_route_table_id": self.private_route_table_id,
                "worker_security_group_id": self.worker_security_group_id,
            }
        )
