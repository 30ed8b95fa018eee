"""./check (tools/check.py): what it concludes from what the server reports,
and how it treats user mistakes. The checks against a real server run in
tests/integration/test_server_vm.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components import cloudinit
from components.cloudinit import aarch32_probe
from components.topology import azure_worker_pool
from config import load_settings
from tests.unit.test_scripts import handler_file, sbin
from tools import check
from tools.offline import read_stack_config, run_program

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dev_outputs() -> dict:
    return run_program("dev", read_stack_config("dev")).outputs


@pytest.fixture(scope="module")
def pools(dev_outputs) -> list[check.PoolSpec]:
    return check.pool_specs(dev_outputs["topology"])


def test_dev_outputs_carry_what_check_reads(dev_outputs, pools):
    assert dev_outputs["adminUsername"] == "obsadmin"
    assert dev_outputs["serverFlavor"] == "appliance"  # the default flavor
    assert dev_outputs["dataDiskId"]
    (pool,) = pools
    settings = load_settings(read_stack_config("dev"))
    want = azure_worker_pool(settings)
    assert pool.name == want.name and pool.min_vms == 0
    assert {(g.arch, g.scheduler_arch, g.instances) for g in pool.groups} == {
        (g.arch, g.scheduler_arch, g.instances) for g in want.groups
    }
    # The labels ./check expects are the ones the workers register with.
    assert {frozenset(g.hostlabels) for g in pool.groups} == {
        frozenset(g.hostlabels) for g in want.groups
    }
    assert check.scheduler_archs(pools) == ["aarch64", "armv7l", "x86_64"]


# --------------------------------------------------------------------------- workers

WORKERSTATUS = """<workerstatus clients="3">
  <idle workerid="vm0:x86_64-1" hostarch="x86_64" uri="http://10.40.16.4:41001"/>
  <building workerid="vm0:aarch64-1" hostarch="aarch64" uri="http://10.40.16.4:41201"
    project="p" repository="r" package="x" arch="aarch64" starttime="1"/>
  <idle workerid="vm0:armv7hl-1" hostarch="armv7l" uri="http://10.40.16.4:41101"/>
  <down workerid="old:x86_64-1" hostarch="x86_64"/>
  <waiting arch="x86_64" jobs="0"/>
  <partition>
    <daemon type="srcserver" state="running"/>
    <daemon type="scheduler" arch="x86_64" state="running"/>
    <daemon type="scheduler" arch="aarch64" state="dead"/>
  </partition>
