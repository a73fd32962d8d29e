"""Management HTTP (port 8014): /healthz, /readyz with a detail, /metrics in Prometheus text."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .http_listener import HttpListener
from .metrics import Metrics

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class ManagementServer:
    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Readiness) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, "text/plain", b"ok\n")
                elif path == "/readyz":
                    ready, detail = outer.readiness()
                    body = json.dumps({"ready": ready, **detail}, indent=2).encode()
                    self._send(200 if ready else 503, "application/json", body)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer.metrics.registry))
                else:
                    self._send(404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes and probes every few seconds would drown the log

        self.metrics = metrics
        self.readiness = readiness
        self.listener = HttpListener(host, port, Handler, "management", "--management-port")
        self.port = self.listener.port
        self.start = self.listener.start
        self.stop = self.listener.stop
