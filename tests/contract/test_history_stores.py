"""Usage history and export (design §6.2) on both stores: SQLite and a real PostgreSQL.

The hourly buckets are written in the usage write's own transaction (a bucket that cannot be
written takes the usage with it), a backdated report lands in its own hour, a reset and
housekeeping remove buckets, and `usage_history` / `export_usage` read them back per window
and per period — pooled counters included — through a real `LiveState` on each store.
"""

from __future__ import annotations

import sqlite3
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.engine.usage import Mode
from plangate.sidecar.runtime.edits import records as rec
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve import history
from plangate.sidecar.runtime.serve.history import export_usage, usage_history
from plangate.sidecar.store.base import PrunePlan, Store
from plangate.sidecar.store.errors import StoreUnavailable
from plangate.sidecar.store.sqlite import SqliteStore

CATALOG = parse_catalog(
    textwrap.dedent(
        """
        products:
          - name: Acme
            features:
              - {name: Calls, type: metered, aggregation: sum, reset: monthly, anchor: calendar}
              - {name: Users, type: metered, aggregation: unique, reset: monthly, anchor: calendar}
              - {name: Seats, type: metered, aggregation: gauge, reset: monthly, anchor: calendar}
              - {name: Builds, type: metered, reset: monthly, anchor: calendar, scope: subscription}
              - {name: Credits, type: credits, reset: monthly, anchor: calendar}
              - {name: Images, type: metered, credits: {pool: credits, per_unit: 5}}
            plans:
              - name: Basic
                entitlements:
                  calls: 100
                  users: 10
                  seats: 5
                  builds: 50
                  credits: 300
                  images: unlimited
        """
    )
)
EVER = datetime.min.replace(tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 15, 13, 30, tzinfo=UTC)


def hour(h: int, minute: int = 0, day: int = 15) -> datetime:
    return datetime(2026, 6, day, h, minute, tzinfo=UTC)


@dataclass
class Backend:
    """A store and a way to run SQL on its database behind its back (to plant a fault)."""

    store: Store
    sql: Callable[[str], None]
    open: Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[Store] = []
    if request.param == "sqlite":
        db = tmp_path / "state.db"

        def opener() -> Store:
            opened.append(SqliteStore(db))
            return opened[-1]

        def sql(text: str) -> None:
            conn = sqlite3.connect(db)
            conn.executescript(text)
            conn.close()

    else:
        cluster = request.getfixturevalue("postgres_cluster")
        import psycopg
        from plangate.sidecar.store.postgres import PostgresStore

        env = uuid.uuid4().hex[:8]

        def opener() -> Store:
            opened.append(PostgresStore(cluster.url(), env))
            return opened[-1]

        def sql(text: str) -> None:
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute(text)  # type: ignore[arg-type]  # a test's literal SQL

    yield Backend(opener(), sql, opener)
    for store in opened:
        store.close()


def live(store: Store, clock: list[datetime] | None = None) -> LiveState:
    """A live state on `store` with accounts acme (on Basic, with member as a member of its
    subscription) and beta (on Basic), its clock at `clock[0]` (default NOW)."""
    at = clock or [NOW]
    state = LiveState(CATALOG, store, clock=lambda: at[0])
    state.commit(rec.new_record("member"))
    for account in ("acme", "beta"):
        r, _ = rec.add_subscription(
            rec.new_record(account),
            "basic",
            {},
            JUNE - timedelta(days=60),
            None,
            None,
            [],
            f"sub_{account}",
        )
        if account == "acme":
            r = rec.set_members(r, "sub_acme", "member", add=True)
        state.commit(r)
    return state


def report(
    state: LiveState,
    feature: str,
    amount: float = 1.0,
    at: datetime | None = None,
    account: str = "acme",
    unique: str = "",
    key: str = "",
) -> float:
    out = state.report(
        [UsageReport(account, feature, amount, Mode.DEFAULT, unique, key, timestamp=at)]
    )[0]
    assert out.status.value == "applied", out.message
    return out.usage


def series(
    state: LiveState,
    feature: str,
    start: datetime,
    end: datetime,
    window: str = "hour",
    account: str = "acme",
) -> list[tuple[datetime, float, float | None]]:
    return [
        (p.window_start, p.usage, p.limit)
        for p in usage_history(state, account, feature, start, end, window)
    ]