</workerstatus>"""


def registration(labels: list[str], port: int) -> str:
    tags = "".join(f"<hostlabel>{label}</hostlabel>" for label in labels)
    return (
        f'<worker hostarch="x86_64" ip="10.40.16.4" port="{port}" workerid="w">'
        f"<linux><version>6.1</version></linux><hardware><cpu/>{tags}</hardware></worker>"
    )


def good_registrations(answers: bool = True) -> dict[str, check.Registration]:
    regs = {}
    for wid, arch, execution, port in (
        ("vm0:x86_64-1", "x86_64", "native", 41001),
        ("vm0:aarch64-1", "aarch64", "emulated", 41201),
        ("vm0:armv7hl-1", "armv7hl", "emulated", 41101),
    ):
        xml = registration([f"obs-farm-{execution}", f"obs-farm-{arch}"], port)
        regs[wid] = check.parse_registration(xml, answers)
    return regs


def test_workerstatus_parsing():
    workers, daemons = check.parse_workerstatus(WORKERSTATUS)
    assert [(w.state, w.workerid) for w in workers][:2] == [
        ("idle", "vm0:x86_64-1"),
        ("building", "vm0:aarch64-1"),
    ]
    assert daemons["scheduler:aarch64"] == "dead"
    results = check.evaluate_schedulers(["x86_64", "aarch64", "armv7l"], daemons)
    assert [r.status for r in results] == ["PASS", "FAIL", "FAIL"]
    assert "dead" in results[1].reason and "not listed" in results[2].reason


def test_pool_with_every_worker_as_promised_passes(pools):
    workers, _ = check.parse_workerstatus(WORKERSTATUS)
    results = check.evaluate_pool(pools[0], workers, good_registrations())
    assert [r.status for r in results] == ["PASS"] * 4, results
    assert "vm0" in results[0].reason


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ws, regs: (ws[1:], regs), "vm0:x86_64-1 not registered"),
        (
            lambda ws, regs: (
                [check.Worker("idle", "vm0:x86_64-1", "i586", ws[0].uri), *ws[1:]],
                regs,
            ),
            "registered as i586, expected x86_64",
        ),
        (
            lambda ws, regs: (
                [check.Worker("idle", "vm0:x86_64-1", "x86_64", "http://h:5000"), *ws[1:]],
                regs,
            ),
            "on port 5000, expected 41001-41001",
        ),
        (
            lambda ws, regs: (
                ws,
                {
                    **regs,
                    "vm0:x86_64-1": check.parse_registration(
                        registration(["obs-farm-x86_64"], 41001), True
                    ),
                },
            ),
            "lacks host label(s) obs-farm-native",
        ),
        (
            lambda ws, regs: (
                ws,
                {
                    **regs,
                    "vm0:x86_64-1": check.Registration(regs["vm0:x86_64-1"].hostlabels, 1, False),
                },
            ),
            "does not answer at http://10.40.16.4:41001/worker",
        ),
    ],
)
def test_each_worker_problem_fails_its_group_and_names_it(pools, change, expected):
    workers, _ = check.parse_workerstatus(WORKERSTATUS)
    workers, regs = change(workers, good_registrations())
    results = check.evaluate_pool(pools[0], workers, regs)
    failed = [r for r in results if r.status == "FAIL"]
    assert len(failed) == 1 and failed[0].name == "workers azure-x86 x86_64", results
    assert expected in failed[0].reason


def test_pool_scaled_to_zero_is_skipped_only_when_min_is_zero(pools):
    (result,) = check.evaluate_pool(pools[0], [], {})
    assert result.status == "SKIP" and "minVms is 0" in result.reason
    busy = check.PoolSpec("p", "azure", 2, 3, pools[0].groups)
    (result,) = check.evaluate_pool(busy, [], {})
    assert result.status == "FAIL" and "minVms is 2" in result.reason
    workers, _ = check.parse_workerstatus(WORKERSTATUS)
    results = check.evaluate_pool(busy, workers, good_registrations())
    assert (
        results[0].status == "FAIL" and "1 machine(s) registered, minVms is 2" in results[0].reason
    )


def test_aws_and_azure_pools_claim_their_own_hosts():
    group = check.GroupSpec("aarch64", "aarch64", "native", 1, (41201, 41201))
    aws = check.PoolSpec("aws-graviton", "aws", 1, 3, (group,))
    azure_group = check.GroupSpec("aarch64", "aarch64", "emulated", 1, (41201, 41201))
    azure = check.PoolSpec("azure-x86", "azure", 1, 3, (azure_group,))
    workers = [
        check.Worker("idle", "i-0123456789abcdef0:aarch64-1", "aarch64", "http://10.41.0.9:41201"),
        check.Worker("idle", "azure-x86000001:aarch64-1", "aarch64", "http://10.40.16.5:41201"),
    ]
    regs = {
        "i-0123456789abcdef0:aarch64-1": check.Registration(
            frozenset({"obs-farm-native", "obs-farm-aarch64"}), 41201, True
        ),
        "azure-x86000001:aarch64-1": check.Registration(
            frozenset({"obs-farm-emulated", "obs-farm-aarch64"}), 41201, True
        ),
    }
    assert [r.status for r in check.evaluate_pool(aws, workers, regs)] == ["PASS", "PASS"]
    assert [r.status for r in check.evaluate_pool(azure, workers, regs)] == ["PASS", "PASS"]
    assert "i-0123456789abcdef0" in check.evaluate_pool(aws, workers, regs)[0].reason


# --------------------------------------------------------------------------- daemons, disk, scaler


def test_units_fail_by_name():
    results = check.evaluate_units(["obssrcserver", "obsscheduler@aarch64"], ["active", "inactive"])
    assert [r.line() for r in results] == [
        "PASS daemon obssrcserver: active",
        "FAIL daemon obsscheduler@aarch64: systemd says inactive",
    ]


def test_daemon_units_follow_flavor_and_architectures():
    backend = check.daemon_units("backend", ["aarch64", "x86_64"])
    assert backend[-2:] == ["obsscheduler@aarch64", "obsscheduler@x86_64"]
    assert {"obssrcserver", "obsrepserver", "obsdispatcher", "obspublisher"} <= set(backend)
    appliance = check.daemon_units("appliance", ["aarch64"])
    assert "apache2" in appliance and "obsscheduler" in appliance


DISK_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/obs-data"


@pytest.mark.parametrize(
    ("mount", "lun", "imds", "status", "words"),
    [
        ("/dev/sdc ext4", "/dev/sdc", "", "PASS", "disk id not compared"),
        ("", "/dev/sdc", "", "FAIL", "nothing mounted"),
        ("/dev/sda1 ext4", "/dev/sdc", "", "FAIL", "/srv/obs is on /dev/sda1"),
        ("/dev/sdc ext4", "", "", "FAIL", "does not exist"),
        (
            "/dev/sdc ext4",
            "/dev/sdc",
            json.dumps({"dataDisks": [{"lun": "0", "managedDisk": {"id": DISK_ID.upper()}}]}),
            "PASS",
            f"managed disk {DISK_ID}",
        ),
        (
            "/dev/sdc ext4",
            "/dev/sdc",
            json.dumps({"dataDisks": [{"lun": "0", "managedDisk": {"id": "/other"}}]}),
            "FAIL",
            "LUN 0 holds /other",
        ),
    ],
)
def test_data_disk(mount, lun, imds, status, words):
    result = check.evaluate_data_disk(mount, lun, imds, DISK_ID)
    assert result.status == status and words in result.reason, result


def test_scaler():
    assert check.evaluate_scaler(None, False, "inactive", None).status == "SKIP"
    assert check.evaluate_scaler(True, False, "inactive", None).status == "FAIL"
    assert "failed" in check.evaluate_scaler(None, True, "failed", 3).reason
    assert check.evaluate_scaler(None, True, "active", None).status == "FAIL"
    assert check.evaluate_scaler(None, True, "active", 4000).status == "FAIL"
    assert check.evaluate_scaler(True, True, "active", 12).status == "PASS"


# --------------------------------------------------------------------------- --build pieces


def test_constraints_pin_every_arch_to_its_own_group():
    xml = check.build_constraints(["armv7l", "x86_64"], {"armv7l": "armv7hl", "x86_64": "x86_64"})
    assert "<arch>armv7l</arch></conditions><hostlabel>obs-farm-armv7hl</hostlabel>" in xml
    assert "<arch>x86_64</arch></conditions><hostlabel>obs-farm-x86_64</hostlabel>" in xml


class AnswersByUrl:
    """Stands in for check.Server: answers `curl` commands by the path in their URL."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def out(self, script: str, timeout: float = 120) -> str:
        for path, answer in self.answers.items():
            if path in script:
                return answer
        raise check.RemoteError(f"no answer for {script}")


