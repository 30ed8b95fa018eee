"""The worker provisioning script, its image version, and the two user-data
forms: stock (the script shipped and run first) and baked (without it).

The script runs for real with apt-get, systemctl and cloud-init replaced by
recorders on PATH; --deprovision runs against a scratch tree (OBS_FARM_ROOT),
never this machine's own /etc. Both user-data forms go through
`cloud-init schema` for every pool of every example stack.
"""

from __future__ import annotations

import inspect
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import botocore.session
import pytest
import yaml

import config.loader
from components import cloudinit, provision
from components.provision import (
    PROVISION_SCRIPT_INSTALL_PATH,
    image_content_hash,
    image_version,
    provision_packages,
    provision_script,
)
from components.topology import WorkerPool, server_private_ip, worker_pools
from config import load_settings
from config.limits import AWS_USER_DATA_LIMIT, AZURE_CUSTOM_DATA_LIMIT
from tests.conftest import raw_config
from tests.helpers.cloudinit import check_cloud_config, shellcheck, written_content
from tools.offline import read_stack_config

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
# The largest Graviton document: emulated armv7 on Graviton4 adds the qemu-arm
# rule and every check script.
EXTRA = {
    "graviton4-emulated-armv7": raw_config(
        mode="native",
        graviton={"instanceTypes": ["c8g.8xlarge"], "armv7hlEmulated": True},
        **{"aws:region": "eu-central-1"},
    )
}


def cases() -> list[tuple[str, WorkerPool, str, str | None]]:
    out = []
    configs = {s: read_stack_config(s) for s in STACKS} | EXTRA
    for name, raw in configs.items():
        s = load_settings(raw)
        for pool in worker_pools(s):
            # As __main__.py renders them: AWS machines get the login key in user-data.
            key = s.ssh_public_key if pool.cloud == "aws" else None
            out.append((f"{name}/{pool.name}", pool, server_private_ip(s), key))
    return out


CASES = cases()


def render(case, baked: bool) -> str:
    _, pool, ip, key = case
    return cloudinit.render_worker_user_data(pool, ip, key, baked=baked)


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    return request.param


# --- the two user-data forms -------------------------------------------------


def test_every_stack_has_pools_to_compare():
    names = {c[0] for c in CASES}
    assert {"dev/azure-x86", "hybrid/aws-graviton", "native/aws-graviton"} <= names


def test_baked_user_data_is_a_strict_subset_of_stock(case):
    stock = yaml.safe_load(render(case, baked=False))
    baked = yaml.safe_load(render(case, baked=True))
    # Nothing in baked that stock lacks, key by key.
    assert set(baked) <= set(stock)
    for key in set(baked) - {"write_files", "runcmd", "packages"}:
        assert baked[key] == stock[key], key
    assert all(entry in stock["write_files"] for entry in baked["write_files"])
    assert set(baked.get("packages", [])) <= set(stock.get("packages", []))
    # runcmd: the same commands in the same order, some left out.
    it = iter(stock["runcmd"])
    assert all(any(cmd == s for s in it) for cmd in baked["runcmd"]), (
        baked["runcmd"],
        stock["runcmd"],
    )
    # What stock has beyond baked is exactly the provisioning, run first.
    extra = [e for e in stock["write_files"] if e not in baked["write_files"]]
    assert [e["path"] for e in extra] == [PROVISION_SCRIPT_INSTALL_PATH]
    assert extra[0]["permissions"] == "0755"
    assert written_content(extra[0]) == provision_script()
    assert stock["runcmd"][0] == [PROVISION_SCRIPT_INSTALL_PATH]
    assert [c for c in stock["runcmd"] if c not in baked["runcmd"]] == [
        [PROVISION_SCRIPT_INSTALL_PATH]
    ]
    # Packages come from the script alone: cloud-init installs nothing itself.
    for doc in (stock, baked):
        assert not {"packages", "package_update", "package_upgrade"} & set(doc)
    # The per-pool configuration and the group start are in both.
    for doc in (stock, baked):
        paths = {e["path"] for e in doc["write_files"]}
        assert {"/etc/obs-farm/worker.env", "/usr/local/sbin/obs-farm-worker-setup"} <= paths
        assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "obs-farm-workers.service"]


