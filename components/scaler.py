"""FarmScaler: obs-farm-scaler on the OBS server, and the identities it acts with.

Creates:
- Azure, with an Azure pool: a custom role holding exactly the scale-set
  actions the scaler calls (read the set, set its capacity, delete given
  VMs of it), assigned to the server VM's managed identity at the scale
  set's scope; and a custom role holding `virtualMachines/read` only,
  assigned at the resource group's scope, because a Flexible scale set's VMs
  are resource-group-level resources and listing them by scale set is a
  resource-group list (see README, "The scaler's identities").
- AWS, with a Graviton pool: an IAM OIDC provider for the Azure tenant's
  token issuer, and a role only the server's managed identity can assume by
  web identity (audience and subject pinned), allowed the Auto Scaling calls
  of scaler/CONTRACT.md on the pool's group and the Describe calls that take
  no resource ARN. No access key exists.
- A managed run command on the server VM, after obs-farm-apply-farm (Azure
  runs one at a time), that installs the scaler package (shipped inside the
  script), writes /etc/obs-farm/scaler.json and the systemd unit, and
  (re)starts it; with `scaler.enabled: false` it stops and removes it.

The pure parts (the configuration, the policies, the script) are plain
functions the tests call directly.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi_azure_native import authorization, compute

from components.azure_roles import custom_role, grant
from components.cloudinit import fill, template
from components.topology import REPSERVER_PORT, WorkerPool
from config.model import ScalerSettings

SCALER_DIR = Path(__file__).resolve().parent.parent / "scaler"
PACKAGE = "obs_farm_scaler"
CONFIG_PATH = "/etc/obs-farm/scaler.json"
BSDIR = "/srv/obs"
# The audience the scaler asks the Azure IMDS a token for (scaler/CONTRACT.md);
# the AWS OIDC provider accepts only this client id.
WEB_IDENTITY_AUDIENCE = "api://obs-farm-scaler"
# No documented cap for a managed run command's inline script was found;
# 256 KB is the figure recalled for inline scripts in VM extension settings
# (Custom Script Extension), unconfirmed: stay under it (README).
RUN_COMMAND_SCRIPT_LIMIT = 256 * 1024

# Exactly what the scaler calls on the scale set (azure-mgmt-compute):
# virtual_machine_scale_sets.get, .begin_update (sku.capacity) and
# .begin_delete_instances (the Flexible set's VMs by name).
AZURE_SCALE_SET_ACTIONS = (
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.Compute/virtualMachineScaleSets/delete/action",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
)
# virtual_machines.list(resource_group, filter="'virtualMachineScaleSet/id' eq ...").
AZURE_VM_READ_ACTIONS = ("Microsoft.Compute/virtualMachines/read",)

# IAM actions, as scaler/CONTRACT.md lists them. Those on the group's ARN
# support resource-level permissions; the Describe calls do not.
AWS_GROUP_ACTIONS = (
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:CompleteLifecycleAction",
)
AWS_DESCRIBE_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "ec2:DescribeInstances",
)


# --- scaler.json -------------------------------------------------------------------


@dataclass(frozen=True)
class AzureTarget:
    subscription_id: str
    resource_group: str
    scale_set: str


@dataclass(frozen=True)
class AwsTarget:
    region: str
    auto_scaling_group: str
    lifecycle_hook: str
    role_arn: str
    web_identity_audience: str = WEB_IDENTITY_AUDIENCE


def _pool_config(
    pool: WorkerPool, azure: AzureTarget | None, aws_target: AwsTarget | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": pool.name,
        "cloud": pool.cloud,
        "min": pool.min_vms,
        "max": pool.max_vms,
        "groups": [
            {
                "arch": g.arch,
                "hostarch": g.scheduler_arch,
                "instances": g.instances,
                "execution": g.execution,
            }
            for g in pool.groups
        ],
    }
    if pool.cloud == "azure":
        if azure is None:
            raise ValueError(f"pool {pool.name} is on Azure but no scale set was given")
        out["azure"] = {
            "subscriptionId": azure.subscription_id,
            "resourceGroup": azure.resource_group,
            "scaleSet": azure.scale_set,
        }
    elif pool.cloud == "aws":
        if aws_target is None:
            raise ValueError(f"pool {pool.name} is on AWS but no group was given")
        out["aws"] = {
            "region": aws_target.region,
            "autoScalingGroup": aws_target.auto_scaling_group,
            "lifecycleHook": aws_target.lifecycle_hook,
            "roleArn": aws_target.role_arn,
            "webIdentityAudience": aws_target.web_identity_audience,
        }
    else:
        raise ValueError(f"pool {pool.name}: unknown cloud {pool.cloud!r}")
    return out


def render_scaler_config(
    scaler: ScalerSettings,
    pools: Sequence[WorkerPool],
    azure: AzureTarget | None = None,
    aws_target: AwsTarget | None = None,
) -> str:
    """/etc/obs-farm/scaler.json, exactly as scaler/CONTRACT.md describes it."""
    doc = {
        "repserver": f"http://127.0.0.1:{REPSERVER_PORT}",
        "bsdir": BSDIR,
        "pollSeconds": scaler.poll_seconds,
        "idleMinutes": scaler.idle_minutes,
        "unhealthyMinutes": scaler.unhealthy_minutes,
        "pools": [_pool_config(p, azure, aws_target) for p in pools],
    }
    return json.dumps(doc, indent=2) + "\n"


# --- the package and the install script --------------------------------------------


def package_files(root: Path = SCALER_DIR) -> list[Path]:
    """requirements.txt and every file of the package, caches left out, sorted."""
    files = [root / "requirements.txt"]
    pkg = root / PACKAGE
    if pkg.is_dir():
        files += sorted(
            p
            for p in pkg.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def package_tarball(root: Path = SCALER_DIR) -> bytes:
    """A reproducible tar.gz of the package: same sources, same bytes, so the
    run command changes (and Azure re-runs it) exactly when the package does."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for path in package_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def render_install_scaler(enabled: bool, config_json: str = "", root: Path = SCALER_DIR) -> str:
    """The run-command script. Turned off, it carries neither package nor
    configuration, so it changes only when turned back on."""
    script = fill(
        template("install-scaler.sh"),
        {
            "ENABLED": "1" if enabled else "0",
            "PACKAGE_B64": base64.encodebytes(package_tarball(root)).decode().rstrip("\n")
            if enabled
            else "",
            "CONFIG_JSON": config_json.rstrip("\n"),
            "UNIT": template("obs-farm-scaler.service").rstrip("\n"),
        },
    )
    size = len(script.encode())
    if size > RUN_COMMAND_SCRIPT_LIMIT:
        raise ValueError(
            f"the scaler's run-command script is {size} bytes, over Azure's "
            f"{RUN_COMMAND_SCRIPT_LIMIT}; ship the package another way"
        )
    return script


