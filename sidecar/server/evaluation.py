"""`plangate.v1.Evaluation`: Evaluate, EvaluateAll and the Watch change stream.

Served on the event loop: an evaluation is a pure read of the in-memory snapshot, and a
Watch stream is a queue, not a thread (design §2.1).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ..engine import EvaluationError
from ..runtime.live.events import CatalogChanged, Event, EventHub
from ..runtime.serve.decisions import Decisions
from .convert import KIND_OF, account_changed, context_arg, error_resolution, resolution
from .errors import STREAM_ENDED, handled, require
from .metrics import Metrics
from .resolution_cache import ResolutionCache

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]


def watch_event(event: Event) -> pb.WatchEvent:
    """The Watch message for a change event: the one place events meet the wire, so a field
    added to an event is passed through here."""
    if isinstance(event, CatalogChanged):
        return pb.WatchEvent(
            catalog_changed=pb.CatalogChanged(
                catalog_version=event.version,
                features=list(event.features),
                all_features=list(event.all_features),
            )
        )
    return pb.WatchEvent(account_changed=account_changed(event))


_HEARTBEAT = pb.WatchEvent(heartbeat=pb.Heartbeat()).SerializeToString()


class EvaluationService(pb_grpc.EvaluationServicer):
    def __init__(
        self, decisions: Decisions, events: EventHub, metrics: Metrics, heartbeat: float = 5.0
    ) -> None:
        self.decisions = decisions
        self.events = events
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.resolutions = ResolutionCache()  # encoded resolutions; loop-only
        self._last_event: tuple[Event, bytes] | None = None  # Watch's, see `_encoded`

    @handled
    async def Evaluate(
        self, request: pb.EvaluateRequest, context: _Context
    ) -> pb.Resolution | bytes:
        require(bool(request.feature), "feature is required (a feature key such as 'sso')")
        await self.decisions.loads.hold(request.account_id)
        if request.explain:
            return self._explained(request)
        try:
            version = self.decisions.catalog.version  # before evaluating: see ResolutionCache
            found = self.decisions.evaluate(
                request.account_id, request.feature, context_arg(request.context)
            )
            # computed for that amount (design §21)
            dependent = found.decision.metering is not None and "requested" in (
                request.context.fields
            )
            # only the type asked for is resolved (and checked: a mismatch is TYPE_MISMATCH)
            res = self.resolutions.encoded_one(version, found, KIND_OF.get(request.type), dependent)
        except EvaluationError as exc:
            self.metrics.child(self.metrics.evaluation_errors, "native", exc.code.value).inc()
            return error_resolution(request.feature, exc)
        self.metrics.child(self.metrics.evaluations, "native", found.decision.reason.value).inc()
        return res

    def _explained(self, request: pb.EvaluateRequest) -> pb.Resolution:
        """`Evaluate` with the trail in `explain` (design §4.1); off the hot path."""
        trail: dict[str, Any] = {}
        try:
            result, trail = self.decisions.explain(
                request.account_id, request.feature, context_arg(request.context)
            )
            if isinstance(result, EvaluationError):
                raise result
            res = resolution(result.decision, result.feature, KIND_OF.get(request.type))
        except EvaluationError as exc:
            res = error_resolution(request.feature, exc)
        res.explain = json.dumps(trail, default=str)
        return res

    def _encoded(self, event: Event) -> bytes:
        """The Watch message for `event`, encoded once for every stream that sends it (the
        streams of one fan-out read the same event object; the last one is kept)."""
        last = self._last_event
        if last is None or last[0] is not event:
            last = self._last_event = (event, watch_event(event).SerializeToString())
        return last[1]

    @handled
    async def EvaluateAll(
        self, request: pb.EvaluateAllRequest, context: _Context
    ) -> pb.EvaluateAllResponse | bytes:
        out = pb.EvaluateAllResponse(account_id=request.account_id)
        if request.watch_id and request.account_id:  # before evaluating: no change slips past
            self.events.add_interest(request.watch_id, request.account_id)
        await self.decisions.loads.hold(request.account_id)
        try:
            found = self.decisions.evaluate_all(request.account_id, context_arg(request.context))
        except EvaluationError as exc:
            self.metrics.child(self.metrics.evaluation_errors, "native", exc.code.value).inc()
            out.error_code, out.error_message = exc.code.value, exc.message
            return out
        encoded = self.resolutions.encoded(request.account_id, found.catalog_version, found.results)
        self.metrics.child(self.metrics.evaluations, "native_all", "TARGETING_MATCH").inc(
            len(found.results)
        )
        return encoded

    async def Watch(
        self, request: pb.WatchRequest, context: _Context
    ) -> AsyncIterator[pb.WatchEvent | bytes]:
        # events are sent as encoded bytes, which the server's `RefuseUndecodable` passes on
        interest = request.accounts if request.accounts or request.accounts_only else None
        subscriber = self.events.subscribe(self.heartbeat, interest)
        self.metrics.watch_streams.inc()
        try:
            if subscriber.ended:
                await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
            catalog = self.decisions.catalog
            yield pb.WatchEvent(
                ready=pb.Ready(
                    catalog_version=catalog.version,
                    all_features=list(catalog.features),
                    watch_id=subscriber.watch_id,
                )
            )
            async for batch in subscriber:
                if batch is None:
                    yield _HEARTBEAT
                    continue
                for event in batch:
                    yield self._encoded(event)
        finally:
            subscriber.close()
            self.metrics.watch_streams.dec()
        await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_ENDED)
