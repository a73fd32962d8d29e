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
    cause: str  # admin, usage, quota, sync, time
    all_accounts: bool = False  # every account (a calendar period ended); ids then empty


Event = CatalogChanged | AccountChanged


_NOTICE = 0.2
"""Seconds within which an idle subscriber notices it (or its hub) was closed: a stream
ends promptly on client cancel and on shutdown instead of at its next heartbeat."""


class Subscriber:
    """One listener's queue; iterate to receive events, `None` on each idle `timeout`."""

    def __init__(self, hub: EventHub, timeout: float) -> None:
        self._hub = hub
        self._timeout = timeout
        self._closed = False
        self.queue: queue.Queue[Event] = queue.Queue(maxsize=10_000)

    def __iter__(self) -> Iterator[Event | None]:
        idle = 0.0
        while not (self._closed or self._hub.closed):
            wait = max(0.001, min(_NOTICE, self._timeout - idle))
            try:
                event = self.queue.get(timeout=wait)
            except queue.Empty:
                idle += wait
                if idle >= self._timeout:
                    idle = 0.0
                    yield None
                continue
            idle = 0.0
            yield event

    def close(self) -> None:
        self._closed = True
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
