"""Offline plan: what `pulumi up` would build for a stack, before paying for it.

    python -m tools.plan STACK [--out DIR] [--workload NAME] [--json]
    python -m tools.plan --compare STACK STACK ... [--workload NAME]

Reads Pulumi.STACK.yaml, validates it, runs the program with the cloud
mocked, and prints the worker topology, resource counts by type and the
paths of the rendered cloud-init documents it wrote (decoded from the exact
customData the program registers). Bad config: the message and exit 2.
`--workload NAME` adds the rebuild estimate of workloads/NAME.yaml (see
estimate/), `--json` prints everything as JSON, `--compare` prints one
table of rebuild time and cost across stacks.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from components.topology import WorkerPool, worker_pools
from config import ConfigError, FarmSettings, load_settings
from estimate.farm import SimulationError
from estimate.workload import WorkloadError
from tools.offline import (
    ROOT,
    ProgramRun,
    StackFileError,
    read_stack_config,
    run_program,
    secret_keys_of,
)

# Where each kind of resource carries its cloud-init, as wire-name paths.
USER_DATA_PATHS = {
    "aws:ec2/launchTemplate:LaunchTemplate": ("userData",),
    "azure-native:compute:VirtualMachine": ("osProfile", "customData"),
    "azure-native:compute:VirtualMachineScaleSet": (
        "virtualMachineProfile",
        "osProfile",
        "customData",
    ),
}


def _dig(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


RUN_COMMAND = "azure-native:compute:VirtualMachineRunCommandByVirtualMachine"


def user_data_documents(run: ProgramRun) -> dict[str, str]:
    """File name -> what a VM runs: decoded cloud-init of every VM, scale set
    and launch template, and the server's run-command script."""
    docs = {}
    for res in run.resources:
        path = USER_DATA_PATHS.get(res.type)
        encoded = _dig(res.inputs, path) if path else None
        if encoded:
            docs[f"{res.name}.user-data"] = base64.b64decode(encoded).decode()
        if res.type == RUN_COMMAND:
            docs[f"{res.name}.sh"] = _dig(res.inputs, ("source", "script"))
    return docs


def _range(lo: int, hi: int) -> str:
    return f"{lo}..{hi}"


