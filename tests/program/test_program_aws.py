"""Hybrid and native farms under mocks: the AWS pool, the VPN, and what
each side's cloud-init runs."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from components.cloudinit import QEMU_ARM_BINFMT_D
from components.provision import provision_packages
from tests.conftest import raw_config
from tests.helpers.cloudinit import check_cloud_config
from tools.offline import ProgramRun, read_stack_config, run_program, unwrap_secret

AWS_STACKS = ["hybrid", "native"]


@pytest.fixture(scope="module", params=AWS_STACKS)
def aws_run(request) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param, read_stack_config(request.param))


def files(user_data: str) -> dict[str, dict]:
    return {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}


def lt_user_data(run: ProgramRun) -> str:
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    return base64.b64decode(lt.inputs["userData"]).decode()


def test_launch_template_is_locked_down(aws_run):
    name, run = aws_run
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    # Baked stacks launch the AMI EC2 Image Builder made (the mocks' id),
    # stock ones Debian's, resolved at launch.
    baked = json.loads(read_stack_config(name).get("obs-farm:images", "{}")).get("bake")
    assert lt["imageId"] == (
        "ami-0123456789abcdef0"
        if baked
        else "resolve:ssm:/aws/service/debian/release/12/latest/arm64"
    )
    assert lt["metadataOptions"]["httpTokens"] == "required"
    (disk,) = lt["blockDeviceMappings"]
    assert disk["ebs"]["encrypted"] == "true" and disk["ebs"]["volumeType"] == "gp3"
    assert disk["ebs"]["volumeSize"] == 200
    (nic,) = lt["networkInterfaces"]
    assert nic["associatePublicIpAddress"] == "false"


def test_launch_template_user_data_is_valid_cloud_config(aws_run):
    _, run = aws_run
    text = lt_user_data(run)
    assert check_cloud_config(text) == []
    doc = yaml.safe_load(text)
    assert doc["ssh_authorized_keys"][0].startswith("ssh-ed25519 ")
    env = files(text)["/etc/obs-farm/worker.env"]["content"]
    assert 'REPO_SERVER="http://10.40.1.10:5252"' in env


def test_graviton_armv7_is_native_behind_the_aarch32_check(aws_run):
    _, run = aws_run
    f = files(lt_user_data(run))
    armv7 = f["/etc/obs-farm/groups/armv7hl.env"]["content"]
    assert 'HOSTARCH="armv7l"' in armv7 and 'EXECUTION="native"' in armv7
    assert 'CHECK="obs-farm-check-aarch32"' in armv7
    probe = base64.b64decode(f["/usr/local/lib/obs-farm/aarch32-probe"]["content"])
    assert probe[:4] == b"\x7fELF" and probe[18] == 40  # ARM
    assert "/etc/obs-farm/groups/x86_64.env" not in f
    # qemu-user-static is on every worker (the provisioning script's), but
    # nothing registers qemu-arm here, so the AArch32 check stays meaningful.
    assert QEMU_ARM_BINFMT_D not in f


def test_auto_scaling_group(aws_run):
    stack, run = aws_run
    g = yaml.safe_load(Path(f"Pulumi.{stack}.yaml").read_text())["config"]["obs-farm:graviton"]
    asg = run.one("aws:autoscaling/group:Group")
    i = asg.inputs
    assert (i["minSize"], i["maxSize"]) == (g["minInstances"], g["maxInstances"])
    assert "desiredCapacity" not in i
    assert asg.options["ignore_changes"] == ["desiredCapacity"]
    assert i["protectFromScaleIn"] is True
    assert i["capacityRebalance"] is g["spot"]
    dist = i["mixedInstancesPolicy"]["instancesDistribution"]
    assert dist["onDemandBaseCapacity"] == g["onDemandBase"]
    assert dist["onDemandPercentageAboveBaseCapacity"] == (0 if g["spot"] else 100)
    overrides = i["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
    assert [o["instanceType"] for o in overrides] == g["instanceTypes"]
    assert len(i["vpcZoneIdentifiers"]) == 2


def test_vpn_on_both_sides(aws_run):
    """Microsoft's Azure-AWS BGP design: active-active gateway, four tunnels,
    APIPA inside addresses, BGP everywhere, no static prefixes that overlap."""
    _, run = aws_run
    gw = run.one("azure-native:network:VirtualNetworkGateway").inputs
    assert (gw["gatewayType"], gw["vpnType"]) == ("Vpn", "RouteBased")
    assert gw["activeActive"] is True and gw["enableBgp"] is True
    assert gw["bgpSettings"]["asn"] == 65000
    peering = gw["bgpSettings"]["bgpPeeringAddresses"]
    configs = [c["name"] for c in gw["ipConfigurations"]]
    assert (
        len(configs) == 2 and len({c["publicIPAddress"]["id"] for c in gw["ipConfigurations"]}) == 2
    )
    assert [p["ipconfigurationId"].rsplit("/", 1)[1] for p in peering] == configs
    assert all(
        p["ipconfigurationId"].split("/virtualNetworkGateways/")[1].split("/")[0]
        == gw["virtualNetworkGatewayName"]
        for p in peering
    )
    azure_bgp = {ip for p in peering for ip in p["customBgpIpAddresses"]}
    apipa = ipaddress.ip_network("169.254.21.0/24"), ipaddress.ip_network("169.254.22.0/24")
    assert len(azure_bgp) == 4 and all(
        any(ipaddress.ip_address(ip) in n for n in apipa) for ip in azure_bgp
    )

    vgw = run.one("aws:ec2/vpnGateway:VpnGateway").inputs
    assert vgw["amazonSideAsn"] == "64512"
    cgws = run.of_type("aws:ec2/customerGateway:CustomerGateway")
    assert {c.inputs["bgpAsn"] for c in cgws} == {"65000"}
    conns = run.of_type("aws:ec2/vpnConnection:VpnConnection")
    assert len(conns) == 2 and all(c.inputs["staticRoutesOnly"] is False for c in conns)
    inside = [c.inputs[f"tunnel{n}InsideCidr"] for c in conns for n in (1, 2)]
    nets = [ipaddress.ip_network(c) for c in inside]
    assert all(n.prefixlen == 30 and any(n.subnet_of(a) for a in apipa) for n in nets)
    assert len(set(inside)) == 4
    # Each AWS tunnel's Azure-side address is the second host of its /30, and
    # it is one of the gateway's custom BGP addresses.
    assert {str(list(n.hosts())[1]) for n in nets} == azure_bgp
    keys = [unwrap_secret(c.inputs[f"tunnel{n}PresharedKey"]) for c in conns for n in (1, 2)]
    assert all(secret for secret, _ in keys), "pre-shared keys must stay Pulumi secrets"
    plain = {k for _, k in keys}
    assert len(plain) == 4 and all(len(k) == 40 and k[0] != "0" for k in plain)
    # No static routes: AWS learns the Azure space by BGP and propagates it.
    assert not run.of_type("aws:ec2/vpnConnectionRoute:VpnConnectionRoute")
    assert not [
        r
        for r in run.of_type("aws:ec2/route:Route")
        if r.inputs["destinationCidrBlock"] == "10.40.0.0/16"
    ]
    prop = run.one("aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation").inputs
    assert prop["vpnGatewayId"].endswith("vgw-id") and prop["routeTableId"].endswith(
        "private-rt-id"
    )

    lngs = run.of_type("azure-native:network:LocalNetworkGateway")
    aws_bgp = {str(next(iter(n.hosts()))) for n in nets}
    assert {lng.inputs["bgpSettings"]["bgpPeeringAddress"] for lng in lngs} == aws_bgp
    assert {lng.inputs["bgpSettings"]["asn"] for lng in lngs} == {64512}
    prefixes = [
        p for lng in lngs for p in lng.inputs["localNetworkAddressSpace"]["addressPrefixes"]
    ]
    # Each gateway's only prefix is its peer's /32: none overlap, and the VPC
    # range is learned, not configured.
    assert sorted(prefixes) == sorted(f"{ip}/32" for ip in aws_bgp)
    azconns = run.of_type("azure-native:network:VirtualNetworkGatewayConnection")
    assert len(azconns) == 4 and all(c.inputs["enableBgp"] is True for c in azconns)
    shared = [unwrap_secret(c.inputs["sharedKey"]) for c in azconns]
    assert all(secret for secret, _ in shared)
    assert {k for _, k in shared} == plain
    for c in azconns:
        custom = c.inputs["gatewayCustomBgpIpAddresses"]
        assert {x["customBgpIpAddress"] for x in custom} <= azure_bgp and len(custom) == 2
    subnet = next(
        s for s in run.of_type("azure-native:network:Subnet") if s.name == "obs-gateway-subnet"
    )
    assert subnet.inputs["subnetName"] == "GatewaySubnet"


def test_preshared_keys_never_reach_user_data(aws_run):
    _, run = aws_run
    _, key = unwrap_secret(
        run.of_type("aws:ec2/vpnConnection:VpnConnection")[0].inputs["tunnel1PresharedKey"]
    )
    docs = [lt_user_data(run)]
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    docs.append(base64.b64decode(vm).decode())
    assert all(key not in d for d in docs)


def test_server_accepts_aws_workers_through_the_run_command(aws_run):
    _, run = aws_run
    script = next(
        r
        for r in run.of_type("azure-native:compute:VirtualMachineRunCommandByVirtualMachine")
        if r.name == "obs-backend-apply"
    ).inputs["source"]["script"]
    assert "# 10.41.0.0/18" in script and "# 10.41.64.0/18" in script
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    assert "10.41." not in base64.b64decode(vm).decode()


def test_native_azure_workers_have_no_emulation():
    run = run_program("native", read_stack_config("native"))
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet").inputs
    text = base64.b64decode(vmss["virtualMachineProfile"]["osProfile"]["customData"]).decode()
    f = files(text)
    assert not any("qemu" in p for p in f)
    assert [p for p in f if p.startswith("/etc/obs-farm/groups/")] == [
        "/etc/obs-farm/groups/x86_64.env"
    ]
    assert "/usr/local/sbin/obs-farm-check-binfmt" not in f
    topo = {p["pool"]: p for p in run.outputs["topology"]}
    assert [a["execution"] for a in topo["azure-x86"]["architectures"]] == ["native"]


def test_native_without_x86_has_no_azure_workers():
    raw = raw_config(
        mode="native",
        architectures=["aarch64"],
        graviton={"instanceTypes": ["c8g.8xlarge"]},
        **{"aws:region": "eu-central-1"},
    )
    run = run_program("armonly", raw)
    assert not run.of_type("azure-native:compute:VirtualMachineScaleSet")
    assert [p["pool"] for p in run.outputs["topology"]] == ["aws-graviton"]
    nsg = next(
        n
        for n in run.of_type("azure-native:network:NetworkSecurityGroup")
        if n.name.endswith("server-nsg")
    )
    backend = next(
        r for r in nsg.inputs["securityRules"] if r["name"] == "obs-backend-from-workers"
    )
    assert backend["sourceAddressPrefixes"] == ["10.41.0.0/18", "10.41.64.0/18"]


def test_graviton4_with_emulated_armv7_registers_qemu_arm():
    raw = raw_config(
        mode="native",
        graviton={"instanceTypes": ["c8g.8xlarge"], "armv7hlEmulated": True},
        **{"aws:region": "eu-central-1"},
    )
    run = run_program("g4", raw)
    text = lt_user_data(run)
    doc = yaml.safe_load(text)
    assert check_cloud_config(text) == []
    # The interpreter the rule names comes with the provisioning script's packages.
    assert {"qemu-user-static", "binfmt-support"} <= set(provision_packages())
    # Registered again at every boot by systemd-binfmt, and at once on the first.
    assert files(text)["/etc/binfmt.d/qemu-arm.conf"]["content"].endswith(
        ":/usr/bin/qemu-arm-static:F\n"
    )
    assert doc["runcmd"][-2:] == [
        ["/usr/lib/systemd/systemd-binfmt", "/etc/binfmt.d/qemu-arm.conf"],
        ["systemctl", "enable", "--now", "obs-farm-workers.service"],
    ]
    armv7 = files(text)["/etc/obs-farm/groups/armv7hl.env"]["content"]
    assert 'CHECK="obs-farm-check-binfmt qemu-arm"' in armv7


def test_plan_shows_the_aws_pool_and_vpn(tmp_path):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "tools.plan", "hybrid", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "aws-graviton  aws    c7g.8xlarge,m6g.8xlarge  0..4  armv7hl  native" in res.stdout
    assert "Link: site-to-site IPsec VPN" in res.stdout
    assert (tmp_path / "aws-graviton-lt.user-data").exists()
