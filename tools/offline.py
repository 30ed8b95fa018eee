"""Run the Pulumi program offline: stack files in, resources and outputs out.

Used by the offline plan and by the whole-program tests. The cloud is a
Pulumi mock that records every registered resource with its inputs (wire
names, camelCase) and echoes them back as outputs, adding the few computed
outputs the program reads.
"""

from __future__ import annotations

import json
import logging
import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "__main__.py"
PROJECT = "obs-farm"


class StackFileError(Exception):
    """The stack file is missing or not what Pulumi would accept."""


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


# How a secret value reaches a mock: wrapped in Pulumi's secret signature.
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def unwrap_secret(value: Any) -> tuple[bool, Any]:
    """(is it a secret, the plain value) for an input recorded by the mocks."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE:
        return True, value["value"]
    return False, value


@dataclass
class ProgramRun:
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        if len(found) != 1:
            raise AssertionError(f"expected one {type_}, found {[r.name for r in found]}")
        return found[0]


# Computed outputs the program reads, by resource type.
_FAKE_OUTPUTS: dict[str, dict[str, Any]] = {
    "azure-native:network:PublicIPAddress": {"ipAddress": "203.0.113.10"},
    "azure-native:dataprotection:BackupVault": {"identity": {"principalId": "mock-principal"}},
    "azure-native:compute:VirtualMachine": {
        "identity": {"type": "SystemAssigned", "principalId": "mock-server-principal"}
    },
    # EC2 Image Builder's image: the AMI it built (a documentation-style id).
    "aws:imagebuilder/image:Image": {
        "outputResources": [{"amis": [{"image": "ami-0123456789abcdef0", "region": "mock"}]}]
    },
    "azure-native:managedidentity:UserAssignedIdentity": {"principalId": "mock-identity-principal"},
    # A list of identity ids in, a map by id out.
    "azure-native:resources:AzureCliScript": {
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {}}
    },
    "azure-native:virtualmachineimages:VirtualMachineImageTemplate": {
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {}}
    },
    "aws:ec2/vpnConnection:VpnConnection": {
        "tunnel1Address": "198.51.100.201",
        "tunnel2Address": "198.51.100.202",
    },
}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []

        # Resource options by resource name: the mock monitor never sees them.
        self.options: dict[str, dict[str, Any]] = {}
        # Qualified type (parent types joined by `$`) of each resource seen.
        self._types: dict[int, str] = {}

    @staticmethod
    def _aliases(aliases: Any) -> list[str]:
        """Alias URNs the program gives, filled in as they resolve (before the
        run returns); the SDKs' own type aliases (Alias objects) are left out."""
        found: list[str] = []
        for alias in aliases:
            if isinstance(alias, str):
                found.append(alias)
            elif isinstance(alias, pulumi.Output):
                alias.apply(found.append)
        return found

    def _urn_key(self, args: pulumi.ResourceTransformationArgs) -> str:
        """The resource's URN without its `urn:pulumi:<stack>::<project>::` prefix."""
        parent = args.opts.parent
        qualified = args.type_
        if parent is not None and id(parent) in self._types:
            qualified = f"{self._types[id(parent)]}${args.type_}"
        self._types[id(args.resource)] = qualified
        return f"{qualified}::{args.name}"

    def record_options(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        o = args.opts
        self.options[args.name] = {
            "urn": self._urn_key(args),
            "aliases": self._aliases(o.aliases or []),
            "protect": bool(o.protect),
            "retain_on_delete": bool(o.retain_on_delete),
            "delete_before_replace": bool(o.delete_before_replace),
            "ignore_changes": list(o.ignore_changes or []),
            "depends_on": [
                getattr(d, "pulumi_resource_name", "?")
                for d in (o.depends_on if isinstance(o.depends_on, list) else [])
            ],
        }
        return None

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        options = self.options.get(args.name, {})
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), options))
        outputs = {**args.inputs, **_FAKE_OUTPUTS.get(args.typ, {})}
        if args.typ == "random:index/randomPassword:RandomPassword":
            length = int(args.inputs["length"])
            outputs["result"] = f"mock{args.name}".replace("-", "").ljust(length, "x")[:length]
        outputs.setdefault("name", args.name)
        if args.typ.startswith("aws:imagebuilder/"):
            # Image Builder ARNs: arn:aws:imagebuilder:<region>:<account>:<kind>/<name>[/<x.y.z>].
            kind = re.sub(r"(?<!^)([A-Z])", r"-\1", args.typ.split("/")[1].split(":")[0]).lower()
            version = f"/{args.inputs['version']}" if "version" in args.inputs else ""
            outputs.setdefault(
                "arn",
                f"arn:aws:imagebuilder:eu-central-1:123456789012:{kind}/{args.name}{version}",
            )
        if args.typ.startswith("aws:") and not args.typ.startswith("aws:ec2/"):
            # IAM and Auto Scaling ARNs the program reads (aws:<module>/...).
            module = args.typ.split(":")[1].split("/")[0]
            outputs.setdefault("arn", f"arn:aws:{module}::123456789012:{args.name}")
        return f"{args.name}-id", outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "azure-native:authorization:getClientConfig":
            config = {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "tenantId": "00000000-0000-0000-0000-000000000000",
                "clientId": "mock",
                "objectId": "mock",
            }
            return config, []
        return {}, []


