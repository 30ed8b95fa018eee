"""obs-farm-scaler against the real OBS backend and real bs_worker processes.

The clouds sit behind their official SDK clients, pointed at local
stand-ins: the ARM stand-in (tests/scaler/azure_standin.py, request bodies
checked against azure-mgmt-compute's models) and moto in server mode for
AWS Auto Scaling and STS. A "machine" a stand-in creates is that pool's
worker groups, started on this host by cloud-init/obs-farm-worker.sh with
the machine's hostname in their worker ids and ports of their own, so
registrations, dispatches and builds are real. The scaler runs as the
server runs it: `python -m obs_farm_scaler` with a scaler.json built from
the `dev` and `hybrid` stacks' topology.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.topology import WorkerPool
from config import load_settings
from tests.integration import obs_backend as ob
from tests.integration.farm import farm_backend, record, require_host, scratch_dir, wait_for
from tests.integration.scaler_farm import (
    Fleet,
    Machine,
    MotoWatcher,
    ScalerProcess,
    SwitchProxy,
    scaler_config,
    stack_pools,
)
from tests.integration.vm import free_port
from tests.scaler.azure_standin import ArmStandIn, ScaleSet
from tests.scaler.helpers import make_group
from tests.scaler.helpers import moto_server as fresh_moto_server
from tools.offline import read_stack_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELLO_OBS = REPO / "tests" / "data" / "hello-obs"
REPO_NAME = "Debian_12"
SUB, RG = "00000000-0000-0000-0000-0000000000aa", "obs-rg-test"
BUILD_TIMEOUT_S = 900
# init_buildsystem's install loop, run in the chroot: `[   12s] [1/168] installing ...`
INSTALLING = re.compile(r"^\[\s*\d+s\] \[\d+/\d+\] installing ", re.M)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch_dir("obs-farm-scaler-") as path:
        yield path


@pytest.fixture(scope="module")
def backend(workdir) -> Iterator[ob.ObsBackend]:
    require_host()
    with farm_backend(load_settings(read_stack_config("dev")), workdir) as obs:
        obs.setup_debian_project(["x86_64", "aarch64"])
        for project, archs in {"dev0": ["aarch64"], "hyb0": ["aarch64"], "shrink": ["x86_64"],
                               "idle": ["x86_64"]}.items():  # fmt: skip
            obs.create_project(project, REPO_NAME, [("Debian:12", "main")], archs)
        yield obs


@pytest.fixture
def fleet(backend, workdir, request) -> Iterator[Fleet]:
    f = Fleet(workdir / f"fleet-{request.node.name}", backend.reposerver)
    f.root.mkdir()
    try:
        yield f
    finally:
        f.stop_all()


def pool_of(stack: str, name: str) -> WorkerPool:
    return next(p for p in stack_pools(stack) if p.name == name)


def azure_target(scale_set: str) -> dict[str, str]:
    return {"subscriptionId": SUB, "resourceGroup": RG, "scaleSet": scale_set}


def standin(workdir: Path, name: str, pool: WorkerPool, fleet: Fleet) -> ArmStandIn:
    d = workdir / f"arm-{name}"
    d.mkdir()
    return ArmStandIn(
        d,
        ScaleSet(SUB, RG, name),
        on_create=lambda vm: fleet.start(pool, vm.computer_name),
        on_delete=lambda vm: fleet.stop(vm.computer_name),
    )


def registered(backend: ob.ObsBackend, ids: set[str]) -> bool:
    live = {w.workerid for w in backend.workerstatus().workers if w.state in ("idle", "building")}
    return ids <= live


class QueueWatch:
    """When jobs for `arch` first show as waiting in /workerstatus (sampled
    every 0.2 s, so the latency measured is at most that much too short)."""

    def __init__(self, backend: ob.ObsBackend, arch: str):
        self.backend, self.arch = backend, arch
        self.first: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stop.is_set() and self.first is None:
            try:
                if self.backend.workerstatus().waiting.get(self.arch, 0) > 0:
                    self.first = time.time()
            except Exception:
                pass
            time.sleep(0.2)


def dispatched(backend, project, arch, machine: Machine, since) -> float:
    """Wait for `project`'s job to be building on one of `machine`'s workers
    and return the wall time from `since`; then abort it. The build itself
    is the farm builds test's subject (same worker groups, same package):
    here what counts is that the job runs on the machine the scaler asked
    for, and not building it saves two emulated builds (about 4.5 minutes)
    of the tier.

    How bs_worker's kill works (obs-build 20210120, `build --kill`): it
    writes an `exit` mark into the build root, SIGKILLs the processes
    chrooted there, and its own exit (cleanup_and_exit) removes the mark
    again. The build stops when the install loop, after the killed dpkg,
    finds the mark: dpkg's failure writes it anew, racing with that removal.
    So the abort waits until the build root's packages are being installed
    (sent while the worker still fetched them, it was lost in one CI run);
    and when the removal comes last, the build runs on (about 110 s more;
    10 of 41 runs of the two tests here; the job's log shows the dpkg
    killed and the next package installing) while the worker already
    answers that it is not building, so a second abort is refused. Then the
    test sets the mark itself, as `build --kill` meant to, and the summary
    says so."""

    def on_host() -> list[ob.WorkerEntry]:
        status = backend.workerstatus()
        return [w for w in status.building if w.project == project and w.arch == arch]

    def installing() -> bool:
        try:
            log = backend.live_log(project, REPO_NAME, arch, "hello-obs")
        except ob.HarnessError:
            return False  # no log yet
        return INSTALLING.search(log) is not None

    (entry,) = wait_for(f"{project}'s {arch} job to start", on_host, BUILD_TIMEOUT_S, 0.5)
    at = time.time() - since
    assert entry.workerid.startswith(f"{machine.host}:{arch}-"), entry
    wait_for(f"{project}'s {arch} build root being installed", installing, 300, 1)
    t_installing = time.time() - since
    backend.src("POST", f"/build/{project}",
                {"cmd": "abortbuild", "package": "hello-obs", "arch": arch})  # fmt: skip
    try:
        wait_for(f"{project}'s {arch} job to be aborted", lambda: not on_host(), 10, 0.5)
    except AssertionError:
        (machine.build_root(entry.workerid) / "exit").touch()
        wait_for(f"{project}'s {arch} job to stop at the exit mark", lambda: not on_host(), 60, 0.5)
        log = [line.strip() for line in backend.build_log(project, REPO_NAME, arch, "hello-obs")
               .splitlines() if line.strip()]  # fmt: skip
        k = log.index("Killed Job") if "Killed Job" in log else len(log)
        record(f"scaler {project}: kill lost (the exit mark set by the test); log at the kill",
               " | ".join(log[max(k - 2, 0) : k + 2]))  # fmt: skip
    gone = time.time() - since
    print(f"{project} {arch}: building at {at:.1f} s, installing at {t_installing:.1f} s, "
          f"aborted at {gone:.1f} s")  # fmt: skip
    return at


def finish_build(backend, project, arch, since, what) -> ob.BuildResult:
    result = backend.wait_build(project, REPO_NAME, arch, "hello-obs", BUILD_TIMEOUT_S, since=since)
    if result.status != "succeeded":
        print(backend.build_log(project, REPO_NAME, arch, "hello-obs")[-3000:])
    assert result.status == "succeeded", (what, result)
    return result


def test_dev_pool_starts_from_zero_on_waiting_aarch64_jobs(backend, workdir, fleet):
    pool = pool_of("dev", "azure-x86")
    assert pool.min_vms == 0
    with standin(workdir, "dev-vmss", pool, fleet) as arm:
        config = scaler_config("dev", backend.reposerver, backend.bsdir,
                               {"azure-x86": azure_target("dev-vmss")})  # fmt: skip
        with ScalerProcess(workdir / "scaler-dev", config, arm.env()) as scaler:
            wait_for("the scaler's first poll", scaler.health_data, 60)
            assert arm.capacity_requests() == [] and arm.set.capacity == 0
            with QueueWatch(backend, "aarch64") as queue:
                since = time.time()
                backend.create_package("dev0", "hello-obs", HELLO_OBS)
                request = wait_for("a capacity request", arm.capacity_requests, 120, 0.1)[0]
            assert request.body == {"sku": {"capacity": 1}}
            assert queue.first is not None, "the job was never seen waiting"
            (host,) = list(fleet.machines)
            ids = fleet.machines[host].worker_ids()
            wait_for(f"{host}'s workers to register", lambda: registered(backend, ids), 120)
            t_registered = time.time()
            started = dispatched(backend, "dev0", "aarch64", fleet.machines[host], since)
            assert "scale out to capacity 1" in scaler.log()
    latency = request.at - queue.first
    record("scaler dev: job waiting -> capacity request", f"{latency:.1f} s (goal <= 10 s)")
    record("scaler dev: source commit -> capacity request", f"{request.at - since:.1f} s")
    record("scaler dev: request -> workers registered", f"{t_registered - request.at:.1f} s")
    record("scaler dev: source commit -> job building on the new machine", f"{started:.1f} s")
    assert latency <= 10


def slow_hello(dest: Path, seconds: int) -> Path:
    """hello-obs whose build sleeps: a long job to shrink around."""
    src = dest / "hello-obs"
    shutil.copytree(HELLO_OBS, src)
    rules = src / "debian" / "rules"
    text = rules.read_text().replace(
        "build-arch: hello-obs\n", f"build-arch: hello-obs\n\tsleep {seconds}\n"
    )
    assert f"sleep {seconds}" in text
    rules.write_text(text)
    return src


def test_safe_shrink_deletes_only_the_idle_machine(backend, workdir, fleet):
    pool = pool_of("dev", "azure-x86")
    with standin(workdir, "shrink-vmss", pool, fleet) as arm:
        arm.set_capacity(2)
        hosts = set(fleet.machines)
        ids = {w for h in hosts for w in fleet.machines[h].worker_ids()}
        wait_for("both machines' workers", lambda: registered(backend, ids), 120)
        since = time.time()
        backend.create_package("shrink", "hello-obs", slow_hello(workdir, 50))
        busy = wait_for("the long job to start", lambda: [
            w for w in backend.workerstatus().building if w.project == "shrink"], 120)  # fmt: skip
        busy_host = busy[0].workerid.split(":")[0]
        (idle_host,) = hosts - {busy_host}
        config = scaler_config("dev", backend.reposerver, backend.bsdir,
                               {"azure-x86": azure_target("shrink-vmss")}, idleMinutes=0.1)  # fmt: skip
        with ScalerProcess(workdir / "scaler-shrink", config, arm.env()) as scaler:
            t0 = time.time()
            first = wait_for("a deletion", arm.deletes, 90, 0.2)[0]
            t_deleted = time.time()
            assert first.vms()[0].startswith("shrink-vmss_")
            assert idle_host not in fleet.machines and busy_host in fleet.machines
            status = backend.workerstatus()
            assert any(w.workerid.startswith(f"{busy_host}:") for w in status.building)
            log = scaler.log()
            drain_at = log.index(f"Drain host={idle_host}")
            assert drain_at < log.index("Delete machine=")
            result = finish_build(backend, "shrink", "x86_64", since, "shrink")
            assert result.workerid == f"{busy_host}:x86_64-1"
            # after its build, the other machine goes too (min 0), never before
            wait_for("the second deletion", lambda: len(arm.deletes()) == 2, 120, 0.5)
            second = arm.deletes()[1]
            assert busy_host not in fleet.machines and arm.set.capacity == 0
    history = backend.job_history("shrink", REPO_NAME, "x86_64", "hello-obs")
    assert [h.get("code") for h in history] == ["succeeded"], history
    # the building machine went only after its job had ended
    assert second.at > float(history[0]["endtime"]), (second.at, history)
    debs = backend.fetch_binaries(
        "shrink", REPO_NAME, "x86_64", "hello-obs", workdir / "out-shrink", "*.deb"
    )
    assert len(debs) == 1
    record("scaler shrink: scaler start -> idle machine deleted", f"{t_deleted - t0:.1f} s")


def test_repserver_or_cloud_failing_deletes_nothing_and_recovers(backend, workdir, fleet):
    pool = pool_of("dev", "azure-x86")
    disable = Path(backend.bsdir) / "workers" / "disable"
    proxy = SwitchProxy(int(backend.reposerver.rsplit(":", 1)[1]))
    with standin(workdir, "fail-vmss", pool, fleet) as arm:
        arm.set_capacity(2)
        hosts = set(fleet.machines)
        ids = {w for h in hosts for w in fleet.machines[h].worker_ids()}
        wait_for("both machines' workers", lambda: registered(backend, ids), 120)
        config = scaler_config("dev", proxy.url, backend.bsdir,
                               {"azure-x86": azure_target("fail-vmss")}, idleMinutes=0, pollSeconds=2)  # fmt: skip
        with ScalerProcess(workdir / "scaler-fail", config, arm.env()) as scaler:
            # 1. repserver unreachable: idle machines above min (0), yet nothing happens
            wait_for("3 failed repserver polls", lambda: scaler.log().count("repserver: ") >= 3, 60)
            assert arm.deletes() == [] and not any((disable / f"{h}:").exists() for h in hosts)
            assert "repserver unreachable: nothing changes" in scaler.log()
            # 2. repserver back, the cloud failing
            arm.fail = True
            proxy.on()
            n = scaler.log().count("cloud: HttpResponseError")
            wait_for(
                "3 failed cloud polls",
                lambda: scaler.log().count("cloud: HttpResponseError") >= n + 3,
                90,
            )
            assert arm.deletes() == [] and not any((disable / f"{h}:").exists() for h in hosts)
            assert set(fleet.machines) == hosts
            # 3. both back: the idle machines are drained and deleted
            t0 = time.time()
            arm.fail = False
            wait_for("both idle machines deleted", lambda: len(arm.deletes()) == 2, 120)
            t_done = time.time()
            assert arm.set.capacity == 0 and not fleet.machines
    proxy.off()
    record("scaler failure: recovery -> 2 idle machines deleted", f"{t_done - t0:.1f} s")


def test_drain_stops_dispatch_and_survives_a_worker_restart(backend, fleet):
    """The drain mechanism itself, on the real repserver and dispatcher."""
    from obs_farm_scaler.repserver import Workers, fetch_workerstatus

    pool = pool_of("dev", "azure-x86")
    a = fleet.start(pool, "draina1")
    wait_for("draina1's workers", lambda: registered(backend, a.worker_ids()), 120)
    # the scaler's own parser reads the real document as the harness does
    ours = fetch_workerstatus(backend.reposerver)
    theirs = backend.workerstatus()
    assert {(w.workerid, w.state, w.hostarch) for w in ours.workers} == {
        (w.workerid, w.state, w.hostarch) for w in theirs.workers}  # fmt: skip
    workers = Workers(backend.bsdir)
    moved = workers.drain("draina1")
    assert {m.split(":", 1)[1] for m in moved} == a.worker_ids()
    status = backend.workerstatus()
    assert {w.workerid for w in status.down} >= a.worker_ids()
    assert not {w.workerid for w in status.idle} & a.worker_ids()
    # The machine's workers restart (a reboot): the disable entry keeps them down.
    fleet.stop("draina1")
    a = fleet.start(pool, "draina1")
    time.sleep(8)
    assert all(p.poll() is None for p in a.procs), "restarted workers exited"
    assert not {w.workerid for w in backend.workerstatus().idle} & a.worker_ids()
    # A job for an architecture only the drained machine has stays waiting.
    since = time.time()
    backend.create_package("idle", "hello-obs", HELLO_OBS)
    wait_for("the job to wait", lambda: backend.workerstatus().waiting.get("x86_64", 0) > 0, 60)
    time.sleep(15)
    status = backend.workerstatus()
    assert status.waiting.get("x86_64", 0) > 0
    assert not any(w.workerid.startswith("draina1:") for w in status.building)
    # Another machine takes it.
    b = fleet.start(pool, "drainb1")
    result = finish_build(backend, "idle", "x86_64", since, "after drain")
    assert result.workerid == "drainb1:x86_64-1"
    fleet.stop("draina1")
    workers.forget("draina1")
    left = [w.workerid for w in backend.workerstatus().workers if w.workerid.startswith("draina1:")]
    assert left == [] and "draina1" not in workers.drained_hosts()
    assert b.host in fleet.machines


@pytest.fixture
def moto_server(workdir, monkeypatch):
    with fresh_moto_server(free_port()) as endpoint:
        yield endpoint


def aws_env(endpoint: str, workdir: Path) -> dict[str, str]:
    """No keys: the scaler gets AWS credentials only through web identity."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials")}  # fmt: skip


