"""Domain errors to gRPC status codes: the one mapping at the gRPC edge.

The domain never sees gRPC. Each of its error classes has one status here (looked up along
the class's MRO, so the most specific class wins), and anything else is a bug: it is logged
once, with its traceback, and answered `INTERNAL` — never the `UNKNOWN` grpcio would send.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from ..engine import ErrorCode, UsageRejected
from ..runtime.serve.admin import AdminError, Declared, NotFound, Refused
from ..store.errors import StoreConflict, StoreFull, StoreUnavailable
from .metrics import Metrics

log = logging.getLogger("plangate.server")

F = TypeVar("F", bound=Callable[..., Any])


class BadRequest(ValueError):
    """A request that fails validation before it reaches the domain."""


STATUS_OF_ERROR: dict[type[Exception], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    Declared: grpc.StatusCode.FAILED_PRECONDITION,
    Refused: grpc.StatusCode.FAILED_PRECONDITION,  # design §6.1: one trial per account and plan
    AdminError: grpc.StatusCode.INVALID_ARGUMENT,
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UsageRejected: grpc.StatusCode.INVALID_ARGUMENT,
    StoreFull: grpc.StatusCode.RESOURCE_EXHAUSTED,  # the database's disk is full: free space
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,  # shared mode: the database is away; retry
    StoreConflict: grpc.StatusCode.ABORTED,  # shared mode: another sidecar changed it first
}

STATUS_OF_CODE: dict[ErrorCode, grpc.StatusCode] = {
    # OpenFeature evaluation errors, mapped as flagd maps them (its providers read these)
    ErrorCode.FLAG_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TARGETING_KEY_MISSING: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_CONTEXT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PARSE_ERROR: grpc.StatusCode.DATA_LOSS,
    # not UNKNOWN/UNAVAILABLE: the providers' retry policy would repeat a deterministic failure
    ErrorCode.GENERAL: grpc.StatusCode.INTERNAL,
}

INTERNAL_MESSAGE = "internal error in the sidecar; its log has the details"

STREAM_ENDED = "the sidecar is shutting down (or this stream fell behind); reconnect"
"""Why a change stream ends: with UNAVAILABLE, which every client treats as "reconnect"."""


class _HasMetrics(Protocol):
    metrics: Metrics


MAX_MESSAGE = 1000
"""Characters of an error message sent to a client. A message may quote the input; a 20 kB
id quoted whole made the status larger than the client's metadata limit, which then saw
RESOURCE_EXHAUSTED instead of the answer."""


def bounded(message: str) -> str:
    """`message`, cut to `MAX_MESSAGE` characters with its full length named."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}… (cut; {len(message)} characters)"


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BadRequest(message)


def status_of(exc: BaseException, name: str) -> tuple[grpc.StatusCode, str]:
    """The status and message that answer `exc` raised by RPC `name` (logs unexpected ones)."""
    for cls in type(exc).__mro__:
        code = STATUS_OF_ERROR.get(cls)
        if code is not None:
            return code, bounded(f"{name}: {exc}")
    log.error("%s failed", name, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{name}: {INTERNAL_MESSAGE}"


def _passes(exc: BaseException) -> bool:
    """An abort already made (context.abort raises to end the call): let it through."""
    return not isinstance(exc, Exception) or type(exc).__module__.startswith("grpc")


def handled(method: F) -> F:
    """Answer domain exceptions with their status, anything else with INTERNAL; time the call.

    Works for coroutine handlers (served on the event loop) and plain ones (served by the
    server's thread pool, off the loop).
    """
    name = method.__name__

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def run_async(
            self: _HasMetrics, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            with self.metrics.child(self.metrics.rpc_seconds, name).time():
                try:
                    return await method(self, request, context)
                except Exception as exc:
                    if _passes(exc):
                        raise
                    code, message = status_of(exc, name)
            self.metrics.rpc_errors.labels(name, code.name).inc()
            await context.abort(code, message)

        return run_async  # type: ignore[return-value]

    @functools.wraps(method)
    def run(self: _HasMetrics, request: Any, context: grpc.ServicerContext) -> Any:
        with self.metrics.child(self.metrics.rpc_seconds, name).time():
            try:
                return method(self, request, context)
            except Exception as exc:
                if _passes(exc):
                    raise
                code, message = status_of(exc, name)
        self.metrics.rpc_errors.labels(name, code.name).inc()
        _abort(context, code, message)

    return run  # type: ignore[return-value]


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")
