"""The arithmetic of usage history (design §6.2, `engine.history`): hours and windows, what a
batch leaves in its buckets, and windows read back from them — with the property that the
windows of a period add up to the period's total."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Aggregation, Feature
from plangate.sidecar.engine.history import (
    Bucket,
    BucketKey,
    Series,
    Window,
    hour_buckets,
    hour_of,
    windows,
)
from plangate.sidecar.engine.usage import Mode, UsageReport
from plangate.sidecar.engine.write_rule import BatchReads, CounterKey, UsageWrite, apply_batch

CATALOG = parse_catalog(
    textwrap.dedent(
        """
        products:
          - name: Acme
            features:
              - {name: Calls, type: metered, aggregation: sum}
              - {name: Users, type: metered, aggregation: unique}
              - {name: Seats, type: metered, aggregation: gauge}
            plans:
              - name: Basic
                entitlements: {calls: 10, users: 10, seats: 10}
        """
    )
)
CALLS, USERS, SEATS = (CATALOG.features[k] for k in ("calls", "users", "seats"))
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 1, tzinfo=UTC)


def at(day: int, h: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, h, minute, tzinfo=UTC)


def test_hours_and_days_are_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert hour_of(datetime(2026, 6, 2, 8, 59, 59, 999, tzinfo=tokyo)) == at(1, 23)
    assert windows(at(1, 10, 30), at(1, 12), Window.HOUR) == [
        (at(1, 10), at(1, 11)),
        (at(1, 11), at(1, 12)),
    ]
    assert windows(at(1, 10), at(1, 10), Window.HOUR) == []
    assert windows(at(1, 23, 59), at(2, 0, 1), Window.DAY) == [
        (at(1, 0), at(2, 0)),
        (at(2, 0), at(3, 0)),
    ]


def test_a_bucket_of_a_period_starting_mid_hour_falls_at_the_periods_start() -> None:
    anchored = datetime(2026, 6, 1, 14, 37, tzinfo=UTC)
    b = Bucket(anchored, at(1, 14), 3.0, 3.0)
    assert b.starts == anchored
    s = Series([b])
    assert s.usage(Aggregation.SUM, anchored, anchored + timedelta(days=30), anchored) == 3
    assert s.usage(Aggregation.SUM, at(1, 14), anchored, anchored) == 0  # before the period began


def test_a_gauge_carries_its_last_value_forward_within_its_period() -> None:
    s = Series(
        [
            Bucket(JUNE, at(1, 10), 3.0, 3.0),
            Bucket(JUNE, at(1, 12), 4.0, 7.0),
            Bucket(JULY, datetime(2026, 7, 1, 1, tzinfo=UTC), 2.0, 2.0),
        ]
    )
    gauge = Aggregation.GAUGE
    assert [s.usage(gauge, at(1, h), at(1, h + 1), JUNE) for h in range(9, 14)] == [0, 3, 3, 7, 7]
    assert s.usage(gauge, JULY, JULY + timedelta(hours=1), JULY) == 0  # a new period starts at 0
    assert s.usage(gauge, JULY, JULY + timedelta(hours=2), JULY) == 2


def _writes(feature: Feature, steps: list[tuple[datetime, float, str]]) -> list[UsageWrite]:
    mode = Mode.SET if feature is SEATS else Mode.DEFAULT
    return [
        UsageWrite(
            "acct:a",
            feature,
            JUNE,
            UsageReport("a", feature.key, amount, mode, key),
            at=when,
        )
        for when, amount, key in steps
    ]


def _record(
    feature: Feature, batches: list[list[tuple[datetime, float, str]]]
) -> tuple[float, dict[BucketKey, tuple[float, float]]]:
    """Apply `batches` as a store would, keeping the buckets: the final counter and buckets."""
    values: dict[CounterKey, float] = {}
    uniques: set[tuple[CounterKey, str]] = set()
    buckets: dict[BucketKey, tuple[float, float]] = {}
    for steps in batches:
        writes = _writes(feature, steps)
        done = apply_batch(writes, BatchReads({}, dict(values), frozenset(uniques)))
        for key, (added, last) in hour_buckets(writes, values, done.outcomes).items():
            before = buckets.get(key, (0.0, 0.0))[0]
            buckets[key] = (before + added, last)
        values.update(done.values)
        uniques.update(done.uniques)
    return values.get(("acct:a", feature.key, JUNE), 0.0), buckets


def _series(buckets: Mapping[BucketKey, tuple[float, float]]) -> Series:
    return Series(Bucket(k[2], k[3], a, v) for k, (a, v) in buckets.items())


def test_a_batch_adds_each_writes_change_to_its_own_hour() -> None:
    total, buckets = _record(
        CALLS, [[(at(3, 10, 5), 2.0, ""), (at(2, 8), 5.0, ""), (at(3, 10, 50), -1.0, "")]]
    )
    assert total == 6
    assert buckets == {
        ("acct:a", "calls", JUNE, at(3, 10)): (1.0, 6.0),
        ("acct:a", "calls", JUNE, at(2, 8)): (5.0, 7.0),
    }


instants = st.builds(
    lambda minutes: JUNE + timedelta(minutes=minutes), st.integers(0, 30 * 24 * 60 - 1)
)
unique_steps = st.lists(
    st.tuples(instants, st.just(1.0), st.sampled_from("abcdefgh")), min_size=1, max_size=40
)
sum_steps = st.lists(
    st.tuples(instants, st.floats(-5, 20, allow_nan=False).map(round), st.just("")),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(unique_steps, min_size=1, max_size=4))
def test_unique_windows_of_a_period_add_up_to_its_total(
    batches: list[list[tuple[datetime, float, str]]],
) -> None:
    total, buckets = _record(USERS, batches)
    assert total == len({key for steps in batches for _, _, key in steps})
    s = _series(buckets)
    for window in (Window.HOUR, Window.DAY):
        per = [s.usage(Aggregation.UNIQUE, a, b, JUNE) for a, b in windows(JUNE, JULY, window)]
        assert sum(per) == total
        assert min(per) >= 0
    assert s.usage(Aggregation.UNIQUE, JUNE, JULY, JUNE) == total


@settings(max_examples=150, deadline=None)
@given(st.lists(sum_steps, min_size=1, max_size=4))
def test_sum_windows_of_a_period_add_up_to_its_counter(
    batches: list[list[tuple[datetime, float, str]]],
) -> None:
    total, buckets = _record(CALLS, batches)
    s = _series(buckets)
    hours = [s.usage(Aggregation.SUM, a, b, JUNE) for a, b in windows(JUNE, JULY, Window.HOUR)]
    assert sum(hours) == total  # refunds clamp at 0: the buckets keep what really moved


def _last_value_by(steps: list[tuple[datetime, float, str]], end: datetime) -> float:
    """The value a gauge shows at `end`: the last set in the latest hour before `end`."""
    hours = [hour_of(t) for t, _, _ in steps if hour_of(t) < end]
    if not hours:
        return 0.0
    return [v for t, v, _ in steps if hour_of(t) == max(hours)][-1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(instants, st.integers(0, 9).map(float), st.just("")), min_size=1))
def test_a_gauge_window_reads_the_last_value_set_in_its_latest_hour(
    steps: list[tuple[datetime, float, str]],
) -> None:
    _total, buckets = _record(SEATS, [[s] for s in steps])
    s = _series(buckets)
    for _, end in windows(JUNE, JULY, Window.DAY):
        assert s.usage(Aggregation.GAUGE, JUNE, end, JUNE) == _last_value_by(steps, end)
    in_time_order = sorted(steps, key=lambda s: s[0])
    total, buckets = _record(SEATS, [[s] for s in in_time_order])
    # reported in time order, the period's last window ends at the counter's value
    assert _series(buckets).usage(Aggregation.GAUGE, JUNE, JULY, JUNE) == total
