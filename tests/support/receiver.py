"""A real HTTP webhook endpoint on 127.0.0.1 for quota and lifecycle webhook tests (design §7).

Records every POST with its path, headers, raw body and the status it answered: 200, or 503
while `down` or for the next `fail[account]` POSTs about that account. Signatures are checked
here with `hmac` directly, never with the sidecar's own code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.time() when the POST arrived
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def delivery(self) -> str:
        return self.headers["X-PlanGate-Delivery"]

    @property
    def type(self) -> str:
        return str(self.event["type"])

    def signed_with(self, secret: str) -> bool:
        stamp = self.headers["X-PlanGate-Timestamp"]
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + self.body, hashlib.sha256)
        return hmac.compare_digest(
            self.headers.get("X-PlanGate-Signature", ""), f"sha256={mac.hexdigest()}"
        )


class Receiver:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail: dict[str, int] = {}
        self.down = False  # every POST answers 503
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                account = json.loads(body).get("account", "")
                with outer._lock:
                    left = outer.fail.get(account, 0)
                    status = 503 if outer.down or left > 0 else 200
                    if left > 0:
                        outer.fail[account] = left - 1
                    call = Call(self.path, dict(self.headers), body, time.time(), status)
                    outer.calls.append(call)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def of(self, path: str, account: str, type: str = "") -> list[Call]:
        """The POSTs to `path` about `account` (of event `type`, if given), in arrival order."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.path == path
                and c.event.get("account") == account
                and (not type or c.type == type)
            ]

    def about(self, account: str, status: int | None = None) -> list[Call]:
        """The POSTs about `account` to any path (that were answered `status`, if given)."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.event.get("account") == account and (status is None or c.status == status)
            ]

    def wait(
        self,
        path: str,
        account: str,
        type: str,
        count: int = 1,
        timeout: float = 10.0,
        where: Callable[[Call], bool] = lambda c: True,
    ) -> list[Call]:
        """Poll until `count` matching POSTs arrived; AssertionError naming what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.of(path, account, type) if where(c)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.path, c.type) for c in self.of(path, account)]
                raise AssertionError(f"{count} x {type} to {path} not seen in {timeout}s: {seen}")
            time.sleep(0.02)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
