"""What the sidecar's HTTP ports (management, OFREP) share: aiohttp on the event loop.

An idle HTTP connection is a few buffers, not a thread, so thousands of keep-alive clients
cost nothing (design §2.1). Errors have one home here: a handler that raises is logged once,
with its traceback, and answered 500 with a JSON body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger("plangate.http")

BACKLOG = 4096
"""Pending connections the kernel queues (capped by net.core.somaxconn): a burst of clients
connecting at once must not be refused while the loop accepts them."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


def serving_errors(what: str) -> Middleware:
    """Middleware: a bug in a handler still answers (500, JSON), or the client waits for its
    timeout; the log gets it once."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s %s failed", what, request.method, request.path)
            body = json.dumps({"errorDetails": "internal error in the sidecar; see its log"})
            return json_response(500, body.encode())

    return middleware


class HttpPort:
    """One aiohttp application on host:port; `port` is the bound port once started."""

    def __init__(self, app: web.Application, host: str, port: int, what: str, flag: str) -> None:
        self.app, self.host, self.port = app, host, port
        self.what, self.flag = what, flag
        # shutdown_timeout: in-flight requests get this long at shutdown (design §2.1: 5 s in all)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, backlog=BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise OSError(
                f"cannot listen on {self.host}:{self.port} for {self.what} "
                f"({exc.strerror or exc}); choose another with {self.flag}"
            ) from exc
        server = site._server  # the asyncio server: the only place the bound port is
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self.runner.cleanup()
