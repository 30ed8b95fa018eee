"""The cloud-init shell scripts, executed for real on this machine.

Only what would touch the host is redirected: the binfmt_misc directory
(a directory of handler files in the kernel's format), systemctl (a recorder)
and bs_worker (a stub that prints its arguments). The data-disk script runs
against a real loop device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import cloudinit
from components.topology import azure_worker_pool
from config import load_settings
from tests.conftest import raw_config
from tests.helpers.binfmt import kernel_binfmt
from tests.integration import obs_backend as ob

T = cloudinit.TEMPLATE_DIR
CHECK = T / "check-binfmt.sh"


def handler_file(flags: str, enabled: bool = True) -> str:
    # The layout of /proc/sys/fs/binfmt_misc/qemu-aarch64 on Debian 12.
    return (
        f"{'enabled' if enabled else 'disabled'}\n"
        "interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
        f"flags: {flags}\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n"
    )


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    d = tmp_path / "binfmt"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    return d


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60
    )


def check(binfmt: Path, *handlers: str) -> subprocess.CompletedProcess[str]:
    return run([str(CHECK), *handlers], {"OBS_FARM_BINFMT_DIR": str(binfmt)})


def test_binfmt_check_accepts_handlers_with_f(binfmt):
    (binfmt / "qemu-arm").write_text(handler_file("PF"))
    (binfmt / "qemu-aarch64").write_text(handler_file("POCF"))
    res = check(binfmt, "qemu-arm", "qemu-aarch64")
    assert res.returncode == 0, res.stderr
    assert "qemu-aarch64 ok (flags: POCF)" in res.stdout


def test_binfmt_check_refuses_a_handler_without_f(binfmt):
    (binfmt / "qemu-arm").write_text(handler_file("P"))
    res = check(binfmt, "qemu-arm")
    assert res.returncode == 1
    assert "qemu-arm lacks the F flag (flags: P)" in res.stderr


def test_binfmt_check_refuses_a_missing_handler(binfmt):
    (binfmt / "qemu-arm").write_text(handler_file("PF"))
    res = check(binfmt, "qemu-arm", "qemu-aarch64")
    assert res.returncode == 1
    assert "qemu-aarch64 is not registered" in res.stderr


def test_binfmt_check_refuses_a_disabled_handler(binfmt):
    (binfmt / "qemu-arm").write_text(handler_file("PF", enabled=False))
    assert "qemu-arm is disabled" in check(binfmt, "qemu-arm").stderr


# As root these set up the kernel state they need and put it back; CI runs
# them as root with qemu-user-static and binfmt-support installed.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("qemu-arm-static") is None,
    reason="needs root and qemu-user-static (real binfmt_misc)",
)


@needs_root
def test_binfmt_check_reads_the_real_kernel_entry():
    with kernel_binfmt(["aarch64"]):
        res = run([str(CHECK), "qemu-aarch64"])
        flags = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text()
    assert "flags: " in flags and "F" in flags.split("flags: ")[1].split()[0]
    assert res.returncode == 0, res.stderr


# --- worker groups ---------------------------------------------------------


def sbin(tmp_path: Path) -> Path:
    """The check commands under the names cloud-init installs them as."""
    d = tmp_path / "sbin"
    d.mkdir(exist_ok=True)
    for name, script in [
        ("obs-farm-check-binfmt", CHECK),
        ("obs-farm-check-aarch32", T / "check-aarch32.sh"),
    ]:
        if not (d / name).exists():
            (d / name).symlink_to(script)
    return d


@pytest.fixture
def worker_host(tmp_path: Path, binfmt: Path) -> dict[str, str]:
    """A worker's /etc/obs-farm rendered by the real renderer, paths in tmp."""
    s = load_settings(raw_config(azureWorkers={"instancesPerArch": 2, "jobsPerInstance": 2}))
    pool = dataclasses.replace(azure_worker_pool(s), work_dir=str(tmp_path / "work"))
    conf = tmp_path / "etc"
    (conf / "groups").mkdir(parents=True)
    code = tmp_path / "code"
    env_text = cloudinit.worker_env(pool, "127.0.0.1").replace(
        "/var/lib/obs-farm/worker-code", str(code)
    )
    (conf / "worker.env").write_text(env_text)
    for g in pool.groups:
        (conf / "groups" / f"{g.arch}.env").write_text(cloudinit.group_env(g))
    calls = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    systemctl.chmod(0o755)
    return {
        "OBS_FARM_CONF_DIR": str(conf),
        "OBS_FARM_RUN_DIR": str(tmp_path / "run"),
        "PATH": f"{sbin(tmp_path)}:{os.environ['PATH']}",
        "OBS_FARM_BINFMT_DIR": str(binfmt),
        "OBS_FARM_SYSTEMCTL": str(systemctl),
        "calls": str(calls),
        "code": str(code),
        "binfmt": str(binfmt),
    }


