"""Change events for the `Watch` streams, flagd `EventStream`s and OFREP SSE streams.

Streams live on the sidecar's event loop (design §2.1) and cost no thread. Writers publish
from their own threads (admin, usage, catalog sync) with one `call_soon_threadsafe`; what a
write then costs on the loop must not grow with the number of open streams (issue 22,
decision 1310):

- A subscriber with *interest* (a `Watch` that names its accounts, an SSE stream of one
  account) is indexed by account: an account's change reaches only the streams that asked
  for it.
- A *broad* subscriber (a `Watch` without interest, a flagd `EventStream`) gets account
  changes coalesced: the hub merges them and hands every broad stream one batch at most
  every `coalesce` seconds, so a burst of writes costs one pass over the streams, not one
  per write.
- Catalog changes and "every account" events (a calendar period ended) are rare and go to
  every stream at once.

Each subscriber holds its undelivered events in a short list that is merged in place when
it grows, so a client that never reads costs bounded memory and no further work.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    version: str
    features: tuple[str, ...]  # changed keys
    all_features: tuple[str, ...]  # every key of the new catalog


@dataclass(frozen=True, slots=True)
class AccountChanged:
    account_ids: tuple[str, ...]
    cause: str  # admin, usage, quota, sync, time
    all_accounts: bool = False  # every account (a calendar period ended); ids then empty


Event = CatalogChanged | AccountChanged

PENDING_LIMIT = 16
"""Undelivered events a subscriber keeps as they came; one more and they are merged (one
catalog change, one account change per cause), so a reader that is behind gets a summary."""

ID_LIMIT = 1_000
"""Account ids one merged event may name; more become `all_accounts` (the client re-reads
everything it holds, which is what that many changes would make it do anyway)."""

INTEREST_LIMIT = 100_000
"""Accounts one stream may declare interest in; a stream that asks for more becomes broad
(it then hears of every account, coalesced), so it is never told too little."""


def merge(events: Iterable[Event]) -> list[Event]:
    """One catalog change (the last version, every changed key) and one account change per
    cause (every id, or `all_accounts` past `ID_LIMIT`), in that order."""
    catalog: CatalogChanged | None = None
    changed: dict[str, None] = {}
    causes: dict[str, dict[str, None] | None] = {}  # None: every account
    for event in events:
        if isinstance(event, CatalogChanged):
            changed.update(dict.fromkeys(event.features))
            catalog = CatalogChanged(event.version, tuple(changed), event.all_features)
            continue
        if event.cause in causes:
            ids = causes[event.cause]
            if ids is None:
                continue
        else:
            ids = causes[event.cause] = {}
        if event.all_accounts:
            causes[event.cause] = None
            continue
        ids.update(dict.fromkeys(event.account_ids))
        causes[event.cause] = None if len(ids) > ID_LIMIT else ids
    out: list[Event] = [catalog] if catalog is not None else []
    for cause, ids in causes.items():
        if ids is None:
            out.append(AccountChanged((), cause, all_accounts=True))
        else:
            out.append(AccountChanged(tuple(ids), cause))
    return out


class Subscriber:
    """One stream. `async for batch in sub` yields the events that arrived since the last
    batch (a non-empty list), or None after each idle `heartbeat` seconds; it stops when the
    hub closes or drops this subscriber.

    `interest` None means broad (every account, coalesced by the hub); a set means only
    those accounts' changes (plus catalog and every-account events). `watch_id` names an
    interest stream so calls on other connections may add to it (`EventHub.add_interest`).
    """

    def __init__(self, hub: EventHub, heartbeat: float, interest: set[str] | None) -> None:
        self._hub = hub
        self._heartbeat = heartbeat
        self.interest = interest
        self.watch_id = secrets.token_urlsafe(16) if interest is not None else ""
        self._events: list[Event] = []
        self._closed = False
        self._beat = False
        self._wake = asyncio.Event()
        self._active = 0.0  # loop time of the last batch handed out (or of the start)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def broad(self) -> bool:
        return self.interest is None

    def put(self, event: Event) -> None:
        """Queue `event` (on the loop); merged in place once `PENDING_LIMIT` are waiting."""
        self._events.append(event)
        if len(self._events) > PENDING_LIMIT:
            self._events = merge(self._events)
        self._wake.set()

    def end(self) -> None:
        self._closed = True
        self._wake.set()

    @property
    def ended(self) -> bool:
        """The hub closed (the sidecar is stopping): a stream must not say ready on it, or a
        client reconnecting during the drain would take the dying sidecar for a live one."""
        return self._closed

    def pending(self) -> list[Event]:
        """Events already queued, taken without waiting."""
        out, self._events = self._events, []
        return out

    async def __aiter__(self) -> AsyncIterator[list[Event] | None]:
        loop = asyncio.get_running_loop()
        # the first beat at a random point of the interval: streams opened together (a fleet
        # reconnecting) must not all beat in the same instant ever after
        self._active = loop.time() - random.uniform(0.0, 0.5) * self._heartbeat
        self._timer = loop.call_at(self._active + self._heartbeat, self._on_timer, loop)
        try:
            while True:
                if not self._events and not self._closed and not self._beat:
                    self._wake.clear()
                    await self._wake.wait()
                if self._closed:
                    return
                batch = self.pending()
                if batch:
                    self._beat = False
                    self._active = loop.time()
                    yield batch
                elif self._beat:
                    self._beat = False
                    yield None
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask for a heartbeat when nothing was handed out for `heartbeat` seconds, then wake
        again a heartbeat after the later of that beat and the last batch. One re-arming
        timer per stream, never one per event."""
        now = loop.time()
        if now >= self._active + self._heartbeat:
            self._beat = True
            self._wake.set()
            self._active = now
        self._timer = loop.call_at(self._active + self._heartbeat, self._on_timer, loop)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    """Subscribers on one event loop; `publish` and `close` may be called from any thread,
    `subscribe`, `add_interest` and `unsubscribe` on the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._broad: set[Subscriber] = set()
        self._interested: set[Subscriber] = set()
        self._by_account: dict[str, set[Subscriber]] = {}
        self._by_id: dict[str, Subscriber] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._coalesce = 0.0
        self._batch: list[Event] = []  # account changes waiting for the broad streams
        self._flush: asyncio.TimerHandle | asyncio.Handle | None = None
        self._last_flush = float("-inf")
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop, coalesce: float = 1.0) -> None:
        """The loop the streams run on (the sidecar's, once it runs), and the shortest time
        between two account-change batches to a broad stream."""
        self._loop = loop
        self._coalesce = coalesce
        self.closed = False

    def subscribe(
        self, heartbeat: float = 5.0, interest: Iterable[str] | None = None
    ) -> Subscriber:
        """A new subscriber; broad unless `interest` (possibly empty) is given."""
        wanted = None if interest is None else set(interest)
        if wanted is not None and len(wanted) > INTEREST_LIMIT:
            wanted = None
        sub = Subscriber(self, heartbeat, wanted)
        if self.closed:
            sub.end()
        with self._lock:
            if wanted is None:
                self._broad.add(sub)
                return sub
            self._interested.add(sub)
            self._by_id[sub.watch_id] = sub
            for account in wanted:
                self._by_account.setdefault(account, set()).add(sub)
        return sub

    def add_interest(self, watch_id: str, account: str) -> bool:
        """Add `account` to the interest of the stream `watch_id`; False if no such stream
        is open (it ended: its client reconnects and starts afresh)."""
        with self._lock:
            sub = self._by_id.get(watch_id)
            if sub is None:
                return False
            interest = sub.interest
            if interest is None or account in interest:
                return True
            if len(interest) >= INTEREST_LIMIT:  # too many to index: hear of every account
                self._forget(sub)
                sub.interest = None
                self._broad.add(sub)
                return True
            interest.add(account)
            self._by_account.setdefault(account, set()).add(sub)
        return True

    @property
    def subscriber_count(self) -> int:
        """Open streams (a test of scale waits until all of its streams are subscribed)."""
        with self._lock:
            return len(self._broad) + len(self._interested)

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._broad.discard(sub)
            self._forget(sub)

    def _forget(self, sub: Subscriber) -> None:
        """Drop `sub` from the interest indexes (lock held)."""
        if sub not in self._interested:
            return
        self._interested.discard(sub)
        self._by_id.pop(sub.watch_id, None)
        for account in sub.interest or ():
            subs = self._by_account.get(account)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_account[account]

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` in the publishing thread for every event: for in-process
        consumers that are threads, not streams (the timekeeper), and must never be dropped."""
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def publish(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        self._send(event)

    def close(self) -> None:
        """End every stream (shutdown); later subscribers end at once."""
        self.closed = True
        self._send(None)

    def _send(self, item: Event | None) -> None:
        loop = self._loop
        if loop is None:  # no loop serves streams (a unit test's hub): deliver at once
            self._deliver(item, coalesce=False)
            return
        if loop.is_closed():
            return  # the sidecar stopped: no stream is left to tell
        if asyncio._get_running_loop() is loop:  # published on the loop (Consume): no wake-up
            loop.call_soon(self._deliver, item)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: no stream is left
            loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: Event | None, coalesce: bool = True) -> None:
        """On the loop: hand `item` (None: the end) to the streams that need it."""
        if item is None or isinstance(item, CatalogChanged) or item.all_accounts:
            with self._lock:
                everyone = [*self._broad, *self._interested]
            for sub in everyone:
                if item is None:
                    sub.end()
                else:
                    sub.put(item)
            return
        with self._lock:
            wanting = {s for a in item.account_ids for s in self._by_account.get(a, ())}
            broad = bool(self._broad)
        for sub in wanting:
            interest = sub.interest or ()
            ids = tuple(a for a in item.account_ids if a in interest)
            sub.put(item if len(ids) == len(item.account_ids) else AccountChanged(ids, item.cause))
        if not broad:
            return
        self._batch.append(item)
        if not coalesce:
            self._flush_batch()
            return
        if len(self._batch) > PENDING_LIMIT:
            self._batch = merge(self._batch)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Flush now if the last flush is a full interval ago, else at that moment: at most
        one batch per interval, and a lone change is not delayed."""
        if self._flush is not None:
            return
        loop = self._loop
        assert loop is not None
        at = self._last_flush + self._coalesce
        if loop.time() >= at:
            self._flush = loop.call_soon(self._flush_batch)
        else:
            self._flush = loop.call_at(at, self._flush_batch)

    def _flush_batch(self) -> None:
        self._flush = None
        if self._loop is not None:
            self._last_flush = self._loop.time()
        batch, self._batch = merge(self._batch), []
        with self._lock:
            broad = list(self._broad)
        for sub in broad:
            for event in batch:
                sub.put(event)
