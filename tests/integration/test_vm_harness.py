"""Tests of the VM harness (vm.py): fast pure checks plus real-VM smoke tests.

The integration tests boot real Debian VMs under software emulation: minutes
each.  Run them with
`venv/bin/python -m pytest -m integration tests/integration/test_vm_harness.py -s`
(-s shows the measured timings).  The pre-installed-packages comparison costs
about 10 more minutes and runs only with OBSFARM_VM_MEASURE_EXTRAS=1.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ importable as a package (python -m pytest from the repo root)
    from tests.integration import vm
except ImportError:  # pytest's default "prepend" import of this folder
    import vm  # type: ignore[no-redef, unused-ignore]

GUEST_LISTEN_PORT = 8080
LISTENING_MARKER = "OBSFARM-SMOKE-GUEST-LISTENING"
BOOT_TIMEOUT_S = 900
EXTRAS = ("docker.io", "binfmt-support", "qemu-user-static", "obs-worker")


# --------------------------------------------------------------------------- fast


def test_mirror_is_read_from_deb822_stanza_with_the_suite() -> None:
    text = (
        "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://b.example/debian-security\nSuites: bookworm-security\n"
    )
    assert vm.mirror_from_deb822(text, "bookworm") == "http://a.example/debian"
    assert vm.mirror_from_deb822(text, "trixie") is None
    disabled = text.replace("Types: deb\n", "Enabled: no\nTypes: deb\n", 1)
    assert vm.mirror_from_deb822(disabled, "bookworm") is None


def test_mirror_is_read_from_one_line_sources() -> None:
    text = "# comment\ndeb [arch=amd64] http://c.example/debian bookworm main\n"
    assert vm.mirror_from_one_line(text, "bookworm") == "http://c.example/debian"


def test_recipe_key_follows_packages_and_script() -> None:
    base = vm.Recipe()
    assert base.key() == vm.Recipe().key()
    assert vm.Recipe(extra_packages=("b", "a")).key() == vm.Recipe(extra_packages=("a", "b")).key()
    assert vm.Recipe(extra_packages=("a",)).key() != base.key()
    assert vm.Recipe(packages=(*vm.BASE_PACKAGES, "x")).key() != base.key()
    assert vm.Recipe(script=vm.BUILD_SCRIPT + "\n# edit\n").key() != base.key()


def test_qemu_command_forwards_only_on_loopback() -> None:
    cmd = vm.qemu_command(
        image_dir=Path("/i"),
        overlay=Path("/o"),
        seed=Path("/s"),
        console=Path("/c"),
        hostfwd=[(2222, 22), (8081, 80)],
        memory_mb=4096,
        cpus=2,
    )
    nic = cmd[cmd.index("-nic") + 1]
    assert nic == (
        "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8081-:80"
    )
    assert cmd[cmd.index("-accel") + 1] == "tcg"
    assert "-no-reboot" in cmd
    assert "-nodefaults" in cmd
    assert cmd[cmd.index("-append") + 1].endswith(" quiet")


def test_meta_data_gets_fresh_instance_id() -> None:
    first, second = vm.with_instance_id(None), vm.with_instance_id({"local-hostname": "w1"})
    assert first["instance-id"] != second["instance-id"]
    assert second["local-hostname"] == "w1"
    assert vm.with_instance_id({"instance-id": "fixed"})["instance-id"] == "fixed"


def test_dpkg_status_parser_keeps_only_installed() -> None:
    text = (
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"
    )
    assert vm.parse_dpkg_status(text) == {"hello": "2.10-3"}


# --------------------------------------------------------------------------- real VMs


@pytest.fixture(scope="module")
def base_image() -> Path:
    """The cached base image; prints how long building it took (now or earlier)."""
    started = time.monotonic()
    image: Path = vm.build_image()
    took = time.monotonic() - started
    info = vm.image_info(image)
    print(
        f"\n[vm] image {image.parent.name}: build {info['build_seconds']} s "
        f"({'built now' if took > 30 else f'cached, lookup {took:.1f} s'})"
    )
    return image


@pytest.fixture()
def host_token_server() -> Iterator[tuple[int, str]]:
    """A one-file HTTP server on 127.0.0.1 that the guest reaches as 10.0.2.2."""
    token = uuid.uuid4().hex

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (token + "\n").encode()
            self.send_response(200 if self.path == "/token" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], token
    finally:
        server.shutdown()
        server.server_close()


def smoke_user_data(host_port: int) -> str:
    """Install a package, write a file, talk to the host both ways, then fail
    on purpose (the last runcmd exits 3) and power off: one boot shows both
    that results are readable and that a failure is reported."""
    return f"""#cloud-config
