"""One flag evaluation: from the cache when it can be trusted, else from the sidecar.

The sync and async paths share everything except the call itself (blocking stub vs grpc.aio
stub), so both see the same cache, the same pending usage and the same error mapping.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

import grpc
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    ProviderNotReadyError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, Reason
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_struct

from .cache import CacheKey, Entry, ResolutionCache
from .metering import COUNTED, adjusted
from .outage import LastKnown
from .pending import PendingUsage
from .resolution import details, is_caller_default, raise_error, raise_rpc_error
from .transport import Transport


class Query(NamedTuple):
    """One evaluation's inputs. A NamedTuple, not a frozen dataclass: it is built on every
    call, and a frozen dataclass's `__init__` alone costs about a microsecond."""

    account: str
    feature: str
    context: dict[str, Any]  # every attribute, JSON-shaped
    shared: dict[str, Any]  # without `requested`: what a cached EvaluateAll is computed for
    requested: float | None  # None = not a valid amount; the sidecar then explains why
    key: CacheKey


def query(feature: str, ctx: EvaluationContext | None) -> Query:
    account = (ctx.targeting_key if ctx is not None else None) or ""
    # Without a targeting key the sidecar answers a feature with variants as flagd does and
    # any other with TARGETING_KEY_MISSING (decision 2000); such calls are never cached.
    if ctx is None or not ctx.attributes:  # the common case: no canonical JSON to build
        return Query(account, feature, {}, {}, 1.0, (account, _NO_CONTEXT))
    attrs = {k: _json(v) for k, v in ctx.attributes.items()}
    shared = {k: v for k, v in attrs.items() if k != "requested"}
    key = (account, _KEY.encode(shared) if shared else _NO_CONTEXT)
    return Query(account, feature, attrs, shared, _amount(attrs.get("requested", 1)), key)


# The cache key's canonical JSON. One encoder for all calls: `json.dumps` with options
# builds a new one per call, which costs more than encoding a small context.
_KEY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
_NO_CONTEXT = _KEY.encode({})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _json(value: Any) -> Any:
    """Context attributes as JSON values (the SDK also allows datetimes)."""
    if type(value) in _SCALARS:  # most attributes: skip the isinstance (ABC) checks
        return value
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


_VALUE_TYPE = {
    FlagType.BOOLEAN: pb.VALUE_TYPE_BOOLEAN,
    FlagType.INTEGER: pb.VALUE_TYPE_INTEGER,
    FlagType.FLOAT: pb.VALUE_TYPE_FLOAT,
    FlagType.STRING: pb.VALUE_TYPE_STRING,
    FlagType.OBJECT: pb.VALUE_TYPE_OBJECT,
}


class WatchState(Protocol):
    """What the evaluator reads of the Watch stream: its id, for the interest it adds."""

    @property
    def watch_id(self) -> str: ...