def health(worker_host) -> dict:
    return json.loads((Path(worker_host["OBS_FARM_RUN_DIR"]) / "worker-health.json").read_text())


def test_setup_starts_every_group_native_first(worker_host):
    b = Path(worker_host["binfmt"])
    (b / "qemu-arm").write_text(handler_file("PF"))
    (b / "qemu-aarch64").write_text(handler_file("PF"))
    res = run([str(T / "obs-farm-worker-setup.sh")], worker_host)
    assert res.returncode == 0, res.stderr
    calls = Path(worker_host["calls"]).read_text().split("\n")
    # Started, not enabled: obs-farm-workers.service runs this at every boot.
    assert calls[:2] == [
        "start obs-farm-worker@x86_64-1.service",
        "start obs-farm-worker@x86_64-2.service",
    ]
    assert len([c for c in calls if c]) == 6
    assert "started 6 worker instances" in res.stdout
    h = health(worker_host)
    assert h["healthy"] is True and h["host"] == socket.gethostname()
    assert [(g["group"], g["instances"], g["state"]) for g in h["groups"]] == [
        ("x86_64", 2, "started"),
        ("aarch64", 2, "started"),
        ("armv7hl", 2, "started"),
    ]


def test_setup_skips_emulated_groups_without_f_and_fails(worker_host):
    b = Path(worker_host["binfmt"])
    (b / "qemu-arm").write_text(handler_file("P"))  # registered without F
    # qemu-aarch64 not registered at all
    res = run([str(T / "obs-farm-worker-setup.sh")], worker_host)
    assert res.returncode == 1
    calls = [c for c in Path(worker_host["calls"]).read_text().split("\n") if c]
    assert calls == [
        "start obs-farm-worker@x86_64-1.service",
        "start obs-farm-worker@x86_64-2.service",
    ]
    assert "NOT started (check failed): aarch64 armv7hl" in res.stderr
    assert "qemu-aarch64 is not registered" in res.stderr
    h = health(worker_host)
    assert h["healthy"] is False
    groups = {g["group"]: g for g in h["groups"]}
    assert {k: g["state"] for k, g in groups.items()} == {
        "x86_64": "started",
        "aarch64": "check-failed",
        "armv7hl": "check-failed",
    }
    assert "qemu-aarch64 is not registered" in groups["aarch64"]["detail"]
    assert "qemu-arm lacks the F flag" in groups["armv7hl"]["detail"]


def test_setup_health_file_is_replaced_at_every_run(worker_host):
    """A later boot with the handlers back reports healthy again."""
    b = Path(worker_host["binfmt"])
    assert run([str(T / "obs-farm-worker-setup.sh")], worker_host).returncode == 1
    (b / "qemu-arm").write_text(handler_file("PF"))
    (b / "qemu-aarch64").write_text(handler_file("OCF"))
    assert run([str(T / "obs-farm-worker-setup.sh")], worker_host).returncode == 0
    assert health(worker_host)["healthy"] is True
    assert not list(Path(worker_host["OBS_FARM_RUN_DIR"]).glob("*.new"))


def test_instance_refuses_to_start_on_an_evicted_machine(worker_host):
    run_dir = Path(worker_host["OBS_FARM_RUN_DIR"])
    run_dir.mkdir()
    (run_dir / "eviction.json").write_text("{}")
    res = run([str(T / "obs-farm-worker.sh"), "run", "x86_64-1"], worker_host)
    assert res.returncode == 78
    assert "machine evicted; not starting x86_64-1" in res.stderr


