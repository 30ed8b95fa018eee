"""The scaler in the whole program: capacity never sent, identities, the run
command's place, and the clouds' CPU rules only as a scale-out fallback.

Capacity: what `pulumi up` sends to Azure for a scale set update is, per the
sources read (see README "Capacity and `pulumi up`"):
1. the engine takes the program's new inputs and, for each ignoreChanges
   path, resets it to the value in the state's old inputs, or deletes it when
   the old inputs lack it (pulumi/pulumi `processIgnoreChanges` ->
   `PropertyPath.Reset`);
2. azure-native's Update builds the PUT body from exactly those inputs
   (`defaultUpdate` -> `PrepareAzureRESTBody(inputs)` -> `CreateOrUpdate`,
   PUT because the scale set has a PUT operation).
`sent_on_update` below is step 1 ported line by line for object paths;
step 2 is the SDK-shape -> ARM-body move of everything but the envelope
into `properties`, read back with azure-mgmt-compute's own model.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import botocore.session
import pytest
import yaml
from azure.mgmt.authorization.v2022_04_01 import models as auth
from azure.mgmt.compute.models import (
    VirtualMachineRunCommandProperties,
    VirtualMachineRunCommandScriptSource,
    VirtualMachineScaleSet,
    VirtualMachineScaleSetProperties,
)
from botocore.validate import validate_parameters

from tests.conftest import ROOT, raw_config
from tools.offline import ProgramRun, Registered, read_stack_config, run_program

STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
VMSS = "azure-native:compute:VirtualMachineScaleSet"
RUN_COMMAND = "azure-native:compute:VirtualMachineRunCommandByVirtualMachine"
ROLE_DEF = "azure-native:authorization:RoleDefinition"
GRAVITON = {"instanceTypes": ["c7g.8xlarge"], "instancesPerArch": 2, "jobsPerInstance": 2}
HYBRID = {"mode": "hybrid", "aws:region": "eu-central-1", "graviton": GRAVITON}


# --- what an update sends ------------------------------------------------------------


def _reset(path: list[str], old: Any, new: Any) -> bool:
    """pulumi/pulumi sdk/go/common/resource/properties_path.go `reset`, string keys."""
    key, rest = path[0], path[1:]
    if not rest:
        if isinstance(old, dict) and key in old:
            if not isinstance(new, dict):
                return False
            new[key] = copy.deepcopy(old[key])
        elif isinstance(new, dict):
            new.pop(key, None)
        return True
    if not isinstance(old, dict) or not isinstance(new, dict):
        return not isinstance(old, dict) and not isinstance(new, dict)
    has_old, has_new = key in old, key in new
    if has_old and not has_new:
        return False
    if not has_old and not has_new:
        return True
    return _reset(rest, old.get(key), new.get(key))


def sent_on_update(
    old_inputs: dict[str, Any], new_inputs: dict[str, Any], ignore_changes: list[str]
) -> dict[str, Any]:
    news = copy.deepcopy(new_inputs)
    for path in ignore_changes:
        assert _reset(path.split("."), old_inputs, news), path
    return news


ENVELOPE = {"location", "tags", "sku", "identity", "zones", "plan", "extendedLocation"}
PATH_PARAMS = {"resourceGroupName", "vmScaleSetName"}


def arm_body(inputs: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in inputs.items() if k in ENVELOPE}
    body["properties"] = {
        k: v for k, v in inputs.items() if k not in ENVELOPE and k not in PATH_PARAMS
    }
    return body


def rest_names(model: type) -> set[str]:
    model({})  # the SDK builds its field table on first use
    return {f._rest_name for f in model._attr_to_rest_field.values()}  # type: ignore[attr-defined]


def put_capacity(inputs: dict[str, Any]) -> int | None:
    """sku.capacity of the PUT body, as azure-mgmt-compute's model reads it."""
    body = arm_body(inputs)
    assert set(body) <= rest_names(VirtualMachineScaleSet), set(body)
    assert set(body["properties"]) <= rest_names(VirtualMachineScaleSetProperties)
    model = VirtualMachineScaleSet(body)
    assert model.properties.orchestration_mode == "Flexible"
    return model.sku.capacity


