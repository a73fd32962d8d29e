"""Mapping domain errors to gRPC status codes, in one place for every servicer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc

from ..runtime.records import AdminError, Declared, NotFound
from ..store.errors import StoreConflict, StoreFull, StoreUnavailable
from .metrics import Metrics

F = TypeVar("F", bound=Callable[..., Any])


class BadRequest(ValueError):
    """A request that fails validation before it reaches the domain."""


class _HasMetrics(Protocol):
    metrics: Metrics


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BadRequest(message)


def handled(method: F) -> F:
    """Turn domain exceptions into statuses (the domain never sees gRPC) and time the call."""
    name = method.__name__

    @functools.wraps(method)
    def run(self: _HasMetrics, request: Any, context: grpc.ServicerContext) -> Any:
        with self.metrics.child(self.metrics.rpc_seconds, name).time():
            try:
                return method(self, request, context)
            except NotFound as exc:
                code, message = grpc.StatusCode.NOT_FOUND, str(exc)
            except Declared as exc:
                code, message = grpc.StatusCode.FAILED_PRECONDITION, str(exc)
            except (AdminError, BadRequest) as exc:
                code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            except StoreFull as exc:  # the database's disk is full; space must be freed
                code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
            except StoreUnavailable as exc:  # shared mode: the database is away; retry later
                code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
            except StoreConflict as exc:  # shared mode: another sidecar changed it first
                code, message = grpc.StatusCode.ABORTED, str(exc)
        self.metrics.rpc_errors.labels(name, code.name).inc()
        context.abort(code, f"{name}: {message}")

    return run  # type: ignore[return-value]