def _stub_bs_worker(code: Path) -> Path:
    code.mkdir(parents=True, exist_ok=True)
    stub = code / "bs_worker"
    stub.write_text(f'#!/bin/sh\necho "$*" > {code}/args\n')
    stub.chmod(0o755)
    return code / "args"


def test_worker_instance_runs_bs_worker_with_the_group_settings(worker_host):
    (Path(worker_host["binfmt"]) / "qemu-aarch64").write_text(handler_file("PF"))
    args_file = _stub_bs_worker(Path(worker_host["code"]))
    res = run([str(T / "obs-farm-worker.sh"), "run", "aarch64-2"], worker_host)
    assert res.returncode == 0, res.stderr
    args = args_file.read_text().split()
    host = run(["hostname"]).stdout.strip()

    def arg(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert arg("--port") == "41202"
    assert arg("--arch") == "aarch64"
    assert arg("--id") == f"{host}:aarch64-2"
    assert arg("--reposerver") == "http://127.0.0.1:5252"
    assert arg("--jobs") == "2"
    assert arg("--root").endswith("/work/aarch64/2/root")
    assert "--vm-type" not in args  # chroot
    labels = [args[i + 1] for i, a in enumerate(args) if a == "--hostlabel"]
    assert labels == ["obs-farm-emulated", "obs-farm-aarch64"]


def test_native_instance_has_no_arch_flag(worker_host):
    args_file = _stub_bs_worker(Path(worker_host["code"]))
    assert run([str(T / "obs-farm-worker.sh"), "run", "x86_64-1"], worker_host).returncode == 0
    args = args_file.read_text().split()
    assert "--arch" not in args and args[args.index("--port") + 1] == "41001"


def test_emulated_instance_refuses_without_handler(worker_host):
    args_file = _stub_bs_worker(Path(worker_host["code"]))
    res = run([str(T / "obs-farm-worker.sh"), "run", "armv7hl-1"], worker_host)
    assert res.returncode == 78  # RestartPreventExitStatus: systemd stops retrying
    assert (
        "refusing to start emulated armv7hl worker 1: 'obs-farm-check-binfmt qemu-arm' failed"
        in res.stderr
    )
    assert not args_file.exists()


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ("aarch64-3", "has instances 1..2, not 3"),
        ("riscv-1", "no worker group 'riscv'"),
        ("aarch64", "is not GROUP-N"),
    ],
)
def test_worker_instance_bad_names(worker_host, instance, message):
    res = run([str(T / "obs-farm-worker.sh"), "run", instance], worker_host)
    assert res.returncode == 78 and message in res.stderr


@pytest.fixture
def workercode_server(tmp_path: Path) -> Iterator[str]:
    """A stand-in repserver on loopback serving /getworkercode as a cpio."""
    src = tmp_path / "srv-code"
    src.mkdir()
    (src / "bs_worker").write_text('#!/bin/sh\necho "$*" > "$(dirname "$0")/args"\n')
    (src / "bs_worker").chmod(0o644)  # as the real repserver sends it: not executable
    (src / "BSUtil.pm").write_text("1;\n")
    archive = subprocess.run(
        ["cpio", "-o", "--quiet", "-H", "newc"],
        input=b"bs_worker\nBSUtil.pm\n",
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/getworkercode"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(archive)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_worker_fetches_code_from_the_repserver(worker_host, workercode_server):
    conf = Path(worker_host["OBS_FARM_CONF_DIR"]) / "worker.env"
    conf.write_text(conf.read_text().replace("http://127.0.0.1:5252", workercode_server))
    res = run([str(T / "obs-farm-worker.sh"), "run", "x86_64-1"], worker_host)
    assert res.returncode == 0, res.stderr
    code = Path(worker_host["code"])
    assert (code / "BSUtil.pm").exists()
    assert (code / "XML").is_symlink()  # bs_worker loads XML/*.pm
    assert "--port 41001" in (code / "args").read_text()


# --- 32-bit ARM on arm64 -----------------------------------------------------

QEMU_ARM = shutil.which("qemu-arm-static")
REAL_BINFMT = Path("/proc/sys/fs/binfmt_misc")


@contextlib.contextmanager
def binfmt_mounted() -> Iterator[None]:
    """binfmt_misc mounted for the test; unmounted after only if it was not
    (call under the integration lock)."""
    mounted = (REAL_BINFMT / "status").exists()
    if not mounted:
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(REAL_BINFMT)], check=True)
    try:
        yield
    finally:
        if not mounted:
            subprocess.run(["umount", str(REAL_BINFMT)], check=True)


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "aarch32-probe"
    path.write_bytes(cloudinit.aarch32_probe())
    path.chmod(0o755)
    return path


