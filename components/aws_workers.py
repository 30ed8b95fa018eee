"""GravitonPool: native ARM OBS workers on AWS Graviton.

Creates: a launch template (Debian 12 arm64 resolved from Debian's public SSM
parameter at launch, so no AMI id is hard-coded and nothing is looked up at
plan time; IMDSv2 required; an encrypted gp3 root volume sized for build
roots; no public IP), an Auto Scaling group over the private subnets with a
mixed-instances policy (Spot above an on-demand base when `spot`, capacity
rebalancing, new instances protected from scale-in so the group never
terminates a busy worker), and a CPU target-tracking policy that adds
capacity under load.

The group's desired capacity belongs to the scaling policy: it is not set,
and `pulumi up` ignores it. Scale-in protection means the policy only scales
out; taking idle workers away needs a drain step (stop taking jobs, re-check
idle, then terminate) that is not part of this component yet.
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


class GravitonPool(pulumi.ComponentResource):
    group_name: pulumi.Output[str]
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
            image_id=f"resolve:ssm:{DEBIAN_12_ARM64_SSM}",
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
        aws.autoscaling.Policy(
            f"{name}-cpu",
            autoscaling_group_name=group.name,
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
        self.group_name = group.name
        self.launch_template_id = template.id
        self.register_outputs(
            {"group_name": self.group_name, "launch_template_id": self.launch_template_id}
        )
