"""What the program sends to AWS, checked against botocore's service models.

pulumi-aws takes Terraform-shaped inputs and its provider expands them into
the API's request shapes. For the resources that matter here (launch
template data, Auto Scaling group and policy, VPN gateway, customer gateway,
VPN connection) `request()` makes that expansion explicitly, member by
member, and `validate()` reads the result with the operation's input shape:
unknown members, required members, types, enums, lengths, ranges and
patterns. IAM policy documents are parsed and every action is looked up in
the service model of its prefix.
"""

from __future__ import annotations

import fnmatch
import json
import re
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ListShape, Shape, StructureShape

from tests.api.azure_api import plain


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def service(name: str) -> Any:
    return _session().get_service_model(name)


def input_shape(service_name: str, operation: str) -> StructureShape:
    return service(service_name).operation_model(operation).input_shape


def _bool(value: Any) -> Any:
    # Terraform carries some booleans as strings ("true").
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


def _num(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def launch_template(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    data: dict[str, Any] = {}
    if "imageId" in i:
        data["ImageId"] = i["imageId"]
    if "userData" in i:
        data["UserData"] = i["userData"]
    if "metadataOptions" in i:
        m = i["metadataOptions"]
        names = {
            "httpEndpoint": "HttpEndpoint",
            "httpTokens": "HttpTokens",
            "httpPutResponseHopLimit": "HttpPutResponseHopLimit",
            "httpProtocolIpv6": "HttpProtocolIpv6",
            "instanceMetadataTags": "InstanceMetadataTags",
        }
        data["MetadataOptions"] = {names.get(k, k): _num(v) for k, v in m.items()}
    for bdm in i.get("blockDeviceMappings", []):
        ebs = bdm.get("ebs", {})
        names = {
            "volumeSize": "VolumeSize",
            "volumeType": "VolumeType",
            "encrypted": "Encrypted",
            "deleteOnTermination": "DeleteOnTermination",
            "iops": "Iops",
            "throughput": "Throughput",
            "kmsKeyId": "KmsKeyId",
        }
        data.setdefault("BlockDeviceMappings", []).append(
            {
                "DeviceName": bdm["deviceName"],
                "Ebs": {names.get(k, k): _bool(_num(v)) for k, v in ebs.items()},
            }
        )
    for nic in i.get("networkInterfaces", []):
        names = {
            "associatePublicIpAddress": "AssociatePublicIpAddress",
            "deleteOnTermination": "DeleteOnTermination",
            "securityGroups": "Groups",
            "subnetId": "SubnetId",
            "deviceIndex": "DeviceIndex",
        }
        data.setdefault("NetworkInterfaces", []).append(
            {names.get(k, k): _bool(_num(v)) for k, v in nic.items()}
        )
    if "privateDnsNameOptions" in i:
        names = {
            "hostnameType": "HostnameType",
            "enableResourceNameDnsARecord": "EnableResourceNameDnsARecord",
            "enableResourceNameDnsAaaaRecord": "EnableResourceNameDnsAAAARecord",
        }
        data["PrivateDnsNameOptions"] = {
            names.get(k, k): _bool(v) for k, v in i["privateDnsNameOptions"].items()
        }
    for spec in i.get("tagSpecifications", []):
        data.setdefault("TagSpecifications", []).append(
            {"ResourceType": spec["resourceType"], "Tags": _tags(spec.get("tags", {}))}
        )
    unknown = set(i) - {
        "imageId",
        "userData",
        "metadataOptions",
        "privateDnsNameOptions",
        "blockDeviceMappings",
        "networkInterfaces",
        "tagSpecifications",
        "tags",
        "description",
        "updateDefaultVersion",
    }
    for key in sorted(unknown):
        data[key] = i[key]  # not mapped here: the validation reports it
    request: dict[str, Any] = {"LaunchTemplateName": name, "LaunchTemplateData": data}
    if "description" in i:
        request["VersionDescription"] = i["description"]
    if "tags" in i:
        request["TagSpecifications"] = [
            {"ResourceType": "launch-template", "Tags": _tags(i["tags"])}
        ]
    return request


def auto_scaling_group(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    request: dict[str, Any] = {"AutoScalingGroupName": name}
    simple = {
        "minSize": "MinSize",
        "maxSize": "MaxSize",
        "desiredCapacity": "DesiredCapacity",
        "capacityRebalance": "CapacityRebalance",
        "protectFromScaleIn": "NewInstancesProtectedFromScaleIn",
        "healthCheckGracePeriod": "HealthCheckGracePeriod",
        "healthCheckType": "HealthCheckType",
        "defaultInstanceWarmup": "DefaultInstanceWarmup",
    }
    for key, value in i.items():
        if key in simple:
            request[simple[key]] = _num(value)
        elif key == "vpcZoneIdentifiers":
            request["VPCZoneIdentifier"] = ",".join(value)
        elif key == "tags":
            request["Tags"] = [
                {
                    "Key": t["key"],
                    "Value": t["value"],
                    "PropagateAtLaunch": t["propagateAtLaunch"],
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for t in value
            ]
        elif key == "mixedInstancesPolicy":
            request["MixedInstancesPolicy"] = _mixed(value)
        else:
            request[key] = value  # not mapped here: the validation reports it
    return request


def _mixed(policy: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dist = policy.get("instancesDistribution")
    if dist is not None:
        names = {
            "onDemandBaseCapacity": "OnDemandBaseCapacity",
            "onDemandPercentageAboveBaseCapacity": "OnDemandPercentageAboveBaseCapacity",
            "spotAllocationStrategy": "SpotAllocationStrategy",
            "onDemandAllocationStrategy": "OnDemandAllocationStrategy",
            "spotInstancePools": "SpotInstancePools",
            "spotMaxPrice": "SpotMaxPrice",
        }
        out["InstancesDistribution"] = {names.get(k, k): _num(v) for k, v in dist.items()}
    lt = policy.get("launchTemplate")
    if lt is not None:
        spec = lt.get("launchTemplateSpecification", {})
        names = {
            "launchTemplateId": "LaunchTemplateId",
            "launchTemplateName": "LaunchTemplateName",
            "version": "Version",
        }
        out["LaunchTemplate"] = {
            "LaunchTemplateSpecification": {names.get(k, k): v for k, v in spec.items()},
            "Overrides": [
                {
                    {"instanceType": "InstanceType", "weightedCapacity": "WeightedCapacity"}.get(
                        k, k
                    ): v
                    for k, v in o.items()
                }
                for o in lt.get("overrides", [])
            ],
        }
    return out


def scaling_policy(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    request: dict[str, Any] = {"PolicyName": name}
    for key, value in i.items():
        if key == "autoscalingGroupName":
            request["AutoScalingGroupName"] = value
        elif key == "policyType":
            request["PolicyType"] = value
        elif key == "estimatedInstanceWarmup":
            request["EstimatedInstanceWarmup"] = _num(value)
        elif key == "targetTrackingConfiguration":
            ttc: dict[str, Any] = {}
            for k, v in value.items():
                if k == "predefinedMetricSpecification":
                    ttc["PredefinedMetricSpecification"] = {
                        {
                            "predefinedMetricType": "PredefinedMetricType",
                            "resourceLabel": "ResourceLabel",
                        }.get(a, a): b
                        for a, b in v.items()
                    }
                elif k == "targetValue":
                    ttc["TargetValue"] = float(v)
                elif k == "disableScaleIn":
                    ttc["DisableScaleIn"] = v
                else:
                    ttc[k] = v
            request["TargetTrackingConfiguration"] = ttc
        else:
            request[key] = value
    return request


def vpn_gateway(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    request: dict[str, Any] = {"Type": i.get("type", "ipsec.1")}
    if "amazonSideAsn" in i:
        request["AmazonSideAsn"] = int(i["amazonSideAsn"])
    return _rest(request, i, {"type", "amazonSideAsn", "vpcId", "tags"})


def _rest(request: dict[str, Any], inputs: dict[str, Any], mapped: set[str]) -> dict[str, Any]:
    """Inputs this expansion does not map go out as they are, so the
    validation reports them instead of this module dropping them."""
    for key in sorted(set(inputs) - mapped):
        request[key] = inputs[key]
    return request


def customer_gateway(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    asn = int(i["bgpAsn"])
    request: dict[str, Any] = {"Type": i["type"], "IpAddress": i["ipAddress"]}
    # The provider sends ASNs above 2^31-1 as BgpAsnExtended.
    request["BgpAsn" if asn < 2**31 else "BgpAsnExtended"] = asn
    return _rest(request, i, {"type", "ipAddress", "bgpAsn", "tags"})


def vpn_connection(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    i = plain(inputs)
    tunnels = []
    for n in (1, 2):
        t: dict[str, Any] = {}
        for key, member in (
            ("InsideCidr", "TunnelInsideCidr"),
            ("PresharedKey", "PreSharedKey"),
        ):
            if f"tunnel{n}{key}" in i:
                t[member] = i[f"tunnel{n}{key}"]
        if f"tunnel{n}IkeVersions" in i:
            t["IKEVersions"] = [{"Value": v} for v in i[f"tunnel{n}IkeVersions"]]
        tunnels.append(t)
    options: dict[str, Any] = {"TunnelOptions": tunnels}
    if "staticRoutesOnly" in i:
        options["StaticRoutesOnly"] = i["staticRoutesOnly"]
    request = {
        "CustomerGatewayId": i["customerGatewayId"],
        "VpnGatewayId": i["vpnGatewayId"],
        "Type": i["type"],
        "Options": options,
    }
    mapped = {"customerGatewayId", "vpnGatewayId", "type", "staticRoutesOnly", "tags"}
    mapped |= {
        f"tunnel{n}{k}" for n in (1, 2) for k in ("InsideCidr", "PresharedKey", "IkeVersions")
    }
    return _rest(request, i, mapped)


# The idempotency token every Image Builder create call carries (the SDK
# fills it in).
CLIENT_TOKEN = "00000000-0000-4000-8000-000000000000"


def _image_builder(renames: dict[str, str]) -> Any:
    """Image Builder's API takes the provider's camelCase inputs as they are,
    but for a few renamed or regrouped members."""

    def expand(inputs: dict[str, Any], name: str) -> dict[str, Any]:
        i = plain(inputs)
        request: dict[str, Any] = {"clientToken": CLIENT_TOKEN}
        for key, value in i.items():
            request[renames.get(key, key)] = value
        return request

    return expand


def image_recipe(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    request = _image_builder({"version": "semanticVersion"})(inputs, name)
    extra: dict[str, Any] = {}
    if "systemsManagerAgent" in request:
        extra["systemsManagerAgent"] = request.pop("systemsManagerAgent")
    if "userDataBase64" in request:
        extra["userDataOverride"] = request.pop("userDataBase64")
    if extra:
        request["additionalInstanceConfiguration"] = extra
    for mapping in request.get("blockDeviceMappings", []):
        ebs = mapping.get("ebs", {})
        for key in ("encrypted", "deleteOnTermination"):
            if key in ebs:
                ebs[key] = _bool(ebs[key])
        if "volumeSize" in ebs:
            ebs["volumeSize"] = _num(ebs["volumeSize"])
    return request


def infrastructure_configuration(inputs: dict[str, Any], name: str) -> dict[str, Any]:
    request = _image_builder({})(inputs, name)
    options = request.get("instanceMetadataOptions", {})
    if "httpPutResponseHopLimit" in options:
        options["httpPutResponseHopLimit"] = _num(options["httpPutResponseHopLimit"])
    return request


# pulumi-aws type -> (service, operation, expansion)
REQUESTS = {
    "aws:ec2/launchTemplate:LaunchTemplate": ("ec2", "CreateLaunchTemplate", launch_template),
    "aws:autoscaling/group:Group": ("autoscaling", "CreateAutoScalingGroup", auto_scaling_group),
    "aws:autoscaling/policy:Policy": ("autoscaling", "PutScalingPolicy", scaling_policy),
    "aws:ec2/vpnGateway:VpnGateway": ("ec2", "CreateVpnGateway", vpn_gateway),
    "aws:ec2/customerGateway:CustomerGateway": ("ec2", "CreateCustomerGateway", customer_gateway),
    "aws:ec2/vpnConnection:VpnConnection": ("ec2", "CreateVpnConnection", vpn_connection),
    "aws:imagebuilder/component:Component": (
        "imagebuilder",
        "CreateComponent",
        _image_builder({"version": "semanticVersion"}),
    ),
    "aws:imagebuilder/imageRecipe:ImageRecipe": ("imagebuilder", "CreateImageRecipe", image_recipe),
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": (
        "imagebuilder",
        "CreateInfrastructureConfiguration",
        infrastructure_configuration,
    ),
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": (
        "imagebuilder",
        "CreateDistributionConfiguration",
        _image_builder({}),
    ),
    "aws:imagebuilder/imagePipeline:ImagePipeline": (
        "imagebuilder",
        "CreateImagePipeline",
        _image_builder({}),
    ),
    "aws:imagebuilder/image:Image": ("imagebuilder", "CreateImage", _image_builder({})),
}


# --- validation ------------------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str] | None:
    # botocore's patterns are Java regexes; surrogate pairs name the astral planes.
    text = text.replace("\\uD800\\uDC00-\\uDBFF\\uDFFF", "\\U00010000-\\U0010FFFF")
    try:
        return re.compile(text)
    except re.error:
        return None


def validate(shape: Shape, value: Any, path: str = "") -> list[str]:
    found: list[str] = []
    where = path or "<request>"
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a structure {shape.name}"]
        for key in value:
            if key not in shape.members:
                found.append(f"{path}.{key}".lstrip(".") + f": unknown to {shape.name}")
        for key in shape.required_members:
            if key not in value:
                found.append(f"{where}: {shape.name} requires {key}")
        for key, item in value.items():
            if key in shape.members:
                found += validate(shape.members[key], item, f"{path}.{key}".lstrip("."))
        return found
    if kind == "list":
        assert isinstance(shape, ListShape)
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        found += _bounds(shape, len(value), where, "items")
        for n, item in enumerate(value):
            found += validate(shape.member, item, f"{path}[{n}]")
        return found
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: {value!r} is not a string"]
        if shape.enum and value not in shape.enum:
            found.append(f"{where}: {value!r} is not one of {shape.enum}")
        found += _bounds(shape, len(value), where, "characters")
        pattern = shape.metadata.get("pattern")
        compiled = _pattern(pattern) if pattern else None
        if compiled is not None and not compiled.fullmatch(value):
            found.append(f"{where}: {value!r} does not match {pattern}")
        return found
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: {value!r} is not an integer"]
        found += _bounds(shape, value, where, "")
        if kind == "integer" and not -(2**31) <= value < 2**31:
            found.append(f"{where}: {value} does not fit a 32-bit integer")
        return found
    if kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [f"{where}: {value!r} is not a number"]
        return _bounds(shape, value, where, "")
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if kind == "map":
        return [] if isinstance(value, dict) else [f"{where}: {value!r} is not a map"]
    return found


def _bounds(shape: Shape, n: int | float, where: str, unit: str) -> list[str]:
    meta = shape.metadata
    out = []
    if "min" in meta and n < meta["min"]:
        out.append(f"{where}: {n} {unit} is below the minimum {meta['min']}".replace("  ", " "))
    if "max" in meta and n > meta["max"]:
        out.append(f"{where}: {n} {unit} is above the maximum {meta['max']}".replace("  ", " "))
    return out


def check_resource(type_: str, inputs: dict[str, Any], name: str) -> list[str]:
    service_name, operation, expand = REQUESTS[type_]
    return validate(input_shape(service_name, operation), expand(inputs, name))


# --- IAM policies ------------------------------------------------------------------------------

# IAM actions that authorize something other than an API call of their own.
PERMISSION_ONLY = {"iam:PassRole"}


@cache
def _prefixes() -> dict[str, str]:
    """IAM service prefix -> botocore service name, for services whose name differs."""
    out = {}
    for name in _session().get_available_services():
        meta = service(name).metadata
        for prefix in {meta.get("signingName"), meta.get("endpointPrefix")} - {None}:
            out.setdefault(prefix, name)
    return out


def _operations(prefix: str) -> set[str] | None:
    names = _session().get_available_services()
    name = prefix if prefix in names else _prefixes().get(prefix)
    return set(service(name).operation_names) if name else None


def policy_findings(document: str | dict[str, Any]) -> list[str]:
    try:
        doc = json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError as err:
        return [f"not JSON: {err}"]
    found = []
    if doc.get("Version") != "2012-10-17":
        found.append(f"Version {doc.get('Version')!r} is not 2012-10-17")
    statements = doc.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return [*found, "no Statement"]
    for n, st in enumerate(statements):
        if st.get("Effect") not in ("Allow", "Deny"):
            found.append(f"Statement[{n}].Effect {st.get('Effect')!r} is not Allow or Deny")
        actions = st.get("Action", st.get("NotAction"))
        if isinstance(actions, str):
            actions = [actions]
        if not actions:
            found.append(f"Statement[{n}] names no Action")
            continue
        for action in actions:
            if action == "*":
                continue
            prefix, _, op = action.partition(":")
            if action in PERMISSION_ONLY:
                continue
            ops = _operations(prefix)
            if ops is None:
                found.append(f"Statement[{n}] action {action!r}: no AWS service {prefix!r}")
            elif not fnmatch.filter(ops, op):
                found.append(f"Statement[{n}] action {action!r}: {prefix} has no such operation")
    return found


# pulumi-aws type -> inputs holding IAM policy documents
POLICY_INPUTS = {
    "aws:iam/role:Role": ("assumeRolePolicy",),
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
}
