"""Worker images baked by the clouds' own image services (README, "Worker images").

Which image a pool boots is decided here once (`pool_image`, pure): the
user's id for that cloud (`images.azureImageId` / `images.awsAmiId`), else a
baked image when `images.bake`, else stock Debian 12.

AzureWorkerImage creates: an Azure Compute Gallery; an image definition for
the pool's architecture (x64, Hyper-V generation 2, Linux, generalized); a
staging resource group for Image Builder; a user-assigned build identity
whose only rights are a custom role that reads the gallery and writes image
versions (scoped to the gallery) and Contributor on the staging group (what
Image Builder requires there); an Azure VM Image Builder template from
Debian 12 gen2 that runs the provisioning script (inline Shell customizer;
the script holds no secret) and distributes gallery image version
`image_version()`; and the build itself: a deployment script (AzureCliScript)
that runs the template and waits for it, under a second identity allowed
only to read and run image templates and read image versions. Creating a
template builds nothing (`autoRun` would start a build without anything
waiting for it), so the scale set depends on the deployment script and the
version exists before the scale set names it.

AwsWorkerImage creates: an EC2 Image Builder component running the same
script, an image recipe on Debian 12 arm64 (the same public SSM parameter
the launch template resolves), a build role and instance profile with
EC2InstanceProfileForImageBuilder and AmazonSSMManagedInstanceCore only, an
infrastructure configuration in the private subnet, a distribution
configuration, a pipeline (manual: for rebuilds) and the image itself
(`aws.imagebuilder.Image`, which waits until the AMI is available).
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pulumi
import pulumi_aws as aws
import yaml
from pulumi_azure_native import (
    authorization,
    compute,
    managedidentity,
    resources,
    virtualmachineimages,
)

from components.azure_roles import custom_role, grant
from components.common import DEBIAN_12_GEN2
from components.provision import (
    DEPROVISION_ARG,
    PROVISION_SCRIPT_INSTALL_PATH,
    image_version,
    provision_script,
)
from config.model import FarmSettings

ImageKind = Literal["stock", "baked", "user"]


DEBIAN_12_ARM64_SSM = "/aws/service/debian/release/12/latest/arm64"
# Built-in Contributor: what Image Builder's identity needs on the staging
# group (Microsoft: "Configure Azure VM Image Builder permissions").
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
# Distributing to Azure Compute Gallery (the same page's custom role, less
# the managed-image actions: nothing here writes a managed image).
GALLERY_DISTRIBUTOR_ACTIONS = (
    "Microsoft.Compute/galleries/read",
    "Microsoft.Compute/galleries/images/read",
    "Microsoft.Compute/galleries/images/versions/read",
    "Microsoft.Compute/galleries/images/versions/write",
)
# What the deployment script that runs the build may do.
BUILD_RUNNER_ACTIONS = (
    "Microsoft.VirtualMachineImages/imageTemplates/read",
    "Microsoft.VirtualMachineImages/imageTemplates/run/action",
    "Microsoft.Compute/galleries/images/versions/read",
)
# Size of the machine that runs the provisioning script (Image Builder's
# default for gen2 is Standard_D2ds_v4).
AZURE_BUILD_VM_SIZE = "Standard_D2ds_v5"
AWS_BUILD_ROLE_POLICIES = (
    "arn:aws:iam::aws:policy/EC2InstanceProfileForImageBuilder",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
)
# The build script the deployment script runs (shellchecked and executed by
# the unit tests with a stand-in `az`).
AZURE_BUILD_SCRIPT = Path(__file__).with_name("azure-image-build.sh")
# Image Builder runs components through SSM Agent; Debian's AMIs have none,
# so the build instance installs Amazon's Debian package first (Image
# Builder's own installer does not list Debian), and Image Builder removes
# it after the build.
SSM_AGENT_USER_DATA = """#!/bin/bash
set -euo pipefail
region=$(cloud-init query region)
curl -fsSL -o /tmp/amazon-ssm-agent.deb \\
  "https://s3.${region}.amazonaws.com/amazon-ssm-${region}/latest/debian_arm64/amazon-ssm-agent.deb"