def test_hybrid_graviton_pool_starts_from_zero_native_first(backend, workdir, fleet, moto_server):
    """The hybrid stack's pools: the Azure pool with one machine still booting
    (no worker yet, so nothing else can take an aarch64 job), the Graviton
    pool at 0. The rule routes the waiting job to the native pool; the
    emulated pool is not grown (nor is its booting machine removed)."""
    import boto3

    azure_pool, graviton = pool_of("hybrid", "azure-x86"), pool_of("hybrid", "aws-graviton")
    assert graviton.min_vms == 0 and azure_pool.min_vms <= 1
    make_group(moto_server)
    asg = boto3.client("autoscaling", region_name="eu-central-1", endpoint_url=moto_server,
                       aws_access_key_id="watch", aws_secret_access_key="watch")  # fmt: skip
    d = workdir / "arm-hyb-vmss"
    d.mkdir()
    with ArmStandIn(d, ScaleSet(SUB, RG, "hyb-vmss")) as arm, \
            MotoWatcher(asg, "graviton-asg", graviton, fleet) as moto:  # fmt: skip
        arm.set_capacity(1)
        config = scaler_config("hybrid", backend.reposerver, backend.bsdir, {
            "azure-x86": azure_target("hyb-vmss"),
            "aws-graviton": {"region": "eu-central-1", "autoScalingGroup": "graviton-asg",
                             "lifecycleHook": "graviton-drain",
                             "roleArn": "arn:aws:iam::123456789012:role/obs-farm-scaler",
                             "webIdentityAudience": "api://obs-farm-scaler"}})  # fmt: skip
        with ScalerProcess(workdir / "scaler-hybrid", config,
                           {**arm.env(), **aws_env(moto_server, workdir)}) as scaler:  # fmt: skip
            wait_for("the scaler's first poll", scaler.health_data, 60)
            wait_for("the group's capacity", lambda: moto.capacity_changes, 30)
            assert moto.capacity_changes[-1][1] == 0
            with QueueWatch(backend, "aarch64") as queue:
                since = time.time()
                backend.create_package("hyb0", "hello-obs", HELLO_OBS)
                try:
                    wait_for(
                        "Graviton capacity", lambda: moto.capacity_changes[-1][1] >= 1, 120, 0.1
                    )
                except AssertionError:
                    print("waiting seen at", queue.first, "status:", backend.workerstatus())
                    print(backend.package_status("hyb0", REPO_NAME, "aarch64", "hello-obs"))
                    raise
            requested_at, capacity = moto.capacity_changes[-1]
            assert capacity == 1  # 1 job, 4 aarch64 instances per machine
            assert queue.first is not None
            host = wait_for(
                "a Graviton machine", lambda: [h for h in fleet.machines if h.startswith("i-")], 60
            )[0]
            ids = fleet.machines[host].worker_ids()
            wait_for(f"{host}'s workers to register", lambda: registered(backend, ids), 180)
            t_registered = time.time()
            started = dispatched(backend, "hyb0", "aarch64", fleet.machines[host], since)
            # The emulated pool stayed at its min: the native pool took the demand.
            assert arm.capacity_requests() == [] and arm.set.capacity == 1
            assert "pool=azure-x86 demand=aarch64=0" in scaler.log()
    latency = requested_at - queue.first
    record(
        "scaler hybrid: job waiting -> Graviton capacity",
        f"{latency:.1f} s (goal <= 10 s; watcher samples every 0.3 s)",
    )
    record("scaler hybrid: request -> workers registered", f"{t_registered - requested_at:.1f} s")
    record("scaler hybrid: source commit -> job building on the new machine", f"{started:.1f} s")
    assert latency <= 10
