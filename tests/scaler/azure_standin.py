"""A local stand-in of exactly the ARM endpoints obs_farm_scaler.azure calls.

It serves HTTPS on 127.0.0.1 (a free port, a throw-away self-signed
certificate: the SDK's bearer-token policy refuses plain HTTP) and a
managed-identity IMDS on plain HTTP. Every request must carry the API
version of the installed azure-mgmt-compute and the IMDS's token, and a
PATCH body is checked against that version's own models: unknown
properties, properties not writable on update, and a missing sku.capacity
are refused with 400 as ARM would. Responses are built as those models'
wire form. What it does not imitate: everything else of ARM (other
operations, asynchronous completion, quotas, zones, Spot eviction).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from azure.mgmt.compute import models
from azure.mgmt.compute.operations._operations import (
    build_virtual_machine_scale_sets_get_request,
)

TOKEN = "stand-in-token-" + secrets.token_hex(8)


def sdk_api_version() -> str:
    url = build_virtual_machine_scale_sets_get_request("rg", "n", "sub").url
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["api-version"][0]


def model_problems(cls: Any, data: Any, visibility: str, where: str = "") -> list[str]:
    """Keys of `data` that `cls` (an azure-mgmt-compute model) does not have or
    does not accept for `visibility` ("update", "read", ...), recursively."""
    if not isinstance(data, dict):
        return [f"{where or 'body'} must be an object"]
    cls()  # the SDK computes a model's field table when it is first instantiated
    fields = {rf._rest_name: rf for rf in cls._attr_to_rest_field.values()}
    problems = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        rf = fields.get(key)
        if rf is None:
            problems.append(f"unknown property {path} for {cls.__name__}")
            continue
        if rf._visibility and visibility not in rf._visibility:
            problems.append(f"{path} is not allowed on {visibility} (visibility {rf._visibility})")
        sub = getattr(rf, "_class_type", None)
        if getattr(rf, "_is_model", False) and isinstance(sub, type) and value is not None:
            problems += model_problems(sub, value, visibility, path)
    return problems


def self_signed(dirpath: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dirpath / "arm.pem", dirpath / "arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Vm:
    name: str
    computer_name: str
    created: float


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int

    def vms(self) -> list[str]:
        """The VMs a scale-set delete request names."""
        return list((self.body or {}).get("instanceIds", [])) if isinstance(self.body, dict) else []


@dataclass
class ScaleSet:
    subscription: str
    resource_group: str
    name: str
    capacity: int = 0
    vms: dict[str, Vm] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        )


class ArmStandIn:
    """One Flexible scale set. `on_create(vm)` / `on_delete(vm)` run when the
    stand-in creates (capacity up) or deletes a VM: the tests start and stop
    that "machine's" worker groups there."""

    def __init__(
        self,
        workdir: Path,
        scale_set: ScaleSet,
        on_create: Callable[[Vm], None] | None = None,
        on_delete: Callable[[Vm], None] | None = None,
    ):
        self.api_version = sdk_api_version()
        self.set = scale_set
        self.on_create = on_create
        self.on_delete = on_delete
        self.fail = False  # answer every ARM call with 500
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.cert, key = self_signed(workdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.arm = ThreadingHTTPServer(("127.0.0.1", 0), self._arm_handler())
        self.arm.socket = ctx.wrap_socket(self.arm.socket, server_side=True)
        self.imds = ThreadingHTTPServer(("127.0.0.1", 0), self._imds_handler())
        self.threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self.arm, self.imds)
        ]

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.arm.server_address[1]}"

    @property
    def imds_url(self) -> str:
        return f"http://127.0.0.1:{self.imds.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What the scaler process needs to talk to the stand-in."""
        return {
            "AZURE_RESOURCE_MANAGER_ENDPOINT": self.endpoint,
            "OBS_FARM_IMDS": self.imds_url,
            "REQUESTS_CA_BUNDLE": str(self.cert),
        }

    def __enter__(self) -> ArmStandIn:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.arm, self.imds):
            s.shutdown()
            s.server_close()

    # --- the scale set's behaviour ----------------------------------------

    def set_capacity(self, capacity: int) -> None:
        with self.lock:
            created = []
            while len(self.set.vms) < capacity:
                suffix = secrets.token_hex(4)
                vm = Vm(
                    f"{self.set.name}_{suffix}", f"{self.set.name[:9]}{suffix[:6]}", time.time()
                )
                self.set.vms[vm.name] = vm
                created.append(vm)
            self.set.capacity = capacity
        for vm in created:
            if self.on_create:
                self.on_create(vm)

    def delete_vm(self, name: str) -> bool:
        with self.lock:
            vm = self.set.vms.pop(name, None)
            if vm is not None:
                self.set.capacity = max(0, self.set.capacity - 1)
        if vm is not None and self.on_delete:
            self.on_delete(vm)
        return vm is not None

    def capacity_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH" and r.status == 200]

    def deletes(self) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.endswith("/delete") and r.status == 200
        ]

    # --- wire form ----------------------------------------------------------

    def vmss_json(self) -> dict[str, Any]:
        body = {
            "id": self.set.id,
            "name": self.set.name,
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "location": "westeurope",
            "sku": {"name": "Standard_D8ds_v5", "tier": "Standard", "capacity": self.set.capacity},
            "properties": {"orchestrationMode": "Flexible", "provisioningState": "Succeeded"},
        }
        assert not model_problems(models.VirtualMachineScaleSet, body, "read")
        return body

    def vm_json(self, vm: Vm) -> dict[str, Any]:
        rg = f"/subscriptions/{self.set.subscription}/resourceGroups/{self.set.resource_group}"
        body = {
            "id": f"{rg}/providers/Microsoft.Compute/virtualMachines/{vm.name}",
            "name": vm.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": "westeurope",
            "properties": {
                "osProfile": {"computerName": vm.computer_name},
                "provisioningState": "Succeeded",
                "timeCreated": dt.datetime.fromtimestamp(vm.created, dt.UTC).isoformat(),
                "virtualMachineScaleSet": {"id": self.set.id},
            },
        }
        assert not model_problems(models.VirtualMachine, body, "read")
        return body

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if query.get("api-version") != self.api_version:
            return 400, f"api-version {query.get('api-version')!r}; the SDK uses {self.api_version}"
        rg = f"/subscriptions/{self.set.subscription}/resourceGroups/{self.set.resource_group}/providers/Microsoft.Compute"
        if path == f"{rg}/virtualMachineScaleSets/{self.set.name}":
            if method == "GET":
                return 200, self.vmss_json()
            if method == "PATCH":
                problems = model_problems(models.VirtualMachineScaleSetUpdate, body, "update")
                capacity = (
                    (body.get("sku") or {}).get("capacity") if isinstance(body, dict) else None
                )
                if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
                    problems.append(
                        f"sku.capacity must be a non-negative integer; got {capacity!r}"
                    )
                if problems:
                    return 400, "; ".join(problems)
                models.VirtualMachineScaleSetUpdate(body)  # the SDK's own model takes it
                self.set_capacity(capacity)
                return 200, self.vmss_json()
        if path == f"{rg}/virtualMachines" and method == "GET":
            want = f"'virtualMachineScaleSet/id' eq '{self.set.id}'"
            if query.get("$filter") != want:
                return 400, f"$filter {query.get('$filter')!r}; expected {want!r}"
            with self.lock:
                vms = list(self.set.vms.values())
            return 200, {"value": [self.vm_json(v) for v in vms]}
        if path == f"{rg}/virtualMachineScaleSets/{self.set.name}/delete" and method == "POST":
            # The scale set's batch delete: what the scaler's role allows.
            problems = model_problems(
                models.VirtualMachineScaleSetVMInstanceRequiredIDs, body, "create"
            )
            ids = body.get("instanceIds") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not ids:
                problems.append(f"instanceIds must be a non-empty list; got {ids!r}")
            if problems:
                return 400, "; ".join(problems)
            missing = [vm for vm in ids if vm not in self.set.vms]
            if missing:
                return 404, f"no VM {', '.join(missing)} in {self.set.name}"
            for vm in ids:
                self.delete_vm(vm)
            return 200, None
        return 404, f"the stand-in does not serve {method} {path}"

    def _arm_handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = "<not json>"
                if standin.fail:
                    status, payload = 500, "stand-in told to fail"
                elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, payload = 401, "no or wrong bearer token"
                else:
                    status, payload = standin._route(self.command, split.path, query, body)
                standin.requests.append(
                    Request(time.time(), self.command, split.path, query, body, status)
                )
                if status >= 400:
                    payload = {"error": {"code": "StandIn", "message": payload}}
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_PUT = do_POST = _serve

        return Handler

    def _imds_handler(self) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(split.query)
                ok = (
                    split.path == "/metadata/identity/oauth2/token"
                    and self.headers.get("Metadata") == "true"
                    and "resource" in query
                )
                payload = (
                    {
                        "access_token": TOKEN,
                        "expires_in": "3600",
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": query["resource"][0],
                        "token_type": "Bearer",
                    }
                    if ok
                    else {"error": "invalid_request"}
                )
                data = json.dumps(payload).encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