def vmss(run: ProgramRun) -> Registered:
    return run.one(VMSS)


@pytest.fixture(scope="module")
def before() -> ProgramRun:
    return run_program("cap", raw_config(azureWorkers={"minVms": 1, "maxVms": 8}))


@pytest.mark.parametrize(
    ("stack", "overrides"),
    [
        ("cap", {"azureWorkers": {"minVms": 1, "maxVms": 8, "jobsPerInstance": 1}}),
        ("cap-renamed", {"azureWorkers": {"minVms": 1, "maxVms": 8}}),
    ],
    ids=["new-user-data", "new-tags"],
)
def test_a_later_up_that_changes_the_scale_set_sends_no_capacity(before, stack, overrides):
    after = run_program(stack, raw_config(**overrides))
    old, new = vmss(before), vmss(after)
    # The update really changes the scale set...
    assert (old.inputs["virtualMachineProfile"], old.inputs["tags"]) != (
        new.inputs["virtualMachineProfile"],
        new.inputs["tags"],
    )
    ignore = new.options["ignore_changes"]
    # ...whatever the state holds: this program's own inputs, inputs a
    # `pulumi refresh` filled with the live capacity (azure-native's Read
    # copies changed outputs into inputs), or those of the previous
    # version of the program, which registered capacity = minVms.
    refreshed = copy.deepcopy(old.inputs)
    refreshed["sku"]["capacity"] = 6
    previous = copy.deepcopy(old.inputs)
    previous["sku"]["capacity"] = 1
    for state in (old.inputs, refreshed, previous):
        assert put_capacity(sent_on_update(state, new.inputs, ignore)) is None


def test_the_previous_design_would_have_reset_a_running_pool(before):
    """The check above can fail: capacity = minVms with ignore_changes sends the
    state's capacity, here 1 while the scaler runs 6 VMs."""
    old = copy.deepcopy(vmss(before).inputs)
    old["sku"]["capacity"] = 1
    new = copy.deepcopy(old)
    new["virtualMachineProfile"]["osProfile"]["customData"] = "Y2hhbmdlZA=="
    assert put_capacity(sent_on_update(old, new, ["sku.capacity"])) == 1


def test_create_sends_no_capacity_either(before):
    """The scaler (or, when it is off, autoscale's minimum) brings the pool to min."""
    assert put_capacity(vmss(before).inputs) is None


# --- identities ----------------------------------------------------------------------


def test_server_vm_has_a_system_assigned_identity(before):
    vm = before.one("azure-native:compute:VirtualMachine").inputs
    assert vm["identity"] == {"type": "SystemAssigned"}


def test_azure_roles_are_scoped_to_the_pool_and_its_vms_only(before):
    defs = {r.name: r.inputs for r in before.of_type(ROLE_DEF)}
    assignments = {
        r.name: r.inputs
        for r in before.of_type("azure-native:authorization:RoleAssignment")
        if r.name.startswith("obs-scaler")
    }
    assert set(assignments) == {"obs-scaler-pool", "obs-scaler-vm-reader"}
    pool, reader = assignments["obs-scaler-pool"], assignments["obs-scaler-vm-reader"]
    assert pool["scope"] == "azure-x86-vmss-id"  # the scale set, nothing wider
    assert reader["scope"] == "obs-farm-rg-id"
    for a in assignments.values():
        assert (a["principalId"], a["principalType"]) == (
            "mock-server-principal",
            "ServicePrincipal",
        )
    assert pool["roleDefinitionId"] == "obs-scaler-pool-role-id"
    pool_actions = defs["obs-scaler-pool-role"]["permissions"][0]["actions"]
    # Write and delete only on the scale set; the resource group gets read only.
    assert defs["obs-scaler-vm-reader-role"]["permissions"] == [
        {"actions": ["Microsoft.Compute/virtualMachines/read"]}
    ]
    assert all(a.startswith("Microsoft.Compute/virtualMachineScaleSets/") for a in pool_actions)
    assert not [a for d in defs.values() for a in d["permissions"][0]["actions"] if "*" in a]
    for d in defs.values():
        assert d["roleType"] == "CustomRole" and d["assignableScopes"] == ["obs-farm-rg-id"]
    # Custom role ids are GUIDs of our own, stable from one `up` to the next.
    ids = [d["roleDefinitionId"] for d in defs.values()]
    assert len({str(uuid.UUID(i)) for i in ids}) == 2
    again = run_program("cap", raw_config(azureWorkers={"minVms": 1, "maxVms": 8}))
    assert [r.inputs["roleDefinitionId"] for r in again.of_type(ROLE_DEF)] == ids


