"""`plangate.v1.Usage`: batched Report and atomic Consume."""

from __future__ import annotations

import collections
import math
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ..engine import EvaluationError, evaluate
from ..runtime.state import LiveState
from ..store.base import Status, UsageOutcome
from .convert import error_resolution, resolution, timestamp, usage_report
from .errors import handled, require
from .metrics import Metrics

MAX_BATCH = 10_000

_STATUS = {
    Status.APPLIED: pb.ReportResult.STATUS_APPLIED,
    Status.DUPLICATE: pb.ReportResult.STATUS_DUPLICATE,
    Status.REJECTED: pb.ReportResult.STATUS_REJECTED,
    Status.DENIED: pb.ReportResult.STATUS_REJECTED,
}


class UsageService(pb_grpc.UsageServicer):
    def __init__(self, state: LiveState, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    @handled
    def Report(self, request: pb.ReportRequest, context: grpc.ServicerContext) -> pb.ReportResponse:
        require(len(request.reports) > 0, "reports is empty; send at least one usage report")
        require(
            len(request.reports) <= MAX_BATCH,
            f"at most {MAX_BATCH} reports per call; split the batch",
        )
        outcomes = self.state.report(
            [usage_report(r, index=i) for i, r in enumerate(request.reports)]
        )
        return self._response(outcomes)

    def _response(self, outcomes: list[UsageOutcome]) -> pb.ReportResponse:
        """One result per outcome. Built for batches of thousands: each period's timestamp is
        made once, and the metrics are counted per status rather than per report."""
        out = pb.ReportResponse()
        add = out.results.add
        stamps: dict[datetime, timestamp_pb2.Timestamp] = {}
        statuses: collections.Counter[Status] = collections.Counter()
        for outcome in outcomes:
            statuses[outcome.status] += 1
            at = outcome.period_start
            stamp = None
            if at is not None:
                stamp = stamps.get(at)
                if stamp is None:
                    stamp = stamps[at] = timestamp(at)
            add(
                status=_STATUS[outcome.status],
                usage=outcome.usage,
                message=outcome.message,
                period_start=stamp,
            )
        for status, count in statuses.items():
            self.metrics.child(self.metrics.usage_reports, status.value).inc(count)
        return out

    @handled
    def Consume(
        self, request: pb.ConsumeRequest, context: grpc.ServicerContext
    ) -> pb.ConsumeResponse:
        require(bool(request.account_id), "account_id is required")
        require(
            bool(request.feature), "feature is required (a metered feature key such as 'api-calls')"
        )
        amount = request.amount if request.HasField("amount") else 1.0
        require(
            math.isfinite(amount) and amount >= 0,
            f"amount must be a finite number >= 0, got {amount}",
        )
        try:
            outcome = self.state.consume(usage_report(request))
        except EvaluationError as exc:
            require(False, exc.message)
            raise
        self.metrics.child(self.metrics.consumes, str(outcome.granted).lower()).inc()
        snap = self.state.snapshot
        try:
            after = evaluate(snap, request.account_id, request.feature, {}, self.state.clock())
            res = resolution(after, snap.catalog.features[request.feature])
        except EvaluationError as exc:
            res = error_resolution(request.feature, exc)
        return pb.ConsumeResponse(
            granted=outcome.granted,
            denial=outcome.denial,
            usage=outcome.usage,
            duplicate=outcome.duplicate,
            resolution=res,
        )