packages: [hello]
write_files:
  - path: /etc/obsfarm-smoke/written.txt
    content: "written by write_files\\n"
  - path: /usr/local/bin/obsfarm-smoke-listen
    permissions: "0755"
    content: |
      #!/usr/bin/python3
      # Serve one connection on the forwarded port, then exit (bounded).
      import socket
      server = socket.create_server(("0.0.0.0", {GUEST_LISTEN_PORT}))
      server.settimeout(300)
      with open("/dev/console", "w") as console:
          console.write("{LISTENING_MARKER}\\n")
      conn, _ = server.accept()
      conn.sendall(b"hello-from-guest\\n")
      conn.close()
runcmd:
  - [sh, -c, "hello > /root/hello.out"]
  - [curl, -fsS, --max-time, "60", -o, /root/token-from-host,
     "http://10.0.2.2:{host_port}/token"]
  - [/usr/local/bin/obsfarm-smoke-listen]
  - [sh, -c, "echo about to fail; exit 3"]
power_state:
  mode: poweroff
  condition: true
"""


VENDOR_SCRIPT = "#!/bin/sh\necho from-vendor-data > /root/vendor.out\n"


def read_banner(port: int, timeout: float = 60) -> bytes:
    """Connect to a forwarded port and read one line (retrying while slirp connects)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                data = conn.recv(100)
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing read from 127.0.0.1:{port} within {timeout}s")
        time.sleep(1)


@pytest.mark.integration
def test_cloud_config_runs_results_are_readable_and_failure_is_reported(
    base_image: Path, host_token_server: tuple[int, str]
) -> None:
    host_port, token = host_token_server
    fwd_port = vm.free_port()
    with vm.boot(
        smoke_user_data(host_port),
        None,
        [(fwd_port, GUEST_LISTEN_PORT)],
        BOOT_TIMEOUT_S,
        image=base_image,
        vendor_data=VENDOR_SCRIPT,
    ) as run:
        run.wait_for_console(LISTENING_MARKER, 600)
        assert read_banner(fwd_port) == b"hello-from-guest\n"
        report = run.wait_for_cloud_init(300)
        powered_off = run.wait_for_poweroff(180)

        print(
            f"[vm] smoke: cloud-init done after {report.seconds_since_start} s, "
            f"power-off after {powered_off} s (qemu start = 0)"
        )
        # The deliberate failure, and nothing else, on the console and on disk.
        assert report.status == "error", run.console_log()[-3000:]
        assert report.exit_code != 0
        assert report.errors and all("scripts-user" in e for e in report.errors), report.errors
        result = run.cloud_init_result()
        assert not result.ok
        assert result.errors and all("scripts-user" in e for e in result.errors), result.errors
        assert "about to fail" in run.read_text("/var/log/cloud-init-output.log")
        assert run.read_text("/etc/obsfarm-smoke/written.txt") == "written by write_files\n"
        assert run.read_text("/root/hello.out") == "Hello, world!\n"
        assert run.read_text("/root/token-from-host").strip() == token
        assert "hello" in run.installed_packages()
        assert run.read_text("/root/vendor.out") == "from-vendor-data\n"
        assert not run.exists("/no/such/file")
        with pytest.raises(FileNotFoundError):
            run.read_file("/no/such/file")
        pid = run.pid
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not run.workdir.exists()


@pytest.mark.integration
def test_boot_timeout_kills_qemu_and_reports_console(base_image: Path) -> None:
    """A hung wait ends at the harness bound with the console tail in the error."""
    with vm.boot("#cloud-config\n{}\n", None, [], 30, image=base_image) as run:
        with pytest.raises(vm.VmError) as caught:
            run.wait_for_console("this never appears", 300)
        assert "killed by the harness after timeout_s=30" in str(caught.value)
        assert "console lines" in str(caught.value)
        assert not run.running()


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("OBSFARM_VM_MEASURE_EXTRAS") != "1",
    reason="opt-in: a measurement of about 10 minutes; set OBSFARM_VM_MEASURE_EXTRAS=1",
)
def test_measure_preinstalled_packages(base_image: Path) -> None:
    """Same `packages:` user-data on the base image and on one with them baked in."""
    started = time.monotonic()
    extra_image = vm.build_image(extra_packages=EXTRAS)
    lookup = time.monotonic() - started
    print(
        f"[vm] extra image: build {vm.image_info(extra_image)['build_seconds']} s "
        f"(this call {lookup:.0f} s)"
    )
    user_data = (
        "#cloud-config\npackages: [" + ", ".join(EXTRAS) + "]\n"
        "power_state:\n  mode: poweroff\n  condition: true\n"
    )
    for name, image in (("base", base_image), ("extra", extra_image)):
        with vm.boot(user_data, None, [], 1800, image=image) as run:
            report = run.wait_for_cloud_init(1500)
            powered_off = run.wait_for_poweroff(300)
            print(
                f"[vm] {name} image + packages {list(EXTRAS)}: cloud-init done after "
                f"{report.seconds_since_start} s, power-off after {powered_off} s"
            )
            assert report.status == "done", report.errors
            assert set(EXTRAS) <= set(run.installed_packages())