def topology_table(pools: list[WorkerPool]) -> list[str]:
    header = ("pool", "cloud", "vm size", "VMs", "arch", "execution", "per VM", "jobs", "instances")
    rows = [header]
    for pool in pools:
        for i, g in enumerate(pool.groups):
            first = i == 0
            rows.append(
                (
                    pool.name if first else "",
                    pool.cloud if first else "",
                    pool.vm_size if first else "",
                    _range(pool.min_vms, pool.max_vms) if first else "",
                    g.arch,
                    g.execution,
                    str(g.instances),
                    str(g.jobs),
                    _range(g.instances * pool.min_vms, g.instances * pool.max_vms),
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    vms = (sum(p.min_vms for p in pools), sum(p.max_vms for p in pools))
    inst = (
        sum(p.instances_per_vm * p.min_vms for p in pools),
        sum(p.instances_per_vm * p.max_vms for p in pools),
    )
    emu = (
        sum(p.emulated_per_vm * p.min_vms for p in pools),
        sum(p.emulated_per_vm * p.max_vms for p in pools),
    )
    lines.append(
        f"total: {_range(*vms)} VMs, {_range(*inst)} worker instances ({_range(*emu)} emulated)"
    )
    return lines


FLAVORS = {
    "appliance": "appliance: upstream's OBS 2.10 (API, web UI, backend) from OBS:Server:2.10 "
    "and the OBS_Server pattern, set up by setup-appliance.sh",
    "backend": "backend: Debian's obs-server 2.9.4, no API/web UI (serve a frontend elsewhere)",
}


def server_lines(settings: FarmSettings, run: ProgramRun) -> list[str]:
    """The server's flavor, the image the program registered, what is reachable."""
    vm = run.one("azure-native:compute:VirtualMachine")
    image = _dig(vm.inputs, ("storageProfile", "imageReference")) or {}
    urn = ":".join(str(image.get(k, "?")) for k in ("publisher", "offer", "sku", "version"))
    lines = [f"flavor {FLAVORS[settings.server.flavor]}", f"image {urn}"]
    if settings.server.flavor == "appliance":
        tls = (
            "the stack's certificate (obs-farm:tlsCertificate, key a secret, by run command)"
            if settings.tls_certificate
            else "self-signed, made on the server (/srv/obs/certs/server.crt)"
        )
        lines += [
            "web UI and API on https (443), published repositories on http (82), "
            "MariaDB data in /srv/obs/MySQL",
            f"HTTPS certificate: {tls}",
            "Admin password: generated on the server, /srv/obs/obs-farm/admin-password (root only)",
        ]
    return lines


def pool_images(settings: FarmSettings) -> list[dict[str, Any]]:
    """Per pool: what its machines boot, and the image build `pulumi up` runs."""
    from components.images import pool_image
    from components.provision import image_version

    version = image_version()
    out = []
    for pool in worker_pools(settings):
        image = pool_image(settings, pool.cloud)
        out.append(
            {
                "pool": pool.name,
                "kind": image.kind,
                "boots": image.describe(version),
                "userData": "baked" if image.baked else "stock",
                # Built during `pulumi up`; Azure's build script skips a
                # version the gallery already holds, and on AWS the image
                # resource is replaced only when its recipe version changes.
                "buildPending": version if image.kind == "baked" else None,
            }
        )
    return out


def image_lines(settings: FarmSettings) -> list[str]:
    lines = []
    for p in pool_images(settings):
        lines.append(f"{p['pool']}: {p['boots']}; {p['userData']} cloud-init")
        if p["buildPending"]:
            lines.append(
                f"  build pending: image version {p['buildPending']} is built during "
                f"`pulumi up` before the pool uses it (skipped if it exists already)"
            )
    return lines


def render(stack: str, settings: FarmSettings, run: ProgramRun, written: dict[str, Path]) -> str:
    out = [
        f"obs-farm offline plan for stack '{stack}' (Pulumi.{stack}.yaml)",
        f"mode {settings.mode}, location {settings.location}, "
        f"architectures {', '.join(settings.architectures)}",
        "No cloud was contacted: this is what `pulumi up` would create.",
        "",
    ]
    if settings.warnings:
        out += ["Warnings:", *(f"  ! {w}" for w in settings.warnings), ""]
    out += ["Worker topology:", *(f"  {line}" for line in topology_table(worker_pools(settings)))]
    out += ["", "Worker images:", *(f"  {line}" for line in image_lines(settings))]
    s = settings.server
    out += [
        "",
        f"Server: {s.vm_size}, private {run.outputs.get('serverPrivateIp')}, "
        + (
            f"data disk {s.existing_data_disk_id} attached on /srv/obs (existing)"
            if s.existing_data_disk_id
            else f"data disk {s.data_disk_size_gb} GiB Premium SSD on /srv/obs (in the kept "
            f"resource group, protected, kept on delete)"
        ),
        *(f"  {line}" for line in server_lines(settings, run)),
        f"SSH/HTTPS{'/82' if s.flavor == 'appliance' else ''} from: "
        f"{', '.join(settings.admin_cidrs) or 'nowhere (adminCidrs is empty)'}",
    ]
    if run.of_type("aws:ec2/vpnConnection:VpnConnection"):
        n = settings.network
        out.append(
            f"Link: site-to-site IPsec VPN, Azure {n.vpn_gateway_sku} active-active gateway "
            f"(ASN {n.azure_asn}) <-> AWS virtual private gateway (ASN {n.aws_asn}), "
            f"{len(run.of_type('azure-native:network:VirtualNetworkGatewayConnection'))} BGP "
            f"tunnels, {n.address_space} <-> {n.aws_vpc_cidr} learned both ways "
            f"(pre-shared keys are Pulumi secrets)"
        )
    sc = settings.scaler
    out.append(
        f"Scaler: on the server, every {sc.poll_seconds} s; removes a machine only after "
        f"draining it, idle {sc.idle_minutes} min (journalctl -u obs-farm-scaler)"
        if sc.enabled
        else "Scaler: off (scaler.enabled false): CPU rules only add machines, none removes any"
    )
    out += [""]
    counts = Counter(r.type for r in run.resources if not r.type.startswith("obs-farm:"))
    width = max(len(t) for t in counts)
    out.append(f"Resources ({sum(counts.values())}):")
    out += [f"  {t.ljust(width)}  {n}" for t, n in sorted(counts.items())]
    out += ["", "Cloud-init documents and the server's run-command scripts, written:"]
    out += [f"  {name}: {path}" for name, path in written.items()]
    return "\n".join(out)


def write_documents(docs: dict[str, str], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("*.user-data"), *out_dir.glob("*.sh")]:
        old.unlink()
    written = {}
    for name, text in sorted(docs.items()):
        path = out_dir / name
        path.write_text(text)
        written[name] = path
    return written


def plan(stack: str, out_dir: Path, stack_dir: Path = ROOT) -> str:
    raw = read_stack_config(stack, stack_dir)
    secrets = secret_keys_of(raw)
    settings = load_settings(raw, secrets)
    run = run_program(stack, raw, secret_keys=secrets)
    written = write_documents(user_data_documents(run), out_dir)
    return render(stack, settings, run, written)


def plan_json(
    stack: str, out_dir: Path, stack_dir: Path = ROOT, workload: str | None = None
) -> dict[str, Any]:
    """The plan as data (`--json`); with a workload, its rebuild estimate."""
    from estimate.cli import estimate_stack
    from estimate.report import to_json

    raw = read_stack_config(stack, stack_dir)
    settings = load_settings(raw)
    run = run_program(stack, raw)
    written = write_documents(user_data_documents(run), out_dir)
    counts = Counter(r.type for r in run.resources if not r.type.startswith("obs-farm:"))
    doc: dict[str, Any] = {
        "stack": stack,
        "mode": settings.mode,
        "location": settings.location,
        "architectures": list(settings.architectures),
        "warnings": list(settings.warnings),
        "topology": [p.to_output() for p in worker_pools(settings)],
        "images": pool_images(settings),
        "server": {
            "vmSize": settings.server.vm_size,
            "privateIp": run.outputs.get("serverPrivateIp"),
        },
        "resources": dict(sorted(counts.items())),
        "documents": {name: str(path) for name, path in written.items()},
    }
    if workload:
        doc["estimate"] = to_json(estimate_stack(stack, settings, workload))
    return doc


def _with_estimate(text: str, stack: str, stack_dir: Path, workload: str) -> str:
    from estimate.cli import estimate_stack
    from estimate.report import render_text

    settings = load_settings(read_stack_config(stack, stack_dir))
    return "\n".join([text, "", *render_text(estimate_stack(stack, settings, workload))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plan", description=__doc__.splitlines()[0])
    parser.add_argument("stack", nargs="?", help="stack name: reads Pulumi.STACK.yaml")
    parser.add_argument("--workload", help="add the rebuild estimate of workloads/NAME.yaml")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument(
        "--compare", nargs="+", metavar="STACK", help="rebuild time and cost across stacks"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write cloud-init (default build/plan/STACK)"
    )
    parser.add_argument(
        "--stack-dir", type=Path, default=ROOT, help="where Pulumi.STACK.yaml is (default: here)"
    )
    args = parser.parse_args(argv)
    if bool(args.stack) == bool(args.compare):
        parser.error("give a STACK or --compare STACK STACK ...")
    stack = args.stack or ""
    try:
        if args.compare:
            from estimate.cli import DEFAULT_WORKLOAD, compare

            for stack in args.compare:  # each validated, its name in any error
                load_settings(read_stack_config(stack, args.stack_dir))
            print(compare(args.compare, args.workload or DEFAULT_WORKLOAD, args.stack_dir))
            return 0
        out_dir = args.out or ROOT / "build" / "plan" / stack
        if args.json:
            doc = plan_json(stack, out_dir, args.stack_dir, args.workload)
            print(json.dumps(doc, indent=2))
        elif args.workload:
            text = plan(stack, out_dir, args.stack_dir)
            print(_with_estimate(text, stack, args.stack_dir, args.workload))
        else:
            print(plan(stack, out_dir, args.stack_dir))
    except StackFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SimulationError as err:
        print(f"error: no rebuild estimate: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"error: invalid stack config in Pulumi.{stack}.yaml:", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
