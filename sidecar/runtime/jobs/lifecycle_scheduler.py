"""Sending time-driven lifecycle events once each (design §7.1): trial ending and ended, a
scheduled phase taking effect, a subscription's end, a top-up expiring.

Nothing is written when such an instant passes (design §6.1 writes it ahead of time), so this
thread watches the clock: per account the next instant (`engine.lifecycle_events`) sits in
a heap; when it comes, the account's events up to now are handed to
`Store.fire_lifecycle`, which records each event's mark once and enqueues its webhook rows
in the same transaction. The mark makes "once" hold across restarts and across sidecars
sharing a database (the one whose insert wins enqueues; the other sees nothing returned).

Catching up: the store also keeps how far this has fired (`lifecycle_upto`). On start, every
account's events since then (less `SLACK`) are fired: a trial that ended while the sidecar
was down is sent once when it comes back. `SLACK` also covers an instant that had just passed
when its record was committed (an end "now"): a change re-checks the account's last
`SLACK` on arrival; marks keep the overlap from sending twice. An instant older than the
watermark's `SLACK` when first seen (a subscription created with a start in the past) is
history, not news, and is not sent.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...catalog.model import Account
from ...engine.lifecycle_events import next_instant, timed_events
from ...store.base import Firing
from ..live.events import CatalogChanged, Event
from ..writes.webhooks import entries_for, subscribers
from .clock_thread import ClockThread

if TYPE_CHECKING:
    from ..live.state import LiveState

log = logging.getLogger("plangate.lifecycle")

SLACK = timedelta(minutes=5)
_MAX_SLEEP = 30.0  # re-read the clock (and move the watermark) at least this often


class LifecycleScheduler(ClockThread):
    """After a failure (a store fault) `_stale` makes the next step catch up again from the
    stored watermark: what was due meanwhile is found there."""

    def __init__(
        self, state: LiveState, trial_lead: timedelta, wake: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(
            state, "plangate-lifecycle", log, "lifecycle events: error; catching up again in 1 s"
        )
        self._lead = trial_lead
        self._wake = wake
        self._heap: list[tuple[datetime, str]] = []
        self._moved: datetime | None = None  # the watermark last written

    def _catch_up(self) -> None:
        """Fire every account's events since the stored watermark (less `SLACK`)."""
        store = self._state.store
        now = self._state.clock()
        since = (store.lifecycle_upto() or now) - SLACK
        firings: list[Firing] = []
        if self._state.catalog.webhooks:
            for account in list(self._state.snapshot.accounts.values()):
                firings += self._firings(account, since, now)
        self._fire(firings, now)

    def _step(self) -> None:
        if self._stale:  # (re)start: catch up from the stored watermark, then index
            self._catch_up()
            self._stale = False
            self._rebuild()
        now = self._state.clock()
        self._due(now)
        if self._moved is None or (now - self._moved).total_seconds() >= _MAX_SLEEP:
            self._fire([], now)  # nothing due for a while: the watermark moves on all the same
        wait = _MAX_SLEEP
        if self._heap:
            wait = min(wait, max(0.0, (self._heap[0][0] - now).total_seconds()))
        event = self._next_change(wait)
        if event is not None:
            self._changed(event)

    def _changed(self, event: Event) -> None:
        if isinstance(event, CatalogChanged):
            self._rebuild()  # the accounts were re-validated against the new catalog
            return
        if event.all_accounts:
            return
        now = self._state.clock()
        accounts = self._state.snapshot.accounts
        firings: list[Firing] = []
        for account_id in event.account_ids:
            account = accounts.get(account_id)
            if account is not None:
                firings += self._firings(account, now - SLACK, now)
                self._push(account, now)
        if firings:
            self._fire(firings, now)

    def _due(self, now: datetime) -> None:
        """Fire the accounts whose instant has come, and index what follows for each."""
        ids: dict[str, datetime] = {}
        while self._heap and self._heap[0][0] <= now:
            at, account_id = heapq.heappop(self._heap)
            ids[account_id] = min(at, ids.get(account_id, at))
        if not ids:
            return
        accounts = self._state.snapshot.accounts
        firings: list[Firing] = []
        for account_id, at in ids.items():
            account = accounts.get(account_id)
            if account is not None:
                firings += self._firings(account, min(at, now) - SLACK, now)
                self._push(account, now)
        self._fire(firings, now)
        if len(self._heap) > 2 * len(accounts) + 1000:
            self._rebuild()  # mostly leftovers of superseded instants

    # -- the index ---------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Index every account's next instant; nothing without an endpoint (a catalog change
        that adds one rebuilds the index)."""
        now = self._state.clock()
        self._heap = []
        if not self._state.catalog.webhooks:
            return
        for account in list(self._state.snapshot.accounts.values()):
            at = next_instant(account, now, self._lead)
            if at is not None:
                self._heap.append((at, account.id))
        heapq.heapify(self._heap)

    def _push(self, account: Account, after: datetime) -> None:
        if not self._state.catalog.webhooks:
            return
        at = next_instant(account, after, self._lead)
        if at is not None:
            heapq.heappush(self._heap, (at, account.id))

    # -- firing ------------------------------------------------------------------------------

    def _firings(self, account: Account, start: datetime, end: datetime) -> list[Firing]:
        """The account's events in `(start, end]` that some endpoint wants, as marks with
        their rows (an event nobody subscribes to is not marked: nothing to send)."""
        catalog = self._state.catalog
        if not catalog.webhooks:
            return []
        env = self._state.store.environment
        return [
            Firing(e.mark, e.at, tuple(entries_for(catalog, env, [e])))
            for e in timed_events(account, start, end, self._lead)
            if subscribers(catalog, e.type)
        ]

    def _fire(self, firings: list[Firing], upto: datetime) -> None:
        fired = self._state.store.fire_lifecycle(firings, upto)
        self._moved = upto
        if fired:
            log.info("lifecycle events sent: %s", ", ".join(fired))
            self._wake()
