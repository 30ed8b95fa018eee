"""The VPN's APIPA plan against both clouds' documented rules: Azure's custom
BGP addresses lie in 169.254.21.0-169.254.22.255; AWS's tunnel inside CIDRs
are /30s of 169.254.0.0/16, none of the ranges AWS reserves, unique per
virtual private gateway; each tunnel's two ends share its /30."""

from __future__ import annotations

import ipaddress

from components.vpn import (
    AZURE_APIPA_RANGE,
    INSTANCES,
    TUNNELS,
    connection_bgp_ips,
    instance_bgp_ips,
    tunnel_plan,
)

AWS_RESERVED = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/30",
        "169.254.1.0/30",
        "169.254.2.0/30",
        "169.254.3.0/30",
        "169.254.4.0/30",
        "169.254.5.0/30",
        "169.254.169.252/30",
    )
]


def test_four_tunnels_two_per_instance():
    plan = tunnel_plan()
    assert len(plan) == len(INSTANCES) * len(TUNNELS) == 4
    assert len({t.inside_cidr for t in plan}) == 4


def test_inside_cidrs_follow_both_clouds_rules():
    lo, hi = AZURE_APIPA_RANGE
    for t in tunnel_plan():
        net = ipaddress.ip_network(t.inside_cidr)
        assert net.prefixlen == 30 and net.subnet_of(ipaddress.ip_network("169.254.0.0/16"))
        assert not any(net.overlaps(r) for r in AWS_RESERVED)
        aws, azure = (ipaddress.ip_address(t.aws_bgp_ip), ipaddress.ip_address(t.azure_bgp_ip))
        assert aws in net and azure in net and aws != azure
        assert lo <= azure <= hi


def test_each_instance_holds_the_azure_ends_of_its_own_tunnels():
    plan = tunnel_plan()
    for i in INSTANCES:
        assert instance_bgp_ips(plan, i) == [t.azure_bgp_ip for t in plan if t.instance == i]
    for t in plan:
        custom = connection_bgp_ips(plan, t)
        assert custom[t.instance] == t.azure_bgp_ip
        assert all(custom[i] in instance_bgp_ips(plan, i) for i in INSTANCES)


def test_microsofts_example_addresses():
    by_key = {t.key: (t.inside_cidr, t.aws_bgp_ip, t.azure_bgp_ip) for t in tunnel_plan()}
    assert by_key == {
        "1-1": ("169.254.21.0/30", "169.254.21.1", "169.254.21.2"),
        "1-2": ("169.254.22.0/30", "169.254.22.1", "169.254.22.2"),
        "2-1": ("169.254.21.4/30", "169.254.21.5", "169.254.21.6"),
        "2-2": ("169.254.22.4/30", "169.254.22.5", "169.254.22.6"),
    }
