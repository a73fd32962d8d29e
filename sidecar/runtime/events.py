"""Change events fanned out to every `Watch` stream (and flagd `EventStream`).

Streams live on the sidecar's event loop (design §2.1) and cost no thread: each subscriber is
an `asyncio.Queue`. Writers publish from their own threads (admin, usage, catalog sync), so
`publish` hands the event to the loop with one `call_soon_threadsafe` and the loop puts it
in every queue, whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
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


class _Closed:
    """Put in every queue when the hub closes: the stream ends (with UNAVAILABLE)."""


_CLOSED = _Closed()

QUEUE_LIMIT = 10_000
"""Events a subscriber may fall behind by; one further behind is dropped (its stream ends and
the client reconnects and re-reads everything, which is what it would need anyway)."""


class _Beat:
    """Put in an idle subscriber's queue by its heartbeat timer: the iterator yields None."""


_BEAT = _Beat()


class Subscriber:
    """One stream's queue. `async for event in sub` yields events, and `None` after each idle
    `heartbeat` seconds; it stops when the hub closes or drops this subscriber.

    The heartbeat is one timer per subscriber that re-arms itself, not a timeout around each
    wait: a fan-out to thousands of streams would otherwise cancel and schedule a timer per
    stream per event."""

    def __init__(self, hub: EventHub, heartbeat: float) -> None:
        self._hub = hub
        self._heartbeat = heartbeat
        self.queue: asyncio.Queue[Event | _Closed | _Beat] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._active = 0.0  # loop time of the last event handed out (or of the start)
        self._timer: asyncio.TimerHandle | None = None

    async def __aiter__(self) -> AsyncIterator[Event | None]:
        loop = asyncio.get_running_loop()
        self._active = loop.time()
        self._timer = loop.call_at(self._active + self._heartbeat, self._beat, loop)
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, _Beat):
                    yield None
                    continue
                if isinstance(item, _Closed):
                    return
                self._active = loop.time()
                yield item
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue a heartbeat when nothing was handed out for `heartbeat` seconds, then wake
        again a heartbeat after the later of that beat and the last event."""
        now = loop.time()
        if now >= self._active + self._heartbeat:
            with contextlib.suppress(asyncio.QueueFull):  # far behind: events are coming
                self.queue.put_nowait(_BEAT)
            self._active = now
        self._timer = loop.call_at(self._active + self._heartbeat, self._beat, loop)

    def pending(self) -> list[Event]:
        """Events already queued, taken without waiting (a stream may merge a burst)."""
        out: list[Event] = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _Closed):
                self.queue.put_nowait(item)  # seen again by the iterator, which then stops
                break
            if not isinstance(item, _Beat):  # events follow: no heartbeat needed
                out.append(item)
        return out

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    """Subscribers on one event loop; `publish` and `close` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the streams run on (the sidecar's, once it runs)."""
        self._loop = loop
        self.closed = False

    def subscribe(self, heartbeat: float = 5.0) -> Subscriber:
        """A new subscriber; call on the loop (from a stream's handler)."""
        sub = Subscriber(self, heartbeat)
        if self.closed:
            sub.queue.put_nowait(_CLOSED)
        with self._lock:
            self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        """Open streams (a test of scale waits until all of its streams are subscribed)."""
        with self._lock:
            return len(self._subscribers)

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

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
        self._send(_CLOSED)

    def _send(self, item: Event | _Closed) -> None:
        loop = self._loop
        if loop is None:  # no loop serves streams (a unit test's hub): fill the queues at once
            self._fan_out(item)
            return
        if loop.is_closed():
            return  # the sidecar stopped: no stream is left to tell
        if asyncio._get_running_loop() is loop:  # published on the loop (Consume): no wake-up
            loop.call_soon(self._fan_out, item)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: no stream is left
            loop.call_soon_threadsafe(self._fan_out, item)

    def _fan_out(self, item: Event | _Closed) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.unsubscribe(sub)
                sub.queue.get_nowait()  # room for the end marker: the stream ends
                sub.queue.put_nowait(_CLOSED)
