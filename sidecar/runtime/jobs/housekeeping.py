"""Housekeeping (design §14): a thread that keeps the store from growing without bound.

Every `interval` seconds it removes idempotency keys past their retention (7 days: a client
retrying later than that is not retrying), tombstones of deleted accounts (shared mode; a
sidecar reconciles within seconds, so a week-old tombstone tells no one anything), usage
counters and their unique keys of periods that ended more than `history_days` ago, hourly
usage-history buckets of hours more than `history_days` ago (design §6.2), fired
quota marks of periods that ended more than the key retention ago (a late report for such a
period is no retry and may fire again), delivered outbox rows older than 30 days, and audit
log entries older than `audit_days` (design §12). In shared mode the store lets one sidecar at a time do it. `/metrics` counts what went.

A counter's period end is not stored; it is bounded by the feature's longest period (a
month is at most 31 days), so what is pruned has surely ended — at most one period late.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...catalog.model import Catalog, Reset
from ...engine.events import KEY_RETENTION
from ...store.base import PrunePlan
from ...store.errors import StoreUnavailable

if TYPE_CHECKING:
    from ..live.state import LiveState

log = logging.getLogger("plangate.housekeeping")

TOMBSTONE_RETENTION = timedelta(days=7)
DELIVERED_RETENTION = timedelta(days=30)

_LONGEST: dict[Reset, timedelta | None] = {
    Reset.HOURLY: timedelta(hours=1),
    Reset.DAILY: timedelta(days=1),
    Reset.WEEKLY: timedelta(days=7),
    Reset.MONTHLY: timedelta(days=31),
    Reset.YEARLY: timedelta(days=366),
    Reset.NEVER: None,  # one period for ever: never pruned
}
_EVER = datetime.min.replace(tzinfo=UTC)
"""A cut-off nothing starts before."""


def prune_plan(catalog: Catalog, now: datetime, history_days: int, audit_days: int) -> PrunePlan:
    """What a pass at `now` removes, per design §14 (see the module docstring)."""

    def before(keep: timedelta) -> dict[str, datetime]:
        cutoffs: dict[str, datetime] = {}
        for key, feature in catalog.features.items():
            longest = _LONGEST[feature.reset]
            cutoffs[key] = _EVER if longest is None else now - keep - longest
        return cutoffs

    history = timedelta(days=history_days)
    # a feature no longer in the catalog: its counters go once even a yearly period is over
    unknown = _LONGEST[Reset.YEARLY]
    assert unknown is not None
    return PrunePlan(
        idempotency_before=now - KEY_RETENTION,
        tombstones_before=now - TOMBSTONE_RETENTION,
        deliveries_before=now - DELIVERED_RETENTION,
        usage_before=before(history),
        usage_default=now - history - unknown,
        marks_before=before(KEY_RETENTION),
        marks_default=now - KEY_RETENTION - unknown,
        audit_before=now - timedelta(days=audit_days),
        history_before=now - history,
    )


PrunedObserver = Callable[[dict[str, int]], None]
"""Told the rows removed per kind after each pass that removed something (the metrics)."""


class Housekeeper:
    """One background thread running `run_once` every `interval` seconds (the first right away)."""

    def __init__(
        self,
        state: LiveState,
        history_days: int = 400,
        audit_days: int = 400,
        interval: float = 3600.0,
        observer: PrunedObserver | None = None,
    ) -> None:
        self.state = state
        self.history_days = history_days
        self.audit_days = audit_days
        self.interval = interval
        self.observer = observer
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except StoreUnavailable as exc:  # away for a while (readiness says so): next pass
                log.warning("housekeeping skipped: %s; trying again in %ss", exc, self.interval)
            except Exception:
                log.exception("housekeeping failed; trying again in %ss", self.interval)
            self._stopping.wait(self.interval)

    def run_once(self) -> dict[str, int] | None:
        """One pass; the rows removed per kind, or None if another sidecar is doing it."""
        state = self.state
        plan = prune_plan(state.catalog, state.clock(), self.history_days, self.audit_days)
        removed = state.prune(plan)
        if removed and any(removed.values()):
            log.info("housekeeping removed %s", removed)
            if self.observer is not None:
                self.observer(removed)
        return removed
