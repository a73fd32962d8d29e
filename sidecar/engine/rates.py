"""Rate windows (design §17): the sliding-window counter, as pure functions of time.

A window of width `w` keeps two fixed buckets: the one containing now and the one before it.
The count over the sliding window ending now is estimated as the current bucket plus the
previous bucket weighted by how much of it the sliding window still covers (decision 2310
gives the algorithm's worst-case error). Two numbers per (account, feature) make a rate
`Consume` as cheap as an `Evaluate`; exact timestamps would cost one entry per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

from ...protocol.metering import Denial
from .decision import Decision


@dataclass(slots=True)
class Buckets:
    """One (account, feature)'s two fixed buckets; `start` is the current bucket's start in
    epoch seconds, a multiple of the window width."""

    start: float
    current: float = 0.0
    previous: float = 0.0


def bucket_start(width: float, now: float) -> float:
    """The start of the fixed bucket of width `width` containing instant `now`."""
    return math.floor(now / width) * width


def count(buckets: Buckets | None, width: float, now: float) -> float:
    """The estimated count over the sliding window of `width` seconds ending at `now`."""
    if buckets is None:
        return 0.0
    start = bucket_start(width, now)
    if start == buckets.start:
        current, previous = buckets.current, buckets.previous
    elif start == buckets.start + width:
        current, previous = 0.0, buckets.current
    else:  # a whole window without traffic (or a clock that stepped back): nothing counts
        return 0.0
    return current + previous * (1.0 - (now - start) / width)


def counted(buckets: Buckets | None, width: float, now: float, amount: float) -> Buckets:
    """`buckets` rolled forward to `now` with `amount` added to the current bucket."""
    start = bucket_start(width, now)
    if buckets is None or start > buckets.start + width or start < buckets.start:
        return Buckets(start, amount)
    if start == buckets.start:
        buckets.current += amount
        return buckets
    return Buckets(start, amount, buckets.current)


def stale(buckets: Buckets, width: float, now: float) -> bool:
    """Whether nothing of `buckets` counts at `now` any more: dropped from memory."""
    return now >= buckets.start + 2 * width


def admits(used: float, amount: float, limit: float | None) -> bool:
    """Design §17: `amount` is admitted if the window's count plus it stays within the limit
    (`limit` None: unlimited)."""
    return limit is None or used + amount <= limit


def remaining(used: float, limit: float | None) -> float | None:
    """What the window still admits, rounded down (the estimate is fractional, requests are
    not), so `amount <= remaining` exactly when a whole `amount` is admitted."""
    if limit is None:
        return None
    return float(max(0, math.floor(limit - used + 1e-9)))


def at_count(decision: Decision, used: float) -> Decision:
    """A rate decision with its window at `used`, as an evaluation with the default request
    (1) reads it: the answer right after a `Consume`, without evaluating again."""
    m = decision.metering
    assert m is not None
    access = admits(used, 1.0, m.limit)
    return replace(
        decision,
        has_access=access,
        denial=None if access else Denial.RATE_LIMITED,
        metering=replace(m, used=used, remaining=remaining(used, m.limit)),
    )


class RateView(Protocol):
    """What an evaluation reads of the rate windows: the count for (account, feature)."""

    def count(self, account: str, feature: str, width: float, now: float) -> float:
        """The sliding-window count of `feature` for `account` ending at `now` (epoch s)."""
        ...


class NoRates:
    """A `RateView` with no traffic (tests, benchmarks, `plangate check` from a file)."""

    def count(self, account: str, feature: str, width: float, now: float) -> float:
        return 0.0