def test_probe_is_a_32bit_arm_executable(probe):
    data = probe.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1  # ELFCLASS32
    assert int.from_bytes(data[18:20], "little") == 40  # EM_ARM


@pytest.mark.skipif(QEMU_ARM is None, reason="qemu-user-static not installed")
def test_probe_exits_42_when_arm_code_runs(probe):
    assert run([str(QEMU_ARM), str(probe)]).returncode == cloudinit.AARCH32_PROBE_STATUS


@pytest.mark.skipif(QEMU_ARM is None, reason="qemu-user-static not installed")
def test_aarch32_check_passes_when_the_probe_runs(probe, binfmt, tmp_path):
    # On this x86-64 host the "CPU" is qemu-arm run directly: what the check
    # sees is the same exit status a native AArch32-capable CPU gives.
    wrapper = tmp_path / "probe-wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {QEMU_ARM} {probe}\n")
    wrapper.chmod(0o755)
    res = run(
        [str(T / "check-aarch32.sh")],
        {"OBS_FARM_AARCH32_PROBE": str(wrapper), "OBS_FARM_BINFMT_DIR": str(binfmt)},
    )
    assert res.returncode == 0, res.stderr
    assert "runs 32-bit ARM code natively" in res.stdout


def test_aarch32_check_refuses_a_cpu_without_aarch32(binfmt, tmp_path):
    # What exec of an ARM32 binary gives on Graviton4: ENOEXEC (shell: 126).
    no32 = tmp_path / "no-aarch32"
    no32.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(45))
    no32.chmod(0o755)
    res = run(
        [str(T / "check-aarch32.sh")],
        {"OBS_FARM_AARCH32_PROBE": str(no32), "OBS_FARM_BINFMT_DIR": str(binfmt)},
    )
    assert res.returncode == 1
    assert "does not run 32-bit ARM code" in res.stderr


def test_aarch32_check_refuses_when_qemu_arm_would_answer(probe, binfmt):
    (binfmt / "qemu-arm").write_text(handler_file("PF"))
    res = run(
        [str(T / "check-aarch32.sh")],
        {"OBS_FARM_AARCH32_PROBE": str(probe), "OBS_FARM_BINFMT_DIR": str(binfmt)},
    )
    assert res.returncode == 1
    assert "qemu-arm is registered" in res.stderr


def _rule_bytes(rule: str) -> tuple[bytes, bytes]:
    """Magic and mask of a binfmt register line, as the bytes the kernel matches."""
    fields = rule.strip().split(":")
    return tuple(f.encode().decode("unicode_escape").encode("latin-1") for f in fields[4:6])  # type: ignore[return-value]


DEBIAN_QEMU_ARM = Path("/usr/lib/binfmt.d/qemu-arm.conf")


@pytest.mark.skipif(QEMU_ARM is None, reason="qemu-user-static not installed")
def test_qemu_arm_rule_matches_debians_own():
    """Same magic and mask as Debian's x86-64 qemu-user-static, with F and the static qemu."""
    ours = cloudinit.qemu_arm_binfmt_rule()
    assert _rule_bytes(ours) == _rule_bytes(DEBIAN_QEMU_ARM.read_text())
    assert ours.startswith(":qemu-arm:M::") and ours.endswith(":/usr/bin/qemu-arm-static:F\n")