# --- IAM documents ------------------------------------------------------------------


def oidc_issuer(tenant_id: str) -> str:
    """The issuer of the v1 tokens the Azure IMDS hands a managed identity."""
    return f"https://sts.windows.net/{tenant_id}/"


def trust_policy(
    provider_arn: str, tenant_id: str, principal_id: str, audience: str = WEB_IDENTITY_AUDIENCE
) -> dict[str, Any]:
    """Only tokens of that tenant, for our audience, about the server's identity."""
    host = oidc_issuer(tenant_id).removeprefix("https://")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{host}:aud": audience, f"{host}:sub": principal_id}
                },
            }
        ],
    }


def pool_policy(group_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ThisPoolOnly",
                "Effect": "Allow",
                "Action": list(AWS_GROUP_ACTIONS),
                "Resource": group_arn,
            },
            {
                # These take no resource ARN (IAM: resource type "*").
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": list(AWS_DESCRIBE_ACTIONS),
                "Resource": "*",
            },
        ],
    }


# --- the component ------------------------------------------------------------------


@dataclass(frozen=True)
class AzurePoolRef:
    scale_set_id: pulumi.Input[str]
    scale_set_name: pulumi.Input[str]


@dataclass(frozen=True)
class AwsPoolRef:
    region: str
    group_name: pulumi.Input[str]
    group_arn: pulumi.Input[str]
    lifecycle_hook_name: pulumi.Input[str]
    # The explicit AWS provider (intel-only stacks have none).
    provider: pulumi.ProviderResource


@dataclass(frozen=True)
class FarmScalerArgs:
    settings: ScalerSettings
    pools: Sequence[WorkerPool]
    resource_group_name: pulumi.Input[str]
    resource_group_id: pulumi.Input[str]
    location: str
    server_vm_name: pulumi.Input[str]
    server_principal_id: pulumi.Input[str]
    azure_pool: AzurePoolRef | None
    aws_pool: AwsPoolRef | None
    azure_tags: dict[str, str]
    aws_tags: dict[str, str]
    # The run commands it must follow (Azure runs one at a time on a VM).
    after: Sequence[pulumi.Resource] = ()


