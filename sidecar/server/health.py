"""`grpc.health.v1.Health` on the event loop, whose Watch streams end with UNAVAILABLE at
shutdown like every other stream (design §2.1), instead of holding the drain to its limit."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2

from .errors import STREAM_ENDED


class HealthService(health_aio.HealthServicer):
    """grpcio's asyncio health servicer; a cancelled Watch costs a task, never a lock."""

    def __init__(self) -> None:
        super().__init__()
        self._closed = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((watch, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            closed.cancel()
        if self._closed.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
        await watch  # it ended by itself: let its outcome through

    async def close(self) -> None:
        """Shutdown: NOT_SERVING for every service, then every Watch ends."""
        await self.enter_graceful_shutdown()
        self._closed.set()
