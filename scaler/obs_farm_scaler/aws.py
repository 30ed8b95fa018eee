"""An AWS Auto Scaling group, through boto3, with web-identity credentials.

Calls: DescribeAutoScalingGroups (capacity, instances, lifecycle states),
SetDesiredCapacity (scale out only), TerminateInstanceInAutoScalingGroup
with ShouldDecrementDesiredCapacity=True (exactly one drained instance),
CompleteLifecycleAction (an instance in Terminating:Wait, once drained).

Credentials: no keys. The server VM's managed identity gets a token for
`webIdentityAudience` from the Azure IMDS, and STS AssumeRoleWithWebIdentity
turns it into the role's temporary credentials, refreshed before they expire.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from datetime import UTC
from typing import Any

from .config import AwsTarget
from .model import Machine, PoolState

IMDS = "http://169.254.169.254"
GONE = ("Terminating", "Terminating:Proceed", "Terminated", "Detaching", "Detached")


def imds_token(audience: str) -> str:
    """An access token for `audience` from the Azure IMDS (managed identity)."""
    base = os.environ.get("OBS_FARM_IMDS", IMDS).rstrip("/")
    query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": audience})
    req = urllib.request.Request(
        f"{base}/metadata/identity/oauth2/token?{query}", headers={"Metadata": "true"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def session(target: AwsTarget) -> Any:
    import boto3
    import botocore.session
    from botocore.credentials import DeferredRefreshableCredentials

    def refresh() -> dict[str, str]:
        sts = boto3.client("sts", region_name=target.region)
        creds = sts.assume_role_with_web_identity(
            RoleArn=target.role_arn,
            RoleSessionName="obs-farm-scaler",
            WebIdentityToken=imds_token(target.web_identity_audience),
            DurationSeconds=3600,
        )["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].astimezone(UTC).isoformat(),
        }

    core = botocore.session.get_session()
    # Fetched at the first call, refreshed before expiry; nothing at start-up.
    core._credentials = DeferredRefreshableCredentials(
        refresh_using=refresh, method="assume-role-with-web-identity"
    )
    return boto3.Session(botocore_session=core, region_name=target.region)


class AwsPool:
    def __init__(self, target: AwsTarget, boto_session: Any = None):
        from botocore.config import Config

        self.target = target
        self.calls = 0
        sess = boto_session if boto_session is not None else session(target)
        self.client = sess.client(
            "autoscaling",
            region_name=target.region,
            config=Config(retries={"max_attempts": 2}, connect_timeout=10, read_timeout=30),
        )

    def observe(self) -> PoolState:
        self.calls += 1
        groups = self.client.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.target.auto_scaling_group]
        )["AutoScalingGroups"]
        if len(groups) != 1:
            raise RuntimeError(f"auto scaling group {self.target.auto_scaling_group} not found")
        group = groups[0]
        machines = []
        for inst in group.get("Instances", []):
            state = inst["LifecycleState"]
            if state in GONE:
                continue
            machines.append(
                Machine(
                    id=inst["InstanceId"],
                    # Resource-name hostnames: the hostname is the instance id.
                    host=inst["InstanceId"],
                    terminating=state == "Terminating:Wait",
                )
            )
        return PoolState(int(group["DesiredCapacity"]), tuple(machines))

    def set_capacity(self, capacity: int) -> None:
        self.calls += 1
        self.client.set_desired_capacity(
            AutoScalingGroupName=self.target.auto_scaling_group,
            DesiredCapacity=capacity,
            HonorCooldown=False,
        )

    def delete(self, machine: str) -> None:
        self.calls += 1
        self.client.terminate_instance_in_auto_scaling_group(
            InstanceId=machine, ShouldDecrementDesiredCapacity=True
        )

    def complete_lifecycle(self, machine: str) -> None:
        if not self.target.lifecycle_hook:
            raise RuntimeError(f"pool has no lifecycle hook; cannot release {machine}")
        self.calls += 1
        self.client.complete_lifecycle_action(
            LifecycleHookName=self.target.lifecycle_hook,
            AutoScalingGroupName=self.target.auto_scaling_group,
            LifecycleActionResult="CONTINUE",
            InstanceId=machine,
        )
