"""SIGTERM's drain (design §2.1): every call that reached the sidecar before the signal is
answered, and what is left over is cut at once instead of holding the exit.

grpc.aio takes arrived calls from gRPC core one at a time, on the event loop; `server.stop()`
cancels (`CANCELLED`) every call that has arrived but was not taken yet. Under load that was a
usage report sent just before SIGTERM (issue 22, item 9; decision 1341). So before stopping, the
sidecar calls itself on a private socket, once per method (core queues the arrived calls of
each method apart, in arrival order), with a request no method can decode: refused before any
handler runs, so it changes nothing, and once every method has answered, every call that
arrived earlier is running. Then it waits for the calls in flight (all but
bidirectional streams, such as reflection's, which may idle forever), and only then cuts the
rest, so an idle stream no longer holds SIGTERM for the whole grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool

if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor

_UNDECODABLE = b"\xff\xff\xff\xff\x0f"
"""A request no protobuf message decodes (a truncated varint): `wire.RefuseUndecodable` (or
the token check before it) answers it without running the method."""

_POLL = 0.01


def _raw(data: bytes) -> bytes:
    return data


async def _refused(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], timeout: float) -> None:
    """Send the undecodable request; any answer (INVALID_ARGUMENT, UNAUTHENTICATED) says the
    call was taken, so every call of its method that arrived before it is too."""
    with contextlib.suppress(grpc.RpcError):
        await call(_UNDECODABLE, timeout=timeout)


class Drain:
    """Counts the calls in flight (`interceptor`) and stops a server without losing one."""

    def __init__(self) -> None:
        self.address = f"unix-abstract:plangate-drain-{os.getpid()}-{secrets.token_hex(8)}"
        self._bound = False
        self._methods: list[str] = []
        self._calls = 0
        self._lock = threading.Lock()  # plain handlers run on the server's thread pool
        self.interceptor = _Counting(self)

    def bind(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        """Listen on the private socket the barrier calls (Linux's abstract namespace: no file,
        nothing to clean up; where it is missing the drain simply goes without a barrier), for
        the methods of `services` (full names) with one request: those a call is taken for."""
        pool = descriptor_pool.Default()
        self._methods = [
            f"/{service}/{method.name}"
            for service in services
            for method in pool.FindServiceByName(service).methods
            if not method.client_streaming
        ]
        try:
            self._bound = server.add_insecure_port(self.address) != 0
        except RuntimeError:
            self._bound = False

    def enter(self) -> None:
        with self._lock:
            self._calls += 1

    def leave(self) -> None:
        with self._lock:
            self._calls -= 1

    async def stop(self, server: grpc.aio.Server, grace: float) -> None:
        """Take every call that has arrived, refuse new ones, give those in flight up to
        `grace` seconds, then cancel what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._bound:
            await self._barrier(grace)
        stopping = asyncio.ensure_future(server.stop(grace))  # refuses new calls at once
        while self._calls > 0 and loop.time() < deadline and not stopping.done():
            await asyncio.sleep(_POLL)
        await server.stop(0)  # what is left: streams that would idle through the grace
        await stopping

    async def _barrier(self, timeout: float) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            await asyncio.gather(
                *(_refused(channel.unary_unary(m, _raw, _raw), timeout) for m in self._methods)
            )


class _Counting(_Interceptor):
    """Wraps every handler but bidirectional streams' so that `Drain` knows the calls in
    flight; each method's wrapper is built once."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(details)
        if handler is None or handler.stream_stream is not None:
            return handler
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        changes = {
            name: _counted(self._drain, behaviour)
            for name in ("unary_unary", "unary_stream", "stream_unary")
            if (behaviour := getattr(handler, name)) is not None
        }
        wrapped: _Handler = handler._replace(**changes)  # type: ignore[attr-defined]
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


def _counted(drain: Drain, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """`behaviour` counted while it runs; its kind is kept (grpc.aio serves each differently)."""
    if inspect.iscoroutinefunction(behaviour):

        async def run_async(request: Any, context: Any) -> Any:
            drain.enter()
            try:
                return await behaviour(request, context)
            finally:
                drain.leave()

        return run_async
    if inspect.isasyncgenfunction(behaviour):

        async def run_async_gen(request: Any, context: Any) -> AsyncIterator[Any]:
            drain.enter()
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                drain.leave()

        return run_async_gen
    if inspect.isgeneratorfunction(behaviour):

        def run_gen(request: Any, context: Any) -> Iterator[Any]:
            drain.enter()
            try:
                yield from behaviour(request, context)
            finally:
                drain.leave()

        return run_gen

    def run(request: Any, context: Any) -> Any:
        drain.enter()
        try:
            return behaviour(request, context)
        finally:
            drain.leave()

    return run
