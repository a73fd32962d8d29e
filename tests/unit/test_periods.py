"""Usage periods (design §5): every reset with both anchors, and tiling properties."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import Anchor, Reset
from plangate.sidecar.engine import period_containing
from plangate.sidecar.engine.periods import add_months

CAL, SUB = Anchor.CALENDAR, Anchor.SUBSCRIPTION
US = timedelta(microseconds=1)


def t(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (reset, anchor, subscription start, instant, expected start, expected end)
EXAMPLES = [
    # hourly
    (Reset.HOURLY, CAL, None, t(2026, 3, 10, 14, 37, 12), t(2026, 3, 10, 14), t(2026, 3, 10, 15)),
    (
        Reset.HOURLY,
        CAL,
        t(2026, 1, 1, 9, 30),
        t(2026, 3, 10, 14),
        t(2026, 3, 10, 14),
        t(2026, 3, 10, 15),
    ),
    (
        Reset.HOURLY,
        SUB,
        t(2026, 1, 1, 9, 30),
        t(2026, 3, 10, 14, 37),
        t(2026, 3, 10, 14, 30),
        t(2026, 3, 10, 15, 30),
    ),
    (
        Reset.HOURLY,
        SUB,
        t(2026, 1, 1, 9, 30),
        t(2026, 3, 10, 14, 10),
        t(2026, 3, 10, 13, 30),
        t(2026, 3, 10, 14, 30),
    ),
    # daily
    (Reset.DAILY, CAL, None, t(2026, 3, 10, 14, 37), t(2026, 3, 10), t(2026, 3, 11)),
    (Reset.DAILY, CAL, None, t(2026, 12, 31, 23, 59, 59), t(2026, 12, 31), t(2027, 1, 1)),
    (
        Reset.DAILY,
        SUB,
        t(2026, 1, 1, 18),
        t(2026, 3, 10, 14, 37),
        t(2026, 3, 9, 18),
        t(2026, 3, 10, 18),
    ),
    (
        Reset.DAILY,
        SUB,
        t(2026, 1, 1, 18),
        t(2026, 3, 10, 18),
        t(2026, 3, 10, 18),
        t(2026, 3, 11, 18),
    ),
    # weekly: calendar weeks start on Monday 00:00 UTC (2026-03-09 is a Monday)
    (Reset.WEEKLY, CAL, None, t(2026, 3, 10, 14, 37), t(2026, 3, 9), t(2026, 3, 16)),
    (Reset.WEEKLY, CAL, None, t(2026, 3, 15, 23, 59, 59), t(2026, 3, 9), t(2026, 3, 16)),
    (Reset.WEEKLY, CAL, None, t(2026, 3, 16), t(2026, 3, 16), t(2026, 3, 23)),
    (Reset.WEEKLY, CAL, None, t(2027, 1, 1), t(2026, 12, 28), t(2027, 1, 4)),
    # weekly from a Wednesday-noon subscription start (2026-01-07)
    (
        Reset.WEEKLY,
        SUB,
        t(2026, 1, 7, 12),
        t(2026, 3, 10, 14, 37),
        t(2026, 3, 4, 12),
        t(2026, 3, 11, 12),
    ),
    # monthly, calendar
    (Reset.MONTHLY, CAL, None, t(2026, 2, 14), t(2026, 2, 1), t(2026, 3, 1)),
    (Reset.MONTHLY, CAL, None, t(2026, 12, 31, 23, 59), t(2026, 12, 1), t(2027, 1, 1)),
    (Reset.MONTHLY, CAL, t(2026, 1, 15), t(2026, 3, 1), t(2026, 3, 1), t(2026, 4, 1)),
    # monthly, from the 15th
    (Reset.MONTHLY, SUB, t(2026, 1, 15), t(2026, 3, 10), t(2026, 2, 15), t(2026, 3, 15)),
    (Reset.MONTHLY, SUB, t(2026, 1, 15), t(2026, 3, 15), t(2026, 3, 15), t(2026, 4, 15)),
    (Reset.MONTHLY, SUB, t(2026, 1, 15), t(2026, 12, 20), t(2026, 12, 15), t(2027, 1, 15)),
    # monthly from Jan 31: Feb 28 in 2027, Feb 29 in 2028, then back to the 31st
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2027, 2, 10), t(2027, 1, 31), t(2027, 2, 28)),
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2027, 2, 28), t(2027, 2, 28), t(2027, 3, 31)),
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2027, 3, 30), t(2027, 2, 28), t(2027, 3, 31)),
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2027, 4, 15), t(2027, 3, 31), t(2027, 4, 30)),
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2028, 2, 15), t(2028, 1, 31), t(2028, 2, 29)),
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2028, 3, 5), t(2028, 2, 29), t(2028, 3, 31)),
    # an instant before the subscription start still has a period
    (Reset.MONTHLY, SUB, t(2027, 1, 31), t(2026, 12, 5), t(2026, 11, 30), t(2026, 12, 31)),
    # yearly, calendar and from a Feb 29 anchor
    (Reset.YEARLY, CAL, None, t(2026, 7, 4), t(2026, 1, 1), t(2027, 1, 1)),
    (Reset.YEARLY, CAL, t(2025, 6, 1), t(2026, 1, 1), t(2026, 1, 1), t(2027, 1, 1)),
    (Reset.YEARLY, SUB, t(2025, 6, 1), t(2026, 5, 31), t(2025, 6, 1), t(2026, 6, 1)),
    (Reset.YEARLY, SUB, t(2028, 2, 29), t(2029, 1, 10), t(2028, 2, 29), t(2029, 2, 28)),
    (Reset.YEARLY, SUB, t(2028, 2, 29), t(2029, 3, 1), t(2029, 2, 28), t(2030, 2, 28)),
    (Reset.YEARLY, SUB, t(2028, 2, 29), t(2032, 3, 1), t(2032, 2, 29), t(2033, 2, 28)),
    # no subscription start: the subscription anchor falls back to calendar boundaries
    (Reset.MONTHLY, SUB, None, t(2026, 2, 14), t(2026, 2, 1), t(2026, 3, 1)),
    (Reset.DAILY, SUB, None, t(2026, 2, 14, 5), t(2026, 2, 14), t(2026, 2, 15)),
]


@pytest.mark.parametrize(
    ("reset", "anchor", "start", "at", "begin", "end"),
    EXAMPLES,
    ids=[f"{e[0].value}-{e[1].value}-{e[3]:%Y%m%dT%H%M}" for e in EXAMPLES],
)
def test_example(
    reset: Reset,
    anchor: Anchor,
    start: datetime | None,
    at: datetime,
    begin: datetime,
    end: datetime,
) -> None:
    period = period_containing(reset, anchor, at, start)
    assert (period.start, period.end) == (begin, end)
    assert period.contains(at)


@pytest.mark.parametrize("anchor", [CAL, SUB])
def test_never_is_one_endless_period(anchor: Anchor) -> None:
    instants = [t(1999, 1, 1), t(2026, 6, 15, 12), t(2090, 12, 31)]
    periods = {period_containing(Reset.NEVER, anchor, at, t(2026, 1, 15)) for at in instants}
    assert len(periods) == 1
    (period,) = periods
    assert period.end is None
    assert all(period.contains(at) for at in instants)


def test_add_months_clamps_to_month_end_from_the_original_anchor() -> None:
    jan31 = t(2027, 1, 31, 8, 15)
    assert [add_months(jan31, k).date().isoformat() for k in range(5)] == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
        "2027-05-31",
    ]
    assert add_months(jan31, 13) == t(2028, 2, 29, 8, 15)
    assert add_months(jan31, -2) == t(2026, 11, 30, 8, 15)
    assert add_months(t(2028, 2, 29), 12) == t(2029, 2, 28)


def test_non_utc_instants_use_utc_boundaries() -> None:
    plus2 = timezone(timedelta(hours=2))
    # 2026-03-01 01:00 at +02:00 is still February in UTC.
    at = datetime(2026, 3, 1, 1, 0, tzinfo=plus2)
    period = period_containing(Reset.MONTHLY, CAL, at, None)
    assert (period.start, period.end) == (t(2026, 2, 1), t(2026, 3, 1))
    minus3 = timezone(timedelta(hours=-3))
    # 2026-02-28 22:00 at -03:00 is already March in UTC.
    at = datetime(2026, 2, 28, 22, 0, tzinfo=minus3)
    period = period_containing(Reset.MONTHLY, CAL, at, None)
    assert (period.start, period.end) == (t(2026, 3, 1), t(2026, 4, 1))
    # Weekly Monday 00:00 is UTC, not local: Sunday 23:30 UTC is Monday 01:30 at +02:00.
    at = datetime(2026, 3, 16, 1, 30, tzinfo=plus2)
    assert period_containing(Reset.WEEKLY, CAL, at, None).start == t(2026, 3, 9)


# -- properties -----------------------------------------------------------------------------

OFFSETS = st.sampled_from(
    [UTC] + [timezone(timedelta(minutes=m)) for m in (-600, -210, 60, 330, 840)]
)
INSTANTS = st.one_of(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 12, 31), timezones=OFFSETS
    ),
    # within a day of a UTC month boundary, written in some offset: where local and UTC
    # calendars disagree
    st.builds(
        lambda y, m, minutes, tz: (
            datetime(y, m, 1, tzinfo=UTC) + timedelta(minutes=minutes)
        ).astimezone(tz),
        st.integers(1971, 2199),
        st.integers(1, 12),
        st.integers(-1440, 1440),
        OFFSETS,
    ),
)
STARTS = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
    ),
    # month ends and leap days are where monthly periods get interesting
    st.builds(
        lambda y, m, d, h: datetime(y, m, d, h, tzinfo=UTC),
        # leap years only (2100 is divisible by 4 and is not one), so February 29 exists
        st.sampled_from([y for y in range(1972, 2197) if calendar.isleap(y)]),
        st.sampled_from([1, 2, 3, 5, 8, 12]),
        st.sampled_from([28, 29]),
        st.integers(0, 23),
    ),
    st.builds(
        lambda y, m, h: datetime(y, m, 31, h, tzinfo=UTC),
        st.integers(1971, 2199),
        st.sampled_from([1, 3, 5, 7, 8, 10, 12]),
        st.integers(0, 23),
    ),
)
RESETS = st.sampled_from([r for r in Reset if r is not Reset.NEVER])
ANCHORS = st.sampled_from(list(Anchor))
SETTINGS = settings(max_examples=300, deadline=None)


@given(reset=RESETS, anchor=ANCHORS, start=STARTS, at=INSTANTS)
@SETTINGS
def test_instant_lies_in_its_period(
    reset: Reset, anchor: Anchor, start: datetime | None, at: datetime
) -> None:
    period = period_containing(reset, anchor, at, start)
    assert period.end is not None
    assert period.start <= at < period.end


@given(reset=RESETS, anchor=ANCHORS, start=STARTS, at=INSTANTS)
@SETTINGS
def test_periods_tile_without_gaps_or_overlaps(
    reset: Reset, anchor: Anchor, start: datetime | None, at: datetime
) -> None:
    period = period_containing(reset, anchor, at, start)
    assert period.end is not None
    following = period_containing(reset, anchor, period.end, start)
    assert following.start == period.end
    previous = period_containing(reset, anchor, period.start - US, start)
    assert previous.end == period.start
    assert previous.start < period.start < following.start


@given(reset=RESETS, anchor=ANCHORS, start=STARTS, at=INSTANTS, fraction=st.floats(0, 1))
@SETTINGS
def test_every_instant_of_a_period_maps_back_to_it(
    reset: Reset, anchor: Anchor, start: datetime | None, at: datetime, fraction: float
) -> None:
    period = period_containing(reset, anchor, at, start)
    assert period.end is not None
    inside = min(period.start + (period.end - period.start) * fraction, period.end - US)
    assert period_containing(reset, anchor, inside, start) == period
    assert period_containing(reset, anchor, period.start, start) == period
    assert period_containing(reset, anchor, period.end - US, start) == period


@given(reset=RESETS, anchor=ANCHORS, start=STARTS, at=INSTANTS)
@SETTINGS
def test_period_boundaries_follow_the_anchor(
    reset: Reset, anchor: Anchor, start: datetime | None, at: datetime
) -> None:
    period = period_containing(reset, anchor, at, start)
    assert period.end is not None
    begin = period.start.astimezone(UTC)
    if anchor is SUB and start is not None:
        # The subscription start itself begins a period.
        assert period_containing(reset, anchor, start, start).start == start
        if reset is Reset.MONTHLY:
            assert begin.day == min(start.day, _days_in(begin.year, begin.month))
        if reset is Reset.YEARLY:
            assert begin.month == start.month
            assert begin.day == min(start.day, _days_in(begin.year, begin.month))
        if reset in (Reset.MONTHLY, Reset.YEARLY):
            assert begin.time() == start.time()
        if reset in (Reset.HOURLY, Reset.DAILY, Reset.WEEKLY):
            assert (begin - start) % (period.end - period.start) == timedelta(0)
        return
    # Calendar boundaries, in UTC.
    assert begin.minute == begin.second == begin.microsecond == 0
    if reset is not Reset.HOURLY:
        assert begin.hour == 0
    if reset is Reset.WEEKLY:
        assert begin.weekday() == 0
    if reset is Reset.MONTHLY:
        assert begin.day == 1
    if reset is Reset.YEARLY:
        assert (begin.month, begin.day) == (1, 1)


def _days_in(year: int, month: int) -> int:
    import calendar

    return calendar.monthrange(year, month)[1]
