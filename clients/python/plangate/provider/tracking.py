"""Background delivery of usage reports and events: queued by `track`, batched, retried until
acknowledged.

`track` runs on the application's request path, so it only appends to a queue. One thread
sends batches with `Usage.Report`; a batch leaves the queue only once the sidecar answered,
and a retry resends the very same reports with the same idempotency keys, so a report the
sidecar stored just before a crash is answered "duplicate" rather than counted twice.
Ordering is kept (one sender, FIFO), which matters for gauge features (last value wins).
Tracking events that are not feature keys travel as CloudEvents through `Usage.Ingest`
(design §16): a batch is a run of one kind at the head of the queue, so FIFO order holds
across both, and an event is retried with its same `(source, id)` exactly like a report.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from .config import ProviderConfig
from .transport import Transport

log = logging.getLogger("plangate.provider")


# Built on every `track`: plain slotted classes, since a frozen dataclass costs a microsecond
# more to build (its `__init__` goes through `object.__setattr__`). Never mutated.
@dataclass(slots=True)
class Queued:
    seq: int  # the provider's own id, ties the report to its pending-usage overlay item
    message: pb.UsageReport | pb.Event  # a usage report, or an event for `Usage.Ingest`


Settled = Callable[[Sequence[Queued]], None]

# Statuses worth retrying: the sidecar may come back or the call may get through.
# Anything else (a malformed batch) would fail forever, so the batch is dropped and logged.
_RETRY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class UsageReporter:
    def __init__(self, transport: Transport, config: ProviderConfig, on_settled: Settled) -> None:
        self._transport = transport
        self._config = config
        self._on_settled = on_settled
        self._cond = threading.Condition()
        self._queue: deque[Queued] = deque()
        self._closing = False
        self._abort = False
        self._seqs = itertools.count(1)  # `next` on it is atomic: no lock on the `track` path
        self._call: grpc.Future[Any] | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="plangate-usage", daemon=True)

    def next_seq(self) -> int:
        return next(self._seqs)

    @property
    def pending(self) -> int:
        """Reports accepted by `submit` and not yet acknowledged by the sidecar."""
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        self._thread.start()

    def resume_after(self, seq: int) -> None:
        """Number new reports after `seq` (the last entry of a track journal); called before
        the first `track`."""
        self._seqs = itertools.count(seq + 1)

    def submit(self, item: Queued, replay: bool = False) -> bool:
        """Queue one report; False (and nothing queued) when closed or the queue is full
        (`replay`: a journaled report of an earlier process, queued whatever the size)."""
        with self._cond:
            full = not replay and len(self._queue) >= self._config.max_queue
            if self._closing or full:
                self.dropped += 1
                return False
            self._queue.append(item)
            if len(self._queue) == 1 or len(self._queue) >= self._config.max_batch:
                self._cond.notify()
        return True

    def close(self, timeout: float) -> int:
        """Deliver what is queued (up to `timeout` seconds), stop; returns the reports not sent."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            self._abort = True
            self._cond.notify()
            call = self._call
        if call is not None:
            call.cancel()  # a call waiting for a sidecar that is not coming back
        if self._thread.is_alive():
            self._thread.join(self._config.report_deadline + 1)
        left = self.pending
        if left:
            log.error("PlanGate provider shut down with %d usage reports undelivered", left)
        return left

    # -- the sender thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if self._deliver(batch):
                with self._cond:
                    for _ in batch:
                        self._queue.popleft()
            else:
                return  # aborted; what is left stays counted in `pending`

    def _next_batch(self) -> list[Queued] | None:
        config = self._config
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if not self._closing and len(self._queue) < config.max_batch:
                # Let a burst accumulate: one call for many reports.
                self._cond.wait_for(
                    lambda: self._closing or len(self._queue) >= config.max_batch,
                    timeout=config.flush_interval,
                )
            # The batch stays at the head of the queue until acknowledged; it is one kind
            # (reports or events), as each goes through its own RPC.
            kind = type(self._queue[0].message)
            batch = []
            for item in itertools.islice(self._queue, config.max_batch):
                if type(item.message) is not kind:
                    break
                batch.append(item)
            return batch

    def _deliver(self, batch: list[Queued]) -> bool:
        """Send until acknowledged (True) or aborted by `close` (False)."""
        delay = 0.05
        failing = False
        while True:
            with self._cond:
                if self._abort:
                    return False
            # Set the call up outside the lock: `submit` (every `track`) takes that lock, and
            # call set-up while the channel reconnects is not free.
            # wait_for_ready: while the sidecar is down the call waits for it (up to the
            # deadline) instead of failing at once, so delivery resumes as soon as it is back.
            call = self._call_for(batch)
            with self._cond:
                self._call = call
                aborted = self._abort
            if aborted:  # `close` gave up while the call was being set up
                call.cancel()
                return False
            try:
                response = call.result()
            except grpc.FutureCancelledError:
                return False  # `close` gave up on a call waiting for the sidecar
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRY:
                    log.error(
                        "PlanGate dropped %d usage reports: %s: %s",
                        len(batch),
                        code.name,
                        exc.details(),
                    )
                    self.dropped += len(batch)
                    self._on_settled(batch)
                    return True
                if not failing:
                    failing = True
                    log.warning(
                        "PlanGate usage delivery failing (%s: %s); %d reports queued, retrying",
                        code.name,
                        exc.details(),
                        self.pending,
                    )
                with self._cond:
                    if self._abort:
                        return False
                    self._cond.wait(delay)
                    if self._abort:
                        return False
                delay = min(1.0, delay * 2)
                continue
            finally:
                with self._cond:
                    self._call = None
            if failing:
                log.info("PlanGate usage delivery resumed")
            self._acknowledged(batch, response)
            return True

    def _call_for(self, batch: list[Queued]) -> grpc.Future[Any]:
        """`Usage.Ingest` for a batch of events, `Usage.Report` for one of reports."""
        usage = self._transport.usage
        options: dict[str, Any] = {
            "timeout": self._config.report_deadline,
            "metadata": self._transport.metadata,
            "wait_for_ready": True,
        }
        events = [q.message for q in batch if isinstance(q.message, pb.Event)]
        call: grpc.Future[Any]
        if events:
            call = usage.Ingest.future(pb.IngestRequest(events=events), **options)
        else:
            reports = [q.message for q in batch if isinstance(q.message, pb.UsageReport)]
            call = usage.Report.future(pb.ReportRequest(reports=reports), **options)
        return call

    def _acknowledged(self, batch: list[Queued], response: Any) -> None:
        if isinstance(response, pb.IngestResponse):
            _log_ingested(batch, response)
            self._on_settled(batch)
            return
        rejected = [
            (item.message, result.message)
            for item, result in zip(batch, response.results, strict=False)
            if result.status == pb.ReportResult.STATUS_REJECTED
            and isinstance(item.message, pb.UsageReport)
        ]
        if rejected:
            report, message = rejected[0]
            log.warning(
                "PlanGate rejected %d of %d usage reports; first: %s for %s: %s",
                len(rejected),
                len(batch),
                report.feature,
                report.account_id,
                message,
            )
        self._on_settled(batch)


