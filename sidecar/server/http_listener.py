"""The lifecycle shared by the sidecar's HTTP endpoints (management, OFREP)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpListener:
    """A threaded HTTP server on its own daemon thread; `port` is the bound port (0 → a free one)."""

    def __init__(
        self, host: str, port: int, handler: type[BaseHTTPRequestHandler], what: str, flag: str
    ) -> None:
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); "
                f"choose another with {flag}"
            ) from exc
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        # A short poll interval keeps shutdown (SIGTERM, tests) from waiting half a second.
        self._thread = threading.Thread(
            target=lambda: self.httpd.serve_forever(poll_interval=0.05), name=what, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
