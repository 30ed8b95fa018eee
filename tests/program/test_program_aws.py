"""Hybrid and native farms under mocks: the AWS pool, the VPN, and what
each side's cloud-init runs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

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
    _, run = aws_run
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["imageId"] == "resolve:ssm:/aws/service/debian/release/12/latest/arm64"
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
    assert "qemu-user-static" not in yaml.safe_load(lt_user_data(run))["packages"]


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
    _, run = aws_run
    conn = run.one("aws:ec2/vpnConnection:VpnConnection").inputs
    assert conn["staticRoutesOnly"] is True
    keys = [unwrap_secret(conn[f"tunnel{n}PresharedKey"]) for n in (1, 2)]
    assert all(secret for secret, _ in keys), "pre-shared keys must stay Pulumi secrets"
    plain = {k for _, k in keys}
    assert len(plain) == 2 and all(len(k) == 40 and k[0] != "0" for k in plain)
    route = run.one("aws:ec2/vpnConnectionRoute:VpnConnectionRoute").inputs
    assert route["destinationCidrBlock"] == "10.40.0.0/16"
    to_azure = [
        r
        for r in run.of_type("aws:ec2/route:Route")
        if r.inputs["destinationCidrBlock"] == "10.40.0.0/16"
    ]
    assert len(to_azure) == 1 and to_azure[0].inputs["gatewayId"].endswith("vgw-id")
    lngs = run.of_type("azure-native:network:LocalNetworkGateway")
    assert sorted(lng.inputs["gatewayIpAddress"] for lng in lngs) == [
        "198.51.100.201",
        "198.51.100.202",
    ]
    assert all(
        lng.inputs["localNetworkAddressSpace"]["addressPrefixes"] == ["10.41.0.0/16"]
        for lng in lngs
    )
    conns = run.of_type("azure-native:network:VirtualNetworkGatewayConnection")
    shared = [unwrap_secret(c.inputs["sharedKey"]) for c in conns]
    assert all(secret for secret, _ in shared)
    assert {k for _, k in shared} == plain
    gw = run.one("azure-native:network:VirtualNetworkGateway").inputs
    assert (gw["gatewayType"], gw["vpnType"]) == ("Vpn", "RouteBased")
    subnet = next(
        s for s in run.of_type("azure-native:network:Subnet") if s.name == "obs-gateway-subnet"
    )
    assert subnet.inputs["subnetName"] == "GatewaySubnet"


def test_preshared_keys_never_reach_user_data(aws_run):
    _, run = aws_run
    _, key = unwrap_secret(
        run.one("aws:ec2/vpnConnection:VpnConnection").inputs["tunnel1PresharedKey"]
    )
    docs = [lt_user_data(run)]
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    docs.append(base64.b64decode(vm).decode())
    assert all(key not in d for d in docs)


def test_server_accepts_aws_workers_through_the_run_command(aws_run):
    _, run = aws_run
    script = run.one("azure-native:compute:VirtualMachineRunCommandByVirtualMachine").inputs[
        "source"
    ]["script"]
    assert "# 10.41.0.0/18" in script and "# 10.41.64.0/18" in script
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    assert "10.41." not in base64.b64decode(vm).decode()


def test_native_azure_workers_have_no_emulation():
    run = run_program("native", read_stack_config("native"))
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet").inputs
    text = base64.b64decode(vmss["virtualMachineProfile"]["osProfile"]["customData"]).decode()
    doc = yaml.safe_load(text)
    assert "qemu-user-static" not in doc["packages"]
    f = files(text)
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
    assert {"qemu-user-static", "binfmt-support"} <= set(doc["packages"])
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