def test_hourly_windows_per_aggregation(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "calls", 2, hour(10, 5))
    report(state, "calls", 3, hour(10, 40))
    report(state, "calls", 4, hour(12, 10))
    for at, user in ((hour(10), "u1"), (hour(11), "u1"), (hour(12), "u2")):
        report(state, "users", at=at, unique=user)
    report(state, "seats", 3, hour(10, 1))
    report(state, "seats", 7, hour(12, 59))
    span = (hour(10), hour(14))
    hours = [hour(h) for h in range(10, 14)]
    assert series(state, "calls", *span) == list(zip(hours, [5, 0, 4, 0], [100.0] * 4, strict=True))
    # u1 counts in the hour it was first seen only: the windows add up to the period's 2
    assert [u for _, u, _ in series(state, "users", *span)] == [1, 0, 1, 0]
    # a gauge is its last value, carried forward through hours without a report
    assert [u for _, u, _ in series(state, "seats", *span)] == [3, 3, 7, 7]
    assert [u for _, u, _ in series(state, "seats", hour(9), hour(10))] == [0]
    day = usage_history(state, "acme", "calls", hour(0), hour(1), "day")
    assert [(p.window_start, p.window_end, p.usage) for p in day] == [(hour(0), hour(0, day=16), 9)]
    period = usage_history(state, "acme", "users", hour(0), hour(1), "period")
    assert [(p.window_start, p.window_end, p.usage, p.limit) for p in period] == [
        (JUNE, JULY, 2, 10.0)
    ]


def test_a_backdated_report_lands_in_its_own_hour_and_period(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "calls", 6, hour(8, 15, day=2))
    report(state, "calls", 1, datetime(2026, 5, 31, 23, 59, tzinfo=UTC))  # May's period
    report(state, "calls", 1)  # now: 13:30 on the 15th
    buckets = backend.store.usage_buckets("acct:acme", "calls", EVER, JULY)
    assert [(b.period_start, b.hour, b.added) for b in buckets] == [
        (datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 31, 23, tzinfo=UTC), 1.0),
        (JUNE, hour(8, day=2), 6.0),
        (JUNE, hour(13), 1.0),
    ]
    days = usage_history(
        state, "acme", "calls", datetime(2026, 5, 31, tzinfo=UTC), hour(0, day=3), "day"
    )
    assert [p.usage for p in days] == [1, 0, 6]
    periods = usage_history(
        state, "acme", "calls", datetime(2026, 5, 2, tzinfo=UTC), hour(0), "period"
    )
    assert [(p.window_start, p.usage) for p in periods] == [
        (datetime(2026, 5, 1, tzinfo=UTC), 1),
        (JUNE, 7),
    ]


def test_a_refund_is_negative_usage_in_its_hour(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "calls", 10, hour(10))
    report(state, "calls", -4, hour(11))
    report(state, "calls", -100, hour(12))  # the counter stops at 0: the bucket says what moved
    assert [u for _, u, _ in series(state, "calls", hour(10), hour(13))] == [10, -4, -6]


def test_buckets_are_written_in_the_usage_transaction(backend: Backend) -> None:
    """A bucket that cannot be written rolls the whole write back: no usage, no key."""
    state = live(backend.store)
    report(state, "calls", 1, hour(10), key="first")
    if isinstance(backend.store, SqliteStore):
        backend.sql(
            "CREATE TRIGGER no_history BEFORE INSERT ON usage_hourly "
            "BEGIN SELECT RAISE(ABORT, 'history refused'); END"
        )
    else:
        backend.sql(
            "CREATE FUNCTION plangate.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'history refused'; END $$; "
            "CREATE TRIGGER no_history BEFORE INSERT ON plangate.usage_hourly "
            "FOR EACH ROW EXECUTE FUNCTION plangate.refuse()"
        )
    try:
        with pytest.raises((sqlite3.Error, StoreUnavailable, Exception)) as info:
            state.report([UsageReport("acme", "calls", 5, idempotency_key="second")])
        assert "history refused" in str(info.value)
    finally:
        backend.sql(
            "DROP TRIGGER no_history"
            if isinstance(backend.store, SqliteStore)
            else "DROP TRIGGER no_history ON plangate.usage_hourly; DROP FUNCTION plangate.refuse()"
        )
    fresh = backend.open()
    assert fresh.load_counters()[("acct:acme", "calls", JUNE)] == 1.0
    assert [b.added for b in fresh.usage_buckets("acct:acme", "calls", EVER, JULY)] == [1.0]
    state2 = live(fresh)
    assert report(state2, "calls", 5, key="second") == 6.0  # the key was never remembered


def test_reset_removes_the_counters_buckets_only(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "calls", 5, hour(10))
    report(state, "calls", 2, datetime(2026, 5, 20, tzinfo=UTC))
    report(state, "users", at=hour(10), unique="u1")
    assert state.reset_usage("acme", "calls") == 5.0
    assert [
        b.period_start for b in backend.store.usage_buckets("acct:acme", "calls", EVER, JULY)
    ] == [datetime(2026, 5, 1, tzinfo=UTC)]
    assert [u for _, u, _ in series(state, "calls", hour(10), hour(11))] == [0]
    assert [u for _, u, _ in series(state, "users", hour(10), hour(11))] == [1]
    report(state, "calls", 1, hour(11))
    assert [u for _, u, _ in series(state, "calls", hour(10), hour(12))] == [0, 1]


