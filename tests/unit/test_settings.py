"""Settings validation: one test per rule, each on the user-facing message."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings
from tests.conftest import PUBLIC_KEY, make_public_key, raw_config


def error_of(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config(**overrides))
    return str(caught.value)


def test_defaults_are_valid_and_complete():
    s = load_settings(raw_config())
    assert s.mode == "intel-only"
    assert s.architectures == ("x86_64", "armv7hl", "aarch64")
    assert s.server.vm_size == "Standard_D16s_v5"
    assert s.azure_workers.min_vms <= s.azure_workers.max_vms
    assert s.location == "westeurope"


def test_location_comes_from_azure_native_namespace():
    s = load_settings(raw_config(**{"azure-native:location": "northeurope"}))
    assert s.location == "northeurope"


def test_bad_location_names_the_azure_native_key():
    assert "azure-native:location must match" in error_of(
        **{"azure-native:location": "West Europe"}
    )


def test_other_providers_keys_are_not_ours_to_judge():
    load_settings(raw_config(**{"azure-native:subscriptionId": "x", "aws:region": "eu-west-1"}))


def test_unknown_top_level_key_suggests_the_right_one():
    msg = error_of(azureWrokers={"vmSize": "Standard_D8ds_v5"})
    assert msg == "obs-farm:azureWrokers is not a setting; did you mean 'azureWorkers'?"


def test_unknown_key_without_close_match_lists_known_keys():
    msg = error_of(zzz="1")
    assert msg.startswith("obs-farm:zzz is not a setting; known keys: ")
    assert "azureWorkers" in msg and "sshPublicKey" in msg


def test_unknown_nested_key_suggests_the_right_one():
    msg = error_of(azureWorkers={"vmSzie": "Standard_D8ds_v5"})
    assert msg == "obs-farm:azureWorkers.vmSzie is not a setting; did you mean 'vmSize'?"


def test_nested_key_set_without_path_says_how():
    msg = error_of(**{"azureWorkers.minVms": "2"})
    assert msg == (
        "obs-farm:azureWorkers.minVms is a nested setting: set it with "
        "`pulumi config set --path 'obs-farm:azureWorkers.minVms' VALUE`"
    )


def test_mode_must_be_one_of_the_three():
    msg = error_of(mode="hybird")
    assert msg == "obs-farm:mode must be one of intel-only, hybrid, native; got 'hybird'"


def test_architecture_outside_the_list():
    msg = error_of(architectures=["x86_64", "riscv64"])
    assert msg == "obs-farm:architectures[1] must be one of x86_64, armv7hl, aarch64; got 'riscv64'"


def test_architectures_empty():
    assert "obs-farm:architectures must list at least one of" in error_of(architectures=[])


def test_architectures_duplicate():
    assert "obs-farm:architectures lists aarch64 more than once" in error_of(
        architectures=["aarch64", "aarch64"]
    )


def test_architectures_order_does_not_matter():
    s = load_settings(raw_config(architectures=["aarch64", "x86_64"]))
    assert s.architectures == ("x86_64", "aarch64")


def test_architectures_must_be_a_list():
    msg = error_of(architectures="x86_64")
    assert msg.startswith("obs-farm:architectures must be a YAML list")


def test_ssh_key_required():
    assert error_of(sshPublicKey=None) == "obs-farm:sshPublicKey is required"


def test_ssh_key_must_be_a_public_key_line():
    assert "obs-farm:sshPublicKey must be an OpenSSH public key line" in error_of(
        sshPublicKey="hello world"
    )


def test_ssh_private_key_is_refused():
    msg = error_of(sshPublicKey="-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    assert "obs-farm:sshPublicKey is a private key" in msg


def test_ssh_key_body_must_match_its_type():
    mismatched = "ssh-rsa " + make_public_key().split()[1]
    assert "obs-farm:sshPublicKey has a key body that is not a ssh-rsa key" in error_of(
        sshPublicKey=mismatched
    )


def test_ssh_key_body_must_be_base64():
    assert "not valid base64" in error_of(sshPublicKey="ssh-ed25519 !!!notbase64")


def test_admin_cidr_malformed():
    msg = error_of(adminCidrs=["10.0.0.300/24"])
    assert msg.startswith("obs-farm:adminCidrs[0] must be a CIDR")


def test_admin_cidr_with_host_bits():
    assert "10.0.0.1/24 has host bits set" in error_of(adminCidrs=["10.0.0.1/24"])


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/7", "::/0"])
def test_admin_cidr_that_is_the_internet(cidr):
    msg = error_of(adminCidrs=["198.51.100.0/24", cidr])
    assert msg.startswith("obs-farm:adminCidrs[1] must be a range no wider than")


def test_min_vms_above_max_vms():
    msg = error_of(azureWorkers={"minVms": 4, "maxVms": 2})
    assert (
        msg == "obs-farm:azureWorkers.minVms (4) must not exceed obs-farm:azureWorkers.maxVms (2)"
    )


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("instancesPerArch", 0, "at least 1"),
        ("jobsPerInstance", -1, "at least 1"),
        ("maxVms", 0, "at least 1"),
        ("minVms", -1, "at least 0"),
    ],
)
def test_counts_must_be_positive(key, value, bound):
    assert (
        error_of(azureWorkers={key: value})
        == f"obs-farm:azureWorkers.{key} must be {bound}; got {value}"
    )


def test_integer_given_as_string():
    assert (
        error_of(azureWorkers={"minVms": "1"})
        == "obs-farm:azureWorkers.minVms must be an integer; got '1'"
    )


def test_bool_given_as_string():
    assert (
        error_of(azureWorkers={"spot": "yes"})
        == "obs-farm:azureWorkers.spot must be true or false; got 'yes'"
    )


def test_object_given_as_scalar():
    assert error_of(server="big").startswith("obs-farm:server must be a YAML object")


def test_unsupported_worker_vm_size():
    msg = error_of(azureWorkers={"vmSize": "Standard_B2s"})
    assert msg.startswith("obs-farm:azureWorkers.vmSize must be one of the supported Azure sizes (")
    assert msg.endswith("got 'Standard_B2s'")


def test_unsupported_server_vm_size():
    assert error_of(server={"vmSize": "Standard_E16s_v6"}).startswith(
        "obs-farm:server.vmSize must be one of the supported Azure sizes"
    )


def test_vcpu_overcommit():
    msg = error_of(
        azureWorkers={"vmSize": "Standard_D8ds_v5", "instancesPerArch": 2, "jobsPerInstance": 2}
    )
    assert msg == (
        "obs-farm:azureWorkers.instancesPerArch x jobsPerInstance x architectures (2 x 2 x 3 = 12) "
        "overcommits obs-farm:azureWorkers.vmSize Standard_D8ds_v5 (8 vCPUs); "
        "lower them or pick a larger size"
    )


def test_vcpu_budget_counts_only_the_configured_architectures():
    load_settings(
        raw_config(
            architectures=["x86_64"],
            azureWorkers={
                "vmSize": "Standard_D8ds_v5",
                "instancesPerArch": 4,
                "jobsPerInstance": 2,
            },
        )
    )


def test_memory_per_instance():
    # 9 instances x 1 job fit the F16s_v2's 16 vCPUs, not its 32 GiB.
    msg = error_of(
        azureWorkers={"vmSize": "Standard_F16s_v2", "instancesPerArch": 3, "jobsPerInstance": 1}
    )
    assert msg == (
        "obs-farm:azureWorkers.instancesPerArch (3 per architecture, 9 in all) needs 36 GiB "
        "at 4 GiB per instance; obs-farm:azureWorkers.vmSize Standard_F16s_v2 has 32 GiB"
    )


def test_network_subnet_outside_address_space():
    msg = error_of(network={"serverSubnet": "10.50.1.0/24"})
    assert (
        msg
        == "obs-farm:network.serverSubnet 10.50.1.0/24 must lie inside obs-farm:network.addressSpace 10.40.0.0/16"
    )


def test_network_subnets_overlap():
    msg = error_of(network={"serverSubnet": "10.40.16.0/24"})
    assert (
        msg
        == "obs-farm:network.serverSubnet 10.40.16.0/24 overlaps obs-farm:network.azureWorkerSubnet 10.40.16.0/20"
    )


def test_network_cidr_malformed():
    assert error_of(network={"addressSpace": "10.40.0.0/33"}).startswith(
        "obs-farm:network.addressSpace must be a CIDR"
    )


def test_worker_subnet_too_small_for_max_vms():
    msg = error_of(network={"azureWorkerSubnet": "10.40.16.0/29"}, azureWorkers={"maxVms": 5})
    assert (
        msg
        == "obs-farm:network.azureWorkerSubnet 10.40.16.0/29 has room for 3 VMs; obs-farm:azureWorkers.maxVms is 5"
    )


def test_server_subnet_too_small():
    assert "must be /28 or larger" in error_of(network={"serverSubnet": "10.40.1.0/29"})


def test_data_disk_bounds():
    assert (
        error_of(server={"dataDiskSizeGb": 8})
        == "obs-farm:server.dataDiskSizeGb must be at least 32; got 8"
    )


def test_every_problem_is_reported_at_once():
    msg = error_of(mode="x", azureWorkers={"minVms": "1"}, zzz="1")
    assert len(msg.splitlines()) == 3


def test_retiring_sizes_warn_with_successor():
    s = load_settings(raw_config(server={"vmSize": "Standard_DS14_v2"}))
    assert any(
        "Standard_DS14_v2 retires on 2028-05-01" in w and "Standard_D16s_v5" in w
        for w in s.warnings
    )


def test_no_admin_ranges_warns():
    s = load_settings(raw_config(adminCidrs=[]))
    assert any("adminCidrs is empty" in w for w in s.warnings)


def test_public_key_fixture_is_valid():
    assert load_settings(raw_config(sshPublicKey=PUBLIC_KEY)).ssh_public_key == PUBLIC_KEY
