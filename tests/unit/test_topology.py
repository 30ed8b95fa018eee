"""Topology: what each worker VM runs, its ports and ids (pure)."""

from __future__ import annotations

from components.topology import (
    BACKEND_PORTS,
    WORKER_PORT_RANGE,
    azure_worker_pool,
    scheduler_archs,
    server_private_ip,
)
from config import load_settings
from config.rules import azure_worker_archs
from tests.conftest import raw_config
from tools.offline import read_stack_config


def test_evaluation_stack_is_the_source_design():
    s = load_settings(read_stack_config("apertis-eval"))
    pool = azure_worker_pool(s)
    assert (pool.vm_size, pool.min_vms, pool.max_vms) == ("Standard_F32s_v2", 3, 3)
    assert pool.instances_per_vm == 15
    assert pool.emulated_per_vm == 10
    assert pool.instances_per_vm * pool.max_vms == 45
    assert pool.emulated_per_vm * pool.max_vms == 30
    assert s.server.vm_size == "Standard_DS14_v2"


def test_x86_native_arm_emulated_with_their_qemu_handlers():
    pool = azure_worker_pool(load_settings(raw_config()))
    by_arch = {g.arch: g for g in pool.groups}
    assert not by_arch["x86_64"].emulated and by_arch["x86_64"].check == ""
    assert by_arch["aarch64"].check == "obs-farm-check-binfmt qemu-aarch64"
    assert by_arch["armv7hl"].check == "obs-farm-check-binfmt qemu-arm"
    assert by_arch["armv7hl"].scheduler_arch == "armv7l"


def test_ports_are_disjoint_stable_and_inside_the_opened_range():
    full = azure_worker_pool(
        load_settings(raw_config(azureWorkers={"instancesPerArch": 4, "jobsPerInstance": 1}))
    )
    only_arm = azure_worker_pool(
        load_settings(
            raw_config(
                architectures=["aarch64"],
                azureWorkers={"instancesPerArch": 4, "jobsPerInstance": 1},
            )
        )
    )
    ports = [p for g in full.groups for p in g.ports()]
    assert len(ports) == len(set(ports)) == 12
    assert all(WORKER_PORT_RANGE[0] <= p <= WORKER_PORT_RANGE[1] for p in ports)
    assert not set(ports) & set(BACKEND_PORTS)
    # Dropping architectures does not move the remaining group's ports.
    assert list(only_arm.groups[0].ports()) == list(full.groups[2].ports())


def test_worker_ids_name_host_arch_and_instance():
    group = azure_worker_pool(load_settings(raw_config())).groups[1]
    assert group.worker_ids("obsw000001") == ["obsw000001:armv7hl-1", "obsw000001:armv7hl-2"]


def test_work_dir_on_temp_disk_only_when_the_size_has_one():
    with_temp = azure_worker_pool(
        load_settings(raw_config(azureWorkers={"vmSize": "Standard_D16ds_v5"}))
    )
    without = azure_worker_pool(
        load_settings(raw_config(azureWorkers={"vmSize": "Standard_D16s_v5"}))
    )
    assert with_temp.work_dir == "/mnt/obs-worker"
    assert without.work_dir == "/var/lib/obs-worker"


def test_native_mode_keeps_only_x86_on_azure():
    s = load_settings(raw_config()).model_copy(update={"mode": "native"})
    assert azure_worker_archs(s) == ("x86_64",)


def test_server_address_is_static_inside_its_subnet():
    s = load_settings(raw_config(network={"serverSubnet": "10.40.2.0/24"}))
    assert server_private_ip(s) == "10.40.2.10"


def test_scheduler_archs_follow_the_architectures():
    s = load_settings(raw_config(architectures=["armv7hl", "x86_64"]))
    assert scheduler_archs(s) == ["x86_64", "armv7l"]


def test_topology_output_shape():
    out = azure_worker_pool(load_settings(raw_config())).to_output()
    assert out["pool"] == "azure-x86" and out["cloud"] == "azure"
    assert [a["execution"] for a in out["architectures"]] == ["native", "emulated", "emulated"]
    assert out["architectures"][2]["ports"] == [41201, 41202]
