"""`plangate.v1.Evaluation`: Evaluate, EvaluateAll and the Watch change stream."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ..engine import EvaluationError, evaluate
from ..runtime.events import AccountChanged, CatalogChanged
from ..runtime.state import LiveState
from .convert import KIND_OF, account_changed, context_arg, error_resolution, resolution
from .errors import handled, require
from .metrics import Metrics


class EvaluationService(pb_grpc.EvaluationServicer):
    def __init__(self, state: LiveState, metrics: Metrics, heartbeat: float = 5.0) -> None:
        self.state = state
        self.metrics = metrics
        self.heartbeat = heartbeat

    @handled
    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.Resolution:
        require(bool(request.feature), "feature is required (a feature key such as 'sso')")
        snap = self.state.snapshot
        try:
            decision = evaluate(
                snap,
                request.account_id,
                request.feature,
                context_arg(request.context),
                self.state.clock(),
            )
            # only the type asked for is resolved (and checked: a mismatch is TYPE_MISMATCH)
            res = resolution(
                decision, snap.catalog.features[request.feature], KIND_OF.get(request.type)
            )
        except EvaluationError as exc:
            self.metrics.child(self.metrics.evaluation_errors, "native", exc.code.value).inc()
            return error_resolution(request.feature, exc)
        self.metrics.child(self.metrics.evaluations, "native", decision.reason.value).inc()
        return res

    @handled
    def EvaluateAll(
        self, request: pb.EvaluateAllRequest, context: grpc.ServicerContext
    ) -> pb.EvaluateAllResponse:
        out = pb.EvaluateAllResponse(
            account_id=request.account_id, catalog_version=self.state.catalog.version
        )
        snap = self.state.snapshot
        try:
            results = self.state.evaluate_all(request.account_id, context_arg(request.context))
        except EvaluationError as exc:
            self.metrics.child(self.metrics.evaluation_errors, "native", exc.code.value).inc()
            out.error_code, out.error_message = exc.code.value, exc.message
            return out
        for key, result in results.items():
            if isinstance(result, EvaluationError):
                out.resolutions[key].CopyFrom(error_resolution(key, result))
            else:
                out.resolutions[key].CopyFrom(resolution(result, snap.catalog.features[key]))
        self.metrics.child(self.metrics.evaluations, "native_all", "TARGETING_MATCH").inc(
            len(results)
        )
        return out

    def Watch(
        self, request: pb.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEvent]:
        subscriber = self.state.events.subscribe(self.heartbeat)
        context.add_callback(subscriber.close)
        self.metrics.watch_streams.inc()
        try:
            catalog = self.state.catalog
            yield pb.WatchEvent(
                ready=pb.Ready(catalog_version=catalog.version, all_features=list(catalog.features))
            )
            for event in subscriber:
                if not context.is_active():
                    return
                if event is None:
                    yield pb.WatchEvent(heartbeat=pb.Heartbeat())
                elif isinstance(event, CatalogChanged):
                    yield pb.WatchEvent(
                        catalog_changed=pb.CatalogChanged(
                            catalog_version=event.version,
                            features=list(event.features),
                            all_features=list(event.all_features),
                        )
                    )
                elif isinstance(event, AccountChanged):
                    yield pb.WatchEvent(account_changed=account_changed(event))
        finally:
            subscriber.close()
            self.metrics.watch_streams.dec()
