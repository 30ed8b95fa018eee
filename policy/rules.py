"""obs-farm's guardrails as plain functions (no Pulumi engine needed).

Each rule takes a resource (type, name, inputs with Pulumi's wire names,
whether it is protected) and the rule's config, and returns violation
messages. `policy/__main__.py` wraps them into a CrossGuard policy pack for
`pulumi up --policy-pack policy`; the tests call them directly on the
resources the program registers under mocks, and on hand-made bad ones.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from components.topology import BACKEND_PORTS, WORKER_PORT_RANGE

PROTECTED_PORTS = (22, *BACKEND_PORTS)
# Private address space (RFC 1918, IPv6 ULA). Python's is_private would also
# count documentation ranges such as 203.0.113.0/24, which route publicly in
# tests and examples and must be judged against the admin ranges instead.
PRIVATE = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
]
INTERNET_TAGS = {"*", "internet", "any"}
FARM_TAGS = ("obs-farm-stack", "obs-farm-mode", "obs-farm-role")

# Pulumi wraps secret inputs in this signature.
_SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: Mapping[str, Any]
    protect: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[Resource, Mapping[str, Any]], list[str]]
    config_schema: Mapping[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping) and _SECRET_SIG in value:
        return value.get("value")
    return value


def _dig(props: Any, *path: str) -> Any:
    for key in path:
        props = _plain(props)
        if not isinstance(props, Mapping):
            return None
        props = props.get(key)
    return _plain(props)


# --- no-internet-to-farm-ports ------------------------------------------------


def _port_ranges(specs: list[Any]) -> list[tuple[int, int]]:
    out = []
    for spec in specs:
        text = str(spec)
        if text in ("*", "-1"):
            out.append((0, 65535))
            continue
        lo, _, hi = text.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def _opens_protected(ranges: list[tuple[int, int]]) -> list[str]:
    hits = [str(p) for p in PROTECTED_PORTS if any(lo <= p <= hi for lo, hi in ranges)]
    wlo, whi = WORKER_PORT_RANGE
    if any(lo <= whi and wlo <= hi for lo, hi in ranges):
        hits.append(f"{wlo}-{whi}")
    return hits


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _source_problem(source: str, admins: list[Network]) -> str | None:
    if source.lower() in INTERNET_TAGS:
        return f"'{source}' (the Internet)"
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return None  # a service tag such as VirtualNetwork
    if net.prefixlen == 0:
        return f"{source} (the Internet)"
    if any(net.version == p.version and net.subnet_of(p) for p in PRIVATE):  # type: ignore[arg-type]
        return None
    if any(net.version == a.version and net.subnet_of(a) for a in admins):  # type: ignore[arg-type]
        return None
    return f"{source} (a public range outside the admin ranges)"


def _azure_rules(res: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if res.type == "azure-native:network:NetworkSecurityGroup":
        for rule in _dig(res.props, "securityRules") or []:
            yield str(_dig(rule, "name")), rule
    elif res.type == "azure-native:network:SecurityRule":
        yield res.name, res.props


def _aws_ingress(res: Resource) -> Iterator[tuple[str, list[tuple[int, int]], list[str]]]:
    def ports(rule: Mapping[str, Any]) -> list[tuple[int, int]]:
        if str(_dig(rule, "protocol")) == "-1":
            return [(0, 65535)]
        return [(int(_dig(rule, "fromPort") or 0), int(_dig(rule, "toPort") or 65535))]

    if res.type == "aws:ec2/securityGroup:SecurityGroup":
        for i, rule in enumerate(_dig(res.props, "ingress") or []):
            cidrs = [*(_dig(rule, "cidrBlocks") or []), *(_dig(rule, "ipv6CidrBlocks") or [])]
            yield f"ingress[{i}]", ports(rule), cidrs
    elif res.type == "aws:ec2/securityGroupRule:SecurityGroupRule":
        if _dig(res.props, "type") == "ingress":
            cidrs = [
                *(_dig(res.props, "cidrBlocks") or []),
                *(_dig(res.props, "ipv6CidrBlocks") or []),
            ]
            yield res.name, ports(res.props), cidrs
    elif res.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        cidrs = [c for c in (_dig(res.props, "cidrIpv4"), _dig(res.props, "cidrIpv6")) if c]
        yield res.name, ports(res.props), cidrs


def no_internet_to_farm_ports(res: Resource, config: Mapping[str, Any]) -> list[str]:
    admins = [ipaddress.ip_network(c) for c in config.get("adminCidrs", [])]
    found = []
    for name, rule in _azure_rules(res):
        if _dig(rule, "access") != "Allow" or _dig(rule, "direction") != "Inbound":
            continue
        specs = _dig(rule, "destinationPortRanges") or [_dig(rule, "destinationPortRange") or "*"]
        opened = _opens_protected(_port_ranges(specs))
        sources = _dig(rule, "sourceAddressPrefixes") or [_dig(rule, "sourceAddressPrefix") or "*"]
        for source in sources:
            problem = _source_problem(str(source), admins)
            if opened and problem:
                found.append(f"rule {name} lets {problem} reach port(s) {', '.join(opened)}")
    for name, ranges, cidrs in _aws_ingress(res):
        opened = _opens_protected(ranges)
        for cidr in cidrs:
            problem = _source_problem(str(cidr), admins)
            if opened and problem:
                found.append(f"{name} lets {problem} reach port(s) {', '.join(opened)}")
    return found


# --- ssh-keys-only ---------------------------------------------------------------


def ssh_keys_only(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type == "azure-native:compute:VirtualMachine":
        profile = _dig(res.props, "osProfile")
    elif res.type == "azure-native:compute:VirtualMachineScaleSet":
        profile = _dig(res.props, "virtualMachineProfile", "osProfile")
    else:
        return []
    if profile is None:
        return []  # an attached OS disk: no provisioning, no password
    found = []
    if _dig(profile, "linuxConfiguration", "disablePasswordAuthentication") is not True:
        found.append("password authentication is not disabled (linuxConfiguration)")
    if _dig(profile, "adminPassword"):
        found.append("sets an admin password; use SSH keys only")
    if not _dig(profile, "linuxConfiguration", "ssh", "publicKeys"):
        found.append("has no SSH public key")
    return found


# --- AWS instances ---------------------------------------------------------------

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AWS_INSTANCE = "aws:ec2/instance:Instance"


def imdsv2_required(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type not in (LAUNCH_TEMPLATE, AWS_INSTANCE):
        return []
    if _dig(res.props, "metadataOptions", "httpTokens") != "required":
        return ["instance metadata must require IMDSv2 (metadataOptions.httpTokens: required)"]
    return []


def _true(value: Any) -> bool:
    return str(_plain(value)).lower() == "true"


def ebs_encrypted(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type == LAUNCH_TEMPLATE:
        return [
            f"block device {_dig(m, 'deviceName')} is not encrypted"
            for m in _dig(res.props, "blockDeviceMappings") or []
            if _dig(m, "ebs") is not None and not _true(_dig(m, "ebs", "encrypted"))
        ]
    if res.type == "aws:ebs/volume:Volume" and not _true(_dig(res.props, "encrypted")):
        return ["EBS volume is not encrypted"]
    if res.type == AWS_INSTANCE and not _true(_dig(res.props, "rootBlockDevice", "encrypted")):
        return ["root block device is not encrypted"]
    return []


def workers_no_public_ip(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type == LAUNCH_TEMPLATE:
        return [
            "network interface asks for a public IP"
            for nic in _dig(res.props, "networkInterfaces") or []
            if _true(_dig(nic, "associatePublicIpAddress"))
        ]
    if res.type == AWS_INSTANCE and _true(_dig(res.props, "associatePublicIpAddress")):
        return ["instance asks for a public IP"]
    if res.type == "azure-native:compute:VirtualMachineScaleSet":
        nics = _dig(
            res.props, "virtualMachineProfile", "networkProfile", "networkInterfaceConfigurations"
        )
        return [
            "scale-set VMs get public IPs"
            for nic in nics or []
            for ipconf in _dig(nic, "ipConfigurations") or []
            if _dig(ipconf, "publicIPAddressConfiguration") is not None
        ]
    return []


# --- server data disk --------------------------------------------------------------


def server_data_disk_safe(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type == "azure-native:compute:Disk":
        if _dig(res.props, "tags", "obs-farm-role") == "server" and not res.protect:
            return ["the server's data disk must be protected (ResourceOptions(protect=True))"]
        return []
    if res.type != "azure-native:compute:VirtualMachine":
        return []
    found = []
    for disk in _dig(res.props, "storageProfile", "dataDisks") or []:
        lun = _dig(disk, "lun")
        if _dig(disk, "createOption") != "Attach":
            found.append(f"data disk at LUN {lun} is created with the VM; attach a separate disk")
        if _dig(disk, "deleteOption") == "Delete":
            found.append(f"data disk at LUN {lun} is deleted with the VM")
    return found


# --- no secrets in user data --------------------------------------------------------

_SECRET_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key id"),
    (
        re.compile(
            r"(?i)\b[a-z0-9_]*(password|passwd|secret|token|psk|pre_?shared_?key|api_?key)"
            r"\s*[:=]\s*['\"]?(?![$%{<'\"\s])[^\s'\"]{6,}"
        ),
        "a credential assignment",
    ),
]


_TEXT_PATHS: dict[str, list[tuple[str, ...]]] = {
    "azure-native:compute:VirtualMachine": [("osProfile", "customData"), ("userData",)],
    "azure-native:compute:VirtualMachineScaleSet": [
        ("virtualMachineProfile", "osProfile", "customData"),
        ("virtualMachineProfile", "userData"),
    ],
    LAUNCH_TEMPLATE: [("userData",)],
    AWS_INSTANCE: [("userData",), ("userDataBase64",)],
}


# cloud-init's write_files encodings (cc_write_files): the renderer packs
# some scripts gzipped, and a secret inside one must not hide from the rule.
_B64 = ("b64", "base64")
_GZ_B64 = ("gz+b64", "gzip+b64", "gz+base64", "gzip+base64")


def _packed_files(where: str, text: str) -> Iterator[tuple[str, str]]:
    """The decoded content of a cloud-config's encoded write_files entries."""
    if not text.startswith("#cloud-config"):
        return
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    files = doc.get("write_files") if isinstance(doc, dict) else None
    for entry in files if isinstance(files, list) else []:
        encoding = str(entry.get("encoding", "")).lower() if isinstance(entry, dict) else ""
        if encoding not in _B64 + _GZ_B64:
            continue
        try:
            data = base64.b64decode(str(entry.get("content", "")))
            if encoding in _GZ_B64:
                data = gzip.decompress(data)
        except (binascii.Error, OSError, EOFError):
            continue
        yield f"{where} {entry.get('path')}", data.decode("utf-8", "replace")