SYSTEMD_BINFMT = Path("/usr/lib/systemd/systemd-binfmt")


@needs_root
def test_qemu_arm_binfmt_d_entry_is_applied_by_systemd_binfmt(probe, tmp_path):
    """The worker's binfmt.d entry through the real systemd-binfmt into the
    real kernel (under a test name): F, our interpreter, and ARM code runs."""
    name = f"obs-farm-test-{os.getpid()}"
    conf = tmp_path / "qemu-arm.conf"
    conf.write_text(cloudinit.qemu_arm_binfmt_rule(name, str(QEMU_ARM)))
    with kernel_binfmt([]), binfmt_mounted():
        try:
            res = run([str(SYSTEMD_BINFMT), str(conf)])
            assert res.returncode == 0, res.stderr
            entry = (REAL_BINFMT / name).read_text()
            assert "flags: F" in entry and f"interpreter {QEMU_ARM}" in entry
            assert "magic 7f454c4601010100000000000000000002002800" in entry
            assert run([str(probe)]).returncode == cloudinit.AARCH32_PROBE_STATUS
        finally:
            if (REAL_BINFMT / name).exists():
                (REAL_BINFMT / name).write_text("-1")


@needs_root
def test_harness_binfmt_puts_back_what_it_found():
    """ob.Binfmt leaves a mounted binfmt_misc mounted and its handlers in place."""
    name = f"obs-farm-keep-{os.getpid()}"
    with kernel_binfmt([]), binfmt_mounted():
        (REAL_BINFMT / "register").write_text(
            cloudinit.qemu_arm_binfmt_rule(name, str(QEMU_ARM)).replace(":F\n", ":PF\n")
        )
        try:
            before = ob.binfmt_snapshot()
            with ob.Binfmt(["aarch64", "armv7l"]):
                (REAL_BINFMT / name).write_text("-1")  # something drops a host handler
            assert (REAL_BINFMT / "status").exists(), "the host's binfmt_misc was unmounted"
            assert ob.binfmt_snapshot() == before
        finally:
            if (REAL_BINFMT / name).exists():
                (REAL_BINFMT / name).write_text("-1")


# --- data disk --------------------------------------------------------------


def _can_loop() -> bool:
    return os.geteuid() == 0 and shutil.which("losetup") is not None


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["umount", str(tmp_path / "mnt")], capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=True)


def _prepare(dev: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [str(T / "prepare-data-disk.sh"), dev, str(tmp_path / "mnt")],
        {"OBS_FARM_FSTAB": str(tmp_path / "fstab"), "OBS_FARM_DISK_WAIT": "2"},
    )


