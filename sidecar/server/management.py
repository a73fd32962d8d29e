"""Management HTTP (port 8014): /healthz, /readyz with a detail, /metrics in Prometheus text,
and the web console under /console/ (design §12, `console/`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .http_listener import json_response, serving_errors
from .metrics import Metrics

if TYPE_CHECKING:
    from .console.routes import Console

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def management_app(
    metrics: Metrics, readiness: Readiness, blocking: Executor, console: Console | None = None
) -> web.Application:
    """`readiness` reads the store (the outbox counts), so it runs on `blocking`, off the loop."""

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"ok\n", headers={"Content-Type": "text/plain"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        ready, detail = await asyncio.get_running_loop().run_in_executor(blocking, readiness)
        body = json.dumps({"ready": ready, **detail}, indent=2).encode()
        return json_response(200 if ready else 503, body)

    async def metrics_text(request: web.Request) -> web.StreamResponse:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def not_found(request: web.Request) -> web.StreamResponse:
        body = b"not found: try /healthz, /readyz, /metrics or /console/\n"
        return web.Response(status=404, body=body, headers={"Content-Type": "text/plain"})

    app = web.Application(middlewares=[serving_errors("management")])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    if console is not None:
        console.mount(app)
    app.router.add_route("*", "/{path:.*}", not_found)
    return app