def result_xml(code: str, details: str = "", dirty: bool = False) -> str:
    dirty_attr = " dirty='true'" if dirty else ""
    details_el = f"<details>{details}</details>" if details else ""
    return (
        f"<resultlist><result project='p' repository='check' arch='x86_64'{dirty_attr}"
        f" state='finished'><status package='{check.CHECK_PACKAGE}' code='{code}'>"
        f"{details_el}</status></result></resultlist>"
    )


def job_history(*endtimes: int) -> str:
    jobs = "".join(
        f"<jobhist package='{check.CHECK_PACKAGE}' workerid='vm0:x86_64-1' starttime='{e - 30}'"
        f" endtime='{e}' code='succeeded'/>"
        for e in endtimes
    )
    return f"<jobhistlist>{jobs}</jobhistlist>"


@pytest.mark.parametrize(
    "result, history, state",
    [
        # The scheduler reports the package before it has seen the commit that
        # followed its meta (a CI run once took this for a final "broken").
        (result_xml("broken", check.NO_SOURCE_YET), job_history(), None),
        (
            result_xml("broken", "bad build configuration"),
            job_history(),
            ("broken: bad build configuration", ""),
        ),
        (
            result_xml("unresolvable", "nothing provides gcc"),
            job_history(),
            ("unresolvable: nothing provides gcc", ""),
        ),
        (result_xml("scheduled"), job_history(), None),
        (result_xml("succeeded", dirty=True), job_history(2000), None),
        (result_xml("succeeded"), job_history(900), None),  # an earlier build's result
        (result_xml("succeeded"), job_history(900, 2000), ("succeeded", "vm0:x86_64-1")),
        (result_xml("failed"), job_history(2000), ("failed", "vm0:x86_64-1")),
    ],
)
def test_build_state_waits_for_a_fresh_final_result(result, history, state):
    server = AnswersByUrl({"/_result?": result, "/_jobhistory?": history})
    assert check._build_state(server, "p", "x86_64", started=1000) == state  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_elf_machine_of_a_real_deb(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.invalid>\n"
        "Description: t\n"
    )
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy(sys.executable, root / "usr" / "bin" / "native")
    (root / "usr" / "bin" / "arm").write_bytes(aarch32_probe())
    (root / "usr" / "bin" / "text").write_text("#!/bin/sh\n")
    for compression in ("xz", "gzip"):
        deb = tmp_path / f"t-{compression}.deb"
        subprocess.run(
            ["dpkg-deb", "-Z", compression, "--root-owner-group", "-b", str(root), str(deb)],
            check=True,
            capture_output=True,
        )
        machines = check.elf_machines_of_deb(deb.read_bytes())
        assert machines == {"./usr/bin/native": 62, "./usr/bin/arm": 40}
    with pytest.raises(ValueError, match=r"not a \.deb"):
        check.elf_machines_of_deb(b"hello")


