"""Settings the clouds refuse must not pass validation (issue 12, defect 9),
and the BGP ASNs of the VPN (defect 1) are checked like every other setting.

The lists the rules use are compared with the clouds' own definitions: the
reserved admin names with the installed azure-mgmt-compute model's text for
OSProfile.adminUsername, the AWS regions with botocore's partitions data.
"""

from __future__ import annotations

import inspect
import re

import botocore.session
import pytest

from config import ConfigError, load_settings
from config.catalog import AWS_REGIONS, AZURE_RESERVED_ADMIN_NAMES
from tests.conftest import PUBLIC_KEY, raw_config

AWS = {
    "mode": "hybrid",
    "aws:region": "eu-central-1",
    "graviton": {"instanceTypes": ["c7g.8xlarge"]},
}


def problems(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(raw_config(**overrides))
    return err.value.problems


def test_reserved_names_are_azures_own_list():
    from azure.mgmt.compute import models

    text = inspect.getsource(models.OSProfile)
    listed = text[text.index("Disallowed values") : text.index("Minimum-length")]
    assert set(re.findall(r'"([^"]+)"', listed)) == AZURE_RESERVED_ADMIN_NAMES


@pytest.mark.parametrize("name", ["root", "admin", "administrator", "support_388945a0", "user5"])
def test_reserved_admin_username_is_refused(name):
    [message] = problems(adminUsername=name)
    assert message.startswith(f"obs-farm:adminUsername {name!r} is a name Azure reserves")


def test_an_ordinary_admin_username_passes():
    assert load_settings(raw_config(adminUsername="builder")).admin_username == "builder"


@pytest.mark.parametrize("tail", ["\nssh-ed25519 AAAA second@key", "\n\nrm -rf /", "\r\nx"])
def test_ssh_key_with_a_second_line_is_refused(tail):
    [message] = problems(sshPublicKey=PUBLIC_KEY + tail)
    assert message.startswith("obs-farm:sshPublicKey must be a single OpenSSH public key line")


def test_ssh_key_with_a_trailing_newline_is_fine():
    assert load_settings(raw_config(sshPublicKey=PUBLIC_KEY + "\n")).ssh_public_key == PUBLIC_KEY


def test_regions_are_botocores():
    loader = botocore.session.get_session().get_component("data_loader")
    partitions = loader.load_data("partitions")["partitions"]
    regions = {r for p in partitions for r in p["regions"] if not r.endswith("-global")}
    assert regions == AWS_REGIONS


@pytest.mark.parametrize("region", ["eu-mars-1", "us-east-9"])
def test_unknown_aws_region_is_refused(region):
    found = problems(**{**AWS, "aws:region": region})
    assert any(
        p.startswith(f"aws:region must be an AWS region such as eu-central-1; got {region!r}")
        for p in found
    )


def test_real_aws_regions_pass():
    for region in ("eu-central-1", "us-west-2", "ap-southeast-7"):
        assert load_settings(raw_config(**{**AWS, "aws:region": region})).aws_region == region


def test_asn_defaults_are_microsofts_example():
    s = load_settings(raw_config(**AWS))
    assert (s.network.azure_asn, s.network.aws_asn) == (65000, 64512)


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"awsAsn": 65515}, "obs-farm:network.awsAsn 65515 is reserved by Azure"),
        ({"azureAsn": 65517}, "obs-farm:network.azureAsn 65517 is reserved by Azure"),
        (
            {"azureAsn": 3320},
            "obs-farm:network.azureAsn must be a private ASN (64512..65534 or 4200000000..4294967294); got 3320",
        ),
        ({"awsAsn": 4294967295}, "obs-farm:network.awsAsn must be a private ASN"),
        (
            {"azureAsn": 64600, "awsAsn": 64600},
            "obs-farm:network.azureAsn and obs-farm:network.awsAsn must differ",
        ),
    ],
)
def test_bad_asns_are_refused(network, message):
    assert any(p.startswith(message) for p in problems(**AWS, network=network))


def test_32_bit_private_asns_pass():
    s = load_settings(raw_config(**AWS, network={"azureAsn": 4200000001, "awsAsn": 4200000002}))
    assert s.network.aws_asn == 4200000002


@pytest.mark.parametrize(
    "disk_id",
    [
        "/subscriptions/x/disk",
        "obs-server-data",
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/g/providers/Microsoft.Compute/snapshots/s",
    ],
)
def test_existing_data_disk_id_must_be_a_disk_id(disk_id):
    [message] = problems(server={"existingDataDiskId": disk_id})
    assert message.startswith(
        "obs-farm:server.existingDataDiskId must be a managed disk's resource id"
    )
