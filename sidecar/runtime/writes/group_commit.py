"""Group commit: concurrent callers' batches written by one store transaction.

Every acknowledged usage report costs a durable commit (an fsync, and in shared mode the row
locks of its counters until the commit). When many Report calls arrive at once, running them
one transaction each makes them queue behind each other, and a hot account (one counter
every call touches) serialises every sidecar on that row. Grouping them turns N commits into
one: the first caller to find no transaction running becomes the leader, takes everything
queued so far (its own batch included) and applies it in one call; callers that arrive
meanwhile queue up for the next group. A lone caller runs at once, so there is no added
latency when there is no contention: the group size adapts to the load by itself.

The grouped batch keeps arrival order, and the store applies a batch sequentially, so every
caller gets exactly the outcomes it would have had alone: idempotency keys included, and a
Consume's check (`UsageWrite.admit`) sees the counter as the writes before it in the group
left it. If the transaction fails, none of the group's writes happened. An error of the
database itself (one of `shared_errors`: unreachable, disk full) would fail each batch alike,
so every caller gets it at once. Any other error may come from one batch (text the database
refuses, a bug hit by one request): the batches are then run again one transaction each, so
a bad request fails alone and the others get the outcomes they would have had.

A caller on an event loop cannot wait in `submit`; `submit_later` queues its batch and
hands back a future. The batches queued that way are run by one drainer on an executor,
group after group until none is left, so a thousand concurrent callers cost one thread and
one hand-off per group rather than a blocked pool thread each (and no herd of them waking
on every commit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T, R]):
    __slots__ = ("done", "error", "future", "items", "results")

    def __init__(self, items: Sequence[T], future: Future[list[R]] | None = None) -> None:
        self.items = items
        self.results: list[R] = []
        self.error: BaseException | None = None
        self.done = False
        self.future = future  # set by `submit_later`: told the results instead of a waiter


class GroupCommit(Generic[T, R]):
    """`submit(items)` returns `apply(items)`'s results for those items, grouping concurrent calls.

    `apply` must return one result per item, in order. `max_items` bounds one group (a caller
    whose batch is larger still runs, alone). `shared_errors` are failures of `apply` that
    every batch would meet (see the module docstring).
    """

    def __init__(
        self,
        apply: Callable[[list[T]], list[R]],
        max_items: int = 10_000,
        shared_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._apply = apply
        self._max_items = max_items
        self._shared_errors = shared_errors
        self._cond = threading.Condition()
        self._queue: list[_Entry[T, R]] = []
        self._busy = False
        self._draining = False  # a `_drain` runs or is about to: it will take what is queued
        self.groups = 0  # transactions run, for tests and benchmarks
        self.grouped = 0  # batches that shared a transaction with another batch
        self.isolated = 0  # groups that failed and were run again one batch at a time

    def submit(self, items: Sequence[T]) -> list[R]:
        entry: _Entry[T, R] = _Entry(items)
        with self._cond:
            self._queue.append(entry)
            while self._busy and not entry.done:
                self._cond.wait()
            if entry.done:
                return self._result(entry)
            self._busy = True
        try:
            while not entry.done:
                with self._cond:
                    group = self._take()
                self._run(group)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._result(entry)

    def submit_later(self, items: Sequence[T], executor: Executor) -> Future[list[R]]:
        """`submit` without waiting: the future gets the results (or the error). A drainer
        on `executor` runs queued batches until the queue is empty; one is started only when
        none is running, so under load the hand-off to `executor` is once per burst."""
        entry: _Entry[T, R] = _Entry(items, Future())
        with self._cond:
            self._queue.append(entry)
            start, self._draining = not self._draining, True
        if start:
            try:
                executor.submit(self._drain)
            except BaseException as exc:  # shut down: nothing will run what is queued
                with self._cond:
                    self._draining = False
                    orphans = [e for e in self._queue if e.future is not None]
                    self._queue = [e for e in self._queue if e.future is None]
                for e in orphans:
                    assert e.future is not None
                    e.future.set_exception(exc)
        assert entry.future is not None
        return entry.future

    def _drain(self) -> None:
        """Run queued groups (taking turns with `submit`'s leaders) until none is queued."""
        while True:
            with self._cond:
                while self._busy:
                    self._cond.wait()
                if not self._queue:
                    self._draining = False
                    return
                self._busy = True
                group = self._take()
            try:
                self._run(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[_Entry[T, R]]:
        """The oldest queued batches, up to `max_items` items (at least one batch)."""
        count = n = 0
        for e in self._queue:
            n += 1
            count += len(e.items)
            if count >= self._max_items:
                break
        group, self._queue = self._queue[:n], self._queue[n:]
        return group

    def _run(self, group: list[_Entry[T, R]]) -> None:
        try:
            self._run_together(group)
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, self._shared_errors):
                for e in group:
                    e.error = exc
            else:
                self.isolated += 1
                for e in group:  # one transaction each: only the batch at fault fails
                    try:
                        self._run_together([e])
                    except Exception as alone:
                        e.error = alone
        except BaseException as exc:  # interrupted: no retries
            for e in group:
                e.error = exc
        with self._cond:
            self.groups += 1
            self.grouped += len(group) if len(group) > 1 else 0
            for e in group:
                e.done = True
            self._cond.notify_all()
        for e in group:
            if e.future is not None:
                if e.error is not None:
                    e.future.set_exception(e.error)
                else:
                    e.future.set_result(e.results)

    def _run_together(self, group: list[_Entry[T, R]]) -> None:
        flat = [item for e in group for item in e.items]
        results = self._apply(flat)
        if len(results) != len(flat):
            raise RuntimeError(f"apply returned {len(results)} results for {len(flat)} items")
        start = 0
        for e in group:
            e.results = results[start : start + len(e.items)]
            start += len(e.items)

    @staticmethod
    def _result(entry: _Entry[T, R]) -> list[R]:
        if entry.error is not None:
            raise entry.error
        return entry.results
