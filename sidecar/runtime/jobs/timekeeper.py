"""Telling watchers when time alone changes decisions (design §8 "Time").

Nothing is written when an override expires or a month turns, so no write path announces it.
The timekeeper keeps, per account, the next such instant (`engine.boundaries`) in a heap,
sleeps until the earliest one and then publishes `AccountChanged(ids, "time")`; a calendar
period end, which touches every account at once, is one event with `all_accounts` instead of
a million ids. Caches then drop what they hold at the instant, even where their own check of
`valid_until` would come later (a client that never asks again still hears about it).

Cost: the index is built in one pass over the snapshot on this thread, so start-up does not
wait for it; a change re-indexes only the accounts it names, an instant costs O(log n) plus
the accounts it fires. Entries are never removed in place: an entry whose account no longer
has that instant is skipped when it comes up (and the heap is rebuilt if such leftovers
outnumber the accounts).
"""

from __future__ import annotations

import heapq
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...catalog.model import Account, Reset
from ...engine.boundaries import account_change, calendar_change, subscription_resets
from ..live.events import AccountChanged, CatalogChanged, Event
from .clock_thread import ClockThread

if TYPE_CHECKING:
    from ..live.state import LiveState

log = logging.getLogger("plangate.timekeeper")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EVERY_ACCOUNT = ""  # the heap's key for calendar instants (account ids are never empty)
_MAX_SLEEP = 60.0  # re-read the clock at least this often (a wall clock may be stepped)


def _micros(at: datetime) -> int:
    """An instant as whole microseconds since the epoch: exact, and compact in the heap."""
    return (at - _EPOCH) // _US


def _instant(micros: int) -> datetime:
    return _EPOCH + micros * _US


class Timekeeper(ClockThread):
    def __init__(self, state: LiveState) -> None:
        super().__init__(
            state, "plangate-timekeeper", log, "timekeeper: error; rebuilding the index"
        )
        self._heap: list[tuple[int, str]] = []
        self._resets: tuple[Reset, ...] = ()

    def _step(self) -> None:
        """Build the index if needed, announce what is due, then sleep until the next instant
        or the next change, whichever comes first."""
        if self._stale:
            self._stale = False
            self._rebuild()
        now = _micros(self._state.clock())
        self._fire_due(now)
        wait = _MAX_SLEEP if not self._heap else (self._heap[0][0] - now) / 1e6
        event = self._next_change(min(_MAX_SLEEP, wait))
        if event is None:
            return
        now = _micros(self._state.clock())
        self._fire_due(now)
        # Instants of the changed accounts up to the change are the change's own news (its
        # event already told watchers); index what comes after now.
        self._changed(event, _instant(now))

    def _changed(self, event: Event, after: datetime) -> None:
        if isinstance(event, CatalogChanged):
            self._stale = True  # the next step rebuilds the index for the new catalog
        elif not event.all_accounts:
            accounts = self._state.snapshot.accounts
            for account_id in event.account_ids:
                account = accounts.get(account_id)
                if account is not None:
                    self._push(account, after)

    # -- the index ---------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """One pass over the snapshot; then the changes queued while it ran are indexed from
        its start, so an instant that fell inside the pass is not lost."""
        snap = self._state.snapshot
        after = self._state.clock()
        self._resets = subscription_resets(snap.catalog.features.values())
        self._heap = []
        for account in list(snap.accounts.values()):  # list(): a commit may add one meanwhile
            at = self._next(account, after)
            if at is not None:
                self._heap.append((_micros(at), account.id))
        calendar = calendar_change(snap.catalog.features.values(), after)
        if calendar is not None:
            self._heap.append((_micros(calendar), _EVERY_ACCOUNT))
        heapq.heapify(self._heap)
        while (event := self._queued()) is not None:
            self._changed(event, after)

    def _next(self, account: Account, after: datetime) -> datetime | None:
        """The account's next instant: its records' (`account_change`) or a hold expiring
        (design §17: expiry is a time boundary)."""
        at = account_change(account, self._resets, after)
        expiry = self._state.holds.next_expiry(account.id, after)
        if expiry is not None and (at is None or expiry < at):
            return expiry
        return at

    def _push(self, account: Account, after: datetime) -> None:
        at = self._next(account, after)
        if at is not None:
            heapq.heappush(self._heap, (_micros(at), account.id))

    def _due_at(self, key: str, micros: int) -> bool:
        """Whether `key` still changes at `micros` (its entry may predate a later change)."""
        just_before = _instant(micros) - _US
        snap = self._state.snapshot
        if key == _EVERY_ACCOUNT:
            at = calendar_change(snap.catalog.features.values(), just_before)
        else:
            account = snap.accounts.get(key)
            at = None if account is None else self._next(account, just_before)
        return at is not None and _micros(at) == micros

    def _fire_due(self, now: int) -> None:
        """Publish every instant that has come, once per account, and index what follows."""
        keys: dict[str, None] = {}
        while self._heap and self._heap[0][0] <= now:
            micros, key = heapq.heappop(self._heap)
            if key not in keys and self._due_at(key, micros):
                keys[key] = None
        if not keys:
            return
        snap = self._state.snapshot
        after = _instant(now)
        ids: dict[str, None] = {}
        every = False
        for key in keys:
            if key == _EVERY_ACCOUNT:
                every = True
                calendar = calendar_change(snap.catalog.features.values(), after)
                if calendar is not None:
                    heapq.heappush(self._heap, (_micros(calendar), _EVERY_ACCOUNT))
                continue
            account = snap.accounts.get(key)
            if account is None:
                continue
            ids[key] = None
            ids.update(dict.fromkeys(m for s in account.subscriptions for m in s.members))
            self._push(account, after)
        if every:
            self._state.events.publish(AccountChanged((), "time", all_accounts=True))
        elif ids:
            self._state.events.publish(AccountChanged(tuple(ids), "time"))
        if len(self._heap) > 2 * len(snap.accounts) + 1000:
            self._stale = True  # mostly leftovers of superseded instants: rebuild