dpkg -i /tmp/amazon-ssm-agent.deb
systemctl enable --now amazon-ssm-agent
"""


@dataclass(frozen=True)
class PoolImage:
    """What a pool boots: `kind`, and for `user` the image the user gave."""

    cloud: str
    kind: ImageKind
    image_id: str = ""

    @property
    def baked(self) -> bool:
        """Whether the machine's image already holds what provisioning installs."""
        return self.kind != "stock"

    def describe(self, version: str) -> str:
        if self.kind == "user":
            return f"user image {self.image_id} (images.{_KEY[self.cloud]})"
        if self.kind == "baked":
            service = {
                "azure": "Azure VM Image Builder -> gallery image version",
                "aws": "EC2 Image Builder pipeline -> AMI",
            }[self.cloud]
            return f"baked {version} ({service})"
        stock = {
            "azure": ":".join(DEBIAN_12_GEN2.values()),
            "aws": f"resolve:ssm:{DEBIAN_12_ARM64_SSM}",
        }[self.cloud]
        return f"stock Debian 12 {stock}, provisioned at first boot"


_KEY = {"azure": "azureImageId", "aws": "awsAmiId"}


def pool_image(settings: FarmSettings, cloud: str) -> PoolImage:
    """An explicit id wins over `bake` for its cloud (and nothing is built there)."""
    given = settings.images.azure_image_id if cloud == "azure" else settings.images.aws_ami_id
    if given:
        return PoolImage(cloud, "user", given)
    return PoolImage(cloud, "baked" if settings.images.bake else "stock")


def shell_customizer_lines(script: str) -> list[str]:
    """The Shell customizer's inline commands: write the script, run it as
    root, then clear cloud-init's state and the machine id. Not the script's
    own `--deprovision`: it removes SSH logins, and Image Builder still
    reaches the VM over SSH for its own last step, `waagent
    -deprovision+user` (SSH host keys, the build user)."""
    encoded = base64.b64encode(script.encode()).decode()
    return [
        f"echo '{encoded}' | base64 -d | sudo tee {PROVISION_SCRIPT_INSTALL_PATH} > /dev/null",
        f"sudo chmod 0755 {PROVISION_SCRIPT_INSTALL_PATH}",
        f"sudo {PROVISION_SCRIPT_INSTALL_PATH}",
        "sudo cloud-init clean --logs --seed",
        "sudo truncate -s 0 /etc/machine-id",
    ]


