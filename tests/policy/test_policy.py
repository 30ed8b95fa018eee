"""The guardrail policies: every example stack passes, every rule can fail."""

from __future__ import annotations

import base64
import gzip

import pytest
import yaml
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from policy.pack import build_policies
from policy.rules import RULES, Resource, violations
from tests.conftest import ROOT, raw_config
from tools.offline import ProgramRun, read_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def resources(run: ProgramRun) -> list[Resource]:
    return [
        Resource(r.type, r.name, r.inputs, r.options.get("protect", False)) for r in run.resources
    ]


def admin_config(raw: dict[str, str]) -> dict[str, dict]:
    cidrs = yaml.safe_load(raw.get("obs-farm:adminCidrs", "[]"))
    return {"no-internet-to-farm-ports": {"adminCidrs": cidrs}}


@pytest.mark.parametrize("stack", STACKS)
def test_every_example_stack_passes_every_policy(stack):
    raw = read_stack_config(stack)
    run = run_program(stack, raw)
    assert violations(resources(run), admin_config(raw)) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"adminCidrs": []},
        {"architectures": ["x86_64"], "azureWorkers": {"spot": True}},
        {"server": {"flavor": "backend"}},
    ],
    ids=["no-admins", "x86-only-spot", "backend-flavor"],
)
def test_variants_pass_every_policy(overrides):
    raw = raw_config(**overrides)
    assert violations(resources(run_program("variant", raw)), admin_config(raw)) == []


def test_appliance_with_a_supplied_certificate_passes_every_policy(tls_pair):
    # The key travels as a run command's protected parameter, never in a script.
    cert, key = tls_pair
    raw = raw_config(tlsCertificate=cert, tlsPrivateKey=key)
    run = run_program("variant", raw, secret_keys=["obs-farm:tlsPrivateKey"])
    assert violations(resources(run), admin_config(raw)) == []


def test_every_rule_is_in_the_pack():
    assert [p.name for p in build_policies()] == [r.name for r in RULES]


# --- each policy fails on a hand-made bad resource ---------------------------------

NSG = "azure-native:network:NetworkSecurityGroup"
TAGS = {"obs-farm-stack": "s", "obs-farm-mode": "intel-only", "obs-farm-role": "server"}


def nsg_rule(source: str, port: str = "22", access: str = "Allow") -> Resource:
    rule = {
        "name": "r",
        "access": access,
        "direction": "Inbound",
        "sourceAddressPrefix": source,
        "destinationPortRange": port,
    }
    return Resource(NSG, "nsg", {"securityRules": [rule], "tags": TAGS})


def check(rule_name: str, res: Resource, config: dict | None = None) -> list[str]:
    rule = next(r for r in RULES if r.name == rule_name)
    return rule.check(res, config or {})


@pytest.mark.parametrize(
    ("source", "port"),
    [
        ("*", "22"),
        ("Internet", "5252"),
        ("0.0.0.0/0", "41001"),
        ("::/0", "*"),
        ("203.0.113.0/24", "5352"),
    ],
)
def test_internet_to_protected_port_fails(source, port):
    assert check(
        "no-internet-to-farm-ports", nsg_rule(source, port), {"adminCidrs": ["198.51.100.0/24"]}
    )


def test_admin_range_and_private_ranges_and_denies_pass():
    cfg = {"adminCidrs": ["198.51.100.0/24"]}
    assert check("no-internet-to-farm-ports", nsg_rule("198.51.100.0/25"), cfg) == []
    assert check("no-internet-to-farm-ports", nsg_rule("10.40.16.0/20", "5252"), cfg) == []
    assert check("no-internet-to-farm-ports", nsg_rule("*", "*", access="Deny"), cfg) == []
    assert check("no-internet-to-farm-ports", nsg_rule("*", "80"), cfg) == []


def test_admin_range_wider_than_configured_fails():
    msg = check(
        "no-internet-to-farm-ports", nsg_rule("198.51.0.0/16"), {"adminCidrs": ["198.51.100.0/24"]}
    )
    assert msg == [
        "rule r lets 198.51.0.0/16 (a public range outside the admin ranges) reach port(s) 22"
    ]