class Evaluator:
    def __init__(
        self,
        transport: Transport,
        cache: ResolutionCache | None,
        pending: PendingUsage,
        stream: WatchState,
        last_known: LastKnown | None = None,
    ) -> None:
        self._transport = transport
        self._stream = stream
        self._cache = cache
        self._pending = pending
        self._last_known = last_known  # None: every feature answers "default" in an outage
        self._deadline = transport.config.deadline
        self._target = transport.config.target

    # -- sync ------------------------------------------------------------------------------

    def resolve(
        self, feature: str, kind: FlagType, ctx: EvaluationContext | None
    ) -> FlagResolutionDetails[Any]:
        q = query(feature, ctx)
        cached = self._cached(q)
        if cached is not None and q.feature not in cached.volatile:
            return self._hit(q, cached, kind)
        try:
            return self._fetch(q, kind, cached)
        except ProviderNotReadyError as exc:
            return self._stale(q, kind, exc)

    def _fetch(self, q: Query, kind: FlagType, cached: Entry | None) -> FlagResolutionDetails[Any]:
        stub = self._transport.evaluation
        if cached is None and self._cacheable(q):
            assert self._cache is not None
            fetch = self._cache.begin(q.key)
            try:
                response = self._call(stub.EvaluateAll, self._all_request(q))
                entry = self._learned(q.account, _entry(response))
            except BaseException:
                self._cache.abandon(fetch)
                raise
            self._cache.put(fetch, entry)
            return self._hit(q, entry, kind)
        res = self._call(stub.Evaluate, self._one_request(q, kind))
        self._remember(q.account, res)
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
        cached = self._cached(q)
        if cached is not None and q.feature not in cached.volatile:
            return self._hit(q, cached, kind)
        try:
            return await self._fetch_async(q, kind, cached)
        except ProviderNotReadyError as exc:
            return self._stale(q, kind, exc)

    async def _fetch_async(
        self, q: Query, kind: FlagType, cached: Entry | None
    ) -> FlagResolutionDetails[Any]:
        stub = self._transport.aio_evaluation()
        if cached is None and self._cacheable(q):
            assert self._cache is not None
            fetch = self._cache.begin(q.key)
            try:
                response = await self._call_async(stub.EvaluateAll, self._all_request(q))
                entry = self._learned(q.account, _entry(response))
            except BaseException:
                self._cache.abandon(fetch)
                raise
            self._cache.put(fetch, entry)
            return self._hit(q, entry, kind)
        res = await self._call_async(stub.Evaluate, self._one_request(q, kind))
        self._remember(q.account, res)
        return self._finish(q, res, _or_one(q.requested), kind)

    async def _call_async(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._deadline, metadata=self._transport.metadata)
        except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one
            raise_rpc_error(exc, self._target)

    # -- shared ----------------------------------------------------------------------------

    def _remember(self, account: str, res: pb.Resolution) -> None:
        if self._last_known is not None:
            self._last_known.record(account, res)

    def _stale(
        self, q: Query, kind: FlagType, outage: ProviderNotReadyError
    ) -> FlagResolutionDetails[Any]:
        """The sidecar did not answer: the last-known answer, reason STALE, if the feature's
        `on_unavailable` mode and that answer allow it; else the outage error goes on up
        (the SDK answers the caller's default), design §21."""
        res = None if self._last_known is None else self._last_known.recall(q.account, q.feature)
        if res is None or q.requested is None:
            raise outage
        out = self._finish(q, res, 1.0, kind)  # recorded answers were computed for 1
        return dataclasses.replace(out, reason=Reason.STALE)

    def _cacheable(self, q: Query) -> bool:
        cache = self._cache
        return cache is not None and cache.active and q.requested is not None and bool(q.account)

    def _cached(self, q: Query) -> Entry | None:
        if not self._cacheable(q):
            return None
        assert self._cache is not None
        return self._cache.get(q.key)

    def _all_request(self, q: Query) -> pb.EvaluateAllRequest:
        # naming the Watch stream adds the account to its interest before the evaluation
        return pb.EvaluateAllRequest(
            account_id=q.account, context=to_struct(q.shared), watch_id=self._stream.watch_id
        )

    def _one_request(self, q: Query, kind: FlagType) -> pb.EvaluateRequest:
        # Naming the type lets the sidecar resolve just that one (and report a mismatch).
        return pb.EvaluateRequest(
            account_id=q.account,
            feature=q.feature,
            context=to_struct(q.context),
            type=_VALUE_TYPE[kind],
        )

    def _hit(self, q: Query, entry: Entry, kind: FlagType) -> FlagResolutionDetails[Any]:
        """An answer from a cached `EvaluateAll` (computed for `requested` = 1).

        The entry's memoised conversion serves it, unless the feature is metered and pending
        usage or another `requested` amount changes the answer: that case is re-derived.
        """
        found = entry.outcome(q.feature, kind)
        if found is None:
            raise FlagNotFoundError(f"no feature {q.feature!r} in catalog {entry.catalog_version}")
        if found.metered and q.requested is not None and self._moves(q, q.requested, found.source):
            return details(self._adjusted(q, found.source, q.requested, 1.0), kind)
        return found.details()

    def _learned(self, account: str, entry: Entry) -> Entry:
        """Note the credit prices in a fetched answer, so `track` on a credit-priced feature
        also counts on its pool in the pending overlay (design §5.1), and keep its answers
        for an outage (design §21)."""
        for key, res in entry.resolutions.items():
            self._remember(account, res)
            if res.metering.pool:
                self._pending.learn_price(key, res.metering.pool, res.metering.per_unit)
        return entry

    def _moves(self, q: Query, requested: float, res: pb.Resolution) -> bool:
        """Whether a cached metered answer may differ for this call (another amount than
        the cached 1, or usage tracked and not yet acknowledged, on it or on its pool)."""
        if requested != 1.0 or self._pending.has(q.account, q.feature):
            return True
        pool = res.metering.pool
        return bool(pool) and self._pending.has(q.account, pool)

    def _finish(
        self, q: Query, res: pb.Resolution, computed_for: float, kind: FlagType
    ) -> FlagResolutionDetails[Any]:
        if (
            q.requested is not None
            and res.feature_type in COUNTED
            and not res.error_code
            and not is_caller_default(res)
        ):
            res = self._adjusted(q, res, q.requested, computed_for)
        return details(res, kind)

    def _adjusted(
        self, q: Query, res: pb.Resolution, requested: float, computed_for: float
    ) -> pb.Resolution:
        """`res` with pending usage and `requested` applied; `res` itself if neither moves it."""
        m = res.metering
        used = self._pending.used(q.account, q.feature, m.used)
        pool_used = None
        if m.pool:
            self._pending.learn_price(q.feature, m.pool, m.per_unit)
            pool_used = self._pending.used(q.account, m.pool, m.pool_used)
        return adjusted(
            res, used=used, requested=requested, computed_for=computed_for, pool_used=pool_used
        )


def _or_one(requested: float | None) -> float:
    """The amount a direct `Evaluate` was computed for (the sidecar's default is 1)."""
    return 1.0 if requested is None else requested


def _entry(response: pb.EvaluateAllResponse) -> Entry:
    if response.error_code:
        raise_error(response.error_code, response.error_message or response.error_code)
    volatile = frozenset(k for k, res in response.resolutions.items() if res.volatile)
    return Entry(response.catalog_version, response.resolutions, valid_until(response), volatile)


def valid_until(response: pb.EvaluateAllResponse) -> float:
    """When the answer stops being true by time alone: its earliest resolution's `valid_until`
    (epoch seconds; infinity when none has one). One number per entry keeps the hit path a
    single comparison; a boundary of one feature refetches the account's others with it."""
    soonest = math.inf
    for res in response.resolutions.values():
        if res.HasField("valid_until"):
            at = res.valid_until.seconds + res.valid_until.nanos / 1e9
            if at < soonest:
                soonest = at
    return soonest
