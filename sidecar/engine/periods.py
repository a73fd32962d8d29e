"""Usage periods: which [start, end) window an instant belongs to.

Subscription-anchored months are always counted from the original anchor, never chained
from the previous period, so a Jan 31 start gives Feb 28/29 and then Mar 31 again.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..catalog.model import Anchor, Reset

BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
"""Start of the single period of a `reset: never` feature."""

_FIXED = {
    Reset.HOURLY: timedelta(hours=1),
    Reset.DAILY: timedelta(days=1),
    Reset.WEEKLY: timedelta(weeks=1),
}
_MONTHS = {Reset.MONTHLY: 1, Reset.YEARLY: 12}
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # the first Monday of the epoch


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime | None  # None: the period never ends

    def contains(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole months, the day clamped to the target month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def period_containing(reset: Reset, anchor: Anchor, at: datetime, start: datetime | None) -> Period:
    """The period of `reset` that contains `at`.

    `start` is the subscription start used by `anchor: subscription`; without one
    (usage outside any subscription) the period falls back to calendar boundaries.
    """
    if reset is Reset.NEVER:
        return Period(BEGINNING, None)
    # Boundaries are UTC (design §5): the calendar arithmetic below reads year/month/day,
    # which for an instant in another offset would be that offset's, not UTC's.
    at = at.astimezone(UTC)
    start = None if start is None else start.astimezone(UTC)
    origin = start if anchor is Anchor.SUBSCRIPTION and start is not None else None
    step = _FIXED.get(reset)
    if step is not None:
        if origin is None:
            origin = _MONDAY if reset is Reset.WEEKLY else BEGINNING
        k = (at - origin) // step
        begin = origin + k * step
        return Period(begin, begin + step)
    months = _MONTHS[reset]
    if origin is None:
        origin = datetime(at.year, 1 if reset is Reset.YEARLY else at.month, 1, tzinfo=UTC)
    k = ((at.year - origin.year) * 12 + at.month - origin.month) // months
    begin = add_months(origin, k * months)
    if begin > at:
        k -= 1
        begin = add_months(origin, k * months)
    return Period(begin, add_months(origin, (k + 1) * months))
