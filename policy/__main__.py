"""obs-farm's CrossGuard policy pack: `pulumi up --policy-pack policy`.

The rules are plain functions in rules.py; this file only adapts them to
pulumi-policy. Give the admin ranges (the stack's obs-farm:adminCidrs) with
`--policy-pack-config policy/config.json`, see README.md.
"""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

# The rules share the farm's port numbers with the program.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pack import build_policies

PolicyPack(
    name="obs-farm-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=build_policies(),
)
