"""Cross-origin access to the OFREP port for browser providers (decision 2011).

A browser OFREP provider (`@openfeature/ofrep-web-provider`) runs in a page served from the
application's origin, not the sidecar's, so the browser lets it read OFREP answers only when the
port says that origin may (CORS). Off unless `--ofrep-cors-origins` names origins (or `*`):
a sidecar on loopback is not for arbitrary web pages, and the operator who puts one behind a
browser app says which.

For an allowed `Origin` every answer (the SSE stream included, so `EventSource` may read it)
carries `Access-Control-Allow-Origin` and exposes `ETag` (the provider sends it back as
`If-None-Match`); a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered 204
with the methods and headers OFREP requests use. No credentials: OFREP takes no cookies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import urlsplit

from aiohttp import web

from .http_listener import json_response

ANY = "*"
METHODS = "GET, POST, OPTIONS"
HEADERS = "Content-Type, If-None-Match, Authorization, Flagd-Selector, Last-Event-ID"
MAX_AGE = "600"  # s a browser may reuse a preflight answer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allowed_origins(configured: str) -> frozenset[str]:
    """The comma-separated `--ofrep-cors-origins`: `*`, or origins such as
    `https://app.example.com` (scheme, host and port only). `ValueError` names a bad one."""
    origins: set[str] = set()
    for item in configured.split(","):
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        if origin != ANY:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
                raise ValueError(
                    f"--ofrep-cors-origins: {item.strip()!r} is not an origin such as "
                    "https://app.example.com (scheme://host[:port], no path) or *"
                )
            origin = f"{parts.scheme}://{parts.netloc}".lower()
        origins.add(origin)
    return frozenset(origins)


class Cors:
    """The preflight middleware and the response hook of one set of allowed origins."""

    def __init__(self, origins: frozenset[str]) -> None:
        self.origins = origins

    def install(self, app: web.Application) -> None:
        """Answer preflights before routing's 404/405 and add the headers to every answer,
        streamed ones too (`on_response_prepare` runs before their headers are sent)."""
        app.middlewares.insert(0, self.preflight)
        app.on_response_prepare.append(self.add_headers)

    def allow(self, request: web.Request) -> str | None:
        """The `Access-Control-Allow-Origin` value for this request, None when not allowed."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if ANY in self.origins:
            return ANY
        return origin if origin.lower().rstrip("/") in self.origins else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if self.allow(request) is None:
            message = b'{"errorDetails":"this origin may not call OFREP (--ofrep-cors-origins)"}'
            return json_response(HTTPStatus.FORBIDDEN, message)
        return web.Response(
            status=HTTPStatus.NO_CONTENT,
            headers={
                "Access-Control-Allow-Methods": METHODS,
                "Access-Control-Allow-Headers": HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            },
        )

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = self.allow(request)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "ETag"
        if origin != ANY:
            response.headers.add("Vary", "Origin")
