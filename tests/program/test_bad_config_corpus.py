"""A corpus of invalid stack files, each as a user would write it.

Every one must fail before a single resource is registered, with one message
naming the key; the offline plan prints that message and exits 2, with no
traceback.
"""

from __future__ import annotations

import pulumi
import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers.tls import make_pair
from tools import plan
from tools.offline import RecordingMocks, read_stack_config, run_program

BASE = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
GRAVITON = {"instanceTypes": ["c7g.8xlarge"], "instancesPerArch": 2, "jobsPerInstance": 2}
AWS = {"obs-farm:mode": "hybrid", "aws:region": "eu-central-1", "obs-farm:graviton": GRAVITON}
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
WORKERS = BASE["obs-farm:azureWorkers"]
CERT, KEY = make_pair()

# (id, config changes (None removes a key), text the message must contain)
CASES = [
    (
        "mode-typo",
        {"obs-farm:mode": "hybird"},
        "obs-farm:mode must be one of intel-only, hybrid, native; got 'hybird'",
    ),
    ("mode-number", {"obs-farm:mode": 5}, "obs-farm:mode must be one of"),
    (
        "arch-unknown",
        {"obs-farm:architectures": ["x86_64", "riscv64"]},
        "obs-farm:architectures[1] must be one of",
    ),
    (
        "arch-scalar",
        {"obs-farm:architectures": "x86_64"},
        "obs-farm:architectures must be a YAML list",
    ),
    ("arch-empty", {"obs-farm:architectures": []}, "obs-farm:architectures must list at least one"),
    (
        "arch-duplicate",
        {"obs-farm:architectures": ["aarch64", "aarch64"]},
        "obs-farm:architectures lists aarch64 more than once",
    ),
    ("ssh-missing", {"obs-farm:sshPublicKey": None}, "obs-farm:sshPublicKey is required"),
    (
        "ssh-not-a-key",
        {"obs-farm:sshPublicKey": "my laptop key"},
        "obs-farm:sshPublicKey must be an OpenSSH public key line",
    ),
    (
        "ssh-private-key",
        {"obs-farm:sshPublicKey": PRIVATE_KEY},
        "obs-farm:sshPublicKey is a private key",
    ),
    (
        "ssh-truncated",
        {"obs-farm:sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"},
        "obs-farm:sshPublicKey has a key body",
    ),
    (
        "cidr-internet",
        {"obs-farm:adminCidrs": ["0.0.0.0/0"]},
        "obs-farm:adminCidrs[0] must be a range no wider than /8",
    ),
    (
        "cidr-malformed",
        {"obs-farm:adminCidrs": ["10.0.0.300/24"]},
        "obs-farm:adminCidrs[0] must be a CIDR",
    ),
    (
        "cidr-host-bits",
        {"obs-farm:adminCidrs": ["198.51.100.7/24"]},
        "obs-farm:adminCidrs[0] must be a CIDR",
    ),
    (
        "cidr-scalar",
        {"obs-farm:adminCidrs": "198.51.100.0/24"},
        "obs-farm:adminCidrs must be a YAML list",
    ),
    (
        "key-typo",
        {"obs-farm:azureWrokers": WORKERS, "obs-farm:azureWorkers": None},
        "obs-farm:azureWrokers is not a setting; did you mean 'azureWorkers'?",
    ),
    (
        "nested-key-typo",
        {"obs-farm:azureWorkers": {**WORKERS, "vmSiz": "Standard_D8ds_v5"}},
        "obs-farm:azureWorkers.vmSiz is not a setting; did you mean 'vmSize'?",
    ),
    (
        "nested-key-without-path",
        {"obs-farm:azureWorkers.minVms": 2},
        "obs-farm:azureWorkers.minVms is a nested setting",
    ),
    ("unknown-key", {"obs-farm:colour": "blue"}, "obs-farm:colour is not a setting"),
    (
        "min-above-max",
        {"obs-farm:azureWorkers": {**WORKERS, "minVms": 3, "maxVms": 2}},
        "obs-farm:azureWorkers.minVms (3) must not exceed",
    ),
    (
        "zero-instances",
        {"obs-farm:azureWorkers": {**WORKERS, "instancesPerArch": 0}},
        "obs-farm:azureWorkers.instancesPerArch must be at least 1; got 0",
    ),
    (
        "negative-jobs",
        {"obs-farm:azureWorkers": {**WORKERS, "jobsPerInstance": -2}},
        "obs-farm:azureWorkers.jobsPerInstance must be at least 1; got -2",
    ),
    (
        "unsupported-size",
        {"obs-farm:azureWorkers": {**WORKERS, "vmSize": "Standard_B2s"}},
        "obs-farm:azureWorkers.vmSize must be one of the supported Azure sizes",
    ),
    (
        "overcommit",
        {"obs-farm:azureWorkers": {**WORKERS, "instancesPerArch": 3}},
        "overcommits obs-farm:azureWorkers.vmSize Standard_D8ds_v5",
    ),
    (
        "bool-as-string",
        {"obs-farm:azureWorkers": {**WORKERS, "spot": "yes"}},
        "obs-farm:azureWorkers.spot must be true or false",
    ),
    (
        "int-as-string",
        {"obs-farm:azureWorkers": {**WORKERS, "minVms": "1"}},
        "obs-farm:azureWorkers.minVms must be an integer",
    ),
    (
        "server-v6-size",
        {"obs-farm:server": {"vmSize": "Standard_E16s_v6"}},
        "obs-farm:server.vmSize must be one of the supported Azure sizes",
    ),
    (
        "tiny-data-disk",
        {"obs-farm:server": {"dataDiskSizeGb": 10}},
        "obs-farm:server.dataDiskSizeGb must be at least 32; got 10",
    ),
    ("server-scalar", {"obs-farm:server": "big"}, "obs-farm:server must be a YAML object"),
    (
        "backup-too-long",
        {"obs-farm:server": {"backupRetentionDays": 1000}},
        "obs-farm:server.backupRetentionDays must be at most 360",
    ),
    (
        "subnet-outside",
        {"obs-farm:network": {"serverSubnet": "10.50.1.0/24"}},
        "obs-farm:network.serverSubnet 10.50.1.0/24 must lie inside",
    ),
    (
        "subnets-overlap",
        {"obs-farm:network": {"serverSubnet": "10.40.16.0/24"}},
        "overlaps obs-farm:network.azureWorkerSubnet",
    ),
    (
        "cidr-prefix",
        {"obs-farm:network": {"addressSpace": "10.40.0.0/33"}},
        "obs-farm:network.addressSpace must be a CIDR",
    ),
    ("bad-username", {"obs-farm:adminUsername": "Root!"}, "obs-farm:adminUsername must match"),
    ("bad-location", {"azure-native:location": "West Europe"}, "azure-native:location must match"),
    (
        "hybrid-without-aws",
        {"obs-farm:mode": "hybrid"},
        "aws:region is required when obs-farm:mode is hybrid",
    ),
    (
        "not-graviton",
        {**AWS, "obs-farm:graviton": {**GRAVITON, "instanceTypes": ["c5.4xlarge"]}},
        "obs-farm:graviton.instanceTypes[0] must be a supported Graviton type",
    ),
    (
        "armv7-on-graviton4",
        {
            **AWS,
            "obs-farm:mode": "native",
            "obs-farm:graviton": {**GRAVITON, "instanceTypes": ["c8g.8xlarge"]},
        },
        "obs-farm:graviton.instanceTypes c8g.8xlarge cannot build armv7hl natively",
    ),
    (
        "graviton-in-intel-only",
        {"obs-farm:graviton": GRAVITON},
        "obs-farm:graviton is set but obs-farm:mode is intel-only",
    ),
    ("bad-region", {**AWS, "aws:region": "Frankfurt"}, "aws:region must match"),
    (
        "vpc-overlaps-azure",
        {**AWS, "obs-farm:network": {"awsVpcCidr": "10.40.0.0/16"}},
        "obs-farm:network.awsVpcCidr 10.40.0.0/16 overlaps",
    ),
    (
        "graviton-min-above-max",
        {**AWS, "obs-farm:graviton": {**GRAVITON, "minInstances": 4, "maxInstances": 1}},
        "obs-farm:graviton.minInstances (4) must not exceed",
    ),
    (
        "graviton-overcommit",
        {**AWS, "obs-farm:graviton": {**GRAVITON, "instanceTypes": ["c7g.large"]}},
        "overcommits obs-farm:graviton.instanceTypes c7g.large",
    ),
    (
        "frontend-image-removed",
        {"obs-farm:server": {"frontendImage": "registry.example.org/obs/frontend:2.10"}},
        "obs-farm:server.frontendImage was removed: no production image of the OBS frontend",
    ),
    (
        "flavor-typo",
        {"obs-farm:server": {"flavor": "appliances"}},
        "obs-farm:server.flavor must be one of appliance, backend; got 'appliances'",
    ),
    ("flavor-bool", {"obs-farm:server": {"flavor": True}}, "obs-farm:server.flavor must be one of"),
    (
        "tls-key-in-plain-text",
        {"obs-farm:tlsCertificate": CERT, "obs-farm:tlsPrivateKey": KEY},
        "obs-farm:tlsPrivateKey must be a Pulumi secret",
    ),
    (
        "tls-cert-not-pem",
        {"obs-farm:tlsCertificate": "my-certificate.crt"},
        "obs-farm:tlsCertificate must be a PEM certificate",
    ),
    (
        "tls-cert-without-key",
        {"obs-farm:tlsCertificate": CERT},
        "obs-farm:tlsCertificate is set but obs-farm:tlsPrivateKey is not",
    ),
    (
        "tls-cert-on-backend",
        {"obs-farm:tlsCertificate": CERT, "obs-farm:server": {"flavor": "backend"}},
        "obs-farm:server.flavor is backend, which serves no HTTPS",
    ),
    (
        "vpn-sku",
        {**AWS, "obs-farm:network": {"vpnGatewaySku": "Basic"}},
        "obs-farm:network.vpnGatewaySku must be one of VpnGw1AZ",
    ),
    (
        "scaler-poll-too-slow",
        {"obs-farm:scaler": {"pollSeconds": 30}},
        "obs-farm:scaler.pollSeconds must be at most 10; got 30",
    ),
    (
        "scaler-poll-zero",
        {"obs-farm:scaler": {"pollSeconds": 0}},
        "obs-farm:scaler.pollSeconds must be at least 1; got 0",
    ),
    (
        "scaler-idle-string",
        {"obs-farm:scaler": {"idleMinutes": "10m"}},
        "obs-farm:scaler.idleMinutes must be an integer; got '10m'",
    ),
    (
        "scaler-enabled-word",
        {"obs-farm:scaler": {"enabled": "on"}},
        "obs-farm:scaler.enabled must be true or false; got 'on'",
    ),
    (
        "scaler-typo",
        {"obs-farm:scaler": {"idleMinute": 5}},
        "obs-farm:scaler.idleMinute is not a setting; did you mean 'idleMinutes'?",
    ),
    (
        "scaler-scalar",
        {"obs-farm:scaler": "off"},
        "obs-farm:scaler must be a YAML object",
    ),
    (
        "scaler-unhealthy-negative",
        {"obs-farm:scaler": {"unhealthyMinutes": -1}},
        "obs-farm:scaler.unhealthyMinutes must be at least 1; got -1",
    ),
    # Issue 12: settings the clouds refuse.
    (
        "reserved-username",
        {"obs-farm:adminUsername": "root"},
        "obs-farm:adminUsername 'root' is a name Azure reserves",
    ),
    (
        "ssh-two-lines",
        {"obs-farm:sshPublicKey": BASE["obs-farm:sshPublicKey"] + "\nssh-rsa AAAAB3Nza second"},
        "obs-farm:sshPublicKey must be a single OpenSSH public key line",
    ),
    (
        "unknown-region",
        {**AWS, "aws:region": "eu-mars-1"},
        "aws:region must be an AWS region such as eu-central-1; got 'eu-mars-1'",
    ),
    (
        "aws-asn-65515",
        {**AWS, "obs-farm:network": {"awsAsn": 65515}},
        "obs-farm:network.awsAsn 65515 is reserved by Azure",
    ),
    (
        "public-asn",
        {**AWS, "obs-farm:network": {"azureAsn": 8075}},
        "obs-farm:network.azureAsn must be a private ASN",
    ),
    (
        "disk-id",
        {"obs-farm:server": {"existingDataDiskId": "obs-server-data"}},
        "obs-farm:server.existingDataDiskId must be a managed disk's resource id",
    ),
]


def stack_file(tmp_path, changes: dict) -> str:
    config = dict(BASE)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": config}))
    return "bad"


def test_the_corpus_is_large_and_the_base_is_valid(tmp_path):
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
    run_program("base", read_stack_config(stack_file(tmp_path, {}), tmp_path))


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_fails_before_any_resource(tmp_path, changes, expected):
    raw = read_stack_config(stack_file(tmp_path, changes), tmp_path)
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as caught:
        run_program("bad", raw, mocks=mocks)
    assert expected in str(caught.value)
    assert mocks.resources == []


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_prints_the_message_and_exits_2(tmp_path, capsys, changes, expected):
    name = stack_file(tmp_path, changes)
    code = plan.main([name, "--stack-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 2
    assert expected in out.err
    assert "Traceback" not in out.err + out.out
    assert not (tmp_path / "out").exists()
