"""One connected life of the provider: everything between `initialize` and `shutdown`.

`Session` wires the parts together — transport, cache, pending usage, evaluator, Watch
loop, event bridge, usage reporter — and turns `track` calls into queued reports (a feature
key's name) or CloudEvents (any other name, design §16). Keeping
it apart from `PlanGateProvider` leaves the provider class as the plain OpenFeature surface.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence

from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from .cache import ResolutionCache
from .config import LAST_KNOWN, ProviderConfig
from .evaluator import Evaluator
from .events import Emit, EventBridge
from .journal import TrackJournal
from .outage import LastKnown
from .pending import PendingUsage
from .spending import Spender
from .tracked_events import EventIds, tracking_event
from .tracking import Queued, UsageReporter, usage_report
from .transport import Transport
from .watch import WatchLoop

log = logging.getLogger("plangate.provider")


def _account_of(message: pb.UsageReport | pb.Event) -> str:
    return message.account_id if isinstance(message, pb.UsageReport) else message.subject


class Session:
    """Everything that lives between `initialize` and `shutdown`."""

    def __init__(self, config: ProviderConfig, emit: Emit) -> None:
        self.config = config
        # First: a journal another process holds fails here, before anything is started.
        self.journal = (
            TrackJournal(config.track_journal, config.journal_fsync_interval)
            if config.track_journal
            else None
        )
        self.transport = Transport(config)
        self.cache = ResolutionCache(config.cache_size) if config.cache else None
        self.pending = PendingUsage()
        outage = config.on_unavailable
        keeps = outage == LAST_KNOWN or (
            not isinstance(outage, str) and LAST_KNOWN in outage.values()
        )
        last_known = LastKnown(config) if keeps else None
        self.events = EventBridge(self.cache, emit, config.grace_period, config.target)
        self.evaluator = Evaluator(
            self.transport, self.cache, self.pending, self.events, last_known
        )
        self.reporter = UsageReporter(self.transport, config, self._settled)
        self.spender = Spender(self.transport, self.cache, config.report_deadline)
        # with a cache, the stream carries only the cached accounts (without one, every
        # account's change is still announced to the application, as before)
        self.watch = WatchLoop(
            self.transport,
            self.events,
            config.heartbeat_timeout,
            accounts_only=self.cache is not None,
        )
        # idempotency keys of reports without one: this session's random prefix + the report's
        # number (unique without a `getrandom` system call per `track`, decision 2104)
        self._key_prefix = secrets.token_hex(12) + "-"
        self._event_ids = EventIds()
        self._replaying: set[int] = set()
        self._replayed = threading.Event()
        self._replay()
        self.reporter.start()
        self.watch.start()

    def _replay(self) -> None:
        """Queue what an earlier process journaled and the sidecar never acknowledged, first
        and with the same reports (idempotency keys), design §21."""
        if self.journal is not None:
            self.reporter.resume_after(self.journal.last)
            for n, message in self.journal.unacknowledged():
                self._replaying.add(n)
                self.reporter.submit(Queued(n, message), replay=True)
            if self._replaying:
                log.info(
                    "track_journal %s: sending %d report(s) an earlier process left undelivered",
                    self.journal.path,
                    len(self._replaying),
                )
        if not self._replaying:
            self._replayed.set()

    def wait_replayed(self, timeout: float) -> int:
        """Wait until the journal's earlier reports are acknowledged; returns how many are not."""
        self._replayed.wait(timeout)
        return len(self._replaying)

    def _settled(self, batch: Sequence[Queued]) -> None:
        if self.journal is not None:
            self.journal.acknowledge(q.seq for q in batch)
        if self._replaying:
            self._replaying.difference_update(q.seq for q in batch)
            if not self._replaying:
                self._replayed.set()
        # Cache first, overlay second: in between, a check may count the report twice
        # (less remaining), never miss it.
        if self.cache is not None:
            self.cache.invalidate_accounts({_account_of(q.message) for q in batch})
        for q in batch:
            if isinstance(q.message, pb.UsageReport):
                self.pending.settle(q.seq, q.message.account_id, q.message.feature)

    def track(
        self, feature: str, ctx: EvaluationContext | None, details: TrackingEventDetails | None
    ) -> None:
        account = ctx.targeting_key if ctx is not None else None
        if not account or not feature:
            log.warning(
                "track(%r) needs an event name (the metered feature) and a targeting key "
                "(the account); usage not reported",
                feature,
            )
            return
        attributes = details.attributes if details is not None else {}
        known = self.events.known_features
        if known is not None and feature not in known:
            self._track_event(feature, account, details)
            return
        seq = self.reporter.next_seq()
        try:
            report, overlay = usage_report(
                feature,
                account,
                details.value if details is not None else None,
                attributes,
                f"{self._key_prefix}{seq}",
            )
        except (TypeError, ValueError) as exc:
            log.warning("track(%r): %s; usage not reported", feature, exc)
            return
        if self.journal is not None:
            self.journal.append(seq, report)  # before `track` returns (design §21)
        if overlay is not None:
            self.pending.add(seq, account, feature, overlay.amount, overlay.is_set)
        if not self.reporter.submit(Queued(seq, report)):
            self.pending.settle(seq, account, feature)
            if self.journal is not None:
                self.journal.acknowledge([seq])
            log.error("track(%r): usage queue full or closed; report dropped", feature)

    def _track_event(self, name: str, account: str, details: TrackingEventDetails | None) -> None:
        """Queue the CloudEvent for a name that is no feature key: a meter's `event_type`, or
        another system's event the sidecar answers `UNMATCHED` (design §16). Journaled and
        retried like a report; no pending-usage overlay, since which features it moves (if
        any) only the sidecar's meters know."""
        seq = self.reporter.next_seq()
        try:
            event = tracking_event(
                name,
                account,
                details.value if details is not None else None,
                details.attributes if details is not None else {},
                self.config.event_source,
                self._event_ids(seq),
            )
        except (TypeError, ValueError) as exc:
            log.warning("track(%r): %s; event not sent", name, exc)
            return
        if self.journal is not None:
            self.journal.append(seq, event)
        if not self.reporter.submit(Queued(seq, event)):
            if self.journal is not None:
                self.journal.acknowledge([seq])
            log.error("track(%r): usage queue full or closed; event dropped", name)

    def close(self) -> int:
        """Stop everything; returns how many usage reports could not be delivered."""
        left = self.reporter.close(self.config.shutdown_timeout)  # flush while the channel is open
        self.events.close()
        self.watch.stop()
        self.transport.close()
        if self.journal is not None:
            self.journal.close()  # what is left undelivered stays in it for the next start
        return left