# --------------------------------------------------------------------------- user mistakes


def run_cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path if path is not None else os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, "-m", "tools.check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, res
    assert res.stdout == "" and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_no_pulumi_cli(tmp_path):
    line = one_line_error(run_cli("dev", path=str(tmp_path)))
    assert "the pulumi CLI is not installed" in line and "--outputs" in line


def test_no_such_stack(tmp_path):
    # The Pulumi CLI cannot run here: a stand-in prints what pulumi prints
    # for an unknown stack and exits as it does.
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\necho \"error: no stack named 'nosuch' found\" >&2\nexit 255\n")
    fake.chmod(0o755)
    line = one_line_error(run_cli("nosuch", path=f"{tmp_path}:{os.environ['PATH']}"))
    assert line == (
        "./check: cannot read the outputs of stack 'nosuch': error: no stack named 'nosuch' found"
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read --outputs"),
        ("not json", "is not JSON"),
        ("[]", "not a JSON object"),
        ('{"topology": []}', "no 'serverPublicIp'"),
        ('{"serverPublicIp": "1.2.3.4", "topology": [{"pool": "x"}]}', "not what this version"),
    ],
)
def test_bad_outputs_file(tmp_path, content, words):
    path = tmp_path / "outputs.json"
    if content is not None:
        path.write_text(content)
    line = one_line_error(run_cli("dev", "--outputs", str(path)))
    assert words in line


def test_unreachable_server_fails_the_ssh_check(tmp_path, dev_outputs):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(dev_outputs))
    # A closed port on loopback: ssh fails at once.
    res = run_cli(
        "dev",
        "--outputs",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "-o",
        "ConnectTimeout=5",
    )
    if shutil.which("ssh") is None:
        pytest.skip("needs openssh-client")
    assert res.returncode == 1, res
    assert res.stdout.splitlines()[0].startswith("FAIL ssh: cannot log in as obsadmin@127.0.0.1:9")


