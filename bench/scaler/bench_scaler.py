"""Scaler benchmark: decision time and cloud calls per minute at steady state.

    venv/bin/python bench/scaler/bench_scaler.py [--polls 12]

For /workerstatus documents of 10, 100 and 1,000 workers (machines of the
CONTRACT's azure-x86 pool shape: 6 workers each, a third of them building,
jobs waiting for every architecture, no machine idle long enough to go) it
measures, on this machine:
- parse: the repserver XML into WorkerStatus;
- decide: the pure decision;
- poll: one whole Scaler.poll() (HTTP fetch of /workerstatus from a local
  server, the Azure SDK against the ARM stand-in with that many VMs, the AWS
  SDK against moto, decide, health file);
- cloud calls per minute at steady state, counted by the stand-ins
  (requests the ARM stand-in served, requests moto served), scaled to
  pollSeconds=5.
Not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scaler"))

from obs_farm_scaler.aws import AwsPool  # noqa: E402
from obs_farm_scaler.azure import AzurePool  # noqa: E402
from obs_farm_scaler.config import parse  # noqa: E402
from obs_farm_scaler.decide import decide  # noqa: E402
from obs_farm_scaler.loop import Scaler  # noqa: E402
from obs_farm_scaler.model import Observed  # noqa: E402
from obs_farm_scaler.repserver import parse_workerstatus  # noqa: E402

from tests.scaler.azure_standin import ArmStandIn, ScaleSet, Vm  # noqa: E402
from tests.scaler.helpers import make_group  # noqa: E402

CONTRACT = ROOT / "scaler" / "CONTRACT.md"
ARCHS = (("x86_64", "x86_64"), ("armv7hl", "armv7l"), ("aarch64", "aarch64"))


def workerstatus_xml(hosts: list[str]) -> bytes:
    lines = [f'<workerstatus clients="{len(hosts) * 6}">']
    for i, host in enumerate(hosts):
        for arch, hostarch in ARCHS:
            for n in (1, 2):
                wid = f"{host}:{arch}-{n}"
                uri = f"http://10.0.{i // 250}.{i % 250}:{41000 + n}"
                if (i + n) % 3 == 0:
                    lines.append(
                        f'<building workerid="{wid}" hostarch="{hostarch}" uri="{uri}" '
                        f'project="p" repository="r" package="pkg{i}" arch="{hostarch}" '
                        f'starttime="1700000000" jobid="{i:032x}"/>'
                    )
                else:
                    lines.append(f'<idle workerid="{wid}" hostarch="{hostarch}" uri="{uri}"/>')
    for _, hostarch in ARCHS:
        lines.append(f'<waiting arch="{hostarch}" jobs="{len(hosts)}"/>')
        lines.append(f'<blocked arch="{hostarch}" jobs="7"/>')
    lines.append("</workerstatus>")
    return "\n".join(lines).encode()


def serve(body: bytes) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=12, help="steady-state polls to count calls over")
    args = ap.parse_args()
    import logging
    import os

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.server import ThreadedMotoServer

    from tests.integration.scaler_farm import free_port

    raw = json.loads(CONTRACT.read_text().split("```json", 1)[1].split("```", 1)[0])
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    heads = ("workers", "parse ms", "decide ms", "poll ms", "ARM calls/min", "AWS calls/min")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (8, 9, 10, 8, 14, 14), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for n_workers in (10, 100, 1000):
            machines = max(1, round(n_workers / 6))
            raw["pools"][0]["max"] = machines
            raw["pools"][1]["aws"].update(
                autoScalingGroup=f"asg-{n_workers}", region="eu-central-1"
            )
            raw["bsdir"] = tmp
            make_group(endpoint, f"asg-{n_workers}")
            d = Path(tmp) / str(n_workers)
            d.mkdir()
            az = raw["pools"][0]["azure"]
            arm = ArmStandIn(d, ScaleSet(az["subscriptionId"], az["resourceGroup"], az["scaleSet"]))
            with arm:
                for k, v in {**arm.env(), "AZURE_POD_IDENTITY_AUTHORITY_HOST": arm.imds_url,
                             "AWS_ENDPOINT_URL": endpoint}.items():  # fmt: skip
                    os.environ[k] = v
                hosts = []
                for i in range(machines):
                    vm = Vm(f"{az['scaleSet']}_{i:06x}", f"vm{i:06x}", time.time())
                    arm.set.vms[vm.name] = vm
                    hosts.append(vm.computer_name)
                arm.set.capacity = machines
                body = workerstatus_xml(hosts)
                server = serve(body)
                raw["repserver"] = f"http://127.0.0.1:{server.server_address[1]}"
                settings = parse(raw)
                status = parse_workerstatus(body)
                azure, aws = AzurePool(settings.pools[0].azure), AwsPool(settings.pools[1].aws)
                scaler = Scaler(settings, {"azure-x86": azure, "aws-graviton": aws},
                                health_file=str(d / "health.json"))  # fmt: skip
                scaler.poll()  # warm up: token, connections, first decision
                pools = {"azure-x86": azure.observe(), "aws-graviton": aws.observe()}
                obs = Observed(status, pools, scaler.memory)
                t_parse = timed(lambda b=body: parse_workerstatus(b), 20)
                t_decide = timed(lambda o=obs, s=settings: decide(o, s, time.time()), 20)
                arm_before, aws_before = azure.calls, aws.calls
                arm_requests = len(arm.requests)
                t_poll = timed(scaler.poll, args.polls)
                per_min = 60 / settings.poll_seconds / args.polls
                arm_calls = (len(arm.requests) - arm_requests) * per_min
                assert azure.calls - arm_before == len(arm.requests) - arm_requests
                aws_calls = (aws.calls - aws_before) * per_min
                acts = [line.line() for line in decide(obs, settings, time.time()).pools]
                server.shutdown()
            print(f"{len(status.workers):>8} {t_parse * 1e3:>9.2f} {t_decide * 1e3:>10.2f} "
                  f"{t_poll * 1e3:>8.1f} {arm_calls:>14.0f} {aws_calls:>14.0f}")  # fmt: skip
            print(f"         steady state: {acts[0][:110]}")
    moto.stop()


if __name__ == "__main__":
    main()