@pytest.fixture(scope="module")
def hybrid() -> ProgramRun:
    return run_program("hybrid", read_stack_config("hybrid"))


def test_aws_role_trusts_only_the_servers_identity(hybrid):
    oidc = hybrid.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    tenant = "00000000-0000-0000-0000-000000000000"
    assert oidc["url"] == f"https://sts.windows.net/{tenant}/"
    assert oidc["clientIdLists"] == ["api://obs-farm-scaler"]
    [role] = [r.inputs for r in hybrid.of_type("aws:iam/role:Role") if r.name == "obs-scaler-aws"]
    (stmt,) = json.loads(role["assumeRolePolicy"])["Statement"]
    assert stmt["Principal"] == {"Federated": "arn:aws:iam::123456789012:obs-scaler-oidc"}
    assert stmt["Condition"]["StringEquals"] == {
        f"sts.windows.net/{tenant}/:aud": "api://obs-farm-scaler",
        f"sts.windows.net/{tenant}/:sub": "mock-server-principal",
    }
    policy = json.loads(hybrid.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert (
        policy["Statement"][0]["Resource"] == "arn:aws:autoscaling::123456789012:aws-graviton-asg"
    )


def test_no_stack_has_an_access_key_or_credentials_in_user_data():
    for stack in STACKS:
        run = run_program(stack, read_stack_config(stack))
        assert not [r for r in run.resources if "accessKey" in r.type], stack
        for r in run.of_type(RUN_COMMAND):
            script = r.inputs["source"]["script"]
            for word in ("aws_secret_access_key", "AKIA", "client_secret", "SharedAccessKey"):
                assert word not in script, (stack, r.name)


def test_graviton_group_keeps_protection_and_gets_a_drain_hook(hybrid):
    asg = hybrid.one("aws:autoscaling/group:Group").inputs
    assert asg["protectFromScaleIn"] is True
    hook = hybrid.one("aws:autoscaling/lifecycleHook:LifecycleHook").inputs
    assert hook == {
        "name": "aws-graviton-drain",
        "autoscalingGroupName": "aws-graviton-asg",
        "lifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "heartbeatTimeout": 3600,
        "defaultResult": "CONTINUE",
    }


def test_graviton_hostnames_are_instance_ids(hybrid):
    lt = hybrid.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["privateDnsNameOptions"] == {"hostnameType": "resource-name"}
    subnets = {r.name: r.inputs for r in hybrid.of_type("aws:ec2/subnet:Subnet")}
    for name, inputs in subnets.items():
        expected = "resource-name" if "private" in name else None
        assert inputs.get("privateDnsHostnameTypeOnLaunch") == expected, name


def test_scaler_config_names_the_lifecycle_hook_and_role(hybrid):
    script = next(r for r in hybrid.of_type(RUN_COMMAND) if r.name == "obs-scaler-install")
    text = script.inputs["source"]["script"]
    config = json.loads(text.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0])
    aws = next(p for p in config["pools"] if p["cloud"] == "aws")["aws"]
    assert aws == {
        "region": "eu-central-1",
        "autoScalingGroup": "aws-graviton-asg",
        "lifecycleHook": "aws-graviton-drain",
        "roleArn": "arn:aws:iam::123456789012:obs-scaler-aws",
        "webIdentityAudience": "api://obs-farm-scaler",
    }


