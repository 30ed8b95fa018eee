"""GravitonPool: native ARM OBS workers on AWS Graviton.

Creates: a launch template (Debian 12 arm64 resolved from Debian's public SSM
parameter at launch, so no AMI id is hard-coded and nothing is looked up at
plan time, or the baked/user AMI `image_id` when given: components/images.py;
IMDSv2 required; an encrypted gp3 root volume sized for build roots; no
public IP), an Auto Scaling group over the private subnets with a
mixed-instances policy (Spot above an on-demand base when `spot`, capacity
rebalancing, new instances protected from scale-in so the group never
terminates a busy worker), a termination lifecycle hook so that an instance
the group itself replaces (capacity rebalancing) waits in Terminating:Wait
until obs-farm-scaler has drained it, and, only when the scaler is turned
off, a CPU target-tracking policy that scales OUT (never in).

The group's desired capacity belongs to obs-farm-scaler (SetDesiredCapacity
to grow, TerminateInstanceInAutoScalingGroup on drained idle instances to
shrink): it is not set, and `pulumi up` ignores it. Instances use
resource-name hostnames, so a worker's hostname is its instance id, which is
how the scaler maps OBS workers to instances (scaler/CONTRACT.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.common import b64
from components.topology import WorkerPool

DEBIAN_12_ARM64_SSM = "/aws/service/debian/release/12/latest/arm64"
# Debian's AMIs name their root device like this.
ROOT_DEVICE = "/dev/xvda"
# How long a terminating instance waits for the scaler to drain it (stop its
# workers, let OBS requeue or finish) before Auto Scaling goes on anyway
# (CONTINUE). The scaler completes the action as soon as it is drained; the
# timeout only bounds a scaler that is down. AWS allows 30..7200 s.
DRAIN_HEARTBEAT_SECONDS = 3600


@dataclass(frozen=True)
class GravitonPoolArgs:
    pool: WorkerPool
    instance_types: tuple[str, ...]
    on_demand_base: int
    volume_size_gb: int
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    user_data: str
    tags: dict[str, str]
    # Only when the scaler is off: target tracking adds instances on CPU load.
    cpu_scale_out_fallback: bool = False
    # A baked or the user's AMI; None: stock Debian 12 resolved from SSM at launch.
    image_id: pulumi.Input[str] | None = None


class GravitonPool(pulumi.ComponentResource):
    group_name: pulumi.Output[str]
    group_arn: pulumi.Output[str]
    lifecycle_hook_name: pulumi.Output[str]
    launch_template_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: GravitonPoolArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("obs-farm:aws:GravitonPool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pool = args.pool
        tags = {**args.tags, "Name": name}
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"OBS workers ({name})",
            image_id=args.image_id or f"resolve:ssm:{DEBIAN_12_ARM64_SSM}",
            update_default_version=True,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            block_device_mappings=[
                {
                    "device_name": ROOT_DEVICE,
                    "ebs": {
                        "volume_size": args.volume_size_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            # The hostname is the instance id (i-0123...), which the scaler
            # reads from worker ids (scaler/CONTRACT.md).
            private_dns_name_options={"hostname_type": "resource-name"},
            network_interfaces=[
                {
                    "associate_public_ip_address": "false",
                    "delete_on_termination": "true",
                    "security_groups": [args.security_group_id],
                }
            ],
            user_data=b64(args.user_data),
            tag_specifications=[
                {"resource_type": "instance", "tags": tags},
                {"resource_type": "volume", "tags": tags},
            ],
            tags=tags,
            opts=child,
        )
        group = aws.autoscaling.Group(
            f"{name}-asg",
            min_size=pool.min_vms,
            max_size=pool.max_vms,
            vpc_zone_identifiers=args.subnet_ids,
            capacity_rebalance=pool.spot,
            protect_from_scale_in=True,
            health_check_grace_period=600,
            mixed_instances_policy={
                "instances_distribution": {
                    "on_demand_base_capacity": args.on_demand_base,
                    "on_demand_percentage_above_base_capacity": 0 if pool.spot else 100,
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": template.id,
                        "version": "$Latest",
                    },
                    "overrides": [{"instance_type": t} for t in args.instance_types],
                },
            },
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in tags.items()],
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"]),
        )
        hook = aws.autoscaling.LifecycleHook(
            f"{name}-drain",
            name=f"{name}-drain",
            autoscaling_group_name=group.name,
            lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
            heartbeat_timeout=DRAIN_HEARTBEAT_SECONDS,
            default_result="CONTINUE",
            opts=child,
        )
        if args.cpu_scale_out_fallback:
            self._fallback(name, group.name, child)
        self.group_name = group.name
        self.group_arn = group.arn
        self.lifecycle_hook_name = hook.name
        self.launch_template_id = template.id
        self.register_outputs(
            {
                "group_name": self.group_name,
                "group_arn": self.group_arn,
                "lifecycle_hook_name": self.lifecycle_hook_name,
                "launch_template_id": self.launch_template_id,
            }
        )

    def _fallback(
        self, name: str, group_name: pulumi.Output[str], child: pulumi.ResourceOptions
    ) -> None:
        """CPU target tracking, scale-out only: a group at 0 has no CPU metric
        and never starts, and scale-in protection keeps what it adds."""
        aws.autoscaling.Policy(
            f"{name}-cpu",
            autoscaling_group_name=group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=300,
            target_tracking_configuration={
                "predefined_metric_specification": {
                    "predefined_metric_type": "ASGAverageCPUUtilization"
                },
                "target_value": 60,
                "disable_scale_in": True,
            },
            opts=child,
        )