class FarmScaler(pulumi.ComponentResource):
    run_command_id: pulumi.Output[str]

    def __init__(self, name: str, args: FarmScalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("obs-farm:scaler:FarmScaler", name, None, opts)
        client = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        )
        identities: list[pulumi.Resource] = []
        azure_target: pulumi.Output[AzureTarget] | None = None
        aws_target: pulumi.Output[AwsTarget] | None = None
        if args.settings.enabled and args.azure_pool is not None:
            identities += self._azure_identity(name, args, args.azure_pool)
            azure_target = pulumi.Output.all(
                client.subscription_id, args.resource_group_name, args.azure_pool.scale_set_name
            ).apply(lambda a: AzureTarget(a[0], a[1], a[2]))
        if args.settings.enabled and args.aws_pool is not None:
            role, policy = self._aws_identity(name, args, args.aws_pool, client.tenant_id)
            identities += [role, policy]
            ref = args.aws_pool
            aws_target = pulumi.Output.all(ref.group_name, ref.lifecycle_hook_name, role.arn).apply(
                lambda a: AwsTarget(ref.region, a[0], a[1], a[2])
            )

        settings, pools = args.settings, list(args.pools)
        if settings.enabled:
            script: pulumi.Input[str] = pulumi.Output.all(
                pulumi.Output.from_input(azure_target), pulumi.Output.from_input(aws_target)
            ).apply(
                lambda t: render_install_scaler(
                    True, render_scaler_config(settings, pools, t[0], t[1])
                )
            )
        else:
            script = render_install_scaler(False)
        command = compute.VirtualMachineRunCommandByVirtualMachine(
            f"{name}-install",
            resource_group_name=args.resource_group_name,
            vm_name=args.server_vm_name,
            location=args.location,
            source={"script": script},
            async_execution=False,
            timeout_in_seconds=3600,
            treat_failure_as_deployment_failure=True,
            tags=args.azure_tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.after, *identities]),
        )
        self.run_command_id = command.id
        self.register_outputs({"run_command_id": self.run_command_id})

    def _azure_identity(
        self, name: str, args: FarmScalerArgs, pool: AzurePoolRef
    ) -> list[pulumi.Resource]:
        child = pulumi.ResourceOptions(parent=self)
        grants = (
            ("pool", AZURE_SCALE_SET_ACTIONS, pool.scale_set_id),
            ("vm-reader", AZURE_VM_READ_ACTIONS, args.resource_group_id),
        )
        made: list[pulumi.Resource] = []
        for role, actions, scope in grants:
            # Custom role names are unique in the tenant: the resource group's
            # generated name makes them so.
            definition = custom_role(
                f"{name}-{role}-role",
                owner="obs-farm-scaler",
                role=role,
                role_name=pulumi.Output.concat(
                    "obs-farm-scaler ", role, " ", args.resource_group_name
                ),
                description="obs-farm-scaler: " + ", ".join(actions),
                actions=actions,
                resource_group_id=args.resource_group_id,
                opts=child,
            )
            assignment = grant(
                f"{name}-{role}", args.server_principal_id, definition.id, scope, child
            )
            made += [definition, assignment]
        return made

    def _aws_identity(
        self,
        name: str,
        args: FarmScalerArgs,
        pool: AwsPoolRef,
        tenant_id: pulumi.Output[str],
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        child = pulumi.ResourceOptions(parent=self, provider=pool.provider)
        tags = {**args.aws_tags, "Name": f"{name}-aws"}
        provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=tenant_id.apply(oidc_issuer),
            client_id_lists=[WEB_IDENTITY_AUDIENCE],
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-aws",
            description="obs-farm-scaler on the OBS server (Azure managed identity)",
            assume_role_policy=pulumi.Output.all(
                provider.arn, tenant_id, args.server_principal_id
            ).apply(lambda a: json.dumps(trust_policy(a[0], a[1], a[2]))),
            max_session_duration=3600,
            tags=tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-aws-pool",
            role=role.id,
            policy=pulumi.Output.from_input(pool.group_arn).apply(
                lambda arn: json.dumps(pool_policy(arn))
            ),
            opts=child,
        )
        return role, policy
