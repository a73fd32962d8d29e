"""Requests whose bytes are not the message they claim to be: INVALID_ARGUMENT, not UNKNOWN.

grpc.aio decodes a request before any handler runs and answers a decoding error `UNKNOWN`
(logging a traceback for each). This interceptor gives every method a decoder that hands
such bytes to the handler as an `Undecodable` marker instead, and a handler that refuses it
with INVALID_ARGUMENT. Serializers also pass already encoded responses through. A plain (thread-pool) handler stays plain, so it still runs off the
event loop; a streaming request is refused at its first undecodable message.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from ..engine import ErrorCode

if TYPE_CHECKING:  # generic only in the type stubs
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class Undecodable:
    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


_WITH_CONTEXT = ("/plangate.v1.Evaluation/", "/flagd.evaluation.")
"""Methods whose only nested field is an evaluation context."""


def _message(method: str, marker: Undecodable) -> str:
    """Why the request is refused. Nesting deeper than protobuf decodes (about 32 levels of
    Struct) can only be an evaluation's context on the evaluation methods: named as the
    OpenFeature `INVALID_CONTEXT` there, as OFREP and the engine's check name it."""
    if "MaxDepth" in str(marker.error):
        text = (
            f"{method}: the request is nested deeper than protobuf can decode; send a flatter value"
        )
        if method.startswith(_WITH_CONTEXT):
            return f"{ErrorCode.INVALID_CONTEXT.value}: {text} (the context)"
        return text
    return f"{method}: the request is not a valid protobuf message ({marker.error})"


def _decoder(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError as exc:
            return Undecodable(exc)

    return run


def _encoded_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A serializer that sends `bytes` as they are: a change event reaching thousands of
    streams is encoded once (`Watch`, flagd `EventStream`), not once per stream, and
    `EvaluateAll` answers with the joined encodings it caches."""

    def run(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return run


def _guard_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behaviour):

        async def run_async(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
            return await behaviour(request, context)

        return run_async
    if inspect.isasyncgenfunction(behaviour):

        async def run_gen(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
            async for item in behaviour(request, context):
                yield item

        return run_gen

    def run(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
        return behaviour(request, context)

    return run


def _guard_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """Streaming requests (reflection): the handler sees only decodable messages. Its kind
    (async generator or coroutine function) is kept: grpc.aio serves each kind differently."""

    async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def run_gen(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for item in behaviour(checked(requests, context), context):
                yield item

        return run_gen

    async def run(requests: AsyncIterator[Any], context: Any) -> Any:
        return await behaviour(checked(requests, context), context)

    return run


class RefuseUndecodable(_Interceptor):
    """Wraps each method's handler once: grpc.aio asks for the handler on every call, and
    building the wrappers (with their `inspect` checks) was a few percent of a unary call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}  # method -> (handler, wrapped)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _wrap(method: str, handler: _Handler) -> _Handler:
        deserialize = handler.request_deserializer
        assert deserialize is not None  # checked by the caller
        changes: dict[str, Any] = {"request_deserializer": _decoder(deserialize)}
        for name in ("unary_unary", "unary_stream"):
            behaviour = getattr(handler, name)
            if behaviour is not None:
                changes[name] = _guard_unary(method, behaviour)
        serialize = handler.response_serializer
        if serialize is not None:
            changes["response_serializer"] = _encoded_or(serialize)
        for name in ("stream_unary", "stream_stream"):
            behaviour = getattr(handler, name)
            if behaviour is not None:
                changes[name] = _guard_stream(method, behaviour)
        return handler._replace(**changes)  # type: ignore[attr-defined, no-any-return]