def test_both_forms_are_valid_cloud_config(case):
    for baked in (False, True):
        assert check_cloud_config(render(case, baked)) == [], (case[0], baked)


def test_both_forms_fit_the_clouds_user_data_limits(case):
    _, pool, _, _ = case
    limit = AWS_USER_DATA_LIMIT if pool.cloud == "aws" else AZURE_CUSTOM_DATA_LIMIT
    stock, baked = (len(render(case, b).encode()) for b in (False, True))
    assert baked < stock <= limit, (case[0], stock, baked, limit)


def test_default_render_is_the_stock_form(case):
    _, pool, ip, key = case
    assert cloudinit.render_worker_user_data(pool, ip, key) == render(case, baked=False)


# --- the script, run for real ------------------------------------------------

RECORDER = r"""#!/bin/bash
# Records its call; fails while $SHIM_DIR/fail.<name> says so ("PATTERN COUNT").
name=$(basename "$0")
printf '%s %s | DEBIAN_FRONTEND=%s\n' "$name" "$*" "${DEBIAN_FRONTEND:-}" >>"$SHIM_DIR/calls"
fail="$SHIM_DIR/fail.$name"
if [ -f "$fail" ]; then
  read -r pattern count <"$fail"
  if [[ "$*" == *"$pattern"* ]] && [ "$count" -gt 0 ]; then
    echo "$pattern $((count - 1))" >"$fail"
    echo "$name: simulated failure" >&2
    exit 100
  fi
fi
"""
APT = "apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Recorders for every command that would change this machine."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("apt-get", "systemctl", "cloud-init", "dpkg"):
        (shims / name).write_text(RECORDER)
        (shims / name).chmod(0o755)
    return tmp_path