def test_check_script_takes_paths_relative_to_the_caller(tmp_path):
    (tmp_path / "outputs.json").write_text("not json")
    res = subprocess.run(
        [str(REPO / "check"), "dev", "--outputs", "outputs.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one_line_error(res).startswith("./check: --outputs outputs.json is not JSON")


# --------------------------------------------------------------------------- worker health


def machine_of(pools) -> check.Machine:
    workers, _ = check.parse_workerstatus(WORKERSTATUS)
    (machine,) = check.worker_machines(pools, workers)
    return machine


def test_worker_machines_come_from_live_registrations(pools):
    machine = machine_of(pools)
    # `old` is down; vm0's three workers share one machine and address.
    assert (machine.pool, machine.host, machine.address) == ("azure-x86", "vm0", "10.40.16.4")
    assert set(machine.groups) == {"x86_64", "aarch64", "armv7hl"}
    assert machine.check_name == "worker health azure-x86 vm0"


def health_file(**changes) -> str:
    doc = {
        "host": "vm0",
        "time": "2026-11-28T08:00:00Z",
        "healthy": True,
        "groups": [
            {"group": g, "instances": 1, "state": "started", "detail": ""}
            for g in ("x86_64", "aarch64", "armv7hl")
        ],
    }
    return json.dumps({**doc, **changes})


@pytest.mark.parametrize(
    ("text", "status", "words"),
    [
        (health_file(), "PASS", "healthy at boot 2026-11-28T08:00:00Z: started aarch64 (1)"),
        (
            health_file(
                healthy=False,
                groups=[
                    {"group": "x86_64", "instances": 1, "state": "started", "detail": ""},
                    {
                        "group": "aarch64",
                        "instances": 1,
                        "state": "check-failed",
                        "detail": "obs-farm-check-binfmt: qemu-aarch64 lacks the F flag",
                    },
                    {"group": "armv7hl", "instances": 1, "state": "started", "detail": ""},
                ],
            ),
            "FAIL",
            "group aarch64 check-failed: obs-farm-check-binfmt: qemu-aarch64 lacks the F flag",
        ),
        (
            health_file(groups=[{"group": "x86_64", "instances": 1, "state": "started"}]),
            "FAIL",
            "group aarch64 not in the file",
        ),
        (health_file(healthy=False), "FAIL", "says unhealthy, naming no group"),
        (health_file(host="vm9"), "FAIL", "is host 'vm9''s, not 'vm0''s"),
        ("{", "FAIL", "is not what the workers write"),
        ('{"host": "vm0"}', "FAIL", "is not what the workers write"),
    ],
)
def test_worker_health_file(pools, text, status, words):
    result = check.evaluate_worker_health(machine_of(pools), text)
    assert result.status == status and words in result.reason, result
    assert result.name == "worker health azure-x86 vm0"


def test_unreadable_worker_health_fails_naming_the_machine(pools):
    result = check.evaluate_worker_health(machine_of(pools), None, "as obsadmin: refused")
    assert result.line() == (
        "FAIL worker health azure-x86 vm0: cannot read /run/obs-farm/worker-health.json "
        "on 10.40.16.4 through the server: as obsadmin: refused"
    )


def test_what_the_worker_setup_writes_is_what_check_reads(tmp_path, pools):
    """The real obs-farm-worker-setup.sh (binfmt_misc a directory, systemctl a
    recorder): qemu-aarch64 without F, so its group is not started, and
    ./check names that group with the script's own reason."""
    settings = load_settings(read_stack_config("dev"))
    pool = azure_worker_pool(settings)
    conf = tmp_path / "etc"
    (conf / "groups").mkdir(parents=True)
    (conf / "worker.env").write_text(cloudinit.worker_env(pool, "127.0.0.1"))
    for g in pool.groups:
        (conf / "groups" / f"{g.arch}.env").write_text(cloudinit.group_env(g))
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    (binfmt / "qemu-arm").write_text(handler_file("PF"))
    (binfmt / "qemu-aarch64").write_text(handler_file("P"))
    systemctl = tmp_path / "systemctl"
    systemctl.write_text("#!/bin/sh\n")
    systemctl.chmod(0o755)
    env = {
        **os.environ,
        "OBS_FARM_CONF_DIR": str(conf),
        "OBS_FARM_RUN_DIR": str(tmp_path / "run"),
        "OBS_FARM_BINFMT_DIR": str(binfmt),
        "OBS_FARM_SYSTEMCTL": str(systemctl),
        "PATH": f"{sbin(tmp_path)}:{os.environ['PATH']}",
    }
    res = subprocess.run(
        [str(cloudinit.TEMPLATE_DIR / "obs-farm-worker-setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res
    text = (tmp_path / "run" / "worker-health.json").read_text()
    host = json.loads(text)["host"]
    machine = check.Machine("azure-x86", "azure", host, "10.40.16.4", ("x86_64", "aarch64"))
    result = check.evaluate_worker_health(machine, text)
    assert result.status == "FAIL", result
    assert "group aarch64 check-failed: " in result.reason
    assert "qemu-aarch64 lacks the F flag" in result.reason
    assert "x86_64" not in result.reason and "armv7hl" not in result.reason


def test_worker_health_goes_through_the_server(tmp_path, pools):
    """The worker hop's ssh command line, recorded by a stand-in ssh: the
    admin key and options apply to both hops, the server hop is a
    ProxyCommand with -W %h:%p, AWS machines log in as Debian's `admin`."""
    log = tmp_path / "ssh.log"
    fake = tmp_path / "ssh"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.stderr.write('connect failed: Connection refused\\n'); sys.exit(255)\n"
    )
    fake.chmod(0o755)
    server = check.Server("203.0.113.7", "obsadmin", 2222, "/k/id", ["StrictHostKeyChecking=no"])
    server.worker_base[0] = server.base[0] = str(fake)
    aws_group = check.GroupSpec("aarch64", "aarch64", "native", 1, (41201, 41201))
    aws = check.PoolSpec("aws-graviton", "aws", 0, 3, (aws_group,))
    workers = [
        check.Worker("idle", "i-0123456789abcdef0:aarch64-1", "aarch64", "http://10.41.0.9:41201"),
        check.Worker("idle", "vm0:x86_64-1", "x86_64", "http://10.40.16.4:41001"),
    ]
    status = "<workerstatus>" + "".join(
        f'<idle workerid="{w.workerid}" hostarch="{w.hostarch}" uri="{w.uri}"/>' for w in workers
    )
    status += "</workerstatus>"
    server.out = lambda script, timeout=120: status  # type: ignore[method-assign]
    results = check.check_worker_health(server, [*pools, aws], "obsadmin")
    assert [r.name for r in results] == [
        "worker health aws-graviton i-0123456789abcdef0",
        "worker health azure-x86 vm0",
    ]
    assert all(r.status == "FAIL" and "Connection refused" in r.reason for r in results)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    aws_call, azure_call = calls
    assert aws_call[-2:] == ["admin@10.41.0.9", "cat /run/obs-farm/worker-health.json"]
    assert azure_call[-2] == "obsadmin@10.40.16.4"
    assert azure_call[azure_call.index("-i") : azure_call.index("-i") + 2] == ["-i", "/k/id"]
    assert "StrictHostKeyChecking=no" in azure_call
    (proxy,) = [a for a in azure_call if a.startswith("ProxyCommand=")]
    assert proxy == (
        f"ProxyCommand={fake} -p 2222 -o BatchMode=yes -o ConnectTimeout=20 -i /k/id "
        "-o StrictHostKeyChecking=no -W %h:%p obsadmin@203.0.113.7"
    )


def test_arch_needs_build_and_a_served_arch(tmp_path, dev_outputs):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(dev_outputs))
    res = run_cli("dev", "--outputs", str(path), "--build", "--arch", "s390x")
    assert one_line_error(res) == (
        "./check: --arch s390x: this farm builds aarch64, armv7l, x86_64 (scheduler architectures)"
    )
    res = run_cli("dev", "--outputs", str(path), "--arch", "x86_64")
    assert res.returncode == 2 and "--arch needs --build" in res.stderr
    assert check.build_archs(check.pool_specs(dev_outputs["topology"]), ["x86_64", "armv7l"]) == [
        "armv7l",
        "x86_64",
    ]
