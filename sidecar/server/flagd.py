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
  at most one per stream per `stream_coalesce_seconds` (decision 1310), and `keep_alive`
  when idle.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from ...protocol.values import to_struct
from ..catalog.model import Feature, FeatureType, thaw
from ..engine import (
    CALLER_DEFAULT,
    Decision,
    EvaluationError,
    Kind,
    detail,
    metadata,
    resolve_as,
)
from ..engine.request import split_targeting
from ..protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from ..protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from ..protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from ..protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from ..runtime.live.events import AccountChanged, CatalogChanged, Event, EventHub
from ..runtime.serve.decisions import Decisions
from .convert import plain_struct
from .errors import STATUS_OF_CODE, STREAM_ENDED, bounded, status_of
from .metrics import Metrics
from .ofrep import natural_value
from .selector import from_metadata

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]


def split_context(context: Any) -> tuple[str, dict[str, Any]]:
    """(account id, other attributes) of a flagd request context Struct; the rules are the
    engine's (`engine/request.py`), the same for every face."""
    return split_targeting(plain_struct(context))


def object_value(decision: Decision, feature: Feature) -> Any:
    """The object a flagd object resolution carries: a Struct, so a list comes as its detail
    (or `CALLER_DEFAULT`: no value, decision 2000)."""
    if decision.caller_default:
        return resolve_as(decision, feature, Kind.OBJECT)  # the type check, then no value
    if feature.type is FeatureType.LIST:
        value: Any = detail(decision)
    else:
        value = resolve_as(decision, feature, Kind.OBJECT)
    plain = thaw(value)
    assert isinstance(plain, dict)  # §4: object features hold objects; detail is an object
    return plain


def _value(value: Any) -> dict[str, Any]:
    """The response's `value` field: absent for the caller's default (decision 2000), which the
    flagd providers read, with reason DEFAULT/DISABLED and an empty variant, as theirs."""
    return {} if value is CALLER_DEFAULT else {"value": value}