def script_file(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "obs-farm-provision-worker"
    path.write_text(provision_script() if text is None else text)
    path.chmod(0o755)
    return path


def run_script(
    host: Path, *args: str, text: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PATH": f"{host / 'shims'}:{os.environ['PATH']}",
        "SHIM_DIR": str(host / "shims"),
        "OBS_FARM_APT_RETRY_DELAY": "0",
        **env,
    }
    full.pop("DEBIAN_FRONTEND", None)  # the script must set it itself
    if "--deprovision" in args:
        # Never this machine's own files.
        assert full.get("OBS_FARM_ROOT", "").startswith(str(host)), (
            "deprovision needs a scratch root"
        )
    return subprocess.run(
        [str(script_file(host, text)), *args],
        capture_output=True,
        text=True,
        env=full,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def calls(host: Path) -> list[str]:
    path = host / "shims" / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_script_passes_shellcheck_rendered_and_as_a_template(tmp_path):
    rendered = script_file(tmp_path)
    assert rendered.read_text().startswith("#!/bin/bash\n")
    assert "\nset -euo pipefail\n" in rendered.read_text()
    assert shellcheck(rendered) == ""
    assert shellcheck(ROOT / provision.PROVISION_SCRIPT_PATH) == ""


def test_provisioning_installs_the_list_and_sets_up_the_services(host):
    res = run_script(host)
    assert res.returncode == 0, res.stderr
    nonint = " | DEBIAN_FRONTEND=noninteractive"
    assert calls(host) == [
        f"{APT} update{nonint}",
        f"{APT} install {' '.join(provision_packages())}{nonint}",
        f"systemctl disable --now obsworker.service{nonint}",
        f"systemctl enable --now docker.service{nonint}",
    ]
    assert f"provisioned ({len(provision_packages())} packages)" in res.stdout


def test_provisioning_twice_does_the_same_and_starts_no_worker(host):
    first = run_script(host)
    once = calls(host)
    second = run_script(host)
    assert (first.returncode, second.returncode) == (0, 0)
    assert calls(host) == once
    # No farm configuration, no group: those are the user-data's.
    assert not [c for c in once if "obs-farm" in c]


def test_apt_failures_are_retried_then_fail_the_script(host):
    (host / "shims" / "fail.apt-get").write_text("update 2\n")
    res = run_script(host)
    assert res.returncode == 0, res.stderr
    assert [c.split(" | ")[0].rsplit(" ", 1)[-1] for c in calls(host)][:3] == ["update"] * 3
    assert "failed (try 2 of 3)" in res.stderr

    (host / "shims" / "fail.apt-get").write_text("install 3\n")
    res = run_script(host)
    assert res.returncode == 1
    assert "failed (try 3 of 3)" in res.stderr
    # Nothing is enabled on a machine whose packages did not install.
    assert not [c for c in calls(host) if c.startswith("systemctl")]


def test_a_machine_without_debians_obsworker_unit_is_fine_but_docker_must_start(host):
    (host / "shims" / "fail.systemctl").write_text("obsworker 1\n")
    res = run_script(host)
    assert res.returncode == 0, res.stderr
    assert "no obsworker.service to disable" in res.stderr
    (host / "shims" / "fail.systemctl").write_text("docker 1\n")
    assert run_script(host).returncode != 0


def test_the_unrendered_template_refuses_to_run(host):
    res = run_script(host, text=(ROOT / provision.PROVISION_SCRIPT_PATH).read_text())
    assert res.returncode == 1
    assert "unrendered template" in res.stderr
    assert calls(host) == []


def test_unknown_arguments_are_a_usage_error(host):
    res = run_script(host, "--deprovison")
    assert res.returncode == 64 and "usage:" in res.stderr
    assert calls(host) == []


def scratch_machine(root: Path) -> None:
    """What a provisioned machine holds that an image must not carry."""
    files = {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "secret",
        "etc/ssh/ssh_host_ed25519_key.pub": "pub",
        "etc/ssh/ssh_host_rsa_key": "secret",
        "etc/ssh/sshd_config": "# kept\n",
        "etc/docker/key.json": "{}",
        "etc/docker/daemon.json": "{}",
        "root/.ssh/authorized_keys": "ssh-ed25519 AAAA bake",
        "home/debian/.ssh/authorized_keys": "ssh-ed25519 AAAA bake",
        "home/debian/.bash_history": "ls\n",
        "home/debian/.profile": "# kept\n",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease": "x",
        "var/lib/apt/lists/lock": "",
        "var/cache/apt/pkgcache.bin": "x",
        "var/cache/apt/archives/docker.io_20.10_amd64.deb": "x",
        "var/lib/systemd/random-seed": "x",
        "var/lib/dhcp/dhclient.eth0.leases": "x",
        "var/log/journal/0123456789abcdef0123456789abcdef/system.journal": "x",
        "usr/bin/docker": "kept",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")


def test_deprovision_leaves_nothing_machine_specific(host):
    root = host / "machine"
    scratch_machine(root)
    res = run_script(host, "--deprovision", OBS_FARM_ROOT=str(root))
    assert res.returncode == 0, res.stderr
    assert [c.split(" | ")[0] for c in calls(host)] == [
        "systemctl stop docker.service docker.socket",
        "cloud-init clean --logs --seed",
    ]
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "var/lib/dbus/machine-id").is_symlink()
    left = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert left == [
        "etc/docker/daemon.json",
        "etc/machine-id",
        "etc/ssh/sshd_config",
        "home/debian/.profile",
        "usr/bin/docker",
        "var/lib/apt/lists/lock",
    ]
    assert (root / "var/lib/apt/lists/partial").is_dir()
    # Again on the clean tree: nothing left to do, nothing fails.
    assert run_script(host, "--deprovision", OBS_FARM_ROOT=str(root)).returncode == 0


def test_deprovision_names_no_path_outside_its_root():
    body = provision_script().split("\ndeprovision() {", 1)[1].split("\n}\n", 1)[0]
    bare = re.findall(r"""(?<![\w"}/])/(?:etc|var|root|home|usr|tmp)\b\S*""", body)
    assert bare == []


# --- the image version -------------------------------------------------------


@pytest.fixture
def templates(tmp_path, monkeypatch) -> Path:
    """A copy of cloud-init/ that both renderers read from."""
    copy = tmp_path / "cloud-init"
    shutil.copytree(provision.TEMPLATE_DIR, copy)
    monkeypatch.setattr(provision, "TEMPLATE_DIR", copy)
    monkeypatch.setattr(cloudinit, "TEMPLATE_DIR", copy)
    return copy


def dev_pool() -> WorkerPool:
    return worker_pools(load_settings(read_stack_config("dev")))[0]


def test_version_follows_the_script_and_the_package_list_only(templates, monkeypatch):
    pool = dev_pool()
    h0, v0 = image_content_hash(), image_version()
    baked0 = cloudinit.render_worker_user_data(pool, "10.40.1.10", baked=True)

    # Everything else that shapes a worker: its user-data changes, the image does not.
    for name in ("worker.yaml", "obs-farm-worker.sh", "check-binfmt.sh", "obs-farm-evict.service"):
        with (templates / name).open("a") as f:
            f.write("\n# changed\n")
    monkeypatch.setattr(cloudinit, "worker_env", lambda p, a: f'# other\nREPO_SERVER="{a}"\n')
    assert cloudinit.render_worker_user_data(pool, "10.40.1.10", baked=True) != baked0
    assert cloudinit.render_worker_user_data(pool, "10.40.9.10") != baked0
    assert (image_content_hash(), image_version()) == (h0, v0)
    # A comment in the package list names no package.
    with (templates / "worker-packages.txt").open("a") as f:
        f.write("# a note\n\n")
    assert image_content_hash() == h0

    with (templates / "worker-packages.txt").open("a") as f:
        f.write("strace\n")
    h1, v1 = image_content_hash(), image_version()
    assert h1 != h0 and v1 != v0
    assert provision_packages()[-1] == "strace" and "  strace\n" in provision_script()

    with (templates / "provision-worker.sh").open("a") as f:
        f.write("# changed\n")
    assert image_content_hash() not in (h0, h1) and image_version() not in (v0, v1)


def test_package_list_mistakes_are_refused(templates):
    (templates / "worker-packages.txt").write_text("docker.io\ncurl\ndocker.io\n")
    with pytest.raises(ValueError, match="listed twice"):
        provision_packages()
    (templates / "worker-packages.txt").write_text("docker.io curl\n")
    with pytest.raises(ValueError, match="not a package name"):
        provision_packages()


def imagebuilder_version_rules() -> list[tuple[str, int]]:
    """(pattern, per-node maximum) of the semantic versions EC2 Image Builder
    takes for a component and an image recipe, from botocore's service model."""
    model = botocore.session.get_session().get_service_model("imagebuilder")
    rules = []
    for request in ("CreateComponentRequest", "CreateImageRecipeRequest"):
        shape = model.shape_for(request).members["semanticVersion"]
        limit = re.search(r"upper limit is 2\^30-1, or (\d+), for each node", shape.documentation)
        assert limit, shape.documentation
        rules.append((shape.metadata["pattern"], int(limit.group(1))))
    return rules


def azure_version_limit() -> int:
    """Azure Compute Gallery: `Major.Minor.Patch`, each a 32-bit integer (the SDK's docs)."""
    # The create operation's own docstring lost the rule in this SDK; the
    # shared-gallery read still states it for the same version names.
    from azure.mgmt.compute.operations import SharedGalleryImageVersionsOperations

    doc = " ".join(inspect.getdoc(SharedGalleryImageVersionsOperations.get).split())
    assert "must be within the range of a 32-bit integer" in doc, doc[:2000]
    assert "Format: <MajorVersion>.<MinorVersion>.<Patch>" in doc
    return 2**31 - 1


def check_version(version: str, aws: list[tuple[str, int]], azure_max: int) -> None:
    parts = [int(p) for p in version.split(".")]
    assert len(parts) == 3 and version == ".".join(str(p) for p in parts)  # no leading zeros
    assert all(0 <= p <= azure_max for p in parts), version
    for pattern, node_max in aws:
        assert re.fullmatch(pattern, version), (version, pattern)
        assert all(p <= node_max for p in parts), version


def test_version_is_valid_for_both_image_services():
    aws = imagebuilder_version_rules()
    azure_max = azure_version_limit()
    aws_max = min(m for _, m in aws)
    assert aws_max == 2**30 - 1 < azure_max
    check_version(image_version(), aws, azure_max)
    rng = random.Random(9)
    digests = ["f" * 64, "0" * 64] + [f"{rng.getrandbits(256):064x}" for _ in range(500)]
    versions = {provision.version_from_hash(d) for d in digests}
    for v in versions:
        check_version(v, aws, azure_max)
    assert provision.version_from_hash("f" * 64) == f"{aws_max}.{aws_max}.{aws_max}"
    assert provision.version_from_hash("0" * 64) == "0.0.0"
    assert len(versions) == len(digests)


# --- one package list for every pool -----------------------------------------

# What Debian 12's qemu-user-static registers on arm64 (its /usr/share/binfmts,
# read from the arm64 package installed in bench/arm64's image): every family
# but the host's own, so neither qemu-arm nor qemu-aarch64.
ARM64_QEMU_HANDLERS = [
    "alpha",
    "armeb",
    "cris",
    "hexagon",
    "hppa",
    "i386",
    "loongarch64",
    "m68k",
    "microblaze",
    "mips",
    "mips64",
    "mips64el",
    "mipsel",
    "mipsn32",
    "mipsn32el",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv32",
    "riscv64",
    "s390x",
    "sh4",
    "sh4eb",
    "sparc",
    "sparc32plus",
    "sparc64",
    "x86_64",
    "xtensa",
    "xtensaeb",
]
# The one ARM entry among them, as its binfmt.d file has it.
ARMEB_RULE = (
    r":qemu-armeb:M::\x7f\x45\x4c\x46\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    r"\x02\x00\x28:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe"
    r"\xff\xff:/usr/libexec/qemu-binfmt/armeb-binfmt-P:OPF"
)


def binfmt_matches(rule: str, data: bytes) -> bool:
    """Whether the kernel would hand `data` to this M-type binfmt_misc rule."""
    _, _, kind, offset, magic, mask, *_ = rule.split(":")
    assert kind == "M"

    def unhex(s: str) -> bytes:
        return s.encode().decode("unicode_escape").encode("latin-1")

    start, m, k = int(offset or 0), unhex(magic), unhex(mask)
    return all(data[start + i] & k[i] == m[i] for i in range(len(m)))


def test_qemu_is_in_the_one_package_list():
    assert {"qemu-user-static", "binfmt-support", "docker.io", "obs-worker"} <= set(
        provision_packages()
    )


def test_qemu_on_a_native_graviton_leaves_the_aarch32_check_meaningful(tmp_path):
    probe = cloudinit.aarch32_probe()
    # The kernel would run the probe natively: the only ARM rule Debian's
    # arm64 package adds is big-endian, which the probe is not...
    assert not binfmt_matches(ARMEB_RULE, probe)
    # ...while the farm's own qemu-arm rule would catch it (the match can fail).
    assert binfmt_matches(cloudinit.qemu_arm_binfmt_rule(), probe)
    assert "arm" not in ARM64_QEMU_HANDLERS and "aarch64" not in ARM64_QEMU_HANDLERS

    # Native Graviton pools write no qemu-arm rule, stock or baked.
    native = [c for c in CASES if c[0] in ("hybrid/aws-graviton", "native/aws-graviton")]
    assert len(native) == 2
    for c in native:
        for baked in (False, True):
            paths = {e["path"] for e in yaml.safe_load(render(c, baked))["write_files"]}
            assert cloudinit.QEMU_ARM_BINFMT_D not in paths
            assert "/usr/local/sbin/obs-farm-check-aarch32" in paths

    # The check itself, with those handlers registered: a CPU with AArch32
    # passes, one without is refused, exactly as without qemu-user-static.
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    for h in ARM64_QEMU_HANDLERS:
        (binfmt / f"qemu-{h}").write_text(f"enabled\ninterpreter /usr/libexec/qemu-binfmt/{h}\n")
    check = cloudinit.TEMPLATE_DIR / "check-aarch32.sh"
    for status, ok in ((42, True), (126, False)):
        stub = tmp_path / f"probe-{status}"
        stub.write_text(f"#!/bin/sh\nexit {status}\n")
        stub.chmod(0o755)
        env = {
            **os.environ,
            "OBS_FARM_BINFMT_DIR": str(binfmt),
            "OBS_FARM_AARCH32_PROBE": str(stub),
        }
        res = subprocess.run([str(check)], capture_output=True, text=True, env=env, timeout=30)
        assert (res.returncode == 0) is ok, res.stderr


def test_user_data_limits_still_hold_for_every_stack():
    # load_settings refuses a stack whose rendered user-data is too large.
    for raw in [read_stack_config(s) for s in STACKS] + list(EXTRA.values()):
        assert config.loader.user_data_errors(load_settings(raw)) == []