def test_housekeeping_prunes_buckets_older_than_the_history(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "calls", 1, hour(8, day=1))
    report(state, "calls", 2, hour(9, day=1))
    report(state, "calls", 4, hour(10))
    plan = PrunePlan(EVER, EVER, EVER, {}, EVER, {}, EVER, EVER, history_before=hour(9, day=1))
    removed = backend.store.housekeep(plan)
    assert removed is not None and removed["history_buckets"] == 1
    assert removed["usage_rows"] == 0
    buckets = backend.store.usage_buckets("acct:acme", "calls", EVER, JULY)
    assert [(b.hour, b.added) for b in buckets] == [(hour(9, day=1), 2.0), (hour(10), 4.0)]
    assert backend.store.load_counters()[("acct:acme", "calls", JUNE)] == 7.0


def test_pooled_usage_follows_the_counters_scope(backend: Backend) -> None:
    state = live(backend.store)
    report(state, "builds", 3, hour(10))
    report(state, "builds", 4, hour(10), account="member")  # the subscription's counter
    report(state, "images", 2, hour(11))  # 2 images × 5 credits from the pool
    assert [u for _, u, _ in series(state, "builds", hour(10), hour(11), account="member")] == [7]
    assert [u for _, u, _ in series(state, "builds", hour(10), hour(11))] == [7]
    assert series(state, "credits", hour(11), hour(12)) == [(hour(11), 10.0, 300.0)]
    assert series(state, "images", hour(11), hour(12)) == [(hour(11), 2.0, None)]


@pytest.mark.parametrize("page", [200, 2])
def test_export_rows_per_account_feature_and_period(
    backend: Backend, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "EXPORT_PAGE", page)  # 2: four pages of accounts, one stream
    state = live(backend.store)
    r, _ = rec.add_topup(state.record_of("beta"), "calls", 50, 0, None, None, "pack")
    state.commit(rec.set_members(r, "sub_beta", "ghost", add=True))  # a member with no record
    report(state, "calls", 3, hour(9), account="ghost")  # its own counter: its own row
    report(state, "calls", 30, hour(10), account="beta")
    report(state, "calls", 130, hour(11), account="beta")  # 100 allowance + 50 top-up: 10 over
    report(state, "builds", 4, hour(10), account="member")  # pooled: acme's row
    report(state, "images", 2, hour(11))
    report(state, "calls", 5, datetime(2026, 5, 3, tzinfo=UTC))
    report(state, "calls", 1, datetime(2026, 4, 3, tzinfo=UTC))  # before the range: no row
    rows = list(export_usage(state, datetime(2026, 5, 10, tzinfo=UTC), JULY))
    got = [
        (
            r.account_id,
            r.feature,
            r.period_start,
            r.period_end,
            r.usage,
            r.limit,
            r.overage,
            r.topups_burned,
        )
        for r in rows
    ]
    may = datetime(2026, 5, 1, tzinfo=UTC)
    assert got == [
        ("acme", "builds", JUNE, JULY, 4.0, 50.0, 0.0, 0.0),
        ("acme", "calls", may, JUNE, 5.0, 100.0, 0.0, 0.0),
        ("acme", "credits", JUNE, JULY, 10.0, 300.0, 0.0, 0.0),
        ("acme", "images", JUNE, JULY, 2.0, None, 0.0, 0.0),
        ("beta", "calls", JUNE, JULY, 160.0, 100.0, 10.0, 50.0),
        ("ghost", "calls", JUNE, JULY, 3.0, 100.0, 0.0, 0.0),
    ]
    assert list(export_usage(state, JULY, JULY + timedelta(days=1))) == []


def test_sqlite_reads_one_counters_buckets_without_visiting_the_others(tmp_path: Path) -> None:
    """Schema v6: one account's history reads its counter's buckets through an index on
    (environment, scope, feature, hour). Through the (environment, hour) index it visited
    every counter's buckets of the range (an account page went from 11 ms to 1 s after 1M
    other accounts' buckets). Counted in SQLite VM steps, not in time."""
    store = SqliteStore(tmp_path / "state.db")
    try:
        state = live(store)
        for h in range(10, 14):
            report(state, "calls", 1, hour(h))
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0  # go on

        def cost() -> int:
            steps[0] = 0
            store._conn.set_progress_handler(step, 100)
            try:
                buckets = store.usage_buckets("acct:acme", "calls", hour(0), hour(23))
            finally:
                store._conn.set_progress_handler(None, 0)
            assert [b.added for b in buckets] == [1.0] * 4
            return steps[0]

        alone = cost()
        conn = sqlite3.connect(tmp_path / "state.db")
        with conn:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999) "
                "INSERT INTO usage_hourly (environment, scope, feature, period_start, hour, "
                "added, last) SELECT ?, 'acct:other' || (i / 20), 'calls', ?, "
                "strftime('%Y-%m-%dT%H:00:00.000000Z', ?, '+' || (i % 20) || ' hours'), 1, 1 FROM n",
                (store.environment, "2026-06-01T00:00:00.000000Z", "2026-06-15T02:00:00"),
            )
        conn.close()
        assert cost() <= alone + 2, (alone, steps[0])
    finally:
        store.close()