def _texts(res: Resource) -> Iterator[tuple[str, str]]:
    for path in _TEXT_PATHS.get(res.type, []):
        encoded = _dig(res.props, *path)
        if not encoded:
            continue
        try:
            text = base64.b64decode(str(encoded), validate=True).decode("utf-8", "replace")
        except binascii.Error:
            text = str(encoded)
        yield ".".join(path), text
        yield from _packed_files(".".join(path), text)
    if res.type == "azure-native:compute:VirtualMachineRunCommandByVirtualMachine":
        script = _dig(res.props, "source", "script")
        if script:
            yield "source.script", str(script)


def no_secrets_in_user_data(res: Resource, config: Mapping[str, Any]) -> list[str]:
    found = []
    for where, text in _texts(res):
        for pattern, what in _SECRET_PATTERNS:
            match = pattern.search(text)
            if match:
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{where} line {line} looks like {what}; pass secrets another way")
    return found


# --- tags ----------------------------------------------------------------------------

UNTAGGABLE = {
    "azure-native:network:Subnet",
    "azure-native:network:SecurityRule",
    "aws:ec2/route:Route",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:ec2/vpnConnectionRoute:VpnConnectionRoute",
    "aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation",
    "aws:autoscaling/policy:Policy",
    "aws:ec2/securityGroupRule:SecurityGroupRule",
    "random:index/randomPassword:RandomPassword",
    "azure-native:authorization:RoleAssignment",
    "azure-native:authorization:RoleDefinition",
    "azure-native:dataprotection:BackupPolicy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:autoscaling/lifecycleHook:LifecycleHook",
}


