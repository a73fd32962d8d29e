"""Change events fanned out to every `Watch` stream (and flagd `EventStream`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    version: str
    features: tuple[str, ...]  # changed keys
    all_features: tuple[str, ...]  # every key of the new catalog


@dataclass(frozen=True, slots=True)
class AccountChanged:
    account_ids: tuple[str, ...]
    cause: str  # admin, usage, quota, sync


Event = CatalogChanged | AccountChanged


class Subscriber:
    """One listener's queue; iterate to receive events, `None` on each idle `timeout`."""

    def __init__(self, hub: EventHub, timeout: float) -> None:
        self._hub = hub
        self._timeout = timeout
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=10_000)

    def __iter__(self) -> Iterator[Event | None]:
        while not self._hub.closed:
            try:
                yield self.queue.get(timeout=self._timeout)
            except queue.Empty:
                yield None

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self.closed = False

    def subscribe(self, timeout: float = 5.0) -> Subscriber:
        sub = Subscriber(self, timeout)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                # A listener this far behind reconnects and re-reads everything anyway.
                self.unsubscribe(sub)

    def close(self) -> None:
        self.closed = True
