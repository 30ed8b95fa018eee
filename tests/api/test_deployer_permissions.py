"""The AWS permissions README's "Permissions the deployer needs" names
(docs/aws-deployer-policy.json) parse, exist in botocore, and cover every AWS
resource type the example stacks register (issue 12, defect 6)."""

from __future__ import annotations

import fnmatch
import json

from tests.api.aws_api import policy_findings
from tests.api.conftest import STACKS, stack_run
from tests.conftest import ROOT

POLICY = json.loads((ROOT / "docs/aws-deployer-policy.json").read_text())

# What creating, reading, updating and deleting each type calls (pulumi-aws,
# via the Terraform provider), the tagging calls included.
NEEDS = {
    "aws:ec2/vpc:Vpc": [
        "ec2:CreateVpc",
        "ec2:DeleteVpc",
        "ec2:DescribeVpcs",
        "ec2:ModifyVpcAttribute",
    ],
    "aws:ec2/internetGateway:InternetGateway": [
        "ec2:CreateInternetGateway",
        "ec2:AttachInternetGateway",
        "ec2:DeleteInternetGateway",
    ],
    "aws:ec2/subnet:Subnet": ["ec2:CreateSubnet", "ec2:DeleteSubnet", "ec2:DescribeSubnets"],
    "aws:ec2/eip:Eip": ["ec2:AllocateAddress", "ec2:ReleaseAddress", "ec2:DescribeAddresses"],
    "aws:ec2/natGateway:NatGateway": [
        "ec2:CreateNatGateway",
        "ec2:DeleteNatGateway",
        "ec2:DescribeNatGateways",
    ],
    "aws:ec2/routeTable:RouteTable": [
        "ec2:CreateRouteTable",
        "ec2:DeleteRouteTable",
        "ec2:DescribeRouteTables",
    ],
    "aws:ec2/route:Route": ["ec2:CreateRoute", "ec2:DeleteRoute", "ec2:ReplaceRoute"],
    "aws:ec2/routeTableAssociation:RouteTableAssociation": [
        "ec2:AssociateRouteTable",
        "ec2:DisassociateRouteTable",
    ],
    "aws:ec2/securityGroup:SecurityGroup": [
        "ec2:CreateSecurityGroup",
        "ec2:DeleteSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupEgress",
    ],
    "aws:ec2/launchTemplate:LaunchTemplate": [
        "ec2:CreateLaunchTemplate",
        "ec2:CreateLaunchTemplateVersion",
        "ec2:ModifyLaunchTemplate",
        "ec2:DeleteLaunchTemplate",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:RunInstances",
        "ssm:GetParameters",
    ],
    "aws:autoscaling/group:Group": [
        "autoscaling:CreateAutoScalingGroup",
        "autoscaling:UpdateAutoScalingGroup",
        "autoscaling:DeleteAutoScalingGroup",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:CreateOrUpdateTags",
        "iam:CreateServiceLinkedRole",
    ],
    "aws:autoscaling/policy:Policy": [
        "autoscaling:PutScalingPolicy",
        "autoscaling:DeletePolicy",
        "autoscaling:DescribePolicies",
    ],
    "aws:autoscaling/lifecycleHook:LifecycleHook": [
        "autoscaling:PutLifecycleHook",
        "autoscaling:DeleteLifecycleHook",
        "autoscaling:DescribeLifecycleHooks",
    ],
    "aws:ec2/vpnGateway:VpnGateway": [
        "ec2:CreateVpnGateway",
        "ec2:AttachVpnGateway",
        "ec2:DetachVpnGateway",
        "ec2:DeleteVpnGateway",
    ],
    "aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation": [
        "ec2:EnableVgwRoutePropagation",
        "ec2:DisableVgwRoutePropagation",
    ],
    "aws:ec2/customerGateway:CustomerGateway": [
        "ec2:CreateCustomerGateway",
        "ec2:DeleteCustomerGateway",
    ],
    "aws:ec2/vpnConnection:VpnConnection": [
        "ec2:CreateVpnConnection",
        "ec2:DeleteVpnConnection",
        "ec2:DescribeVpnConnections",
        "ec2:ModifyVpnConnectionOptions",
    ],
    # IAM for machine identities (the scaler's role and OIDC provider are
    # coming from another change; listed so the policy is ready for them).
    "aws:iam/role:Role": [
        "iam:CreateRole",
        "iam:DeleteRole",
        "iam:GetRole",
        "iam:TagRole",
        "iam:ListRolePolicies",
        "iam:ListAttachedRolePolicies",
    ],
    "aws:iam/rolePolicy:RolePolicy": [
        "iam:PutRolePolicy",
        "iam:GetRolePolicy",
        "iam:DeleteRolePolicy",
    ],
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": [
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
    ],
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": [
        "iam:CreateOpenIDConnectProvider",
        "iam:DeleteOpenIDConnectProvider",
        "iam:GetOpenIDConnectProvider",
    ],
    "aws:iam/instanceProfile:InstanceProfile": [
        "iam:CreateInstanceProfile",
        "iam:DeleteInstanceProfile",
        "iam:AddRoleToInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:PassRole",
    ],
    # Worker images (components/images.py). The recipe's parent image is
    # Debian's SSM parameter, read with the caller's rights; Image Builder
    # creates its service-linked role on first use.
    "aws:imagebuilder/component:Component": [
        "imagebuilder:CreateComponent",
        "imagebuilder:GetComponent",
        "imagebuilder:DeleteComponent",
        "imagebuilder:TagResource",
    ],
    "aws:imagebuilder/imageRecipe:ImageRecipe": [
        "imagebuilder:CreateImageRecipe",
        "imagebuilder:GetImageRecipe",
        "imagebuilder:DeleteImageRecipe",
        "ssm:GetParameter",
    ],
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": [
        "imagebuilder:CreateInfrastructureConfiguration",
        "imagebuilder:GetInfrastructureConfiguration",
        "imagebuilder:UpdateInfrastructureConfiguration",
        "imagebuilder:DeleteInfrastructureConfiguration",
        "iam:PassRole",
        "iam:GetInstanceProfile",
    ],
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": [
        "imagebuilder:CreateDistributionConfiguration",
        "imagebuilder:GetDistributionConfiguration",
        "imagebuilder:UpdateDistributionConfiguration",
        "imagebuilder:DeleteDistributionConfiguration",
    ],
    "aws:imagebuilder/imagePipeline:ImagePipeline": [
        "imagebuilder:CreateImagePipeline",
        "imagebuilder:GetImagePipeline",
        "imagebuilder:UpdateImagePipeline",
        "imagebuilder:DeleteImagePipeline",
    ],
    "aws:imagebuilder/image:Image": [
        "imagebuilder:CreateImage",
        "imagebuilder:GetImage",
        "imagebuilder:DeleteImage",
        "imagebuilder:ListTagsForResource",
        "iam:CreateServiceLinkedRole",
        "ec2:DescribeImages",
    ],
}
COMMON = ["ec2:CreateTags", "ec2:DeleteTags", "ec2:DescribeAvailabilityZones"]


def allowed(action: str) -> bool:
    return any(
        fnmatch.fnmatch(action, pattern)
        for st in POLICY["Statement"]
        if st["Effect"] == "Allow"
        for pattern in st["Action"]
    )


def test_the_policy_parses_and_names_real_actions():
    assert policy_findings(POLICY) == []


def test_the_policy_covers_every_aws_resource_the_stacks_register():
    types = {r.type for s in STACKS for r in stack_run(s).resources if r.type.startswith("aws:")}
    assert types, "no AWS resources registered"
    unmapped = sorted(types - set(NEEDS))
    assert unmapped == [], "add what these types call to NEEDS and the policy"
    missing = sorted({a for t in types for a in NEEDS[t] + COMMON if not allowed(a)})
    assert missing == []


def test_every_need_is_in_the_policy():
    assert sorted({a for v in NEEDS.values() for a in v if not allowed(a)}) == []


def test_needs_name_only_real_actions():
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": sorted({a for v in NEEDS.values() for a in v}),
                "Resource": "*",
            }
        ],
    }
    assert policy_findings(doc) == []
