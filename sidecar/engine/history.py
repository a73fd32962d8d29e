"""Usage history (design §6.2): the hourly buckets a usage write leaves, and windows over them.

A counter says how much a period holds; its buckets say *when* it grew. Every applied write
adds its change of the counter to the bucket of its hour (the report's instant, so a backdated
report lands in its own hour) and sets the bucket's `last` to the counter's new value. Buckets
are keyed by the counter (scope, feature, period start) and the hour, so a pooled counter
(`sub:ID`, a credit pool) has buckets exactly where its usage is counted.

Reading a window then needs no per-aggregation bookkeeping at write time:

- `sum` and `unique`: the window's usage is the sum of the changes of the buckets in it (a
  unique key adds 1 only in the hour it is first seen in its period, so the windows of a
  period add up to the period's total);
- `gauge`: the `last` value of the latest bucket of the window's period at or before the
  window's end (carried forward through windows without a report).

Pure functions, no I/O: the stores call `hour_buckets` inside their usage transaction.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import accumulate

from ..catalog.model import Aggregation
from .write_rule import CounterKey, Status, UsageOutcome, UsageWrite

BucketKey = tuple[str, str, datetime, datetime]
"""(scope key, feature key, period start, hour start)."""

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Window(StrEnum):
    HOUR = "hour"
    DAY = "day"
    PERIOD = "period"


@dataclass(frozen=True, slots=True)
class Bucket:
    """One counter's hour: what the writes of that hour added (negative for a refund) and the
    counter's value after the last of them."""

    period_start: datetime
    hour: datetime
    added: float
    last: float

    @property
    def starts(self) -> datetime:
        """Where the bucket falls among windows: its hour, or its period's start when the
        period began inside that hour (a subscription-anchored period starting at 14:37)."""
        return max(self.hour, self.period_start)


def hour_of(at: datetime) -> datetime:
    """The UTC hour `at` falls in."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return hour_of(at).replace(hour=0)


def hour_buckets(
    writes: Sequence[UsageWrite],
    before: Mapping[CounterKey, float],
    outcomes: Sequence[UsageOutcome],
) -> dict[BucketKey, tuple[float, float]]:
    """The bucket changes of an applied batch: key -> (added, last), in write order.

    `before` is the counters as the batch read them and `outcomes` what `apply_batch` returned
    for `writes`; only the write's own counter and its credit pool's get buckets (top-up burn
    counters are balances, not usage). A write's instant is `at`, else its report's timestamp,
    else its period's start.
    """
    values = dict(before)
    out: dict[BucketKey, tuple[float, float]] = {}
    for w, outcome in zip(writes, outcomes, strict=True):
        if outcome.status is not Status.APPLIED or not w.records_usage:
            continue  # a Reserve or a Release is no usage (design §17)
        hour = hour_of(w.at or w.report.timestamp or w.period_start)
        legs: list[tuple[CounterKey, float]] = [(w.counter, outcome.usage)]
        if w.pool is not None:
            pool = w.pool.counter
            legs += [(key, value) for key, value in outcome.changes if key == pool]
        for counter, after in legs:
            scope, feature, period_start = counter
            key = (scope, feature, period_start, hour)
            added, _last = out.get(key, (0.0, 0.0))
            out[key] = (added + after - values.get(counter, 0.0), after)
            values[counter] = after
        values.update(outcome.changes)
    return out


def window_count(start: datetime, end: datetime, window: Window) -> int:
    """How many hour or day windows `windows` would build for [start, end), by arithmetic:
    a caller bounds the count before anything is allocated."""
    step = HOUR if window is Window.HOUR else DAY
    first = hour_of(start) if window is Window.HOUR else day_of(start)
    return max(0, -((first - end) // step))


def windows(start: datetime, end: datetime, window: Window) -> list[tuple[datetime, datetime]]:
    """The UTC-aligned hour or day windows covering [start, end) (the first may begin before
    `start`). `period` windows depend on the account's subscriptions: see `runtime.history`.
    Build only a count `window_count` allowed; `end` must leave a step of headroom before
    `datetime.max` (the last window ends after it)."""
    step = HOUR if window is Window.HOUR else DAY
    at = hour_of(start) if window is Window.HOUR else day_of(start)
    out: list[tuple[datetime, datetime]] = []
    while at < end:
        out.append((at, at + step))
        at += step
    return out


class Series:
    """The buckets of one scope's feature, indexed to answer windows in O(log n) each
    (a year of hourly windows over a year of buckets would be 10^8 steps scanned)."""

    def __init__(self, buckets: Iterable[Bucket]) -> None:
        ordered = sorted(buckets, key=lambda b: b.starts)
        self._starts = [b.starts for b in ordered]
        self._sums = [0.0, *accumulate(b.added for b in ordered)]
        self._periods: dict[datetime, tuple[list[datetime], list[float]]] = {}
        for b in ordered:
            starts, lasts = self._periods.setdefault(b.period_start, ([], []))
            starts.append(b.starts)
            lasts.append(b.last)

    def usage(
        self, aggregation: Aggregation, start: datetime, end: datetime, period_start: datetime
    ) -> float:
        """The usage of window [start, end); `period_start` is the period in force in the
        window (what a gauge reads: its latest value at or before the window's end)."""
        if aggregation is Aggregation.GAUGE:
            starts, lasts = self._periods.get(period_start, ([], []))
            i = bisect_left(starts, end)
            return lasts[i - 1] if i > 0 else 0.0
        lo, hi = bisect_left(self._starts, start), bisect_left(self._starts, end)
        return self._sums[hi] - self._sums[lo]
