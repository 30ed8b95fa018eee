"""Settings of hybrid and native farms (AWS Graviton pools): one test per rule."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings
from config.rules import aws_subnets, graviton_archs
from tests.conftest import raw_config

GRAVITON = {
    "instanceTypes": ["c7g.8xlarge", "m6g.8xlarge"],
    "instancesPerArch": 4,
    "jobsPerInstance": 2,
}


def aws(mode: str = "hybrid", **overrides: object) -> dict[str, str]:
    base: dict[str, object] = {"mode": mode, "aws:region": "eu-central-1", "graviton": GRAVITON}
    base.update(overrides)
    return raw_config(**base)


def error_of(raw: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    return str(caught.value)


def test_hybrid_is_valid():
    s = load_settings(aws())
    assert s.aws_region == "eu-central-1"
    assert graviton_archs(s) == {"aarch64": "native", "armv7hl": "native"}


def test_hybrid_without_region():
    assert error_of(aws(**{"aws:region": None})) == (
        "aws:region is required when obs-farm:mode is hybrid (the Graviton pools' region)"
    )


@pytest.mark.parametrize("mode", ["hybrid", "native"])
def test_aws_modes_without_graviton(mode):
    assert error_of(aws(mode, graviton=None)) == (
        f"obs-farm:graviton is required when obs-farm:mode is {mode}; "
        "at least: instanceTypes (e.g. [c7g.8xlarge])"
    )


def test_graviton_in_intel_only_mode():
    assert error_of(aws("intel-only")).startswith(
        "obs-farm:graviton is set but obs-farm:mode is intel-only, which deploys nothing on AWS"
    )


def test_region_malformed():
    assert error_of(aws(**{"aws:region": "Frankfurt"})).startswith("aws:region must match")


def test_instance_type_that_is_not_graviton():
    msg = error_of(aws(graviton={**GRAVITON, "instanceTypes": ["c7g.8xlarge", "c5.9xlarge"]}))
    assert msg.startswith(
        "obs-farm:graviton.instanceTypes[1] must be a supported Graviton type (families a1, c6g, c7g, c8g"
    )
    assert msg.endswith("got 'c5.9xlarge'")


def test_instance_types_empty():
    assert error_of(aws(graviton={**GRAVITON, "instanceTypes": []})).startswith(
        "obs-farm:graviton.instanceTypes"
    )


def test_native_armv7hl_on_graviton4_is_refused_naming_types_and_families():
    msg = error_of(
        aws(
            "native",
            graviton={**GRAVITON, "instanceTypes": ["c7g.8xlarge", "c8g.8xlarge", "m8g.8xlarge"]},
        )
    )
    assert msg == (
        "obs-farm:graviton.instanceTypes c8g.8xlarge, m8g.8xlarge cannot build armv7hl natively: "
        "their CPUs (Graviton4) do not run 32-bit ARM code. Use families a1, c6g, m6g, r6g, t4g, "
        "c7g, m7g, r7g, or set obs-farm:graviton.armv7hlEmulated: true"
    )


def test_native_armv7hl_on_graviton4_emulated_when_asked():
    s = load_settings(
        aws(
            "native",
            graviton={**GRAVITON, "instanceTypes": ["c8g.8xlarge"], "armv7hlEmulated": True},
        )
    )
    assert graviton_archs(s) == {"aarch64": "native", "armv7hl": "emulated"}


def test_hybrid_graviton4_leaves_armv7hl_to_azure():
    s = load_settings(aws("hybrid", graviton={**GRAVITON, "instanceTypes": ["c8g.8xlarge"]}))
    assert graviton_archs(s) == {"aarch64": "native"}


def test_native_without_arm_architectures_puts_nothing_on_graviton():
    msg = error_of(aws("native", architectures=["x86_64"]))
    assert msg == (
        "obs-farm:mode native with obs-farm:architectures ['x86_64'] puts nothing on Graviton; "
        "add aarch64 or armv7hl, or use mode intel-only"
    )


def test_graviton_overcommit():
    msg = error_of(aws(graviton={**GRAVITON, "instanceTypes": ["c7g.2xlarge"]}))
    assert msg == (
        "obs-farm:graviton.instancesPerArch x jobsPerInstance x architectures (4 x 2 x 2 = 16) "
        "overcommits obs-farm:graviton.instanceTypes c7g.2xlarge (8 vCPUs)"
    )


def test_graviton_memory():
    # 8 instances x 1 job fit 8 vCPUs, but need 32 GiB; c7g.2xlarge has 16.
    msg = error_of(
        aws(graviton={**GRAVITON, "instanceTypes": ["c7g.2xlarge"], "jobsPerInstance": 1})
    )
    assert msg == (
        "obs-farm:graviton.instancesPerArch (8 instances in all) needs 32 GiB at 4 GiB per "
        "instance; obs-farm:graviton.instanceTypes c7g.2xlarge has 16 GiB"
    )


def test_graviton_min_above_max():
    assert error_of(aws(graviton={**GRAVITON, "minInstances": 5, "maxInstances": 2})) == (
        "obs-farm:graviton.minInstances (5) must not exceed obs-farm:graviton.maxInstances (2)"
    )


def test_on_demand_base_above_max():
    assert error_of(aws(graviton={**GRAVITON, "onDemandBase": 4, "maxInstances": 2})) == (
        "obs-farm:graviton.onDemandBase (4) must not exceed obs-farm:graviton.maxInstances (2)"
    )


def test_graviton_negative_count():
    assert error_of(aws(graviton={**GRAVITON, "onDemandBase": -1})) == (
        "obs-farm:graviton.onDemandBase must be at least 0; got -1"
    )


def test_zones_must_be_two_of_the_region():
    assert "must name two different zones" in error_of(
        aws(graviton={**GRAVITON, "availabilityZones": ["eu-central-1a"]})
    )
    assert "must be zones of aws:region eu-central-1" in error_of(
        aws(graviton={**GRAVITON, "availabilityZones": ["us-east-1a", "us-east-1b"]})
    )


def test_vpc_overlapping_azure():
    assert error_of(aws(network={"awsVpcCidr": "10.40.128.0/17"})) == (
        "obs-farm:network.awsVpcCidr 10.40.128.0/17 overlaps obs-farm:network.addressSpace "
        "10.40.0.0/16; the VPN routes between them, so they must be disjoint"
    )


def test_vpc_size_bounds():
    assert error_of(aws(network={"awsVpcCidr": "10.0.0.0/8"})) == (
        "obs-farm:network.awsVpcCidr must be an IPv4 range from /16 to /24; got 10.0.0.0/8"
    )


def test_vpc_too_small_for_max_instances():
    msg = error_of(
        aws(network={"awsVpcCidr": "10.41.0.0/24"}, graviton={**GRAVITON, "maxInstances": 200})
    )
    assert msg == (
        "obs-farm:network.awsVpcCidr 10.41.0.0/24 has room for 118 workers; "
        "obs-farm:graviton.maxInstances is 200"
    )


def test_gateway_subnet_must_fit_and_not_overlap():
    assert error_of(aws(network={"gatewaySubnet": "10.40.1.0/27"})) == (
        "obs-farm:network.serverSubnet 10.40.1.0/24 overlaps obs-farm:network.gatewaySubnet 10.40.1.0/27"
    )
    assert "must be /27 or larger" in error_of(aws(network={"gatewaySubnet": "10.40.255.0/28"}))


def test_aws_subnets_are_the_vpc_quarters():
    s = load_settings(aws())
    assert aws_subnets(s) == {
        "private-a": "10.41.0.0/18",
        "private-b": "10.41.64.0/18",
        "public-a": "10.41.128.0/18",
        "public-b": "10.41.192.0/18",
    }


def test_native_mode_azure_builds_x86_only_and_is_sized_for_it():
    # 8 instances x 2 jobs = 16 vCPUs is fine for one architecture on a D16ds_v5,
    # which would overcommit with three.
    load_settings(aws("native", azureWorkers={"instancesPerArch": 8, "jobsPerInstance": 2}))
