"""The AWS side of every example stack against botocore's service models:
launch template data, Auto Scaling group and policy, VPN gateway, customer
gateways and VPN connections, the EC2 Image Builder component, recipe,
infrastructure and distribution configurations, pipeline and image; and every IAM policy document the program
registers (see tests/api/aws_api.py)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.api.aws_api import POLICY_INPUTS, REQUESTS, check_resource, policy_findings
from tests.api.azure_api import plain
from tests.api.conftest import SCALER_OFF, STACKS, stack_run

AWS_STACKS = [s for s in STACKS if any(r.type.startswith("aws:") for r in stack_run(s).resources)]


def test_some_stacks_deploy_on_aws():
    assert {"hybrid", "native"} <= set(AWS_STACKS)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_aws_requests_match_botocores_models(stack):
    run = stack_run(stack)
    checked = {r.type for r in run.resources if r.type in REQUESTS}
    # The CPU scaling policy exists only as the fallback with the scaler off.
    fallback = {"aws:autoscaling/policy:Policy"}
    expected = set(REQUESTS) if stack.endswith(SCALER_OFF) else set(REQUESTS) - fallback
    assert checked == expected
    found = [
        f"{r.type} {r.name}: {f}"
        for r in run.resources
        if r.type in REQUESTS
        for f in check_resource(r.type, r.inputs, r.name)
    ]
    assert found == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_iam_policy_parses_and_names_real_actions(stack):
    found = []
    for r in stack_run(stack).resources:
        for key in POLICY_INPUTS.get(r.type, ()):
            if key in r.inputs:
                found += [f"{r.name}.{key}: {f}" for f in policy_findings(plain(r.inputs[key]))]
    assert found == []


def _first(type_: str):
    for s in AWS_STACKS:
        for r in stack_run(s).resources:
            if r.type == type_:
                return r
    raise AssertionError(type_)


SEEDS = {
    "aws:ec2/launchTemplate:LaunchTemplate": (
        lambda i: i["metadataOptions"].__setitem__("httpTokens", "require"),
        "LaunchTemplateData.MetadataOptions.HttpTokens: 'require' is not one of",
    ),
    "aws:autoscaling/group:Group": (
        lambda i: i["mixedInstancesPolicy"]["instancesDistribution"].__setitem__(
            "spot_allocation_strategy", "lowest-price"
        ),
        "MixedInstancesPolicy.InstancesDistribution.spot_allocation_strategy: unknown to InstancesDistribution",
    ),
    "aws:autoscaling/policy:Policy": (
        lambda i: i["targetTrackingConfiguration"]["predefinedMetricSpecification"].__setitem__(
            "predefinedMetricType", "ASGAverageCPU"
        ),
        "PredefinedMetricType: 'ASGAverageCPU' is not one of",
    ),
    "aws:ec2/vpnGateway:VpnGateway": (
        lambda i: i.__setitem__("type", "ipsec.2"),
        "Type: 'ipsec.2' is not one of",
    ),
    "aws:ec2/customerGateway:CustomerGateway": (
        lambda i: i.__setitem__("type", "ipsec"),
        "Type: 'ipsec' is not one of",
    ),
    "aws:ec2/vpnConnection:VpnConnection": (
        lambda i: i.__setitem__("tunnel1StartupAction", "start"),
        "tunnel1StartupAction: unknown to CreateVpnConnectionRequest",
    ),
    "aws:imagebuilder/component:Component": (
        lambda i: i.__setitem__("platform", "Debian"),
        "platform: 'Debian' is not one of",
    ),
    "aws:imagebuilder/imageRecipe:ImageRecipe": (
        lambda i: i.__setitem__("version", "1.2"),
        "semanticVersion: '1.2' does not match",
    ),
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": (
        lambda i: i["instanceMetadataOptions"].__setitem__("httpTokens", "require"),
        "instanceMetadataOptions.httpTokens: 'require' does not match",
    ),
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": (
        lambda i: i["distributions"][0].pop("region"),
        "Distribution requires region",
    ),
    "aws:imagebuilder/imagePipeline:ImagePipeline": (
        lambda i: i.__setitem__("status", "ON"),
        "status: 'ON' is not one of",
    ),
    "aws:imagebuilder/image:Image": (
        lambda i: i.pop("infrastructureConfigurationArn"),
        "CreateImageRequest requires infrastructureConfigurationArn",
    ),
}


@pytest.mark.parametrize("type_", sorted(REQUESTS))
def test_seeded_bad_inputs_are_caught(type_):
    r = _first(type_)
    inputs = copy.deepcopy(plain(r.inputs))
    mutate, expected = SEEDS[type_]
    mutate(inputs)
    found = check_resource(type_, inputs, r.name)
    assert any(expected in f for f in found), found


def test_a_too_long_group_name_is_caught():
    r = _first("aws:autoscaling/group:Group")
    found = check_resource(r.type, r.inputs, "x" * 300)
    assert any("AutoScalingGroupName: 300 characters is above the maximum 255" in f for f in found)


GOOD_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
                "ec2:Describe*",
                "iam:PassRole",
                "logs:PutLogEvents",
            ],
            "Resource": "*",
        }
    ],
}


def test_a_good_policy_passes():
    assert policy_findings(json.dumps(GOOD_POLICY)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["Statement"][0]["Action"].append("ec2:DescribeInstance"),
            "ec2 has no such operation",
        ),
        (
            lambda d: d["Statement"][0]["Action"].append("autoscale:SetDesiredCapacity"),
            "no AWS service 'autoscale'",
        ),
        (lambda d: d["Statement"][0].__setitem__("Effect", "Permit"), "is not Allow or Deny"),
        (lambda d: d.__setitem__("Version", "2008-10-17"), "is not 2012-10-17"),
    ],
)
def test_bad_policies_are_caught(change, expected):
    doc = copy.deepcopy(GOOD_POLICY)
    change(doc)
    assert any(expected in f for f in policy_findings(json.dumps(doc)))


def test_a_policy_that_is_not_json_is_caught():
    assert policy_findings('{"Version": "2012-10-17",')[0].startswith("not JSON")
