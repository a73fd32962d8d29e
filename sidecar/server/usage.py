"""`plangate.v1.Usage`: batched Report and atomic Consume; History and the Export stream.

Report and Consume write the store off the event loop (design §2.1), so the loop keeps
answering evaluations while a commit waits for the disk: Report runs on the writer executor
(a batch of thousands is resolved there too); Consume evaluates on the loop, like Evaluate,
and awaits its grouped write (`GroupCommit.submit_later`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ..engine.request import consume_amount
from ..runtime.serve.decisions import Decisions, PendingConsume
from ..runtime.serve.history import (
    ExportRow,
    HistoryPoint,
    check_range,
    export_pages,
    parse_window,
    usage_history,
)
from ..runtime.serve.holds import Ended, Holds
from ..store.base import Status, UsageOutcome
from .convert import (
    event_of,
    hold_pb,
    ingest_result,
    resolution,
    time_arg,
    timestamp,
    usage_report,
)
from .errors import BadRequest, handled, require, status_of
from .metrics import Metrics

MAX_BATCH = 10_000

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {
    Status.APPLIED: pb.ReportResult.STATUS_APPLIED,
    Status.DUPLICATE: pb.ReportResult.STATUS_DUPLICATE,
    Status.REJECTED: pb.ReportResult.STATUS_REJECTED,
    Status.DENIED: pb.ReportResult.STATUS_REJECTED,
}


class UsageService(pb_grpc.UsageServicer):
    def __init__(self, decisions: Decisions, metrics: Metrics, writer: Executor) -> None:
        self.decisions = decisions
        self.metrics = metrics
        self.writer = writer
        self.holds = Holds(decisions.state)

    @handled
    async def Report(self, request: pb.ReportRequest, context: _Context) -> pb.ReportResponse:
        require(len(request.reports) > 0, "reports is empty; send at least one usage report")
        require(
            len(request.reports) <= MAX_BATCH,
            f"at most {MAX_BATCH} reports per call; split the batch",
        )
        reports = [usage_report(r, index=i) for i, r in enumerate(request.reports)]
        loop = asyncio.get_running_loop()
        loads = self.decisions.loads
        pinned = await loads.pin([r.account for r in reports]) if loads.active else ()
        try:
            outcomes = await loop.run_in_executor(self.writer, self.decisions.report, reports)
        finally:
            loads.unpin(pinned)
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
    async def Consume(self, request: pb.ConsumeRequest, context: _Context) -> pb.ConsumeResponse:
        require(bool(request.account_id), "account_id is required")
        require(
            bool(request.feature), "feature is required (a metered feature key such as 'api-calls')"
        )
        consume_amount(request.amount if request.HasField("amount") else 1.0)
        loads = self.decisions.loads
        pinned = await loads.pin((request.account_id,)) if loads.active else ()
        try:
            # evaluated here on the loop; only the grouped write waits on the writer executor
            step = self.decisions.start_consume(usage_report(request), self.writer)
            if isinstance(step, PendingConsume):
                stored = await asyncio.wrap_future(step.stored)
                outcome = self.decisions.finish_consume(step, stored)
            else:
                outcome = step
        finally:
            loads.unpin(pinned)
        self.metrics.child(self.metrics.consumes, str(outcome.granted).lower()).inc()
        return pb.ConsumeResponse(
            granted=outcome.granted,
            denial=outcome.denial,
            usage=outcome.usage,
            duplicate=outcome.duplicate,
            resolution=resolution(outcome.after.decision, outcome.after.feature),
        )

    @handled
    async def Reserve(self, request: pb.ReserveRequest, context: _Context) -> pb.ReserveResponse:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required (a sum metered feature or pool)")
        require(
            not request.dimensions,
            "dimensions need meters (§16), which this sidecar does not have yet; "
            "reserve without dimensions",
        )
        ttl = request.ttl_seconds if request.HasField("ttl_seconds") else None
        reserved = await self._blocking(
            self.holds.reserve,
            request.account_id,
            request.feature,
            request.amount,
            ttl,
            request.idempotency_key,
        )
        self.metrics.child(self.metrics.holds_reserved, str(reserved.granted).lower()).inc()
        feature = self.decisions.catalog.features[reserved.after.feature]
        out = pb.ReserveResponse(
            granted=reserved.granted,
            denial=reserved.denial,
            duplicate=reserved.duplicate,
            resolution=resolution(reserved.after, feature),
        )
        if reserved.hold is not None:
            out.hold_id = reserved.hold.id
            out.expires_at.CopyFrom(timestamp(reserved.hold.expires_at))
        return out

    @handled
    async def Settle(self, request: pb.SettleRequest, context: _Context) -> pb.SettleResponse:
        require(request.HasField("amount"), "amount is required (the real cost, >= 0)")
        ended = await self._blocking(
            self.holds.settle,
            request.hold_id,
            request.amount,
            request.idempotency_key,
            request.account_id,
        )
        self.metrics.child(self.metrics.holds_ended, "settled").inc()
        return pb.SettleResponse(
            usage=ended.usage,
            over_ceiling=ended.over_ceiling,
            hold=hold_pb(ended.hold),
            resolution=self._after(ended),
            duplicate=ended.duplicate,
        )

    @handled
    async def Release(self, request: pb.ReleaseRequest, context: _Context) -> pb.ReleaseResponse:
        ended = await self._blocking(
            self.holds.release, request.hold_id, request.idempotency_key, request.account_id
        )
        self.metrics.child(self.metrics.holds_ended, "released").inc()
        return pb.ReleaseResponse(
            hold=hold_pb(ended.hold),
            resolution=self._after(ended),
            duplicate=ended.duplicate,
        )

    @handled
    async def ListHolds(
        self, request: pb.ListHoldsRequest, context: _Context
    ) -> pb.ListHoldsResponse:
        require(bool(request.account_id), "account_id is required")
        found = self.holds.list(request.account_id, request.feature)
        return pb.ListHoldsResponse(holds=[hold_pb(h) for h in found])

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        """A hold's write waits for the disk: off the loop, on the writer executor."""
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)

    def _after(self, ended: Ended) -> pb.Resolution:
        return resolution(ended.after, self.decisions.catalog.features[ended.after.feature])

    @handled
    async def Ingest(self, request: pb.IngestRequest, context: _Context) -> pb.IngestResponse:
        require(len(request.events) > 0, "events is empty; send at least one event")
        require(
            len(request.events) <= MAX_BATCH,
            f"at most {MAX_BATCH} events per call; split the batch",
        )
        events = [event_of(e) for e in request.events]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.writer, self.decisions.ingest, events)
        return pb.IngestResponse(results=[ingest_result(r) for r in results])

    @handled
    async def History(self, request: pb.HistoryRequest, context: _Context) -> pb.HistoryResponse:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required (a metered feature key)")
        start, end = _range(request)
        window = parse_window(request.window)
        state = self.decisions.state

        def answer() -> pb.HistoryResponse:
            """Read and translated off the loop: 10,000 windows are a fifth of a second of
            protobuf construction on a small machine, too long to hold every other call."""
            points = usage_history(state, request.account_id, request.feature, start, end, window)
            return pb.HistoryResponse(points=[_point(p) for p in points])

        return await asyncio.get_running_loop().run_in_executor(self.writer, answer)

    async def Export(
        self, request: pb.ExportRequest, context: _Context
    ) -> AsyncIterator[pb.ExportRow]:
        """Rows as the store yields them, a page of accounts at a time (each page read off
        the event loop), so an export of millions of rows never sits in memory at once."""
        loop = asyncio.get_running_loop()
        try:
            start, end = _range(request)
            check_range(start, end)
            pages = export_pages(self.decisions.state, start, end)
            while (page := await loop.run_in_executor(self.writer, next, pages, None)) is not None:
                for row in page:
                    yield _row(row)
        except Exception as exc:
            code, message = status_of(exc, "Export")
            self.metrics.rpc_errors.labels("Export", code.name).inc()
            await context.abort(code, message)


def _range(request: pb.HistoryRequest | pb.ExportRequest) -> tuple[datetime, datetime]:
    """`from` and `to`, both required, each a time a request may carry (`time_arg`)."""
    times: list[datetime] = []
    for name in ("from", "to"):
        at = time_arg(request, name)
        if at is None:
            raise BadRequest(f"{name} is required (a timestamp)")
        times.append(at)
    return times[0], times[1]


def _point(p: HistoryPoint) -> pb.HistoryPoint:
    out = pb.HistoryPoint(
        window_start=timestamp(p.window_start), window_end=timestamp(p.window_end), usage=p.usage
    )
    if p.limit is not None:
        out.limit = p.limit
    return out


def _row(r: ExportRow) -> pb.ExportRow:
    out = pb.ExportRow(
        account_id=r.account_id,
        feature=r.feature,
        period_start=timestamp(r.period_start),
        usage=r.usage,
        overage=r.overage,
        topups_burned=r.topups_burned,
    )
    if r.period_end is not None:
        out.period_end.CopyFrom(timestamp(r.period_end))
    if r.limit is not None:
        out.limit = r.limit
    return out
