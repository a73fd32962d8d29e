"""The flagd evaluation protocol (`flagd.evaluation.v2.Service` and `.v1.Service`), design §9.

Every OpenFeature flagd provider (Go, Java, JS, .NET, Python; RPC resolver) can point at a
sidecar unmodified. Translation only; the semantics are the engine's:

- The `targetingKey` of the request context is the account; the other attributes are the
  evaluation context (e.g. `requested`).
- Typed calls go through `resolve_as`, so each `Resolve<Type>` answers exactly the cell of
  the design §4 table the native API answers, and a type that does not fit is an error.
- Reasons are TARGETING_MATCH / DEFAULT / DISABLED, never STATIC: flagd providers cache
  STATIC results by flag key alone, which would hand one account's entitlement to the next.
  Every result carries a non-empty variant (the winning source, or "default"), because
  providers replace a DEFAULT/DISABLED result that has no variant with the caller's default.
- `ResolveObject` answers a `google.protobuf.Struct`, which cannot be a bare list. A list
  feature therefore resolves to its detail object (the §4 "detail" shape every other
  non-object feature resolves to as object), with the list under `"value"`:
  `{"feature": "integrations", "type": "list", "value": ["slack", ...], "has_access": ...}`.
- `ResolveAll` has no requested type: each feature reports its natural value (see
  `ofrep.natural_value`; metered features their `has_access`), lists again as their detail.
- Errors are gRPC statuses, mapped the way flagd maps them and the providers read them:
  FLAG_NOT_FOUND -> NOT_FOUND, TYPE_MISMATCH -> INVALID_ARGUMENT, PARSE_ERROR -> DATA_LOSS.
  A missing targeting key and a bad context are INVALID_ARGUMENT too (the protocol has no
  closer code); the status message starts with the OpenFeature code so logs say which.
- `EventStream` sends `provider_ready` first on every stream (providers report READY on it),
  then `configuration_change` with `{"flags": {key: {"type": "update"}}}` for catalog changes
  (the changed keys) and account changes (every key: flag keys are not account-specific),
  and `keep_alive` when idle.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc

from ...protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from ...protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from ...protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from ...protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from ...protocol.values import from_struct, to_struct
from ..catalog.model import Feature, FeatureType, thaw
from ..engine import (
    Decision,
    ErrorCode,
    EvaluationError,
    Kind,
    detail,
    evaluate,
    metadata,
    resolve_as,
)
from ..runtime.events import AccountChanged, CatalogChanged, Event, Subscriber
from ..runtime.state import LiveState
from .metrics import Metrics
from .ofrep import natural_value
from .targeting import split_targeting

STATUS_OF: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.FLAG_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.TYPE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TARGETING_KEY_MISSING: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_CONTEXT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PARSE_ERROR: grpc.StatusCode.DATA_LOSS,
    # not UNKNOWN/UNAVAILABLE: the providers' retry policy would repeat a deterministic failure
    ErrorCode.GENERAL: grpc.StatusCode.INTERNAL,
}


def split_context(context: Any) -> tuple[str, dict[str, Any]]:
    """(account id, other attributes) of a flagd request context Struct."""
    return split_targeting(from_struct(context))


def object_value(decision: Decision, feature: Feature) -> dict[str, Any]:
    """The object a flagd object resolution carries: a Struct, so a list comes as its detail."""
    if feature.type is FeatureType.LIST:
        value: Any = detail(decision)
    else:
        value = resolve_as(decision, feature, Kind.OBJECT)
    plain = thaw(value)
    assert isinstance(plain, dict)  # §4: object features hold objects; detail is an object
    return plain


class _Flagd:
    """The protocol, shared by v2 and v1 (same messages; v2 marks scalars `optional`)."""

    pb: Any  # the evaluation_pb2 module of the version served
    api: str  # metrics label

    def __init__(self, state: LiveState, metrics: Metrics, heartbeat: float = 5.0) -> None:
        self.state = state
        self.metrics = metrics
        self.heartbeat = heartbeat

    # -- single-flag resolution --------------------------------------------------------------

    def _resolve(
        self, method: str, request: Any, context: grpc.ServicerContext, kind: Kind
    ) -> tuple[Decision, Any]:
        """Evaluate and type the flag, or abort the call with the mapped status."""
        with self.metrics.rpc_seconds.labels(f"flagd.{method}").time():
            try:
                account, attributes = split_context(request.context)
                snap = self.state.snapshot
                decision = evaluate(snap, account, request.flag_key, attributes, self.state.clock())
                feature = snap.catalog.features[request.flag_key]
                if kind is Kind.OBJECT:
                    value: Any = object_value(decision, feature)
                else:
                    value = resolve_as(decision, feature, kind)
            except EvaluationError as exc:
                self._abort(method, context, exc)
        self.metrics.evaluations.labels(self.api, decision.reason.value).inc()
        return decision, value

    def _abort(self, method: str, context: grpc.ServicerContext, exc: EvaluationError) -> None:
        code = STATUS_OF.get(exc.code, grpc.StatusCode.INTERNAL)
        self.metrics.evaluation_errors.labels(self.api, exc.code.value).inc()
        self.metrics.rpc_errors.labels(f"flagd.{method}", code.name).inc()
        context.abort(code, f"{exc.code.value}: {exc.message}")

    @staticmethod
    def _common(decision: Decision) -> dict[str, Any]:
        return {
            "reason": decision.reason.value,
            "variant": decision.variant,
            "metadata": to_struct(metadata(decision)),
        }

    def ResolveBoolean(self, request: Any, context: grpc.ServicerContext) -> Any:
        decision, value = self._resolve("ResolveBoolean", request, context, Kind.BOOLEAN)
        return self.pb.ResolveBooleanResponse(value=value, **self._common(decision))

    def ResolveString(self, request: Any, context: grpc.ServicerContext) -> Any:
        decision, value = self._resolve("ResolveString", request, context, Kind.STRING)
        return self.pb.ResolveStringResponse(value=value, **self._common(decision))

    def ResolveInt(self, request: Any, context: grpc.ServicerContext) -> Any:
        decision, value = self._resolve("ResolveInt", request, context, Kind.INTEGER)
        return self.pb.ResolveIntResponse(value=value, **self._common(decision))

    def ResolveFloat(self, request: Any, context: grpc.ServicerContext) -> Any:
        decision, value = self._resolve("ResolveFloat", request, context, Kind.FLOAT)
        return self.pb.ResolveFloatResponse(value=value, **self._common(decision))

    def ResolveObject(self, request: Any, context: grpc.ServicerContext) -> Any:
        decision, value = self._resolve("ResolveObject", request, context, Kind.OBJECT)
        return self.pb.ResolveObjectResponse(value=to_struct(value), **self._common(decision))

    # -- every flag --------------------------------------------------------------------------

    def ResolveAll(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.metrics.rpc_seconds.labels("flagd.ResolveAll").time():
            try:
                account, attributes = split_context(request.context)
                results = self.state.evaluate_all(account, attributes)
            except EvaluationError as exc:
                self._abort("ResolveAll", context, exc)
            snap = self.state.snapshot
            out = self.pb.ResolveAllResponse(
                metadata=to_struct({"catalog_version": snap.catalog.version})
            )
            for key, result in results.items():
                feature = snap.catalog.features.get(key)
                if isinstance(result, EvaluationError) or feature is None:
                    continue  # as flagd does: a flag that cannot be resolved is left out
                try:
                    flag = self._any_flag(result, feature)
                except EvaluationError:
                    continue  # the catalog changed the feature's type under this request
                out.flags[key].CopyFrom(flag)
        self.metrics.evaluations.labels(f"{self.api}_all", "TARGETING_MATCH").inc(len(out.flags))
        return out

    def _any_flag(self, decision: Decision, feature: Feature) -> Any:
        flag = self.pb.AnyFlag(**self._common(decision))
        kind, value = natural_value(decision, feature)
        if kind is Kind.BOOLEAN:
            flag.bool_value = value
        elif kind is Kind.STRING:
            flag.string_value = value
        elif kind is Kind.INTEGER:
            flag.double_value = value
        else:
            flag.object_value.CopyFrom(to_struct(object_value(decision, feature)))
        return flag

    # -- events ------------------------------------------------------------------------------

    def EventStream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        subscriber = self.state.events.subscribe(self.heartbeat)
        context.add_callback(subscriber.close)
        self.metrics.watch_streams.inc()
        pb = self.pb
        try:
            yield pb.EventStreamResponse(type="provider_ready")
            for event in subscriber:
                if not context.is_active():
                    return
                if event is None:
                    yield pb.EventStreamResponse(type="keep_alive")
                    continue
                keys = self._changed_keys([event, *_pending(subscriber)])
                if keys:
                    data = {"flags": {key: {"type": "update"} for key in keys}}
                    yield pb.EventStreamResponse(type="configuration_change", data=to_struct(data))
        finally:
            subscriber.close()
            self.metrics.watch_streams.dec()

    def _changed_keys(self, events: list[Event]) -> list[str]:
        """Flag keys touched by a burst of events (a usage report per call would otherwise
        become one message per report on every stream)."""
        keys: dict[str, None] = {}
        for event in events:
            if isinstance(event, CatalogChanged):
                keys.update(dict.fromkeys(event.features))
            elif isinstance(event, AccountChanged):
                keys.update(dict.fromkeys(self.state.catalog.features))
        return list(keys)


def _pending(subscriber: Subscriber) -> list[Event]:
    """Events already queued behind the current one, taken without waiting."""
    out: list[Event] = []
    while True:
        try:
            out.append(subscriber.queue.get_nowait())
        except queue.Empty:
            return out


class FlagdV2Service(_Flagd, v2_grpc.ServiceServicer):
    """`flagd.evaluation.v2.Service`: what current flagd providers call."""

    pb = v2_pb
    api = "flagd_v2"


class FlagdV1Service(_Flagd, v1_grpc.ServiceServicer):
    """`flagd.evaluation.v1.Service`: for providers that still call v1."""

    pb = v1_pb
    api = "flagd_v1"


def add_flagd_services(
    server: grpc.Server, state: LiveState, metrics: Metrics, heartbeat: float
) -> list[str]:
    """Register both versions on `server`; returns their full names for reflection."""
    v2_grpc.add_ServiceServicer_to_server(FlagdV2Service(state, metrics, heartbeat), server)
    v1_grpc.add_ServiceServicer_to_server(FlagdV1Service(state, metrics, heartbeat), server)
    return [
        v2_pb.DESCRIPTOR.services_by_name["Service"].full_name,
        v1_pb.DESCRIPTOR.services_by_name["Service"].full_name,
    ]