# Encrypted settings the offline plan stands in for (it cannot decrypt them):
# a value of the right shape, passed to the program as a secret.
SECRET_PLACEHOLDERS = {
    "obs-farm:tlsPrivateKey": (
        "-----BEGIN PRIVATE KEY-----\n(encrypted in the stack file)\n-----END PRIVATE KEY-----\n"
    ),
}


def secret_keys_of(raw: dict[str, str]) -> list[str]:
    """The keys of `raw` that read_stack_config filled with a placeholder."""
    return [k for k, v in raw.items() if SECRET_PLACEHOLDERS.get(k) == v]


def stack_file(stack: str, root: Path = ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def read_stack_config(stack: str, root: Path = ROOT) -> dict[str, str]:
    """Config of Pulumi.<stack>.yaml as the CLI hands it to a program."""
    path = stack_file(stack, root)
    if not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise StackFileError(f"no stack file {path.name}; stacks here: {', '.join(known)}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StackFileError(f"{path.name} is not valid YAML: {err}") from None
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{path.name}: 'config' must be a mapping")
    raw: dict[str, str] = {}
    for key, value in config.items():
        if ":" not in key:
            key = f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            if key not in SECRET_PLACEHOLDERS:
                raise StackFileError(
                    f"{path.name}: {key} is an encrypted secret; the offline plan cannot decrypt it"
                )
            # The plan needs to know the secret is there, not what it is.
            value = SECRET_PLACEHOLDERS[key]
        # Structured values reach programs JSON-encoded; scalars as strings.
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw


def run_program(
    stack: str,
    raw_config: dict[str, str],
    program: Path = PROGRAM,
    mocks: RecordingMocks | None = None,
    secret_keys: list[str] | None = None,
) -> ProgramRun:
    """Run the program under mocks (never preview: unknowns would hide values).

    Pass `mocks` to inspect what was registered even when the program fails.
    """
    if str(program.parent) not in sys.path:
        sys.path.insert(0, str(program.parent))
    mocks = mocks or RecordingMocks()
    # The program's warnings are part of the settings the caller already has.
    quiet = logging.getLogger("obs-farm.offline")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=quiet)
    pulumi.runtime.set_all_config(raw_config, secret_keys or [])
    run = ProgramRun(resources=mocks.resources)

    @pulumi.runtime.test
    def _run() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(mocks.record_options)
        runpy.run_path(str(program), run_name="__main__")
        root = pulumi.runtime.settings.get_root_resource()
        exported = getattr(root, "outputs", {})
        return pulumi.Output.all(**exported).apply(run.outputs.update)

    _run()
    return run
