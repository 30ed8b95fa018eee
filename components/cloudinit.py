"""Render cloud-init user-data for the server and the worker pools (pure).

The documents are built from the real files in `cloud-init/`: YAML bases
that stay valid cloud-config on their own, shell scripts and unit files that
are shipped verbatim, and BSConfig.pm with @@MARKERS@@. Nothing secret is
rendered: the appliance's admin password is generated on the VM itself, and
a stack's TLS key reaches the server as a run command's protected parameter.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.provision import PROVISION_SCRIPT_INSTALL_PATH, provision_script
from components.topology import (
    REPSERVER_PORT,
    WorkerGroup,
    WorkerPool,
    scheduler_archs,
    server_private_ip,
    worker_cidrs,
)
from config.model import FarmSettings

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
# Azure attaches the data disk at LUN 0; its udev rules give it this name.
AZURE_DATA_DISK_DEVICE = "/dev/disk/azure/scsi1/lun0"
# Upstream's supported OBS for the appliance flavor: this repository for the
# server's Leap release, and its OBS_Server pattern.
APPLIANCE_REPO_URL = "https://download.opensuse.org/repositories/OBS:/Server:/2.10/15.6/"
APPLIANCE_REPO_ALIAS = "OBS_Server_2.10"
# Where the SUSE packages read BSConfig.pm (Debian: /etc/obs/BSConfig.pm).
APPLIANCE_BSCONFIG = "/usr/lib/obs/server/BSConfig.pm"

_MARKER = re.compile(r"@@[A-Z_]+@@")


def template(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text()


def fill(text: str, values: dict[str, str]) -> str:
    """Replace @@KEY@@ markers; fail on unknown or leftover markers."""
    for key, value in values.items():
        marker = f"@@{key}@@"
        if marker not in text:
            raise ValueError(f"template has no marker {marker}")
        text = text.replace(marker, value)
    left = _MARKER.findall(text)
    if left:
        raise ValueError(f"template markers left unfilled: {sorted(set(left))}")
    return text


def cidr_regex(cidr: str) -> str:
    """A regex matching exactly the IPv4 addresses in `cidr` (for $ipaccess)."""
    net = ipaddress.IPv4Network(cidr)
    octets = str(net.network_address).split(".")
    whole, bits = divmod(net.prefixlen, 8)
    parts = octets[:whole]
    if bits:
        lo = int(octets[whole])
        values = range(lo, lo + 2 ** (8 - bits))
        parts.append("(?:" + "|".join(str(v) for v in values) + ")")
    parts += [r"\d+"] * (4 - len(parts))
    return r"\.".join(parts)


FARM_PM_PATH = "/etc/obs-farm/farm.pm"


def render_bsconfig(
    settings: FarmSettings, bsdir: str = "/srv/obs", farm_pm: str = FARM_PM_PATH
) -> str:
    """BSConfig.pm from server-side settings only (see render_apply_farm)."""
    server_ip = server_private_ip(settings)
    return fill(
        template("BSConfig.pm"),
        {
            "SERVER_ADDRESS": server_ip,
            "SERVER_ADDRESS_RE": re.escape(server_ip),
            "FARM_PM": farm_pm,
            "BSDIR": bsdir,
        },
    )


def render_farm_pm(settings: FarmSettings) -> str:
    """The $ipaccess entries for every worker range, as a Perl hash."""
    lines = [f"  '{cidr_regex(c)}' => 'worker', # {c}" for c in worker_cidrs(settings)]
    # "+{": a hash, not a block, as the value `do FILE` returns.
    return "# Rendered by obs-farm: OBS worker ranges.\n+{\n" + "\n".join(lines) + "\n};"


def render_apply_farm(settings: FarmSettings) -> str:
    """The run-command script that hands the server what follows the workers."""
    return fill(
        template("apply-farm.sh"),
        {
            "SCHEDULER_ARCHS": " ".join(scheduler_archs(settings)),
            "FARM_PM_CONTENT": render_farm_pm(settings),
        },
    )


def _file(path: str, content: str, permissions: str = "0644") -> dict[str, Any]:
    return {"path": path, "content": content, "owner": "root:root", "permissions": permissions}


def _env(values: Mapping[str, str | int]) -> str:
    lines = [f'{k}="{v}"' for k, v in values.items()]
    return "# Rendered by obs-farm.\n" + "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the shipped files stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: dict[str, Any]) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)
    return "#cloud-config\n" + body


def _base(name: str) -> dict[str, Any]:
    doc = yaml.safe_load(template(name))
    if not isinstance(doc, dict):
        raise ValueError(f"cloud-init/{name} is not a mapping")
    return doc


def group_env(group: WorkerGroup) -> str:
    return _env(
        {
            "HOSTARCH": group.scheduler_arch,
            "INSTANCES": group.instances,
            "JOBS": group.jobs,
            "PORT_BASE": group.port_base,
            "EXECUTION": group.execution,
            "CHECK": group.check,
            "NATIVEONLY_UNLESS_AARCH32": int(group.arm32_guard),
            "HOSTLABELS": " ".join(group.hostlabels),
            "CACHE_SIZE_MB": group.cache_size_mb,
        }
    )


def worker_env(pool: WorkerPool, server_address: str) -> str:
    return _env(
        {
            "REPO_SERVER": f"http://{server_address}:{REPSERVER_PORT}",
            "WORK_DIR": pool.work_dir,
            "WORKER_CODE_DIR": "/var/lib/obs-farm/worker-code",
            "OBS_VM_TYPE": "none",
            "CLOUD": pool.cloud,
        }
    )


AARCH32_PROBE_PATH = "/usr/local/lib/obs-farm/aarch32-probe"
AARCH32_PROBE_STATUS = 42


def aarch32_probe() -> bytes:
    """A minimal static ARM EABI executable (ELF32) that exits with 42.

    Shipped as bytes rather than built on the worker: no 32-bit toolchain or
    armhf package is needed to ask the CPU whether it runs AArch32 code.
    """
    base = 0x10000
    code = b"".join(
        word.to_bytes(4, "little")
        for word in (
            0xE3A00000 | AARCH32_PROBE_STATUS,  # mov r0, #42
            0xE3A07001,  # mov r7, #1 (exit)
            0xEF000000,  # svc #0
        )
    )
    ehsize, phsize = 52, 32
    size = ehsize + phsize + len(code)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)  # ELF32, LSB, SysV
    fields = (
        (2, 2),  # e_type: EXEC
        (40, 2),  # e_machine: ARM
        (1, 4),  # e_version
        (base + ehsize + phsize, 4),  # e_entry
        (ehsize, 4),  # e_phoff
        (0, 4),  # e_shoff
        (0x05000000, 4),  # e_flags: EABI5
        (ehsize, 2),
        (phsize, 2),
        (1, 2),  # e_phnum
        (40, 2),  # e_shentsize
        (0, 2),  # e_shnum
        (0, 2),  # e_shstrndx
    )
    header = ident + b"".join(v.to_bytes(n, "little") for v, n in fields)
    # One PT_LOAD segment, readable and executable, holding the whole file.
    phdr = b"".join(v.to_bytes(4, "little") for v in (1, 0, base, base, size, size, 5, 0x1000))
    return header + phdr + code


def _needs(pool: WorkerPool, check: str) -> bool:
    return any(g.check.startswith(check) for g in pool.groups)


def _script(path: str, name: str) -> dict[str, Any]:
    return _file(path, template(name), "0755")


def _packed(path: str, name: str) -> dict[str, Any]:
    """A script gzipped (no timestamp, so renders are stable): user-data is scarce on AWS."""
    return _packed_text(path, template(name))


def _packed_text(path: str, text: str) -> dict[str, Any]:
    data = base64.b64encode(gzip.compress(text.encode(), 9, mtime=0)).decode()
    return {**_file(path, data, "0755"), "encoding": "gz+b64"}


# qemu-arm with F for armv7 on arm64 CPUs without AArch32 (Debian's
# qemu-user-static leaves it out on arm64). A binfmt.d entry, so that
# systemd-binfmt registers it again at every boot, before the worker groups
# start; the magic and mask are those of qemu's own qemu-binfmt-conf.sh.
QEMU_ARM_BINFMT_D = "/etc/binfmt.d/qemu-arm.conf"


def qemu_arm_binfmt_rule(
    name: str = "qemu-arm", interpreter: str = "/usr/bin/qemu-arm-static"
) -> str:
    magic = r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00"
    mask = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
    return f":{name}:M::{magic}:{mask}:{interpreter}:F\n"


def render_worker_user_data(
    pool: WorkerPool,
    server_address: str,
    ssh_public_key: str | None = None,
    baked: bool = False,
) -> str:
    """Worker cloud-init; `ssh_public_key` for clouds whose VMs get no login key.

    `baked`: the machine boots a worker image that already ran the
    provisioning script (components/provision.py); the document is then the
    stock one without the script and its run, nothing else removed.
    """
    doc = _base("worker.yaml")
    files = [
        _file("/etc/obs-farm/worker.env", worker_env(pool, server_address)),
        *(_file(f"/etc/obs-farm/groups/{g.arch}.env", group_env(g)) for g in pool.groups),
        _file("/etc/systemd/system/obs-farm-worker@.service", template("obs-farm-worker@.service")),
        _packed("/usr/local/sbin/obs-farm-worker", "obs-farm-worker.sh"),
        _packed("/usr/local/sbin/obs-farm-worker-setup", "obs-farm-worker-setup.sh"),
        _file("/etc/systemd/system/obs-farm-workers.service", template("obs-farm-workers.service")),
        _packed("/usr/local/sbin/obs-farm-evict", "obs-farm-evict.py"),
        _file("/etc/systemd/system/obs-farm-evict.service", template("obs-farm-evict.service")),
    ]
    if _needs(pool, "obs-farm-check-binfmt"):
        files.append(_packed("/usr/local/sbin/obs-farm-check-binfmt", "check-binfmt.sh"))
    if any(g.emulated and g.arch == "armv7hl" and g.host_arch == "aarch64" for g in pool.groups):
        files.append(_file(QEMU_ARM_BINFMT_D, qemu_arm_binfmt_rule()))
        # This boot's systemd-binfmt ran before the file existed.
        doc["runcmd"].insert(-1, ["/usr/lib/systemd/systemd-binfmt", QEMU_ARM_BINFMT_D])
    if _needs(pool, "obs-farm-check-aarch32") or any(g.arm32_guard for g in pool.groups):
        files.append(_packed("/usr/local/sbin/obs-farm-check-aarch32", "check-aarch32.sh"))
        probe = base64.b64encode(aarch32_probe()).decode()
        files.append({**_file(AARCH32_PROBE_PATH, probe, "0755"), "encoding": "b64"})
    if ssh_public_key:
        doc["ssh_authorized_keys"] = [ssh_public_key]
    if not baked:
        # Before everything else in runcmd: the units it enables need the packages.
        files.insert(0, _packed_text(PROVISION_SCRIPT_INSTALL_PATH, provision_script()))
        doc["runcmd"].insert(0, [PROVISION_SCRIPT_INSTALL_PATH])
    doc["write_files"] = files
    return _dump(doc)


def render_server_user_data(settings: FarmSettings) -> str:
    """The `backend` flavor: Debian 12 with Debian's obs-server (no frontend)."""
    doc = _base("server.yaml")
    env = {"DATA_DISK_DEVICE": AZURE_DATA_DISK_DEVICE}
    files = [
        _file("/etc/obs-farm/server.env", _env(env)),
        _file("/etc/obs-farm/BSConfig.pm", render_bsconfig(settings)),
        _script("/usr/local/sbin/obs-farm-prepare-data-disk", "prepare-data-disk.sh"),
        _script("/usr/local/sbin/obs-farm-server-setup", "obs-farm-server-setup.sh"),
    ]
    doc["write_files"] = files
    return _dump(doc)


def render_appliance_user_data(settings: FarmSettings) -> str:
    """The `appliance` flavor: openSUSE Leap 15.6 with upstream's OBS 2.10."""
    doc = _base("appliance.yaml")
    env = {
        "FLAVOR": "appliance",
        "DATA_DISK_DEVICE": AZURE_DATA_DISK_DEVICE,
        "OBS_REPO_URL": APPLIANCE_REPO_URL,
        "OBS_REPO_ALIAS": APPLIANCE_REPO_ALIAS,
    }
    doc["write_files"] = [
        _file("/etc/obs-farm/server.env", _env(env)),
        _file("/etc/obs-farm/BSConfig.pm", render_bsconfig(settings)),
        _script("/usr/local/sbin/obs-farm-prepare-data-disk", "prepare-data-disk.sh"),
        _script("/usr/local/sbin/obs-farm-appliance-setup", "appliance-setup.sh"),
    ]
    return _dump(doc)


def server_user_data(settings: FarmSettings) -> str:
    """The server's cloud-init for its `server.flavor`."""
    if settings.server.flavor == "appliance":
        return render_appliance_user_data(settings)
    return render_server_user_data(settings)
