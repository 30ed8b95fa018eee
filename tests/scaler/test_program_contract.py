"""The two sides of scaler/CONTRACT.md against each other: the scaler.json the
program renders for every example stack (what the install run command writes
on the server) is read by the scaler's own parser, pool for pool and group for
group as the topology promises."""

from __future__ import annotations

import json

import pytest
from obs_farm_scaler.config import parse

from components.scaler import AwsTarget, AzureTarget, render_scaler_config
from components.topology import worker_pools
from config import load_settings
from tests.api.conftest import EXAMPLES
from tools.offline import read_stack_config

AZURE = AzureTarget("00000000-0000-0000-0000-000000000000", "obs-farm-rg", "azure-x86-vmss")
AWS = AwsTarget(
    "eu-central-1", "aws-graviton-asg", "aws-graviton-drain", "arn:aws:iam::1:role/obs-scaler"
)


@pytest.mark.parametrize(
    "stack, accelerate", [(s, []) for s in EXAMPLES] + [("dev", ["armv7hl", "aarch64"])]
)
def test_the_scaler_reads_what_the_program_renders(stack, accelerate):
    raw = read_stack_config(stack)
    if accelerate:
        workers = json.loads(raw.get("obs-farm:azureWorkers", "{}"))
        raw["obs-farm:azureWorkers"] = json.dumps({**workers, "accelerate": accelerate})
    settings = load_settings(raw)
    pools = worker_pools(settings)
    parsed = parse(json.loads(render_scaler_config(settings.scaler, pools, AZURE, AWS)))
    assert parsed.poll_seconds == settings.scaler.poll_seconds
    assert [(p.name, p.cloud, p.min, p.max) for p in parsed.pools] == [
        (p.name, p.cloud, p.min_vms, p.max_vms) for p in pools
    ]
    for got, want in zip(parsed.pools, pools, strict=True):
        assert [(g.arch, g.hostarch, g.instances, g.execution) for g in got.groups] == [
            (g.arch, g.scheduler_arch, g.instances, g.execution) for g in want.groups
        ]
        assert (got.azure is None) == (want.cloud != "azure")
        assert (got.aws is None) == (want.cloud != "aws")