def test_aws_security_group_open_to_the_world_fails():
    sg = Resource(
        "aws:ec2/securityGroup:SecurityGroup",
        "sg",
        {
            "ingress": [
                {"protocol": "tcp", "fromPort": 41000, "toPort": 41299, "cidrBlocks": ["0.0.0.0/0"]}
            ]
        },
    )
    assert check("no-internet-to-farm-ports", sg) == [
        "ingress[0] lets 0.0.0.0/0 (the Internet) reach port(s) 41000-41299"
    ]


def test_password_login_fails():
    vm = Resource(
        "azure-native:compute:VirtualMachine",
        "vm",
        {
            "osProfile": {
                "adminPassword": "x",
                "linuxConfiguration": {"disablePasswordAuthentication": False},
            }
        },
    )
    assert len(check("ssh-keys-only", vm)) == 3


def test_launch_template_without_imdsv2_fails():
    lt = Resource(
        "aws:ec2/launchTemplate:LaunchTemplate",
        "lt",
        {"metadataOptions": {"httpTokens": "optional"}},
    )
    assert check("imdsv2-required", lt)


def test_unencrypted_ebs_fails():
    lt = Resource(
        "aws:ec2/launchTemplate:LaunchTemplate",
        "lt",
        {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}]},
    )
    assert check("ebs-encrypted", lt) == ["block device /dev/xvda is not encrypted"]
    assert check("ebs-encrypted", Resource("aws:ebs/volume:Volume", "v", {}))


def test_public_ip_on_workers_fails():
    lt = Resource(
        "aws:ec2/launchTemplate:LaunchTemplate",
        "lt",
        {"networkInterfaces": [{"associatePublicIpAddress": "true"}]},
    )
    assert check("workers-no-public-ip", lt)
    vmss = Resource(
        "azure-native:compute:VirtualMachineScaleSet",
        "vmss",
        {
            "virtualMachineProfile": {
                "networkProfile": {
                    "networkInterfaceConfigurations": [
                        {"ipConfigurations": [{"publicIPAddressConfiguration": {"name": "pip"}}]}
                    ]
                }
            }
        },
    )
    assert check("workers-no-public-ip", vmss)


def test_unprotected_or_inline_data_disk_fails():
    disk = Resource("azure-native:compute:Disk", "data", {"tags": TAGS}, protect=False)
    assert check("server-data-disk-safe", disk)
    vm = Resource(
        "azure-native:compute:VirtualMachine",
        "vm",
        {
            "storageProfile": {
                "dataDisks": [{"lun": 0, "createOption": "Empty", "deleteOption": "Delete"}]
            }
        },
    )
    assert len(check("server-data-disk-safe", vm)) == 2


@pytest.mark.parametrize(
    "text",
    [
        "#cloud-config\nwrite_files:\n- content: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n",
        "#!/bin/sh\nexport AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n",
        "#!/bin/sh\nDB_PASSWORD=hunter2hunter2\n",
        "#cloud-config\nvpn:\n  psk: 'k8s7d6f5g4h3j2'\n",
    ],
    ids=["private-key", "aws-key", "password", "psk"],
)
def test_secret_in_user_data_fails(text):
    vm = Resource(
        "azure-native:compute:VirtualMachine",
        "vm",
        {"osProfile": {"customData": base64.b64encode(text.encode()).decode()}},
    )
    assert check("no-secrets-in-user-data", vm)


@pytest.mark.parametrize("encoding", ["b64", "gz+b64"])
def test_secret_in_an_encoded_write_files_entry_fails(encoding):
    """The renderer packs worker scripts gzipped (components/cloudinit.py
    _packed): what is inside them is checked too."""
    secret = b"#!/bin/sh\nexport AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
    data = gzip.compress(secret) if encoding.startswith("gz") else secret
    entry = {"path": "/usr/local/sbin/x", "encoding": encoding}
    entry["content"] = base64.b64encode(data).decode()
    text = "#cloud-config\n" + yaml.safe_dump({"write_files": [entry]})
    vm = Resource(
        "azure-native:compute:VirtualMachine",
        "vm",
        {"osProfile": {"customData": base64.b64encode(text.encode()).decode()}},
    )
    assert check("no-secrets-in-user-data", vm) == [
        "osProfile.customData /usr/local/sbin/x line 2 looks like an AWS access key id; "
        "pass secrets another way"
    ]


