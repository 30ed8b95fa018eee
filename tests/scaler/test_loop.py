"""One poll of the loop with the real adapters: /workerstatus over HTTP from a
local server, the Azure SDK against the ARM stand-in, $bsdir on disk."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from obs_farm_scaler.azure import AzurePool
from obs_farm_scaler.config import parse
from obs_farm_scaler.loop import Scaler

from tests.scaler.azure_standin import ArmStandIn, ScaleSet
from tests.scaler.helpers import DEV_POOL


class Repserver:
    def __init__(self) -> None:
        self.body = b'<workerstatus clients="0"/>'
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def world(tmp_path, monkeypatch):
    rep = Repserver()
    (tmp_path / "bs" / "workers").mkdir(parents=True)
    with ArmStandIn(tmp_path, ScaleSet("sub", "rg", "vmss")) as arm:
        for k, v in {**arm.env(), "AZURE_POD_IDENTITY_AUTHORITY_HOST": arm.imds_url}.items():
            monkeypatch.setenv(k, v)
        settings = parse({"repserver": rep.url, "bsdir": str(tmp_path / "bs"), "idleMinutes": 0,
                          "pools": [DEV_POOL]})  # fmt: skip
        yield rep, arm, settings, tmp_path
    rep.server.shutdown()


def scaler(settings, tmp_path, clock, **kw) -> Scaler:
    pools = {"azure-x86": AzurePool(settings.pools[0].azure)}
    return Scaler(settings, pools, clock=clock, health_file=str(tmp_path / "h.json"), **kw)


def test_a_poll_scales_out_then_drains_and_deletes_an_idle_machine(world):
    rep, arm, settings, tmp_path = world
    now = [1000.0]
    s = scaler(settings, tmp_path, lambda: now[0])
    rep.body = b'<workerstatus><waiting arch="x86_64" jobs="1"/></workerstatus>'
    assert s.poll()
    assert arm.set.capacity == 1
    health = json.loads((tmp_path / "h.json").read_text())
    assert health["ok"] and health["pools"]["azure-x86"]["desired"] == 1
    (vm,) = arm.set.vms.values()
    h = vm.computer_name
    rep.body = (
        f'<workerstatus><idle workerid="{h}:x86_64-1" hostarch="x86_64" uri="http://10.1.0.4:41001"/>'
        f'<idle workerid="{h}:armv7hl-1" hostarch="armv7l" uri="http://10.1.0.4:41101"/>'
        f'<idle workerid="{h}:aarch64-1" hostarch="aarch64" uri="http://10.1.0.4:41201"/>'
        "</workerstatus>"
    ).encode()
    now[0] += 5
    assert s.poll()
    assert (tmp_path / "bs" / "workers" / "disable" / f"{h}:").exists()
    assert arm.deletes() == []
    now[0] += 20
    assert s.poll()
    assert [r.vms() for r in arm.deletes()] == [[vm.name]]
    assert arm.set.capacity == 0


def test_dry_run_changes_nothing(world):
    rep, arm, settings, tmp_path = world
    rep.body = b'<workerstatus><waiting arch="x86_64" jobs="1"/></workerstatus>'
    assert scaler(settings, tmp_path, lambda: 1000.0, dry_run=True).poll()
    assert arm.capacity_requests() == [] and arm.set.capacity == 0


def test_an_unreachable_repserver_makes_the_poll_incomplete(world):
    rep, arm, settings, tmp_path = world
    rep.server.shutdown()
    rep.server.server_close()
    s = scaler(settings, tmp_path, lambda: 1000.0)
    assert not s.poll()
    health = json.loads((tmp_path / "h.json").read_text())
    assert health["ok"] is False and health["lastSuccess"] is None
    assert health["pools"]["azure-x86"]["why"] == "repserver unreachable: nothing changes"
    assert {r.method for r in arm.requests} == {"GET"}


def test_a_restarted_scaler_remembers_what_it_drained(world):
    from obs_farm_scaler.repserver import Workers

    _, _, settings, tmp_path = world
    Workers(settings.bsdir).drain("vm7")
    assert dict(scaler(settings, tmp_path, lambda: 1000.0).memory.drained) == {"vm7": 0.0}