@pytest.mark.skipif(not _can_loop(), reason="needs root and loop devices")
def test_data_disk_is_formatted_once_and_its_data_survives_a_second_boot(loop_disk, tmp_path):
    (tmp_path / "fstab").write_text("")
    first = _prepare(loop_disk, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "is blank; creating ext4" in first.stdout
    (tmp_path / "mnt" / "archive.txt").write_text("4121 source packages\n")
    subprocess.run(["umount", str(tmp_path / "mnt")], check=True)
    second = _prepare(loop_disk, tmp_path)  # a replaced VM booting on the same disk
    assert second.returncode == 0, second.stderr
    assert "already holds ext4; keeping its data" in second.stdout
    assert (tmp_path / "mnt" / "archive.txt").read_text() == "4121 source packages\n"
    fstab = (tmp_path / "fstab").read_text().splitlines()
    assert len(fstab) == 1 and fstab[0].startswith("UUID=") and " ext4 defaults,nofail" in fstab[0]


@pytest.mark.skipif(not _can_loop(), reason="needs root and loop devices")
def test_data_disk_with_a_partition_table_is_not_touched(loop_disk, tmp_path):
    (tmp_path / "fstab").write_text("")
    subprocess.run(
        ["sfdisk", "-q", loop_disk],
        input="label: gpt\n,\n",
        text=True,
        check=True,
        capture_output=True,
    )
    res = _prepare(loop_disk, tmp_path)
    assert res.returncode == 1
    assert "not a filesystem (partition table?); not touching it" in res.stderr
    probe = run(["blkid", "-p", "-s", "PTTYPE", "-o", "value", loop_disk])
    assert probe.stdout.strip() == "gpt"


def test_data_disk_that_never_appears_fails_clearly(tmp_path):
    res = _prepare(str(tmp_path / "no-such-disk"), tmp_path)
    assert res.returncode == 1
    assert "did not appear within 2s" in res.stderr


# --- aarch64 workers on CPUs without AArch32 -------------------------------------

REAL_BS_WORKER = Path("/usr/lib/obs/server/bs_worker")
HW_LINE = "my $hw = {'cpu' => {}, 'processors' => 0};\n"


def graviton_host(worker_host: dict[str, str], tmp_path: Path, probe_status: int) -> dict[str, str]:
    """The worker host fixture, turned into an arm64 machine's aarch64 group."""
    conf = Path(worker_host["OBS_FARM_CONF_DIR"]) / "groups" / "aarch64.env"
    conf.write_text(
        conf.read_text()
        .replace('CHECK="obs-farm-check-binfmt qemu-aarch64"', 'CHECK=""')
        .replace('NATIVEONLY_UNLESS_AARCH32="0"', 'NATIVEONLY_UNLESS_AARCH32="1"')
        .replace('HOSTARCH="aarch64"', f'HOSTARCH="{os.uname().machine}"')
    )
    probe = tmp_path / "probe"
    probe.write_text(f"#!/bin/sh\nexit {probe_status}\n")
    probe.chmod(0o755)
    return {**worker_host, "OBS_FARM_AARCH32_PROBE": str(probe)}


def stub_with_hw_line(code: Path) -> Path:
    """A bs_worker stub that records its arguments next to itself and carries
    the line of Debian's bs_worker that the native-only patch anchors on."""
    code.mkdir(parents=True, exist_ok=True)
    stub = code / "bs_worker"
    stub.write_text('#!/bin/sh\necho "$*" > "$(dirname "$0")/args"\nexit 0\n' + HW_LINE)
    stub.chmod(0o755)
    return code / "args"


def test_aarch64_worker_without_aarch32_is_marked_native_only(worker_host, tmp_path):
    env = graviton_host(worker_host, tmp_path, probe_status=126)
    args_file = stub_with_hw_line(Path(worker_host["code"]))
    res = run([str(T / "obs-farm-worker.sh"), "run", "aarch64-1"], env)
    assert res.returncode == 0, res.stderr
    assert "has no AArch32" in res.stdout
    patched = (tmp_path / "work" / "aarch64" / "code-nativeonly-1" / "bs_worker").read_text()
    assert HW_LINE + "$hw->{'nativeonly'} = undef; # obs-farm: no AArch32\n" in patched
    assert args_file.exists() is False  # the stub ran from the patched copy
    assert (
        "--noworkerupdate"
        in (tmp_path / "work" / "aarch64" / "code-nativeonly-1" / "args").read_text()
    )


def test_aarch64_worker_with_aarch32_runs_unpatched(worker_host, tmp_path):
    env = graviton_host(worker_host, tmp_path, probe_status=42)
    args_file = stub_with_hw_line(Path(worker_host["code"]))
    res = run([str(T / "obs-farm-worker.sh"), "run", "aarch64-1"], env)
    assert res.returncode == 0, res.stderr
    assert "--noworkerupdate" not in args_file.read_text()


def test_native_only_refuses_when_bs_worker_changed(worker_host, tmp_path):
    env = graviton_host(worker_host, tmp_path, probe_status=126)
    _stub_bs_worker(Path(worker_host["code"]))  # no $hw line to patch
    res = run([str(T / "obs-farm-worker.sh"), "run", "aarch64-1"], env)
    assert res.returncode == 78
    assert "cannot mark the worker native-only" in res.stderr


@pytest.mark.skipif(not REAL_BS_WORKER.exists(), reason="obs-worker not installed")
def test_native_only_patch_matches_debian_bs_worker():
    assert HW_LINE in REAL_BS_WORKER.read_text()