def farm_tags(res: Resource, config: Mapping[str, Any]) -> list[str]:
    if res.type in UNTAGGABLE or res.type.startswith(("pulumi:", "obs-farm:")):
        return []
    tags = _dig(res.props, "tags")
    if isinstance(tags, list):  # Auto Scaling groups: key/value/propagateAtLaunch
        tags = {_dig(t, "key"): _dig(t, "value") for t in tags if _dig(t, "propagateAtLaunch")}
    missing = [k for k in FARM_TAGS if not (isinstance(tags, Mapping) and tags.get(k))]
    return [f"missing tag(s) {', '.join(missing)}"] if missing else []


# --- capacity ----------------------------------------------------------------------


def capacity_belongs_to_the_scaler(res: Resource, config: Mapping[str, Any]) -> list[str]:
    """Only obs-farm-scaler removes workers (drained ones), and `pulumi up` never
    sends a pool size that would reset what the scaler set."""
    found = []
    if res.type == "azure-native:compute:VirtualMachineScaleSet":
        if _dig(res.props, "sku", "capacity") is not None:
            found.append("sku.capacity is set: every update would PUT it and resize the pool")
    elif res.type == "azure-native:monitor:AutoscaleSetting":
        for profile in _dig(res.props, "profiles") or []:
            for rule in _dig(profile, "rules") or []:
                if _dig(rule, "scaleAction", "direction") == "Decrease":
                    found.append("has a scale-in rule: Azure would delete a VM of its choosing")
    elif res.type == "aws:autoscaling/policy:Policy":
        tracking = _dig(res.props, "targetTrackingConfiguration")
        steps = _dig(res.props, "stepAdjustments") or []
        adjustments = [_dig(res.props, "scalingAdjustment")] + [
            _dig(s, "scalingAdjustment") for s in steps
        ]
        if (tracking is not None and not _true(_dig(tracking, "disableScaleIn"))) or any(
            a is not None and int(a) < 0 for a in adjustments
        ):
            found.append("can scale in: Auto Scaling would terminate an instance of its choosing")
    elif res.type == "aws:autoscaling/group:Group":
        if not _true(_dig(res.props, "protectFromScaleIn")):
            found.append("new instances are not protected from scale-in")
        if _dig(res.props, "desiredCapacity") is not None:
            found.append("desiredCapacity is set: `pulumi up` would reset the pool")
    return found


