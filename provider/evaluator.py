"""One flag evaluation: from the cache when it can be trusted, else from the sidecar.

The sync and async paths share everything except the call itself (blocking stub vs grpc.aio
stub), so both see the same cache, the same pending usage and the same error mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import grpc
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, TargetingKeyMissingError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_struct

from .cache import CacheKey, Entry, ResolutionCache
from .metering import adjusted
from .pending import PendingUsage
from .resolution import details, raise_error, raise_rpc_error
from .transport import Transport


@dataclass(frozen=True, slots=True)
class Query:
    account: str
    feature: str
    context: dict[str, Any]  # every attribute, JSON-shaped
    shared: dict[str, Any]  # without `requested`: what a cached EvaluateAll is computed for
    requested: float | None  # None = not a valid amount; the sidecar then explains why
    key: CacheKey


def query(feature: str, ctx: EvaluationContext | None) -> Query:
    account = ctx.targeting_key if ctx is not None else None
    if not account:
        raise TargetingKeyMissingError(
            "PlanGate evaluates per account: set the evaluation context's targeting key "
            "to the account id, e.g. EvaluationContext('acct_42')"
        )
    attrs = {k: _json(v) for k, v in (ctx.attributes if ctx is not None else {}).items()}
    shared = {k: v for k, v in attrs.items() if k != "requested"}
    key = (account, json.dumps(shared, sort_keys=True, separators=(",", ":"), default=str))
    return Query(account, feature, attrs, shared, _amount(attrs.get("requested", 1)), key)


def _json(value: Any) -> Any:
    """Context attributes as JSON values (the SDK also allows datetimes)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _amount(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value < 0:
        return None
    return float(value)


class Evaluator:
    def __init__(
        self,
        transport: Transport,
        cache: ResolutionCache | None,
        pending: PendingUsage,
    ) -> None:
        self._transport = transport
        self._cache = cache
        self._pending = pending
        self._deadline = transport.config.deadline
        self._target = transport.config.target

    # -- sync ------------------------------------------------------------------------------

    def resolve(
        self, feature: str, kind: FlagType, ctx: EvaluationContext | None
    ) -> FlagResolutionDetails[Any]:
        q = query(feature, ctx)
        found = self._cached(q)
        if found is not None:
            return self._finish(q, found, 1.0, kind)
        stub = self._transport.evaluation
        if self._cacheable(q):
            assert self._cache is not None
            fetch = self._cache.begin(q.key)
            try:
                response = self._call(stub.EvaluateAll, self._all_request(q))
                entry = _entry(response)
            except BaseException:
                self._cache.abandon(fetch)
                raise
            self._cache.put(fetch, entry)
            return self._finish(q, _pick(entry, q.feature), 1.0, kind)
        res = self._call(stub.Evaluate, self._one_request(q))
        return self._finish(q, res, _or_one(q.requested), kind)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._deadline, metadata=self._transport.metadata)
        except grpc.RpcError as exc:
            raise_rpc_error(exc, self._target)

    # -- async -----------------------------------------------------------------------------

    async def resolve_async(
        self, feature: str, kind: FlagType, ctx: EvaluationContext | None
    ) -> FlagResolutionDetails[Any]:
        q = query(feature, ctx)
        found = self._cached(q)
        if found is not None:
            return self._finish(q, found, 1.0, kind)
        stub = self._transport.aio_evaluation()
        if self._cacheable(q):
            assert self._cache is not None
            fetch = self._cache.begin(q.key)
            try:
                response = await self._call_async(stub.EvaluateAll, self._all_request(q))
                entry = _entry(response)
            except BaseException:
                self._cache.abandon(fetch)
                raise
            self._cache.put(fetch, entry)
            return self._finish(q, _pick(entry, q.feature), 1.0, kind)
        res = await self._call_async(stub.Evaluate, self._one_request(q))
        return self._finish(q, res, _or_one(q.requested), kind)

    async def _call_async(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._deadline, metadata=self._transport.metadata)
        except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one
            raise_rpc_error(exc, self._target)

    # -- shared ----------------------------------------------------------------------------

    def _cacheable(self, q: Query) -> bool:
        return self._cache is not None and self._cache.active and q.requested is not None

    def _cached(self, q: Query) -> pb.Resolution | None:
        if not self._cacheable(q):
            return None
        assert self._cache is not None
        entry = self._cache.get(q.key)
        return None if entry is None else _pick(entry, q.feature)

    def _all_request(self, q: Query) -> pb.EvaluateAllRequest:
        return pb.EvaluateAllRequest(account_id=q.account, context=to_struct(q.shared))

    def _one_request(self, q: Query) -> pb.EvaluateRequest:
        return pb.EvaluateRequest(
            account_id=q.account, feature=q.feature, context=to_struct(q.context)
        )

    def _finish(
        self, q: Query, res: pb.Resolution, computed_for: float, kind: FlagType
    ) -> FlagResolutionDetails[Any]:
        if q.requested is not None and res.feature_type == "metered" and not res.error_code:
            used = self._pending.used(q.account, q.feature, res.metering.used)
            res = adjusted(res, used=used, requested=q.requested, computed_for=computed_for)
        return details(res, kind)


def _or_one(requested: float | None) -> float:
    """The amount a direct `Evaluate` was computed for (the sidecar's default is 1)."""
    return 1.0 if requested is None else requested


def _entry(response: pb.EvaluateAllResponse) -> Entry:
    if response.error_code:
        raise_error(response.error_code, response.error_message or response.error_code)
    return Entry(response.catalog_version, response.resolutions)


def _pick(entry: Entry, feature: str) -> pb.Resolution:
    res: pb.Resolution | None = entry.resolutions.get(feature)
    if res is None:
        raise FlagNotFoundError(f"no feature {feature!r} in catalog {entry.catalog_version}")
    return res
