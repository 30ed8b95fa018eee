"""Adapt the plain rules to pulumi-policy's ResourceValidationPolicy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policy.rules import RULES, Resource, Rule


def _validator(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        res = Resource(args.resource_type, args.name, args.props, bool(args.opts.protect))
        for message in rule.check(res, args.get_config()):
            report_violation(message, None)

    return validate


def build_policies() -> list[ResourceValidationPolicy]:
    policies = []
    for rule in RULES:
        kwargs: dict[str, Any] = {}
        if rule.config_schema:
            kwargs["config_schema"] = PolicyConfigSchema(properties=dict(rule.config_schema))
        policies.append(
            ResourceValidationPolicy(
                name=rule.name,
                description=rule.description,
                validate=_validator(rule),
                enforcement_level=EnforcementLevel.MANDATORY,
                **kwargs,
            )
        )
    return policies