def _log_ingested(batch: list[Queued], response: pb.IngestResponse) -> None:
    """A rejected event is the application's mistake: a warning. `UNMATCHED` (no meter reads
    the type) is expected when PlanGate sits in a Multi-Provider with other tracking
    backends, so it is only logged at debug level (design §16)."""
    rejected = []
    for item, result in zip(batch, response.results, strict=False):
        event = item.message
        if not isinstance(event, pb.Event):
            continue
        if result.status == "REJECTED":
            rejected.append((event, result.message))
        elif result.status == "UNMATCHED":
            log.debug(
                "PlanGate counted event %s (%s) nowhere: %s", event.id, event.type, result.message
            )
    if rejected:
        event, message = rejected[0]
        log.warning(
            "PlanGate rejected %d of %d tracking events; first: %s for %s: %s",
            len(rejected),
            len(batch),
            event.type,
            event.subject,
            message,
        )


@dataclass(slots=True)
class Overlay:
    """How a report moves the account's counter, as far as the provider can tell locally."""

    amount: float
    is_set: bool


def usage_report(
    feature: str, account: str, value: float | None, attributes: Mapping[str, Any], key: str
) -> tuple[pb.UsageReport, Overlay | None]:
    """The `Usage.Report` item for one `track` call, and its local overlay (None = unknown).

    Attributes understood: `idempotency_key` (else `key`, the provider's own: unique per
    report, so retries never double count), `unique_key` (unique features), `mode` (`add` |
    `set`), `timestamp` (ISO-8601 or epoch seconds; a past period counts there). Reports with
    a unique key or a timestamp get no overlay: whether they move the current counter only
    the sidecar knows.
    """
    if not attributes:  # the common call: nothing to parse
        report = pb.UsageReport(account_id=account, feature=feature, idempotency_key=key)
        if value is not None:
            report.amount = float(value)
        return report, Overlay(1.0 if value is None else float(value), False)
    report = pb.UsageReport(
        account_id=account,
        feature=feature,
        idempotency_key=str(attributes.get("idempotency_key") or key),
        unique_key=str(attributes.get("unique_key") or ""),
    )
    if value is not None:
        report.amount = float(value)
    mode = str(attributes.get("mode") or "").lower()
    if mode in _MODES:
        report.mode = _MODES[mode]
    elif mode:
        log.warning(
            "track(%s): unknown mode %r (use add or set); using the feature's", feature, mode
        )
    stamp = attributes.get("timestamp")
    if stamp is not None:
        report.timestamp.CopyFrom(_timestamp(stamp))
    if report.unique_key or stamp is not None:
        return report, None
    amount = 1.0 if value is None else float(value)
    return report, Overlay(amount, report.mode == pb.USAGE_MODE_SET)


_MODES = {"add": pb.USAGE_MODE_ADD, "set": pb.USAGE_MODE_SET}


def _timestamp(value: Any) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        out.FromDatetime(datetime.fromtimestamp(value, UTC))
    else:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        out.FromDatetime(at if at.tzinfo else at.replace(tzinfo=UTC))
    return out
