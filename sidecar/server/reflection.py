"""Server reflection whose streams end at shutdown, like every other stream (design §2.1).

grpcio's reflection servicer keeps a stream open for as long as its client does, so an idle
reflection stream (a `grpcurl` session, an IDE) held SIGTERM for the whole grace period. This
one ends its streams with UNAVAILABLE when the sidecar closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .errors import STREAM_ENDED

_AioReflection: Any = getattr(reflection, "aio").ReflectionServicer  # noqa: B009 (not in the stubs)


class Reflection(_AioReflection):
    def __init__(self, service_names: Sequence[str]) -> None:
        super().__init__(service_names)
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every reflection stream (on the loop)."""
        self._closing.set()

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        answers = super().ServerReflectionInfo(request_iterator, context).__aiter__()
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                step = asyncio.ensure_future(answers.__anext__())
                await asyncio.wait({step, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    break
                try:
                    answer = step.result()
                except StopAsyncIteration:
                    return
                yield answer
        finally:
            closing.cancel()
        await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> Reflection:
    servicer = Reflection([*service_names, reflection.SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    return servicer