# --- the run command -----------------------------------------------------------------


def test_scaler_install_runs_after_apply_farm_and_the_identities(before):
    (install,) = [r for r in before.of_type(RUN_COMMAND) if r.name == "obs-scaler-install"]
    assert install.inputs["vmName"] == "obs-server-vm"
    assert install.inputs["treatFailureAsDeploymentFailure"] is True
    assert set(install.options["depends_on"]) == {
        "obs-backend",
        "obs-scaler-pool-role",
        "obs-scaler-pool",
        "obs-scaler-vm-reader-role",
        "obs-scaler-vm-reader",
    }


# --- CPU rules -----------------------------------------------------------------------


def cpu_rules(run: ProgramRun) -> list[tuple[str, str]]:
    """(cloud, direction) of every CPU scaling rule the program registers."""
    out = []
    for auto in run.of_type("azure-native:monitor:AutoscaleSetting"):
        for profile in auto.inputs["profiles"]:
            out += [("azure", r["scaleAction"]["direction"]) for r in profile["rules"]]
    for policy in run.of_type("aws:autoscaling/policy:Policy"):
        tracking = policy.inputs["targetTrackingConfiguration"]
        out.append(("aws", "Increase" if tracking["disableScaleIn"] else "Both"))
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_example_stacks_have_no_cpu_rule_at_all(stack):
    assert cpu_rules(run_program(stack, read_stack_config(stack))) == []


def test_scaler_off_keeps_cpu_scale_out_only_and_removes_the_scaler():
    run = run_program("off", raw_config(scaler={"enabled": False}, **HYBRID))
    assert sorted(cpu_rules(run)) == [("aws", "Increase"), ("azure", "Increase")]
    (install,) = [r for r in run.of_type(RUN_COMMAND) if r.name == "obs-scaler-install"]
    script = install.inputs["source"]["script"]
    # Off: neither the package (a gzip, "H4sI" in base64) nor a configuration.
    assert "enabled=0" in script and "H4sI" not in script and '"pools"' not in script
    # No identity for a scaler that does not run.
    assert not [r for r in run.resources if r.name.startswith("obs-scaler-") and "Role" in r.type]
    assert not run.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    auto = run.one("azure-native:monitor:AutoscaleSetting").inputs["profiles"][0]
    assert auto["capacity"] == {"minimum": "1", "maximum": "3", "default": "1"}


def test_dev_and_hybrid_examples_pay_nothing_when_idle():
    for stack in ("dev", "hybrid"):
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert config["obs-farm:azureWorkers"]["minVms"] == 0, stack
        if "obs-farm:graviton" in config:
            assert config["obs-farm:graviton"]["minInstances"] == 0, stack


# --- against botocore's models -------------------------------------------------------


def test_aws_inputs_fit_botocores_shapes(hybrid):
    session = botocore.session.get_session()
    autoscaling, ec2 = (session.get_service_model(s) for s in ("autoscaling", "ec2"))
    hook = hybrid.one("aws:autoscaling/lifecycleHook:LifecycleHook").inputs
    params = {
        "LifecycleHookName": hook["name"],
        "AutoScalingGroupName": hook["autoscalingGroupName"],
        "LifecycleTransition": hook["lifecycleTransition"],
        "HeartbeatTimeout": int(hook["heartbeatTimeout"]),
        "DefaultResult": hook["defaultResult"],
    }
    shape = autoscaling.operation_model("PutLifecycleHook").input_shape
    validate_parameters(params, shape)  # raises on a wrong type or length
    name_shape = shape.members["LifecycleHookName"]
    assert re.fullmatch(name_shape.metadata["pattern"], hook["name"])
    # AWS's documented heartbeat range (30 s .. 2 h); botocore carries no bound.
    assert 30 <= params["HeartbeatTimeout"] <= 7200
    lt = hybrid.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["privateDnsNameOptions"]
    data = ec2.operation_model("CreateLaunchTemplate").input_shape.members["LaunchTemplateData"]
    assert lt["hostnameType"] in data.members["PrivateDnsNameOptions"].members["HostnameType"].enum
    subnet = ec2.operation_model("ModifySubnetAttribute").input_shape.members
    assert "resource-name" in subnet["PrivateDnsHostnameTypeOnLaunch"].enum


