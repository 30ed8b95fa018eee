"""What the program sends to Azure, checked against Azure's own API definitions.

For a registered azure-native resource this builds the ARM request body the
provider sends (path parameters go to the URL; `location`, `tags`, `sku`,
`identity`, `zones` and the resource model's other top-level fields stay on
top; everything else goes under `properties`) and reads it with the official
azure-mgmt-* model of the create operation: every key must be one the model
defines (nothing would be dropped), every required property must be there,
closed enums and literal discriminators must hold one of their values,
scalars must have their type. Two generations of models are read: the
TypeSpec ones (`_attr_to_rest_field`, annotations) and the AutoRest/msrest
ones (`_attribute_map`, `_validation`, `_subtype_map`).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

from tools.offline import unwrap_secret

# azure-native type -> (azure-mgmt package, operations class, create method).
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "azure-native:resources:ResourceGroup": (
        "azure.mgmt.resource.resources",
        "ResourceGroupsOperations",
        "create_or_update",
    ),
    "azure-native:network:VirtualNetwork": (
        "azure.mgmt.network",
        "VirtualNetworksOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:NetworkSecurityGroup": (
        "azure.mgmt.network",
        "NetworkSecurityGroupsOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:PublicIPAddress": (
        "azure.mgmt.network",
        "PublicIPAddressesOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:NatGateway": (
        "azure.mgmt.network",
        "NatGatewaysOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:Subnet": (
        "azure.mgmt.network",
        "SubnetsOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:NetworkInterface": (
        "azure.mgmt.network",
        "NetworkInterfacesOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:VirtualNetworkGateway": (
        "azure.mgmt.network",
        "VirtualNetworkGatewaysOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:LocalNetworkGateway": (
        "azure.mgmt.network",
        "LocalNetworkGatewaysOperations",
        "begin_create_or_update",
    ),
    "azure-native:network:VirtualNetworkGatewayConnection": (
        "azure.mgmt.network",
        "VirtualNetworkGatewayConnectionsOperations",
        "begin_create_or_update",
    ),
    "azure-native:compute:Disk": (
        "azure.mgmt.compute",
        "DisksOperations",
        "begin_create_or_update",
    ),
    "azure-native:compute:VirtualMachine": (
        "azure.mgmt.compute",
        "VirtualMachinesOperations",
        "begin_create_or_update",
    ),
    "azure-native:compute:VirtualMachineScaleSet": (
        "azure.mgmt.compute",
        "VirtualMachineScaleSetsOperations",
        "begin_create_or_update",
    ),
    "azure-native:compute:VirtualMachineRunCommandByVirtualMachine": (
        "azure.mgmt.compute",
        "VirtualMachineRunCommandsOperations",
        "begin_create_or_update",
    ),
    "azure-native:dataprotection:BackupVault": (
        "azure.mgmt.dataprotection",
        "BackupVaultsOperations",
        "begin_create_or_update",
    ),
    "azure-native:dataprotection:BackupPolicy": (
        "azure.mgmt.dataprotection",
        "BackupPoliciesOperations",
        "create_or_update",
    ),
    "azure-native:dataprotection:BackupInstance": (
        "azure.mgmt.dataprotection",
        "BackupInstancesOperations",
        "begin_create_or_update",
    ),
    "azure-native:authorization:RoleAssignment": (
        "azure.mgmt.authorization.v2022_04_01",
        "RoleAssignmentsOperations",
        "create",
    ),
    "azure-native:authorization:RoleDefinition": (
        "azure.mgmt.authorization.v2022_04_01",
        "RoleDefinitionsOperations",
        "create_or_update",
    ),
    "azure-native:monitor:AutoscaleSetting": (
        "azure.mgmt.monitor",
        "AutoscaleSettingsOperations",
        "create_or_update",
    ),
    "azure-native:managedidentity:UserAssignedIdentity": (
        "azure.mgmt.msi.v2024_11_30",
        "UserAssignedIdentitiesOperations",
        "create_or_update",
    ),
    "azure-native:compute:Gallery": (
        "azure.mgmt.compute",
        "GalleriesOperations",
        "begin_create_or_update",
    ),
    "azure-native:compute:GalleryImage": (
        "azure.mgmt.compute",
        "GalleryImagesOperations",
        "begin_create_or_update",
    ),
    "azure-native:virtualmachineimages:VirtualMachineImageTemplate": (
        "azure.mgmt.imagebuilder",
        "VirtualMachineImageTemplatesOperations",
        "begin_create_or_update",
    ),
    "azure-native:resources:AzureCliScript": (
        "azure.mgmt.resource.deploymentscripts",
        "DeploymentScriptsOperations",
        "begin_create",
    ),
}


@dataclass(frozen=True)
class Operation:
    type: str
    path_params: tuple[str, ...]  # camelCase, as Pulumi names them
    model: type
    sdk_api_version: str
    pulumi_api_version: str


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _api_version_in(source: str) -> str | None:
    found = re.findall(r'"api-version",\s*"(\d{4}-\d{2}-\d{2}(?:-preview)?)"', source)
    return found[0] if found else None


def pulumi_api_version(type_: str) -> str:
    _, module, name = type_.split(":")
    pkg = importlib.import_module(f"pulumi_azure_native.{module}")
    source = inspect.getsource(sys.modules[getattr(pkg, name).__module__])
    match = re.search(r"Uses Azure REST API version (\S+?)\.", source)
    assert match, f"no API version in pulumi_azure_native's {type_}"
    return match.group(1)


def operation(type_: str) -> Operation:
    if type_ not in OPERATIONS:
        raise KeyError(f"no azure-mgmt create operation mapped for {type_}; add it to OPERATIONS")
    package, cls_name, method_name = OPERATIONS[type_]
    ops = importlib.import_module(f"{package}.operations")
    method = getattr(getattr(ops, cls_name), method_name)
    sig = inspect.signature(method)
    path, model = [], None
    for name, p in sig.parameters.items():
        if name == "self" or p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        ann = p.annotation
        candidates = [a for a in typing.get_args(ann) if isinstance(a, type) and _is_model(a)]
        if candidates:
            model = candidates[0]
        else:
            path.append(_camel(name))
    assert model is not None, f"{package}.{cls_name}.{method_name} has no body model"
    method_source = inspect.getsource(method)
    version = _api_version_in(method_source)
    if version is None:
        builder = re.search(r"(build_\w+_request)\(", method_source)
        module = sys.modules[getattr(ops, cls_name).__module__]
        if builder and hasattr(module, builder.group(1)):
            version = _api_version_in(inspect.getsource(getattr(module, builder.group(1))))
    if version is None:
        found = re.search(r"\.v(\d{4})_(\d{2})_(\d{2})", package)
        if found:
            version = "-".join(found.groups())
    if version is None:
        config = importlib.import_module(f"{package}._configuration")
        version = _api_version_in(
            inspect.getsource(config).replace('api_version",', '"api-version",')
        )
    assert version, f"no API version found for {package}.{cls_name}.{method_name}"
    return Operation(type_, tuple(path), model, version, pulumi_api_version(type_))


def _is_model(cls: type) -> bool:
    return hasattr(cls, "_attribute_map") or getattr(cls, "_is_model", False)


def plain(value: Any) -> Any:
    """Recorded inputs with Pulumi secrets unwrapped."""
    _secret, value = unwrap_secret(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def top_level_fields(model: type) -> set[str]:
    if hasattr(model, "_attribute_map"):
        return {v["key"].split(".", 1)[0] for v in model._attribute_map.values()} - {"properties"}
    model({})
    return {rf._rest_name for rf in model._attr_to_rest_field.values()} - {"properties"}


# Properties whose REST name differs from the SDK's (x-ms-client-name in the
# REST specification): pulumi-azure-native takes the client name and sends
# the REST one.
WIRE_NAMES: dict[str, dict[str, str]] = {
    "azure-native:authorization:RoleDefinition": {"roleType": "type"},
}


def request_body(op: Operation, inputs: dict[str, Any]) -> dict[str, Any]:
    """The ARM body of the create request, from the inputs Pulumi registered."""
    renames = WIRE_NAMES.get(op.type, {})
    inputs = plain(inputs)
    top = top_level_fields(op.model)
    body: dict[str, Any] = {}
    props: dict[str, Any] = {renames[k]: inputs.pop(k) for k in list(inputs) if k in renames}
    for key, value in inputs.items():
        if key in op.path_params:
            continue
        if key in top or (key == "properties" and isinstance(value, dict)):
            body[key] = value
        else:
            props[key] = value
    if props:
        body.setdefault("properties", {}).update(props)
    identity = body.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("userAssignedIdentities"), list):
        # pulumi-azure-native (since 2.x) takes a list of identity ids and
        # sends ARM's map of id -> {} (its `userAssignedIdentities` transform).
        identity["userAssignedIdentities"] = {i: {} for i in identity["userAssignedIdentities"]}
    return body


# --- reading a body with a model -------------------------------------------------------


class Findings(list[str]):
    def add(self, path: str, text: str) -> None:
        self.append(f"{path or '<body>'}: {text}")


def check(model: type, body: Any) -> list[str]:
    findings = Findings()
    if hasattr(model, "_attribute_map"):
        _check_msrest(model, body, "", findings)
    else:
        _check_typespec(model, body, "", findings)
    return findings


def _scalar(expected: type, value: Any, path: str, findings: Findings) -> None:
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        # Pulumi carries numbers as doubles; an integral one goes out as an
        # integer in the JSON body.
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        findings.add(path, f"{value!r} is not a {expected.__name__}")


def _enum_values(cls: type[enum.Enum]) -> set[str]:
    return {str(m.value).lower() for m in cls}


def _check_annotation(ann: Any, value: Any, path: str, findings: Findings, module: Any) -> None:
    if ann is Any or value is None:
        return
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        models = [a for a in options if isinstance(a, type) and _is_model(a)]
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if models and isinstance(value, dict):
            _check_typespec(models[0], value, path, findings)
        elif enums and str in options:
            # An extensible enum: Azure accepts values the SDK does not list.
            _scalar(str, value, path, findings)
        elif len(options) == 1:
            _check_annotation(options[0], value, path, findings, module)
        return
    if origin is typing.Literal:
        if value not in args:
            findings.add(path, f"{value!r} is not one of {list(args)}")
        return
    if origin in (list, typing.List, typing.Sequence):  # noqa: UP006
        if not isinstance(value, list):
            findings.add(path, f"{value!r} is not a list")
            return
        for i, item in enumerate(value):
            _check_annotation(args[0], item, f"{path}[{i}]", findings, module)
        return
    if origin in (dict, typing.Dict, typing.Mapping):  # noqa: UP006
        if not isinstance(value, dict):
            findings.add(path, f"{value!r} is not an object")
            return
        for k, item in value.items():
            _check_annotation(args[1], item, f"{path}.{k}", findings, module)
        return
    if isinstance(ann, type) and _is_model(ann):
        _check_typespec(ann, value, path, findings)
    elif isinstance(ann, type) and issubclass(ann, enum.Enum):
        if str(value).lower() not in _enum_values(ann):
            findings.add(path, f"{value!r} is not one of {sorted(_enum_values(ann))}")
    elif isinstance(ann, type):
        _scalar(ann, value, path, findings)


def _hints(model: type) -> dict[str, Any]:
    module = sys.modules[model.__module__]
    package = importlib.import_module(model.__module__.rsplit(".", 1)[0])
    return typing.get_type_hints(model, globalns=vars(module), localns={"_models": package})


def _concrete(model: type, value: dict[str, Any]) -> type:
    """The subclass a discriminator value names (BackupPolicy rules and friends)."""
    mapping = getattr(model, "__mapping__", None)
    if not mapping:
        return model
    model({})
    for rf in model._attr_to_rest_field.values():
        if rf._is_discriminator and rf._rest_name in value:
            sub = mapping.get(value[rf._rest_name])
            if sub is not None and sub is not model:
                return _concrete(sub, value)
    return model


def _nest_properties(
    model: type, fields: dict[str, Any], hints: dict[str, Any], value: dict[str, Any]
) -> dict[str, Any]:
    """Sub-resources (rules, IP configurations, NICs) nest their own
    `properties` on the wire; Pulumi flattens them as it does the resource's,
    and the provider nests them again: keys the model lacks on top go there."""
    if "properties" not in fields:
        return value
    inner = [
        a for a in typing.get_args(hints.get(fields["properties"][0])) if isinstance(a, type)
    ] or [hints.get(fields["properties"][0])]
    if not any(isinstance(a, type) and _is_model(a) for a in inner):
        return value
    out = {k: v for k, v in value.items() if k in fields}
    moved = {k: v for k, v in value.items() if k not in fields}
    if moved:
        out["properties"] = {**(value.get("properties") or {}), **moved}
    return out


def _check_typespec(model: type, value: Any, path: str, findings: Findings) -> None:
    if not isinstance(value, dict):
        findings.add(path, f"{value!r} is not an object ({model.__name__})")
        return
    base = model
    model = _concrete(model, value)
    if model is base and getattr(base, "__mapping__", None):
        base({})
        for rf in base._attr_to_rest_field.values():
            if rf._is_discriminator and value.get(rf._rest_name) not in base.__mapping__:
                findings.add(
                    f"{path}.{rf._rest_name}".lstrip("."),
                    f"{value.get(rf._rest_name)!r} names no {base.__name__} kind "
                    f"({', '.join(sorted(base.__mapping__))})",
                )
    model({})
    fields = {rf._rest_name: (attr, rf) for attr, rf in model._attr_to_rest_field.items()}
    hints = _hints(model)
    if set(value) == {"id"} and "id" in fields:
        # A reference to another resource by id (a connection's gateways):
        # the specs type it as the whole resource, Azure reads only the id.
        _check_annotation(
            hints.get(fields["id"][0], Any), value["id"], f"{path}.id", findings, None
        )
        return
    value = _nest_properties(model, fields, hints, value)
    for key, item in value.items():
        if key not in fields:
            findings.add(
                f"{path}.{key}".lstrip("."),
                f"unknown to {model.__name__} (the service would drop or refuse it)",
            )
            continue
        attr, rf = fields[key]
        _check_annotation(hints.get(attr, Any), item, f"{path}.{key}".lstrip("."), findings, None)
    for rest_name, (_attr, rf) in fields.items():
        visibility = rf._visibility or []
        writable = not visibility or "create" in visibility
        if not rf._is_optional and writable and rest_name not in value:
            findings.add(path, f"{model.__name__} requires {rest_name!r}")


# --- AutoRest/msrest models -----------------------------------------------------------------


def _msrest_module(model: type) -> Any:
    return importlib.import_module(model.__module__.rsplit(".", 1)[0])


def _msrest_concrete(model: type, value: dict[str, Any]) -> type:
    subtypes = getattr(model, "_subtype_map", None) or {}
    for attr, table in subtypes.items():
        key = model._attribute_map[attr]["key"]
        name = table.get(value.get(key))
        if name:
            return getattr(_msrest_module(model), name)
    return model


def _msrest_type(type_name: str, value: Any, path: str, findings: Findings, module: Any) -> None:
    if value is None:
        return
    if type_name.startswith("["):
        if not isinstance(value, list):
            findings.add(path, f"{value!r} is not a list")
            return
        for i, item in enumerate(value):
            _msrest_type(type_name[1:-1], item, f"{path}[{i}]", findings, module)
    elif type_name.startswith("{"):
        if not isinstance(value, dict):
            findings.add(path, f"{value!r} is not an object")
            return
        for k, item in value.items():
            _msrest_type(type_name[1:-1], item, f"{path}.{k}", findings, module)
    elif type_name in {"str", "bool", "int", "float"}:
        _scalar(
            {"str": str, "bool": bool, "int": int, "float": float}[type_name], value, path, findings
        )
    elif type_name in {"duration", "iso-8601", "object"}:
        return
    else:
        target = getattr(module, type_name, None)
        if isinstance(target, type) and issubclass(target, enum.Enum):
            # AutoRest enums here are all extensible (modelAsString).
            _scalar(str, value, path, findings)
        elif target is not None:
            _check_msrest(target, value, path, findings)


def _check_msrest(model: type, value: Any, path: str, findings: Findings) -> None:
    if not isinstance(value, dict):
        findings.add(path, f"{value!r} is not an object ({model.__name__})")
        return
    model = _msrest_concrete(model, value)
    module = _msrest_module(model)
    validation = getattr(model, "_validation", {})
    seen: set[str] = set()
    for attr, spec in model._attribute_map.items():
        if attr == "additional_properties":
            continue
        keys = [k.replace("\\.", ".") for k in re.split(r"(?<!\\)\.", spec["key"])]
        node: Any = value
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        rules = validation.get(attr, {})
        where = f"{path}.{spec['key']}".lstrip(".")
        if node is None:
            if rules.get("required") and not rules.get("readonly"):
                findings.add(path, f"{model.__name__} requires {spec['key']!r}")
            continue
        seen.add(".".join(keys))
        _msrest_type(spec["type"], node, where, findings, module)
        if isinstance(node, str):
            if "max_length" in rules and len(node) > rules["max_length"]:
                findings.add(where, f"longer than {rules['max_length']}")
            if "pattern" in rules and not re.search(rules["pattern"], node):
                findings.add(where, f"does not match {rules['pattern']}")
        if isinstance(node, int | float) and not isinstance(node, bool):
            if "minimum" in rules and node < rules["minimum"]:
                findings.add(where, f"below {rules['minimum']}")
            if "maximum" in rules and node > rules["maximum"]:
                findings.add(where, f"above {rules['maximum']}")
    if "additional_properties" in model._attribute_map:
        return
    for dotted in _leaf_paths(value):
        if not any(dotted == s or dotted.startswith(s + ".") for s in seen):
            findings.add(
                f"{path}.{dotted}".lstrip("."),
                f"unknown to {model.__name__} (the service would drop or refuse it)",
            )


def _leaf_paths(value: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in value.items():
        here = f"{prefix}{k}"
        if isinstance(v, dict) and v and k == "properties":
            out.extend(_leaf_paths(v, here + "."))
        else:
            out.append(here)
    return out
