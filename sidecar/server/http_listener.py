"""What the sidecar's HTTP ports (management, OFREP) share: aiohttp on the event loop.

An idle HTTP connection is a few buffers, not a thread, so thousands of keep-alive clients
cost little (design §2.1) — but not nothing: each holds a file descriptor, and the process's
descriptors are shared with gRPC, the database and the catalog watcher. So every connection
is bounded (decision 1331): one that sends no complete request head within the idle time
(since it opened or since its last answer) is closed, which also ends slow "slowloris" heads;
a body not received within the body time is answered 408; and past the connection cap a new
connection is answered 503 and closed at once. Requests must name an allowed `Host`
(`hosts.py`).

Errors have one home here: a handler that raises is logged once, with its traceback, and
answered 500 with a JSON body; a malformed request is logged in one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from .hosts import host_allowed

log = logging.getLogger("plangate.http")

BACKLOG = 4096
"""Pending connections the kernel queues (capped by net.core.somaxconn): a burst of clients
connecting at once must not be refused while the loop accepts them."""

OPEN_PATH = "/healthz"
"""Answered for any `Host`: it says only "ok", and liveness probes may name the pod any way."""

PREREAD_BYTES = 1 << 20
"""Bodies up to this size are read by `_guards` (larger ones are refused by the handlers'
own size checks before they read)."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class HttpLimits:
    """The bounds of one HTTP port (settings `--http-*`, `--allowed-hosts`)."""

    idle_seconds: float = 60.0
    body_seconds: float = 10.0
    max_connections: int = 0  # 0: a quarter of the open-file limit
    allowed_hosts: frozenset[str] = frozenset()
    any_host: bool = False  # the connections port: called from outside, the signature authenticates

    def connection_cap(self) -> int:
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, soft // 4) if soft != resource.RLIM_INFINITY else 1 << 20


def json_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _refusal(status: int, message: str) -> web.Response:
    response = json_response(status, json.dumps({"errorDetails": message}).encode())
    response.force_close()
    return response


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


def _guards(limits: HttpLimits) -> Middleware:
    """Middleware run before any handler: the `Host` check, and the body read in full within
    `body_seconds` (handlers then read it from memory)."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if (
            request.path != OPEN_PATH
            and not limits.any_host
            and not host_allowed(host, limits.allowed_hosts)
        ):
            return _refusal(
                421,
                f"this sidecar does not answer for Host {(host or '')[:100]!r}; use 127.0.0.1 or "
                "localhost, or list the name in --allowed-hosts",
            )
        size = request.content_length
        if request.body_exists and (size is None or size <= PREREAD_BYTES):
            try:
                async with asyncio.timeout(limits.body_seconds):
                    await request.read()
            except TimeoutError:
                return _refusal(
                    408, f"the request body did not arrive within {limits.body_seconds:g} s"
                )
        return await handler(request)

    return middleware


class _OneLine(logging.Filter):
    """aiohttp logs a malformed request with its whole traceback; one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            text = " ".join(str(exc).split())[:200]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


_SERVER_LOG = logging.getLogger("plangate.http.wire")
_SERVER_LOG.addFilter(_OneLine())

_BUSY = b"too many open connections to this port; retry shortly"


class _Busy(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed, never read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = json.dumps({"errorDetails": _BUSY.decode()}).encode()
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        transport.close()


class _CappedSite(web.BaseSite):
    """A TCP site whose connections beyond `cap` get `_Busy`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, cap: int) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._cap = host, port, cap

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        cap = self._cap

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= cap:
                return _Busy()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port, backlog=BACKLOG)


class HttpPort:
    """One aiohttp application on host:port; `port` is the bound port once started."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        what: str,
        flag: str,
        limits: HttpLimits | None = None,
    ) -> None:
        self.app, self.host, self.port = app, host, port
        self.what, self.flag = what, flag
        self.limits = limits or HttpLimits()
        app.middlewares.insert(0, _guards(self.limits))
        # shutdown_timeout: in-flight requests get this long at shutdown (design §2.1: 5 s in all)
        self.runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=self.limits.idle_seconds,
            logger=_SERVER_LOG,
        )

    async def start(self) -> None:
        await self.runner.setup()
        site = _CappedSite(self.runner, self.host, self.port, self.limits.connection_cap())
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