class _Flagd:
    """The protocol, shared by v2 and v1 (same messages; v2 marks scalars `optional`)."""

    pb: Any  # the evaluation_pb2 module of the version served
    api: str  # metrics label

    def __init__(
        self, decisions: Decisions, events: EventHub, metrics: Metrics, heartbeat: float = 5.0
    ) -> None:
        self.decisions = decisions
        self.events = events
        self.metrics = metrics
        self.heartbeat = heartbeat

    # -- single-flag resolution --------------------------------------------------------------

    async def _resolve(
        self, method: str, request: Any, context: _Context, kind: Kind
    ) -> tuple[Decision, Any]:
        """Evaluate and type the flag, or abort the call with the mapped status."""
        with self.metrics.rpc_seconds.labels(f"flagd.{method}").time():
            try:
                account, attributes = split_context(request.context)
                await self.decisions.loads.hold(account)
                found = self.decisions.evaluate(account, request.flag_key, attributes)
                if kind is Kind.OBJECT:
                    value: Any = object_value(found.decision, found.feature)
                else:
                    value = resolve_as(found.decision, found.feature, kind)
            except EvaluationError as exc:
                await self._abort(method, context, exc)
            except Exception as exc:  # a bug: logged once, answered INTERNAL
                await self._fail(method, context, exc)
        self.metrics.evaluations.labels(self.api, found.decision.reason.value).inc()
        return found.decision, value

    async def _abort(self, method: str, context: _Context, exc: EvaluationError) -> None:
        code = STATUS_OF_CODE.get(exc.code, grpc.StatusCode.INTERNAL)
        self.metrics.evaluation_errors.labels(self.api, exc.code.value).inc()
        self.metrics.rpc_errors.labels(f"flagd.{method}", code.name).inc()
        await context.abort(code, bounded(f"{exc.code.value}: {exc.message}"))

    async def _fail(self, method: str, context: _Context, exc: Exception) -> None:
        code, message = status_of(exc, f"flagd.{method}")
        self.metrics.rpc_errors.labels(f"flagd.{method}", code.name).inc()
        await context.abort(code, message)

    @staticmethod
    def _common(decision: Decision) -> dict[str, Any]:
        return {
            "reason": decision.reason.value,
            "variant": decision.variant,
            "metadata": to_struct(metadata(decision)),
        }

    async def ResolveBoolean(self, request: Any, context: _Context) -> Any:
        decision, value = await self._resolve("ResolveBoolean", request, context, Kind.BOOLEAN)
        return self.pb.ResolveBooleanResponse(**_value(value), **self._common(decision))

    async def ResolveString(self, request: Any, context: _Context) -> Any:
        decision, value = await self._resolve("ResolveString", request, context, Kind.STRING)
        return self.pb.ResolveStringResponse(**_value(value), **self._common(decision))

    async def ResolveInt(self, request: Any, context: _Context) -> Any:
        decision, value = await self._resolve("ResolveInt", request, context, Kind.INTEGER)
        return self.pb.ResolveIntResponse(**_value(value), **self._common(decision))

    async def ResolveFloat(self, request: Any, context: _Context) -> Any:
        decision, value = await self._resolve("ResolveFloat", request, context, Kind.FLOAT)
        return self.pb.ResolveFloatResponse(**_value(value), **self._common(decision))

    async def ResolveObject(self, request: Any, context: _Context) -> Any:
        decision, value = await self._resolve("ResolveObject", request, context, Kind.OBJECT)
        if value is not CALLER_DEFAULT:
            value = to_struct(value)
        return self.pb.ResolveObjectResponse(**_value(value), **self._common(decision))

    # -- every flag --------------------------------------------------------------------------

    async def ResolveAll(self, request: Any, context: _Context) -> Any:
        with self.metrics.rpc_seconds.labels("flagd.ResolveAll").time():
            try:
                account, attributes = split_context(request.context)
                product = from_metadata(context.invocation_metadata())
                await self.decisions.loads.hold(account)
                found = self.decisions.evaluate_all(account, attributes, product)
                out = self.pb.ResolveAllResponse(
                    metadata=to_struct({"catalog_version": found.catalog_version})
                )
                for key, result in found.results.items():
                    if isinstance(result, EvaluationError):
                        continue  # as flagd does: a flag that cannot be resolved is left out
                    name = result.feature.slug if product else key  # decision 2007
                    out.flags[name].CopyFrom(self._any_flag(result.decision, result.feature))
            except EvaluationError as exc:
                await self._abort("ResolveAll", context, exc)
            except Exception as exc:
                await self._fail("ResolveAll", context, exc)
        self.metrics.evaluations.labels(f"{self.api}_all", "TARGETING_MATCH").inc(len(out.flags))
        return out

    def _any_flag(self, decision: Decision, feature: Feature) -> Any:
        flag = self.pb.AnyFlag(**self._common(decision))
        kind, value = natural_value(decision, feature)
        if value is CALLER_DEFAULT:
            pass  # decision 2000: no value, the caller's default
        elif kind is Kind.BOOLEAN:
            flag.bool_value = value
        elif kind is Kind.STRING:
            flag.string_value = value
        elif kind is Kind.INTEGER or kind is Kind.FLOAT:
            flag.double_value = value
        else:
            flag.object_value.CopyFrom(to_struct(object_value(decision, feature)))
        return flag

    # -- events ------------------------------------------------------------------------------

    async def EventStream(self, request: Any, context: _Context) -> AsyncIterator[Any]:
        try:
            product = from_metadata(context.invocation_metadata())
        except EvaluationError as exc:
            await self._abort("EventStream", context, exc)
        subscriber = self.events.subscribe(self.heartbeat)
        self.metrics.watch_streams.inc()
        pb = self.pb
        try:
            if subscriber.ended:
                await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
            yield pb.EventStreamResponse(type="provider_ready")
            async for batch in subscriber:  # broad: account changes come coalesced
                if batch is None:
                    yield pb.EventStreamResponse(type="keep_alive")
                    continue
                keys = self._changed_keys(batch, product)
                if keys:
                    yield _configuration_change(pb.EventStreamResponse, tuple(keys))
        finally:
            subscriber.close()
            self.metrics.watch_streams.dec()
        await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)

    def _changed_keys(self, events: list[Event], product: str | None = None) -> list[str]:
        """Flag keys touched by a batch of events, sent as one message; under a selector,
        only `product`'s, by their own slugs (decision 2007)."""
        keys: dict[str, None] = {}
        for event in events:
            if isinstance(event, CatalogChanged):
                keys.update(dict.fromkeys(event.features))
            elif isinstance(event, AccountChanged):
                keys.update(dict.fromkeys(self.decisions.catalog.features))
        if product is None:
            return list(keys)
        features = self.decisions.catalog.features
        return [
            f.slug
            for f in (features.get(k) for k in keys)
            if f is not None and f.product == product
        ]


class FlagdV2Service(_Flagd, v2_grpc.ServiceServicer):
    """`flagd.evaluation.v2.Service`: what current flagd providers call."""

    pb = v2_pb
    api = "flagd_v2"


class FlagdV1Service(_Flagd, v1_grpc.ServiceServicer):
    """`flagd.evaluation.v1.Service`: for providers that still call v1."""

    pb = v1_pb
    api = "flagd_v1"


def add_flagd_services(
    server: grpc.aio.Server,
    decisions: Decisions,
    events: EventHub,
    metrics: Metrics,
    heartbeat: float,
) -> list[str]:
    """Register both versions on `server`; returns their full names for reflection."""
    v2_grpc.add_ServiceServicer_to_server(
        FlagdV2Service(decisions, events, metrics, heartbeat), server
    )
    v1_grpc.add_ServiceServicer_to_server(
        FlagdV1Service(decisions, events, metrics, heartbeat), server
    )
    return [
        v2_pb.DESCRIPTOR.services_by_name["Service"].full_name,
        v1_pb.DESCRIPTOR.services_by_name["Service"].full_name,
    ]


@functools.lru_cache(maxsize=64)
def _configuration_change(response: type[Any], keys: tuple[str, ...]) -> bytes:
    """The `configuration_change` message for `keys`, built once for every stream that gets it:
    a change naming all 50 flags reaches a thousand streams, and a Struct of them per stream was
    a sixth of the fan-out's time. Encoded, so the streams' serializer sends the same bytes."""
    data = {"flags": {key: {"type": "update"} for key in keys}}
    encoded: bytes = response(type="configuration_change", data=to_struct(data)).SerializeToString()
    return encoded