def image_builder_component(script: str) -> str:
    """EC2 Image Builder component document (AWSTOE) running the script.

    The script travels gzipped: a component's document may hold at most
    16,000 characters (CreateComponent `data`, checked by tests/api)."""
    encoded = base64.b64encode(gzip.compress(script.encode(), mtime=0)).decode()
    path = PROVISION_SCRIPT_INSTALL_PATH
    doc = {
        "name": "obs-farm-provision-worker",
        "description": "Installs what an obs-farm worker needs (cloud-init/provision-worker.sh)",
        "schemaVersion": 1.0,
        "phases": [
            {
                "name": "build",
                "steps": [
                    {
                        "name": "provision",
                        "action": "ExecuteBash",
                        "inputs": {
                            "commands": [
                                f"echo '{encoded}' | base64 -d | gunzip > {path}",
                                f"chmod 0755 {path}",
                                path,
                            ]
                        },
                    },
                    {
                        # Last: the script's own cleanup for capture (cloud-init
                        # state, machine id, SSH host keys, apt lists), as the
                        # VM proof bakes; Image Builder then stops the instance.
                        "name": "deprovision",
                        "action": "ExecuteBash",
                        "inputs": {"commands": [f"{path} {DEPROVISION_ARG}"]},
                    },
                ],
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False, width=1 << 20)


def gallery_name(name: str) -> str:
    """Gallery names allow letters, digits, dots and underscores only."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


@dataclass(frozen=True)
class AzureWorkerImageArgs:
    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: str
    tags: dict[str, str]
    version: str = ""
    script: str = ""


class AzureWorkerImage(pulumi.ComponentResource):
    """The x64 worker image: see the module docstring."""

    image_version_id: pulumi.Output[str]
    gallery_image_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: AzureWorkerImageArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:azure:AzureWorkerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        version = args.version or image_version()
        script = args.script or provision_script()
        rg = args.resource_group_name
        gallery = compute.Gallery(
            f"{name}-gallery",
            resource_group_name=rg,
            location=args.location,
            gallery_name=gallery_name(f"{name}-gallery"),
            description="obs-farm worker images",
            tags=args.tags,
            opts=child,
        )
        definition = compute.GalleryImage(
            f"{name}-x64",
            resource_group_name=rg,
            location=args.location,
            gallery_name=gallery.name,
            gallery_image_name="obs-worker-x64",
            os_type="Linux",
            os_state="Generalized",
            hyper_v_generation="V2",
            architecture="x64",
            identifier={"publisher": "obs-farm", "offer": "obs-worker", "sku": "debian-12-x64"},
            # The scale set turns accelerated networking on.
            features=[{"name": "IsAcceleratedNetworkSupported", "value": "True"}],
            tags=args.tags,
            opts=child,
        )
        staging = resources.ResourceGroup(
            f"{name}-staging", location=args.location, tags=args.tags, opts=child
        )
        builder = managedidentity.UserAssignedIdentity(
            f"{name}-builder",
            resource_group_name=rg,
            location=args.location,
            tags=args.tags,
            opts=child,
        )
        distributor = custom_role(
            f"{name}-distributor-role",
            owner="obs-farm-images",
            role="distributor",
            role_name=pulumi.Output.concat("obs-farm image distributor ", rg),
            description="Azure VM Image Builder: " + ", ".join(GALLERY_DISTRIBUTOR_ACTIONS),
            actions=GALLERY_DISTRIBUTOR_ACTIONS,
            resource_group_id=args.resource_group_id,
            opts=child,
        )
        subscription = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        ).subscription_id
        grants = [
            grant(f"{name}-distributor", builder.principal_id, distributor.id, gallery.id, child),
            grant(
                f"{name}-staging-contributor",
                builder.principal_id,
                subscription.apply(
                    lambda s: (
                        f"/subscriptions/{s}/providers/Microsoft.Authorization/"
                        f"roleDefinitions/{CONTRIBUTOR}"
                    )
                ),
                staging.id,
                child,
            ),
        ]
        version_id = pulumi.Output.concat(definition.id, "/versions/", version)
        template = virtualmachineimages.VirtualMachineImageTemplate(
            f"{name}-template",
            resource_group_name=rg,
            location=args.location,
            identity={"type": "UserAssigned", "user_assigned_identities": [builder.id]},
            source={"type": "PlatformImage", **DEBIAN_12_GEN2},
            customize=[
                {
                    "type": "Shell",
                    "name": "provision-worker",
                    "inline": shell_customizer_lines(script),
                }
            ],
            distribute=[
                {
                    "type": "SharedImage",
                    # An explicit version: named from the content hash.
                    "gallery_image_id": version_id,
                    "run_output_name": f"obs-worker-{version}",
                    "target_regions": [
                        {
                            "name": args.location,
                            "replica_count": 1,
                            "storage_account_type": "Standard_LRS",
                        }
                    ],
                    "exclude_from_latest": False,
                }
            ],
            vm_profile={"vm_size": AZURE_BUILD_VM_SIZE, "os_disk_size_gb": 30},
            build_timeout_in_minutes=120,
            staging_resource_group=staging.id,
            # The run is the deployment script's, which waits for it.
            auto_run={"state": "Disabled"},
            tags={**args.tags, "obs-farm-image-version": version},
            # Templates cannot be updated in place, and a staging group must
            # be empty for the next one: the old template (and with it its
            # staging resources) goes first.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=grants,
                replace_on_changes=["*"],
                delete_before_replace=True,
            ),
        )
        runner = managedidentity.UserAssignedIdentity(
            f"{name}-runner",
            resource_group_name=rg,
            location=args.location,
            tags=args.tags,
            opts=child,
        )
        run_role = custom_role(
            f"{name}-runner-role",
            owner="obs-farm-images",
            role="runner",
            role_name=pulumi.Output.concat("obs-farm image build runner ", rg),
            description="obs-farm image build: " + ", ".join(BUILD_RUNNER_ACTIONS),
            actions=BUILD_RUNNER_ACTIONS,
            resource_group_id=args.resource_group_id,
            opts=child,
        )
        run_grant = grant(
            f"{name}-runner", runner.principal_id, run_role.id, args.resource_group_id, child
        )
        build = resources.AzureCliScript(
            f"{name}-build",
            resource_group_name=rg,
            location=args.location,
            kind="AzureCLI",
            az_cli_version="2.61.0",
            identity={"type": "UserAssigned", "user_assigned_identities": [runner.id]},
            script_content=AZURE_BUILD_SCRIPT.read_text(),
            environment_variables=[
                {"name": "RESOURCE_GROUP", "value": rg},
                {"name": "TEMPLATE", "value": template.name},
                {"name": "IMAGE_VERSION_ID", "value": version_id},
            ],
            # A build takes 15-40 minutes; Image Builder's own limit is the
            # template's 120.
            timeout="PT3H",
            retention_interval="P1D",
            cleanup_preference="OnSuccess",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[run_grant, template]),
        )
        # Read through the build, so whatever boots from it waits for it.
        self.image_version_id = pulumi.Output.all(version_id, build.id).apply(lambda a: a[0])
        self.gallery_image_id = definition.id
        self.register_outputs(
            {"image_version_id": self.image_version_id, "gallery_image_id": self.gallery_image_id}
        )


@dataclass(frozen=True)
class AwsWorkerImageArgs:
    region: str
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    build_instance_type: str
    tags: dict[str, str]
    version: str = ""
    script: str = ""


class AwsWorkerImage(pulumi.ComponentResource):
    """The arm64 worker AMI: see the module docstring."""

    ami_id: pulumi.Output[str]
    pipeline_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: AwsWorkerImageArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:aws:AwsWorkerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        version = args.version or image_version()
        script = args.script or provision_script()
        tags = {**args.tags, "Name": name}
        component = aws.imagebuilder.Component(
            f"{name}-provision",
            name=f"{name}-provision",
            platform="Linux",
            version=version,
            description="cloud-init/provision-worker.sh",
            data=image_builder_component(script),
            tags=tags,
            opts=child,
        )
        recipe = aws.imagebuilder.ImageRecipe(
            f"{name}-recipe",
            name=f"{name}-recipe",
            version=version,
            parent_image=f"ssm:{DEBIAN_12_ARM64_SSM}",
            components=[{"component_arn": component.arn}],
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    "ebs": {
                        "volume_size": 16,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            systems_manager_agent={"uninstall_after_build": True},
            user_data_base64=base64.b64encode(SSM_AGENT_USER_DATA.encode()).decode(),
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-build",
            assume_role_policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-build-{arn.rsplit('/', 1)[1]}", role=role.name, policy_arn=arn, opts=child
            )
            for arn in AWS_BUILD_ROLE_POLICIES
        ]
        profile = aws.iam.InstanceProfile(f"{name}-build", role=role.name, tags=tags, opts=child)
        infra = aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-infra",
            name=f"{name}-infra",
            instance_profile_name=profile.name,
            instance_types=[args.build_instance_type],
            subnet_id=args.subnet_id,
            security_group_ids=[args.security_group_id],
            terminate_instance_on_failure=True,
            instance_metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 1},
            resource_tags=tags,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )
        distribution = aws.imagebuilder.DistributionConfiguration(
            f"{name}-dist",
            name=f"{name}-dist",
            distributions=[
                {
                    "region": args.region,
                    "ami_distribution_configuration": {
                        "name": f"{name}-{{{{ imagebuilder:buildDate }}}}",
                        "ami_tags": {**tags, "obs-farm-image-version": version},
                    },
                }
            ],
            tags=tags,
            opts=child,
        )
        arns = {
            "image_recipe_arn": recipe.arn,
            "infrastructure_configuration_arn": infra.arn,
            "distribution_configuration_arn": distribution.arn,
        }
        # Manual (no schedule): `aws imagebuilder start-image-pipeline-execution`
        # rebuilds the same recipe on a newer Debian base.
        pipeline = aws.imagebuilder.ImagePipeline(
            f"{name}-pipeline",
            name=f"{name}-pipeline",
            status="ENABLED",
            tags=tags,
            **arns,
            opts=child,
        )
        image = aws.imagebuilder.Image(f"{name}-image", tags=tags, **arns, opts=child)
        self.ami_id = image.output_resources.apply(_first_ami)
        self.pipeline_arn = pipeline.arn
        self.register_outputs({"ami_id": self.ami_id, "pipeline_arn": self.pipeline_arn})


def _first_ami(resources_: object) -> str:
    # outputResources[0].amis[0].image: the AMI in the distribution's region.
    return resources_[0].amis[0].image  # type: ignore[index]
