"""A thread that acts when an instant comes, and hears every record change meanwhile.

Time alone changes things nothing writes: a decision at an override's expiry (the timekeeper)
and a lifecycle event at a trial's end (the lifecycle scheduler). Both keep a heap of
per-account instants, sleep until the earliest one or the next change, and must rebuild
from scratch after a failure rather than die. That loop is this class; each subclass says
what one step does (`_step`, which waits with `_next_change`).

The hub listener is registered before the thread starts, so no change made while the thread
builds its first index is missed; the queue is unbounded, so none is dropped. Usage and time
events change no record and come with every write: they are dropped at the hub and never
wake the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from ..live.events import AccountChanged, CatalogChanged, Event

if TYPE_CHECKING:
    from ..live.state import LiveState

NO_RECORD_CHANGE = frozenset({"usage", "time"})
"""Event causes that change no account record (so no instant either)."""

_WAKE = AccountChanged((), "time")  # put by `stop`: only ends the wait


class ClockThread:
    """Subclasses set `_stale = True` to be rebuilt and implement `_step`."""

    def __init__(self, state: LiveState, name: str, log: logging.Logger, failure: str) -> None:
        self._state = state
        self._log = log
        self._failure = failure  # logged with the traceback when a step fails
        self._queue: queue.Queue[Event] = queue.Queue()
        self._started = False
        self._stale = True  # rebuild from the snapshot before anything else
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._state.events.listen(self._heard)
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        if not self._started:
            return
        self._stopping.set()
        self._queue.put(_WAKE)
        self._thread.join(timeout=5)
        self._state.events.unlisten(self._heard)

    def _heard(self, event: Event) -> None:
        if isinstance(event, CatalogChanged) or event.cause not in NO_RECORD_CHANGE:
            self._queue.put(event)

    def _run(self) -> None:
        while not (self._stopping.is_set() or self._state.events.closed):
            try:
                self._step()
            except Exception:  # one bad record or a store fault must not end it for everyone
                self._log.exception(self._failure)
                self._stale = True
                self._stopping.wait(1.0)

    def _step(self) -> None:
        raise NotImplementedError

    def _next_change(self, wait: float) -> Event | None:
        """The next record change within `wait` seconds, or None when the wait ran out (or
        `stop` ended it)."""
        if self._stopping.is_set():
            return None
        try:
            event = self._queue.get(timeout=max(0.0, wait))
        except queue.Empty:
            return None
        return None if event is _WAKE else event

    def _queued(self) -> Event | None:
        """A change already queued, without waiting."""
        try:
            event = self._queue.get_nowait()
        except queue.Empty:
            return None
        if event is _WAKE:
            self._queue.put(_WAKE)  # left for `_next_change`, so a stop is not lost
            return None
        return event