def test_native_without_x86_has_only_the_aws_side():
    run = run_program(
        "native-arm",
        raw_config(
            mode="native",
            architectures=["aarch64", "armv7hl"],
            graviton={"instanceTypes": ["c7g.8xlarge"]},
            **{"aws:region": "eu-central-1"},
        ),
    )
    assert not run.of_type("azure-native:authorization:RoleDefinition")
    assert run.one("aws:iam/role:Role")
    (install,) = [r for r in run.of_type(RUN_COMMAND) if r.name == "obs-scaler-install"]
    text = install.inputs["source"]["script"]
    config = json.loads(text.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0])
    assert [p["name"] for p in config["pools"]] == ["aws-graviton"]


def test_plan_says_what_the_scaler_does(tmp_path, capsys):
    from tools import plan

    assert plan.main(["dev", "--out", str(tmp_path / "on")]) == 0
    out = capsys.readouterr().out
    assert "Scaler: on the server, every 5 s; removes a machine only after draining it" in out
    assert (tmp_path / "on" / "obs-scaler-install.sh").read_text().startswith("#!/bin/bash\n")
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"]["obs-farm:scaler"] = {"enabled": False}
    (tmp_path / "Pulumi.off.yaml").write_text(yaml.safe_dump(stack))
    assert plan.main(["off", "--stack-dir", str(tmp_path), "--out", str(tmp_path / "off")]) == 0
    assert "Scaler: off (scaler.enabled false)" in capsys.readouterr().out


# --- Azure bodies against azure-mgmt-* models ----------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_azure_identity_inputs_are_fields_of_the_azure_models(before):
    """Every input the program gives a role, assignment or run command is a
    field of azure-mgmt-authorization's / azure-mgmt-compute's model (path
    parameters aside), and the model serializes it where ARM expects it."""
    for r in before.of_type(ROLE_DEF):
        fields = {k: v for k, v in r.inputs.items() if k not in ("scope", "roleDefinitionId")}
        assert {_snake(k) for k in fields} <= set(auth.RoleDefinition._attribute_map), r.name
        model = auth.RoleDefinition(
            role_name=fields["roleName"],
            description=fields["description"],
            role_type=fields["roleType"],
            permissions=[auth.Permission(**p) for p in fields["permissions"]],
            assignable_scopes=fields["assignableScopes"],
        )
        body = model.serialize()["properties"]
        assert body["type"] == "CustomRole" and body["permissions"][0]["actions"]
    for r in before.of_type("azure-native:authorization:RoleAssignment"):
        fields = {k: v for k, v in r.inputs.items() if k != "scope"}
        assert {_snake(k) for k in fields} <= set(
            auth.RoleAssignmentCreateParameters._attribute_map
        )
        assert fields["principalType"] in [p.value for p in auth.PrincipalType]
    (install,) = [r for r in before.of_type(RUN_COMMAND) if r.name == "obs-scaler-install"]
    props = {
        k: v
        for k, v in install.inputs.items()
        if k not in ("resourceGroupName", "vmName", "location", "tags")
    }
    assert set(props) <= rest_names(VirtualMachineRunCommandProperties)
    assert set(props["source"]) <= rest_names(VirtualMachineRunCommandScriptSource)
