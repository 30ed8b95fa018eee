"""Components on their own under Pulumi mocks: children, names, outputs."""

from __future__ import annotations

import pulumi
import pytest

from components.azure_workers import AzureWorkerPool, AzureWorkerPoolArgs
from components.network import FarmNetwork, FarmNetworkArgs
from components.server import ObsServer, ObsServerArgs
from components.topology import azure_worker_pool
from config import load_settings
from tests.conftest import PUBLIC_KEY, raw_config
from tools.offline import RecordingMocks


@pytest.fixture
def mocks() -> RecordingMocks:
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="obs-farm", stack="test", preview=False)
    return m


def network_args(**kw) -> FarmNetworkArgs:
    base = dict(
        location="westeurope",
        address_space="10.40.0.0/16",
        server_subnet="10.40.1.0/24",
        worker_subnet="10.40.16.0/20",
        server_address="10.40.1.10",
        admin_cidrs=("192.0.2.0/24",),
        tags={"obs-farm-role": "network"},
        worker_sources=("10.40.16.0/20",),
    )
    base.update(kw)
    return FarmNetworkArgs(**base)


@pulumi.runtime.test
def test_two_networks_do_not_collide(mocks):
    a = FarmNetwork("a", network_args())
    b = FarmNetwork("b", network_args())
    names = [r.name for r in mocks.resources]

    def check(ids):
        assert len(names) == len(set(names)), names
        assert all(n.startswith(("a-", "b-", "a", "b")) for n in names)
        assert ids[0] != ids[1]

    return pulumi.Output.all(a.worker_subnet_id, b.worker_subnet_id).apply(check)


@pulumi.runtime.test
def test_network_outputs_are_the_subnets(mocks):
    net = FarmNetwork("farm", network_args())

    def check(args):
        server, worker, rg = args
        assert (server, worker) == ("farm-server-subnet-id", "farm-worker-subnet-id")
        assert rg == "farm-farm-rg"

    return pulumi.Output.all(
        net.server_subnet_id, net.worker_subnet_id, net.resource_group_name
    ).apply(check)


@pulumi.runtime.test
def test_server_component_outputs_and_children(mocks):
    server = ObsServer(
        "srv",
        ObsServerArgs(
            resource_group_name="rg",
            location="westeurope",
            subnet_id="subnet-id",
            private_ip="10.40.1.10",
            vm_size="Standard_D4s_v5",
            os_disk_size_gb=64,
            data_disk_size_gb=256,
            admin_username="obsadmin",
            ssh_public_key=PUBLIC_KEY,
            user_data="#cloud-config\n",
            tags={},
        ),
    )

    def check(args):
        public, private, disk, vm = args
        assert (public, private, disk, vm) == (
            "203.0.113.10",
            "10.40.1.10",
            "srv-data-id",
            "srv-vm-id",
        )
        names = {r.name for r in mocks.resources}
        assert {"srv-ip", "srv-nic", "srv-data", "srv-vm"} <= names

    return pulumi.Output.all(
        server.public_ip, server.private_ip, server.data_disk_id, server.vm_id
    ).apply(check)


@pulumi.runtime.test
def test_worker_pool_spot_and_regular(mocks):
    s = load_settings(raw_config(azureWorkers={"spot": True, "minVms": 0, "maxVms": 4}))
    pool = azure_worker_pool(s)
    wp = AzureWorkerPool(
        "spotty",
        AzureWorkerPoolArgs(
            resource_group_name="rg",
            location="westeurope",
            subnet_id="subnet-id",
            pool=pool,
            os_disk_size_gb=128,
            admin_username="obsadmin",
            ssh_public_key=PUBLIC_KEY,
            user_data="#cloud-config\n",
            tags={},
        ),
    )

    def check(ids):
        assert ids == ["spotty-vmss-id"]
        vmss = next(r for r in mocks.resources if r.name == "spotty-vmss")
        profile = vmss.inputs["virtualMachineProfile"]
        assert profile["priority"] == "Spot"
        assert profile["evictionPolicy"] == "Delete"
        assert profile["billingProfile"] == {"maxPrice": -1}
        # The scaler owns capacity: no autoscale setting unless it is off.
        assert wp.autoscale_id is None
        assert not [r for r in mocks.resources if "Autoscale" in r.type]

    return pulumi.Output.all(wp.scale_set_id).apply(check)


@pulumi.runtime.test
def test_worker_pool_cpu_fallback_scales_out_only(mocks):
    s = load_settings(raw_config(azureWorkers={"minVms": 0, "maxVms": 4}))
    wp = AzureWorkerPool(
        "fallback",
        AzureWorkerPoolArgs(
            resource_group_name="rg",
            location="westeurope",
            subnet_id="subnet-id",
            pool=azure_worker_pool(s),
            os_disk_size_gb=128,
            admin_username="obsadmin",
            ssh_public_key=PUBLIC_KEY,
            user_data="#cloud-config\n",
            tags={},
            cpu_scale_out_fallback=True,
        ),
    )

    def check(ids):
        assert ids == ["fallback-autoscale-id"]
        auto = next(r for r in mocks.resources if r.name == "fallback-autoscale")
        profile = auto.inputs["profiles"][0]
        assert profile["capacity"] == {"minimum": "0", "maximum": "4", "default": "0"}
        assert [r["scaleAction"]["direction"] for r in profile["rules"]] == ["Increase"]

    assert wp.autoscale_id is not None
    return pulumi.Output.all(wp.autoscale_id).apply(check)