def test_generated_on_vm_passwords_are_not_secrets():
    text = "#!/bin/sh\nprintf 'MARIADB_PASSWORD=%s\\n' \"$(head -c 32 /dev/urandom)\"\nPASSWORD=$GENERATED\n"
    vm = Resource(
        "azure-native:compute:VirtualMachine",
        "vm",
        {"osProfile": {"customData": base64.b64encode(text.encode()).decode()}},
    )
    assert check("no-secrets-in-user-data", vm) == []


def test_missing_tags_fail():
    assert check(
        "farm-tags",
        Resource("azure-native:network:VirtualNetwork", "vnet", {"tags": {"obs-farm-stack": "s"}}),
    ) == ["missing tag(s) obs-farm-mode, obs-farm-role"]


def test_pack_reports_through_pulumi_policy():
    """The SDK adapter hands args through and reports each message."""
    policy = next(p for p in build_policies() if p.name == "no-internet-to-farm-ports")
    bad = nsg_rule("0.0.0.0/0")
    args = ResourceValidationArgs(
        bad.type,
        bad.props,
        "urn:pulumi:s::obs-farm::azure-native:network:NetworkSecurityGroup::nsg",
        "nsg",
        PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), []),
        None,
        {"adminCidrs": []},
    )
    reported: list[str] = []
    policy.validate(args, lambda message, urn=None: reported.append(message))
    assert reported == ["rule r lets 0.0.0.0/0 (the Internet) reach port(s) 22"]


# --- capacity belongs to the scaler --------------------------------------------------

CAPACITY = "capacity-belongs-to-the-scaler"


def test_scale_set_with_capacity_fails():
    bad = Resource(
        "azure-native:compute:VirtualMachineScaleSet",
        "vmss",
        {"sku": {"name": "Standard_D8ds_v5", "tier": "Standard", "capacity": 1}},
    )
    assert check(CAPACITY, bad) == [
        "sku.capacity is set: every update would PUT it and resize the pool"
    ]
    good = Resource(bad.type, "vmss", {"sku": {"name": "Standard_D8ds_v5", "tier": "Standard"}})
    assert check(CAPACITY, good) == []


def test_cpu_scale_in_fails_on_both_clouds():
    def azure(direction: str) -> Resource:
        rule = {"scaleAction": {"direction": direction, "type": "ChangeCount", "value": "1"}}
        return Resource(
            "azure-native:monitor:AutoscaleSetting", "auto", {"profiles": [{"rules": [rule]}]}
        )

    def aws(**props: object) -> Resource:
        return Resource("aws:autoscaling/policy:Policy", "cpu", props)

    assert check(CAPACITY, azure("Decrease")) == [
        "has a scale-in rule: Azure would delete a VM of its choosing"
    ]
    assert check(CAPACITY, azure("Increase")) == []
    tracking = {"targetValue": 60}
    assert len(check(CAPACITY, aws(targetTrackingConfiguration=tracking))) == 1
    assert (
        check(CAPACITY, aws(targetTrackingConfiguration={**tracking, "disableScaleIn": True})) == []
    )
    assert len(check(CAPACITY, aws(scalingAdjustment=-1))) == 1
    assert len(check(CAPACITY, aws(stepAdjustments=[{"scalingAdjustment": -2}]))) == 1


def test_unprotected_or_sized_auto_scaling_group_fails():
    group = "aws:autoscaling/group:Group"
    assert check(CAPACITY, Resource(group, "g", {"protectFromScaleIn": True})) == []
    assert check(CAPACITY, Resource(group, "g", {"desiredCapacity": 2})) == [
        "new instances are not protected from scale-in",
        "desiredCapacity is set: `pulumi up` would reset the pool",
    ]


def test_the_scaler_off_fallback_passes_every_policy():
    raw = raw_config(
        scaler={"enabled": False},
        mode="hybrid",
        graviton={"instanceTypes": ["c7g.8xlarge"]},
        **{"aws:region": "eu-central-1"},
    )
    assert violations(resources(run_program("off", raw)), admin_config(raw)) == []
