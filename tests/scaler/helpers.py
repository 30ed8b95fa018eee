"""Plain-data builders for the scaler's unit tests."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from typing import Any

from obs_farm_scaler.config import AwsTarget, parse

DEV_POOL: dict[str, Any] = {
    "name": "azure-x86",
    "cloud": "azure",
    "min": 0,
    "max": 2,
    "groups": [
        {"arch": "x86_64", "hostarch": "x86_64", "instances": 1, "execution": "native"},
        {"arch": "armv7hl", "hostarch": "armv7l", "instances": 1, "execution": "emulated"},
        {"arch": "aarch64", "hostarch": "aarch64", "instances": 1, "execution": "emulated"},
    ],
    "azure": {"subscriptionId": "sub", "resourceGroup": "rg", "scaleSet": "vmss"},
}
GRAVITON_POOL: dict[str, Any] = {
    "name": "aws-graviton",
    "cloud": "aws",
    "min": 0,
    "max": 4,
    "groups": [
        {"arch": "armv7hl", "hostarch": "armv7l", "instances": 4, "execution": "native"},
        {"arch": "aarch64", "hostarch": "aarch64", "instances": 4, "execution": "native"},
    ],
    "aws": {
        "region": "eu-central-1",
        "autoScalingGroup": "asg",
        "lifecycleHook": "drain",
        "roleArn": "arn:aws:iam::123456789012:role/scaler",
        "webIdentityAudience": "api://obs-farm-scaler",
    },
}


def settings(*pools: dict[str, Any], **top: Any):
    raw = {
        "repserver": "http://127.0.0.1:5252",
        "bsdir": "/srv/obs",
        "pollSeconds": 5,
        "idleMinutes": 10,
        "unhealthyMinutes": 5,
        "pools": list(pools) or [DEV_POOL],
    }
    raw.update(top)
    return parse(raw)


def pool(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def make_group(endpoint: str, name: str = "graviton-asg", desired: int = 0) -> None:
    import boto3

    kw = {"region_name": "eu-central-1", "endpoint_url": endpoint,
          "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}  # fmt: skip
    ec2 = boto3.client("ec2", **kw)
    ec2.create_launch_template(
        LaunchTemplateName=f"{name}-lt",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c7g.large"},
    )
    asg = boto3.client("autoscaling", **kw)
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{name}-lt", "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=desired,
        AvailabilityZones=["eu-central-1a"],
        NewInstancesProtectedFromScaleIn=True,
    )
    asg.put_lifecycle_hook(
        LifecycleHookName="graviton-drain",
        AutoScalingGroupName=name,
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=900,
        DefaultResult="CONTINUE",
    )


def aws_target() -> AwsTarget:
    return AwsTarget(
        "eu-central-1", "graviton-asg", "graviton-drain",
        "arn:aws:iam::123456789012:role/obs-farm-scaler", "api://obs-farm-scaler",
    )  # fmt: skip


@contextlib.contextmanager
def moto_server(port: int) -> Iterator[str]:
    """A moto server on 127.0.0.1:`port`, its state emptied first: moto keeps
    its backends per process, so a group another test made would otherwise
    still be there."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        yield endpoint
    finally:
        server.stop()
