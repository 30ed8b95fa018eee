"""The whole program under Pulumi mocks, for every example stack.

Asserts the resources, the security rules and the decoded cloud-init that
`pulumi up` would send, read from the inputs the program registers.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from components.topology import BACKEND_PORTS, WORKER_PORT_RANGE
from tests.conftest import ROOT, raw_config
from tests.helpers.cloudinit import check_cloud_config
from tools.offline import ProgramRun, RecordingMocks, read_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def stack_config(stack: str) -> dict:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def mode_of(stack: str) -> str:
    return stack_config(stack).get("obs-farm:mode", "intel-only")


AZURE_CORE = {
    "obs-farm:azure:FarmNetwork": 1,
    "obs-farm:azure:ObsServer": 1,
    # The farm's group and the kept data group.
    "azure-native:resources:ResourceGroup": 2,
    "obs-farm:azure:KeptData": 1,
    "azure-native:network:VirtualNetwork": 1,
    "azure-native:network:NetworkSecurityGroup": 2,
    "azure-native:network:NatGateway": 1,
    "azure-native:network:NetworkInterface": 1,
    "azure-native:compute:Disk": 1,
    "azure-native:compute:VirtualMachine": 1,
    "obs-farm:azure:BackendWorkers": 1,
    # obs-farm-apply-farm and the scaler's install.
    "azure-native:compute:VirtualMachineRunCommandByVirtualMachine": 2,
    "obs-farm:scaler:FarmScaler": 1,
    "obs-farm:azure:DiskBackup": 1,
    "azure-native:dataprotection:BackupVault": 1,
    "azure-native:dataprotection:BackupPolicy": 1,
    "azure-native:authorization:RoleAssignment": 2,
    "azure-native:dataprotection:BackupInstance": 1,
}
AZURE_WORKERS = {
    "obs-farm:azure:AzureWorkerPool": 1,
    "azure-native:compute:VirtualMachineScaleSet": 1,
    # The scaler's two custom roles and their assignments (backup has 2 more).
    "azure-native:authorization:RoleDefinition": 2,
    "azure-native:authorization:RoleAssignment": 4,
}
AWS_AND_LINK = {
    "pulumi:providers:aws": 1,
    "obs-farm:aws:AwsNetwork": 1,
    "obs-farm:aws:GravitonPool": 1,
    "obs-farm:link:SiteToSiteVpn": 1,
    "aws:ec2/vpc:Vpc": 1,
    "aws:ec2/internetGateway:InternetGateway": 1,
    "aws:ec2/subnet:Subnet": 4,
    "aws:ec2/eip:Eip": 1,
    "aws:ec2/natGateway:NatGateway": 1,
    "aws:ec2/routeTable:RouteTable": 2,
    "aws:ec2/route:Route": 1,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": 4,
    "aws:ec2/securityGroup:SecurityGroup": 1,
    "aws:ec2/launchTemplate:LaunchTemplate": 1,
    "aws:autoscaling/group:Group": 1,
    "aws:autoscaling/lifecycleHook:LifecycleHook": 1,
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": 1,
    "aws:iam/role:Role": 1,
    "aws:iam/rolePolicy:RolePolicy": 1,
    "aws:ec2/vpnGateway:VpnGateway": 1,
    "aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation": 1,
    # One customer gateway and VPN connection per Azure gateway instance,
    # two tunnels each, one local network gateway and connection per tunnel.
    "aws:ec2/customerGateway:CustomerGateway": 2,
    "aws:ec2/vpnConnection:VpnConnection": 2,
    "random:index/randomPassword:RandomPassword": 4,
    "azure-native:network:VirtualNetworkGateway": 1,
    "azure-native:network:LocalNetworkGateway": 4,
    "azure-native:network:VirtualNetworkGatewayConnection": 4,
}
INTERNET = {"*", "0.0.0.0/0", "::/0", "Internet", "any"}


@pytest.fixture(scope="module", params=STACKS)
def stack_run(request) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param, read_stack_config(request.param))


def test_there_are_example_stacks():
    assert {"dev", "apertis-eval"} <= set(STACKS)


# Worker images (components/images.py) of stacks with images.bake.
AZURE_IMAGE = {
    "obs-farm:azure:AzureWorkerImage": 1,
    "azure-native:compute:Gallery": 1,
    "azure-native:compute:GalleryImage": 1,
    "azure-native:resources:ResourceGroup": 1,
    "azure-native:managedidentity:UserAssignedIdentity": 2,
    "azure-native:authorization:RoleDefinition": 2,
    "azure-native:authorization:RoleAssignment": 3,
    "azure-native:virtualmachineimages:VirtualMachineImageTemplate": 1,
    "azure-native:resources:AzureCliScript": 1,
}
AWS_IMAGE = {
    "obs-farm:aws:AwsWorkerImage": 1,
    "aws:imagebuilder/component:Component": 1,
    "aws:imagebuilder/imageRecipe:ImageRecipe": 1,
    "aws:iam/role:Role": 1,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": 2,
    "aws:iam/instanceProfile:InstanceProfile": 1,
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": 1,
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": 1,
    "aws:imagebuilder/imagePipeline:ImagePipeline": 1,
    "aws:imagebuilder/image:Image": 1,
}


def _add(want: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        want[key] = want.get(key, 0) + n


def test_resources_per_mode(stack_run):
    stack, run = stack_run
    counts: dict[str, int] = {}
    for r in run.resources:
        counts[r.type] = counts.get(r.type, 0) + 1
    want = dict(AZURE_CORE)
    has_x86 = "x86_64" in stack_config(stack).get("obs-farm:architectures", ["x86_64"])
    if mode_of(stack) != "native" or has_x86:
        want.update(AZURE_WORKERS)
    if mode_of(stack) == "intel-only":
        want.update({"azure-native:network:Subnet": 2, "azure-native:network:PublicIPAddress": 2})
        assert not [r for r in run.resources if r.type.startswith(("aws:", "pulumi:providers:aws"))]
    else:
        want.update(AWS_AND_LINK)
        # + GatewaySubnet, + the active-active VPN gateway's two public IPs
        want.update({"azure-native:network:Subnet": 3, "azure-native:network:PublicIPAddress": 4})
    images = stack_config(stack).get("obs-farm:images", {})
    if images.get("bake") and "obs-farm:azure:AzureWorkerPool" in want:
        _add(want, AZURE_IMAGE)
    if images.get("bake") and mode_of(stack) != "intel-only":
        _add(want, AWS_IMAGE)
    assert counts == want


def _ports(rule: dict) -> list[tuple[int, int]]:
    specs = rule.get("destinationPortRanges") or [rule.get("destinationPortRange", "*")]
    out = []
    for spec in specs:
        if spec == "*":
            out.append((0, 65535))
        else:
            lo, _, hi = spec.partition("-")
            out.append((int(lo), int(hi or lo)))
    return out


def _sources(rule: dict) -> list[str]:
    return rule.get("sourceAddressPrefixes") or [rule.get("sourceAddressPrefix")]


def _protected_ports() -> list[int]:
    return [22, *BACKEND_PORTS, *range(WORKER_PORT_RANGE[0], WORKER_PORT_RANGE[1] + 1)]


def test_no_rule_lets_the_internet_reach_ssh_backend_or_workers(stack_run):
    stack, run = stack_run
    admins = [
        ipaddress.ip_network(c)
        for c in yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"][
            "obs-farm:adminCidrs"
        ]
    ]
    farms = [ipaddress.ip_network("10.40.0.0/16"), ipaddress.ip_network("10.41.0.0/16")]
    for nsg in run.of_type("azure-native:network:NetworkSecurityGroup"):
        for rule in nsg.inputs["securityRules"]:
            if rule["access"] != "Allow" or rule["direction"] != "Inbound":
                continue
            opened = [
                p for p in _protected_ports() if any(lo <= p <= hi for lo, hi in _ports(rule))
            ]
            if not opened:
                continue
            for src in _sources(rule):
                assert src not in INTERNET, f"{nsg.name}/{rule['name']} opens {opened[:3]} to {src}"
                net = ipaddress.ip_network(src)
                assert any(net.subnet_of(f) for f in farms) or any(
                    net.subnet_of(a) for a in admins
                ), f"{nsg.name}/{rule['name']} opens {opened[:3]} to {src}"


def test_aws_security_groups_admit_only_the_server_range(stack_run):
    _, run = stack_run
    for sg in run.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for rule in sg.inputs["ingress"]:
            for cidr in rule["cidrBlocks"]:
                assert cidr not in INTERNET
                assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("10.40.1.0/24")), (
                    rule
                )


def test_every_nsg_ends_in_deny_all(stack_run):
    _, run = stack_run
    for nsg in run.of_type("azure-native:network:NetworkSecurityGroup"):
        last = max(nsg.inputs["securityRules"], key=lambda r: r["priority"])
        assert (last["access"], last["sourceAddressPrefix"], last["destinationPortRange"]) == (
            "Deny",
            "*",
            "*",
        )


def test_backend_ports_only_from_the_worker_subnets(stack_run):
    stack, run = stack_run
    nsg = next(
        n
        for n in run.of_type("azure-native:network:NetworkSecurityGroup")
        if n.name.endswith("server-nsg")
    )
    backend = [
        r for r in nsg.inputs["securityRules"] if "5252" in r.get("destinationPortRanges", [])
    ]
    assert len(backend) == 1
    aws = ["10.41.0.0/18", "10.41.64.0/18"] if mode_of(stack) != "intel-only" else []
    assert backend[0]["sourceAddressPrefixes"] == ["10.40.16.0/20", *aws]
    assert backend[0]["destinationAddressPrefix"] == "10.40.1.10"
    assert "5152" not in backend[0]["destinationPortRanges"]


def test_ssh_and_https_only_from_admin_ranges():
    run = run_program("t", raw_config(adminCidrs=["192.0.2.0/24"]))
    rules = {
        r["name"]: r
        for n in run.of_type("azure-native:network:NetworkSecurityGroup")
        for r in n.inputs["securityRules"]
    }
    assert rules["ssh-from-admins"]["sourceAddressPrefixes"] == ["192.0.2.0/24"]
    assert rules["https-from-admins"]["destinationPortRanges"] == ["443"]
    closed = run_program("t", raw_config(adminCidrs=[]))
    names = {
        r["name"]
        for n in closed.of_type("azure-native:network:NetworkSecurityGroup")
        for r in n.inputs["securityRules"]
    }
    assert not names & {"ssh-from-admins", "https-from-admins"}


def test_workers_have_no_public_ip_and_reach_out_through_nat(stack_run):
    _, run = stack_run
    if not run.of_type("azure-native:compute:VirtualMachineScaleSet"):
        return
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet").inputs
    nic = vmss["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    assert "publicIPAddressConfiguration" not in nic["ipConfigurations"][0]
    subnet = next(
        s for s in run.of_type("azure-native:network:Subnet") if s.name.endswith("worker-subnet")
    )
    assert subnet.inputs["natGateway"]["id"] == "obs-nat-id"


def test_logins_are_ssh_keys_only(stack_run):
    _, run = stack_run
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet").inputs["virtualMachineProfile"][
        "osProfile"
    ]
    for profile in (vm, vmss):
        linux = profile["linuxConfiguration"]
        assert linux["disablePasswordAuthentication"] is True
        assert linux["ssh"]["publicKeys"][0]["keyData"].startswith("ssh-ed25519 ")
        assert "adminPassword" not in profile


def test_server_data_disk_outlives_the_vm(stack_run):
    stack, run = stack_run
    disk = run.one("azure-native:compute:Disk")
    assert disk.options["protect"] and disk.options["retain_on_delete"]
    assert disk.inputs["sku"]["name"] == "Premium_LRS"
    assert disk.inputs["creationData"]["createOption"] == "Empty"
    want = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["obs-farm:server"][
        "dataDiskSizeGb"
    ]
    assert disk.inputs["diskSizeGB"] == want
    vm = run.one("azure-native:compute:VirtualMachine")
    attached = vm.inputs["storageProfile"]["dataDisks"]
    assert attached == [
        {
            "lun": 0,
            "createOption": "Attach",
            "managedDisk": {"id": f"{disk.name}-id"},
            "caching": "ReadOnly",
            "deleteOption": "Detach",
        }
    ]
    assert vm.options["delete_before_replace"]
    assert (
        vm.inputs["storageProfile"]["osDisk"]["managedDisk"]["storageAccountType"] == "Premium_LRS"
    )


def test_server_nic_has_the_static_address_workers_use(stack_run):
    _, run = stack_run
    ipconf = run.one("azure-native:network:NetworkInterface").inputs["ipConfigurations"][0]
    assert (ipconf["privateIPAllocationMethod"], ipconf["privateIPAddress"]) == (
        "Static",
        "10.40.1.10",
    )
    assert run.outputs["serverPrivateIp"] == "10.40.1.10"
    assert run.outputs["serverPublicIp"] == "203.0.113.10"


def test_scale_set_follows_the_config_and_leaves_capacity_to_the_scaler(stack_run):
    stack, run = stack_run
    w = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"][
        "obs-farm:azureWorkers"
    ]
    if not run.of_type("azure-native:compute:VirtualMachineScaleSet"):
        return  # native without x86_64
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet")
    # No capacity at all, and nothing ignored: see tests/program/test_scaler_program.py.
    assert vmss.inputs["sku"] == {"name": w["vmSize"], "tier": "Standard"}
    assert vmss.options["ignore_changes"] == []
    assert vmss.inputs["orchestrationMode"] == "Flexible"
    profile = vmss.inputs["virtualMachineProfile"]
    if w["spot"]:
        assert (profile["priority"], profile["evictionPolicy"]) == ("Spot", "Delete")
    else:
        assert profile["priority"] == "Regular" and "evictionPolicy" not in profile
    # The scaler is on in every example stack: no CPU autoscale at all.
    assert run.of_type("azure-native:monitor:AutoscaleSetting") == []


# Tags are checked by the farm-tags policy (tests/policy).


def _user_data(run: ProgramRun) -> dict[str, str]:
    vm = run.one("azure-native:compute:VirtualMachine").inputs["osProfile"]["customData"]
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet").inputs["virtualMachineProfile"][
        "osProfile"
    ]["customData"]
    return {"server": base64.b64decode(vm).decode(), "worker": base64.b64decode(vmss).decode()}


def test_registered_cloud_init_is_accepted_by_cloud_init(stack_run):
    _, run = stack_run
    for role, text in _user_data(run).items():
        assert check_cloud_config(text) == [], role


def test_worker_cloud_init_runs_the_topology(stack_run):
    _, run = stack_run
    worker = yaml.safe_load(_user_data(run)["worker"])
    files = {f["path"]: f["content"] for f in worker["write_files"]}
    topo = run.outputs["topology"][0]
    for arch in topo["architectures"]:
        env = files[f"/etc/obs-farm/groups/{arch['arch']}.env"]
        assert f'INSTANCES="{arch["instancesPerVm"]}"' in env
        assert f'EXECUTION="{arch["execution"]}"' in env
        assert f'CHECK="{arch["check"]}"' in env
    assert 'REPO_SERVER="http://10.40.1.10:5252"' in files["/etc/obs-farm/worker.env"]


def test_evaluation_topology_output():
    run = run_program("apertis-eval", read_stack_config("apertis-eval"))
    (pool,) = run.outputs["topology"]
    assert (pool["vmSize"], pool["minVms"], pool["maxVms"]) == ("Standard_F32s_v2", 3, 3)
    per_vm = {a["arch"]: (a["instancesPerVm"], a["execution"]) for a in pool["architectures"]}
    assert per_vm == {
        "x86_64": (5, "native"),
        "armv7hl": (5, "emulated"),
        "aarch64": (5, "emulated"),
    }


def test_bad_config_stops_the_program_before_any_resource():
    mocks = RecordingMocks()
    with pytest.raises(
        pulumi.RunError, match=r"obs-farm:azureWorkers.minVms \(5\) must not exceed"
    ):
        run_program("bad", raw_config(azureWorkers={"minVms": 5, "maxVms": 1}), mocks=mocks)
    assert mocks.resources == []


def _plan(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.plan", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plan_evaluation_stack_shows_45_instances_30_emulated(tmp_path):
    res = _plan("apertis-eval", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "total: 3..3 VMs, 45..45 worker instances (30..30 emulated)" in res.stdout
    assert re.search(r"azure-native:compute:VirtualMachineScaleSet +1\n", res.stdout)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "azure-x86-vmss.user-data",
        "obs-backend-apply.sh",
        "obs-scaler-install.sh",
        "obs-server-vm.user-data",
    ]
    assert str(tmp_path / "obs-server-vm.user-data") in res.stdout
    assert check_cloud_config((tmp_path / "azure-x86-vmss.user-data").read_text()) == []


def test_plan_with_bad_config_prints_the_message_and_no_traceback(tmp_path):
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"]["obs-farm:azureWrokers"] = stack["config"].pop("obs-farm:azureWorkers")
    (tmp_path / "Pulumi.typo.yaml").write_text(yaml.safe_dump(stack))
    res = _plan("typo", "--out", str(tmp_path / "out"), "--stack-dir", str(tmp_path))
    assert res.returncode == 2
    assert "obs-farm:azureWrokers is not a setting; did you mean 'azureWorkers'?" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists()


def test_plan_unknown_stack(tmp_path):
    res = _plan("nope", "--out", str(tmp_path))
    assert res.returncode == 2 and "no stack file Pulumi.nope.yaml" in res.stderr


def test_data_disk_backup_follows_the_retention_setting():
    run = run_program("b", raw_config(server={"backupRetentionDays": 30}))
    policy = run.one("azure-native:dataprotection:BackupPolicy").inputs["properties"]
    retention = next(r for r in policy["policyRules"] if r["objectType"] == "AzureRetentionRule")
    assert retention["lifecycles"][0]["deleteAfter"]["duration"] == "P30D"
    assert policy["datasourceTypes"] == ["Microsoft.Compute/disks"]
    instance = run.one("azure-native:dataprotection:BackupInstance").inputs["properties"]
    assert instance["dataSourceInfo"]["resourceID"] == "obs-server-data-id"
    roles = {
        r.inputs["roleDefinitionId"].rsplit("/", 1)[1]: r.inputs["scope"]
        for r in run.of_type("azure-native:authorization:RoleAssignment")
        if r.name.startswith("obs-data-backup")
    }
    assert roles == {
        "3e5e47e6-65f7-47ef-90b5-e5dd4d455f24": "obs-server-data-id",  # Disk Backup Reader
        "7efff54f-a5b4-42b5-a1c5-5411624893ce": "obs-data-rg-id",  # Disk Snapshot Contributor
    }


def test_backup_can_be_turned_off():
    run = run_program("nob", raw_config(server={"backupRetentionDays": 0}))
    assert not [
        r
        for r in run.resources
        if "dataprotection" in r.type
        or ("RoleAssignment" in r.type and not r.name.startswith("obs-scaler"))
    ]


def _snake_keys(value, path=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            if path and path[-1] == "tags":
                continue
            if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", str(key)):
                yield ".".join((*path, key))
            yield from _snake_keys(inner, (*path, str(key)))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _snake_keys(inner, (*path, str(i)))


def test_every_input_reaches_the_wire_with_its_api_name(stack_run):
    """Plain dicts inside union-typed inputs keep snake_case keys, which the
    cloud APIs ignore or refuse; the SDK translates only what it can type."""
    _, run = stack_run
    for r in run.resources:
        assert list(_snake_keys(r.inputs)) == [], r.name
