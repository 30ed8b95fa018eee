"""A local stand-in of the cloud instance metadata services the eviction
watcher reads (Azure IMDS scheduled events, AWS IMDSv2), plus a recorder of
the repserver's `/worker` calls for tests without a backend.

Shapes follow the clouds' documentation: Azure's Scheduled Events document
(`DocumentIncarnation`, `Events[]` with `EventId`, `EventType`,
`ResourceType`, `Resources`, `EventStatus`, `NotBefore`), the acknowledgement
body `{"StartRequests": [{"EventId": ...}]}`, and the `Metadata: true` header
it requires; AWS's IMDSv2 session token (PUT /latest/api/token with a TTL
header, then the token on every read; 401 without it) and 404 for a
metadata path with nothing to report.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "imds-test-token"


class MetadataStandIn:
    def __init__(self, vm_name: str = "") -> None:
        self.vm_name = vm_name
        self.azure_events: list[dict[str, Any]] = []
        self.aws: dict[str, str] = {}  # meta-data path -> body
        self.acks: list[dict[str, Any]] = []
        self.worker_calls: list[dict[str, str]] = []
        self.incarnation = 1
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path.startswith("/metadata/"):
                    if self.headers.get("Metadata") != "true":
                        return self._send(
                            400, '{"error": "Bad request. Required metadata header not specified"}'
                        )
                    if url.path == "/metadata/instance/compute/name":
                        return self._send(200, stand_in.vm_name)
                    if url.path == "/metadata/scheduledevents":
                        with stand_in.lock:
                            doc = {
                                "DocumentIncarnation": stand_in.incarnation,
                                "Events": stand_in.azure_events,
                            }
                        return self._send(200, json.dumps(doc))
                if url.path.startswith("/latest/meta-data/"):
                    if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                        return self._send(401)
                    with stand_in.lock:
                        body = stand_in.aws.get(url.path.removeprefix("/latest/meta-data/"))
                    return self._send(404) if body is None else self._send(200, body)
                if url.path == "/worker":
                    with stand_in.lock:
                        stand_in.worker_calls.append(dict(urllib.parse.parse_qsl(url.query)))
                    return self._send(200, '<status code="ok" />')
                return self._send(404)

            def do_PUT(self) -> None:
                if self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    return self._send(200, TOKEN)
                return self._send(400)

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if (
                    url.path == "/metadata/scheduledevents"
                    and self.headers.get("Metadata") == "true"
                ):
                    with stand_in.lock:
                        stand_in.acks.append(json.loads(body))
                    return self._send(200)
                return self._send(400)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> MetadataStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def azure_event(self, event_type: str, resources: list[str], **extra: Any) -> str:
        event_id = f"{event_type.lower()}-{self.incarnation + 1}"
        with self.lock:
            self.azure_events.append(
                {
                    "EventId": event_id,
                    "EventStatus": "Scheduled",
                    "EventType": event_type,
                    "ResourceType": "VirtualMachine",
                    "Resources": resources,
                    "NotBefore": "",
                    "Description": "",
                    "EventSource": "Platform",
                    "DurationInSeconds": -1,
                    **extra,
                }
            )
            self.incarnation += 1
        return event_id
