"""The cloud adapters through the official SDKs against local stand-ins:
Azure's ARM endpoints checked against azure-mgmt-compute's own models, AWS
Auto Scaling and STS served by moto in server mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from obs_farm_scaler.config import AzureTarget

from tests.integration.vm import free_port
from tests.scaler.azure_standin import ArmStandIn, ScaleSet, model_problems
from tests.scaler.helpers import aws_target, make_group, moto_server

AZ = AzureTarget("00000000-0000-0000-0000-000000000001", "obs-rg", "azure-x86-vmss")


@pytest.fixture
def arm(tmp_path, monkeypatch) -> Iterator[ArmStandIn]:
    with ArmStandIn(tmp_path, ScaleSet(AZ.subscription_id, AZ.resource_group, AZ.scale_set)) as s:
        for k, v in s.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", s.imds_url)
        yield s


def test_azure_pool_scales_out_lists_and_deletes_exactly_one_vm(arm):
    from obs_farm_scaler.azure import AzurePool

    pool = AzurePool(AZ)  # ManagedIdentityCredential against the stand-in's IMDS
    assert pool.observe().capacity == 0
    pool.set_capacity(2)
    state = pool.observe()
    assert state.capacity == 2
    assert sorted(m.host for m in state.machines) == sorted(
        v.computer_name for v in arm.set.vms.values()
    )
    victim = state.machines[0]
    assert victim.created is not None
    pool.delete(victim.id)
    after = pool.observe()
    assert [m.id for m in after.machines] == [state.machines[1].id]
    assert after.capacity == 1
    patch = arm.capacity_requests()[0]
    assert patch.body == {"sku": {"capacity": 2}}
    assert [r.body for r in arm.deletes()] == [{"instanceIds": [victim.id]}]
    assert pool.calls == len(arm.requests) == 8  # what the bench counts is what ARM sees


def test_the_standin_refuses_what_the_sdk_models_do_not_allow(arm):
    from obs_farm_scaler.azure import AzurePool

    pool = AzurePool(AZ)
    with pytest.raises(HttpResponseError, match=r"unknown property sku\.size for Sku"):
        pool.client.virtual_machine_scale_sets.begin_update(
            AZ.resource_group, AZ.scale_set, {"sku": {"capacity": 1, "size": 3}}, polling=False
        )
    with pytest.raises(HttpResponseError, match=r"sku\.capacity must be a non-negative integer"):
        pool.client.virtual_machine_scale_sets.begin_update(
            AZ.resource_group, AZ.scale_set, {"tags": {"a": "b"}}, polling=False
        )
    assert arm.set.capacity == 0
    delete = pool.client.virtual_machine_scale_sets.begin_delete_instances
    with pytest.raises(HttpResponseError, match=r"unknown property vmNames"):
        delete(AZ.resource_group, AZ.scale_set, {"vmNames": ["x"]}, polling=False)
    with pytest.raises(HttpResponseError, match=r"no VM nope"):
        delete(AZ.resource_group, AZ.scale_set, {"instanceIds": ["nope"]}, polling=False)


# The RBAC action each ARM call of the scaler needs, and the scope it is
# checked at (the Flexible set's VMs are resource-group resources).
ARM_CALLS = {
    ("GET", "/virtualMachineScaleSets/{set}"): ("set", "virtualMachineScaleSets/read"),
    ("PATCH", "/virtualMachineScaleSets/{set}"): ("set", "virtualMachineScaleSets/write"),
    ("POST", "/virtualMachineScaleSets/{set}/delete"): (
        "set",
        "virtualMachineScaleSets/delete/action",
    ),
    ("GET", "/virtualMachines"): ("group", "virtualMachines/read"),
}


def test_every_call_the_azure_adapter_makes_is_allowed_by_the_servers_roles(arm):
    """What the scaler really sends (seen by the stand-in) against the custom
    roles the program assigns to the server (components/scaler.py): the set's
    role at the set's scope, the VM reader at the resource group's."""
    from obs_farm_scaler.azure import AzurePool

    from components.scaler import AZURE_SCALE_SET_ACTIONS, AZURE_VM_READ_ACTIONS

    pool = AzurePool(AZ)
    pool.set_capacity(1)
    pool.delete(pool.observe().machines[0].id)
    granted = {"set": set(AZURE_SCALE_SET_ACTIONS), "group": set(AZURE_VM_READ_ACTIONS)}
    prefix = (
        f"/subscriptions/{AZ.subscription_id}/resourceGroups/{AZ.resource_group}"
        "/providers/Microsoft.Compute"
    )
    seen = set()
    for r in arm.requests:
        path = r.path.removeprefix(prefix).replace(f"/{AZ.scale_set}", "/{set}")
        scope, action = ARM_CALLS[(r.method, path)]
        seen.add((r.method, path))
        assert f"Microsoft.Compute/{action}" in granted[scope], (r.method, r.path)
    assert seen == set(ARM_CALLS)


def test_model_problems_reads_the_sdk_models():
    from azure.mgmt.compute import models

    assert (
        model_problems(models.VirtualMachineScaleSetUpdate, {"sku": {"capacity": 1}}, "update")
        == []
    )
    assert model_problems(models.VirtualMachine, {"properties": {"vmId": "x"}}, "update") == [
        "properties.vmId is not allowed on update (visibility ['read'])"
    ]
    assert model_problems(models.VirtualMachineScaleSetUpdate, {"location": "x"}, "update") == [
        "unknown property location for VirtualMachineScaleSetUpdate"
    ]


def test_azure_errors_surface_as_exceptions(arm):
    from obs_farm_scaler.azure import AzurePool

    arm.fail = True
    with pytest.raises(HttpResponseError):
        AzurePool(AZ).observe()


# --- AWS ----------------------------------------------------------------------


@pytest.fixture
def moto(tmp_path, monkeypatch):
    with moto_server(free_port()) as endpoint:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        yield endpoint


def test_aws_pool_with_web_identity_scales_out_and_terminates_exactly_one(moto, arm, monkeypatch):
    from obs_farm_scaler.aws import AwsPool

    make_group(moto)
    monkeypatch.setenv("OBS_FARM_IMDS", arm.imds_url)
    pool = AwsPool(aws_target())  # credentials: IMDS token -> AssumeRoleWithWebIdentity
    assert pool.observe().capacity == 0
    pool.set_capacity(2)
    state = pool.observe()
    assert state.capacity == 2 and len(state.machines) == 2
    assert all(m.host == m.id and m.id.startswith("i-") for m in state.machines)
    pool.delete(state.machines[0].id)
    after = pool.observe()
    assert after.capacity == 1
    assert [m.id for m in after.machines] == [state.machines[1].id]
    creds = pool.client._request_signer._credentials.get_frozen_credentials()
    assert creds.token  # temporary STS credentials, not keys from anywhere
    # moto 5.2 does not implement CompleteLifecycleAction (HTTP 500): botocore's
    # Stubber checks our call against the service model instead.
    from botocore.stub import Stubber

    with Stubber(pool.client) as stub:
        stub.add_response("complete_lifecycle_action", {}, {
            "LifecycleHookName": "graviton-drain", "AutoScalingGroupName": "graviton-asg",
            "LifecycleActionResult": "CONTINUE", "InstanceId": state.machines[1].id})  # fmt: skip
        pool.complete_lifecycle(state.machines[1].id)
        stub.assert_no_pending_responses()


def test_aws_requests_match_botocores_service_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("autoscaling")
    for op, params in {
        "SetDesiredCapacity": {"AutoScalingGroupName", "DesiredCapacity", "HonorCooldown"},
        "TerminateInstanceInAutoScalingGroup": {"InstanceId", "ShouldDecrementDesiredCapacity"},
        "CompleteLifecycleAction": {"LifecycleHookName", "AutoScalingGroupName",
                                    "LifecycleActionResult", "InstanceId"},
    }.items():  # fmt: skip
        members = set(model.operation_model(op).input_shape.members)
        assert params <= members, (op, params - members)