RULES = [
    Rule(
        "no-internet-to-farm-ports",
        "No firewall rule lets the Internet (or a public range outside the admin ranges) "
        "reach SSH, the OBS backend ports or the worker ports",
        no_internet_to_farm_ports,
        {"adminCidrs": {"type": "array", "items": {"type": "string"}, "default": []}},
    ),
    Rule(
        "ssh-keys-only",
        "Linux VMs and scale sets: SSH keys only, passwords disabled",
        ssh_keys_only,
    ),
    Rule("imdsv2-required", "AWS instances and launch templates require IMDSv2", imdsv2_required),
    Rule("ebs-encrypted", "EBS volumes are encrypted", ebs_encrypted),
    Rule("workers-no-public-ip", "Workers have no public IP addresses", workers_no_public_ip),
    Rule(
        "server-data-disk-safe",
        "The server's data disk is protected and attached, not created with the VM",
        server_data_disk_safe,
    ),
    Rule(
        "no-secrets-in-user-data",
        "User data, custom data and run commands carry nothing that looks like a secret",
        no_secrets_in_user_data,
    ),
    Rule("farm-tags", "Every resource carries the farm's stack, mode and role tags", farm_tags),
    Rule(
        "capacity-belongs-to-the-scaler",
        "No cloud rule scales in, and no pool size is sent that would reset the scaler's",
        capacity_belongs_to_the_scaler,
    ),
]


def violations(
    resources: list[Resource], config: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Every violation of every rule, as 'rule: resource: message'."""
    config = config or {}
    return [
        f"{rule.name}: {res.name}: {msg}"
        for res in resources
        for rule in RULES
        for msg in rule.check(res, config.get(rule.name, {}))
    ]
