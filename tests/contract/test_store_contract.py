"""The `Store` contract, run against every backend: SQLite (embedded) and PostgreSQL (shared mode).

Each test talks to the store directly, as `LiveState` does, and holds the backend to what the
protocol promises: atomic batches with sequential semantics, idempotency keys that return the
first outcome (also across two store instances, i.e. two sidecars), `admit` refusing without
recording, resets, pruning, quota marks and the outbox, and environments that never see each
other. PostgreSQL runs in a throwaway cluster (`support.postgres`); without the server binaries
those cases skip with that reason.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.catalog import load_catalog
from plangate.sidecar.catalog.model import Feature
from plangate.sidecar.engine import UsageRejected
from plangate.sidecar.engine.balances import burn_feature
from plangate.sidecar.engine.usage import Mode, UsageReport
from plangate.sidecar.runtime.edits.records import AdminError, new_record
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.decisions import Decisions
from plangate.sidecar.runtime.writes.group_commit import GroupCommit
from plangate.sidecar.store import sqlite as sqlite_backend
from plangate.sidecar.store.base import (
    PRUNED_KINDS,
    Admit,
    AuditEntry,
    DeliveryStatus,
    Firing,
    OutboxEntry,
    PrunePlan,
    Status,
    Store,
    UsageOutcome,
    UsageWrite,
)
from plangate.sidecar.store.errors import StoreConflict, StoreUnavailable
from support.sidecar import EXAMPLE_CATALOG

EVER = datetime.min.replace(tzinfo=UTC)
PERIOD = datetime(2026, 6, 1, tzinfo=UTC)
NEXT_PERIOD = datetime(2026, 7, 1, tzinfo=UTC)
CATALOG = load_catalog(EXAMPLE_CATALOG)
FEATURES = CATALOG.features
API_CALLS = FEATURES["api-calls"]  # sum
USERS = FEATURES["monthly-active-users"]  # unique
SEATS = FEATURES["seats"]  # gauge

Opener = Callable[..., Store]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one database that no other test uses.

    `open_store(environment="default")` may be called several times: every call is a separate
    store instance (a separate sidecar) on the same database. PostgreSQL tests share one
    cluster, so each test's environments get a prefix of their own.
    """
    opened: list[Store] = []
    if request.param == "sqlite":
        db = tmp_path / "state.db"

        def opener(environment: str = "default") -> Store:
            store = sqlite_backend.SqliteStore(db, environment)
            opened.append(store)
            return store
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        from plangate.sidecar.store.postgres import PostgresStore

        prefix = uuid.uuid4().hex[:8]

        def opener(environment: str = "default") -> Store:
            store = PostgresStore(cluster.url(), f"{prefix}-{environment}")
            opened.append(store)
            return store

    yield opener
    for store in opened:
        store.close()


def write(
    feature: Feature,
    amount: float = 1.0,
    *,
    scope: str = "acct:a1",
    key: str = "",
    unique: str = "",
    mode: Mode = Mode.DEFAULT,
    admit: Admit | None = None,
    period: datetime = PERIOD,
    on_applied: Any = None,
) -> UsageWrite:
    account = scope.partition(":")[2]
    report = UsageReport(account, feature.key, amount, mode, unique, key)
    return UsageWrite(scope, feature, period, report, admit, on_applied)


def counter(
    store: Store, feature: Feature, scope: str = "acct:a1", period: datetime = PERIOD
) -> float:
    return store.load_counters().get((scope, feature.key, period), 0.0)


def record(account_id: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": account_id,
        "name": "Ünïcode & Co",
        "attributes": {"region": "eu", "score": 1.5, "tags": ["a", "b"], "nested": {"x": None}},
        "subscriptions": [],
        "overrides": {},
        "grants": [],
    }
    base.update(extra)
    return base


# -- schema --------------------------------------------------------------------------------------


def test_the_schema_is_at_the_latest_version_and_reopening_migrates_nothing(
    open_store: Opener,
) -> None:
    first = open_store()
    version = first.schema_version  # type: ignore[attr-defined]
    assert version >= 1
    first.save_record(record("acct_keep"))
    again = open_store()
    assert again.schema_version == version  # type: ignore[attr-defined]
    assert set(again.load_records()) == {"acct_keep"}


# -- accounts ------------------------------------------------------------------------------------


def test_records_round_trip_update_and_delete(open_store: Opener) -> None:
    store = open_store()
    one = record("acct_1")
    store.save_record(one)
    store.save_record(record("acct_2"))
    assert store.load_records() == {"acct_1": one, "acct_2": record("acct_2")}

    changed = record(
        "acct_1", name="Renamed", overrides={"sso": {"value": True, "expires_at": None}}
    )
    store.save_record(changed)
    assert store.load_records()["acct_1"] == changed

    assert store.delete_record("acct_1") is True
    assert store.delete_record("acct_1") is False
    assert store.delete_record("acct_never") is False
    assert set(store.load_records()) == {"acct_2"}

    store.save_record(one)  # an id can come back after a delete
    assert store.load_records()["acct_1"] == one
    assert set(open_store().load_records()) == {"acct_1", "acct_2"}  # what a new sidecar sees


# -- usage arithmetic ----------------------------------------------------------------------------


def test_sum_adds_refunds_and_never_goes_below_zero(open_store: Opener) -> None:
    store = open_store()
    outcomes = store.record_usage([write(API_CALLS, 5), write(API_CALLS, 3), write(API_CALLS, -10)])
    assert [(o.status, o.usage) for o in outcomes] == [
        (Status.APPLIED, 5.0),
        (Status.APPLIED, 8.0),
        (Status.APPLIED, 0.0),
    ]
    assert outcomes[0].period_start == PERIOD
    store.record_usage([write(API_CALLS, 2.5)])
    assert counter(store, API_CALLS) == 2.5
    store.record_usage([write(API_CALLS, 4, mode=Mode.SET)])
    assert counter(store, API_CALLS) == 4.0


def test_unique_counts_distinct_keys_per_period(open_store: Opener) -> None:
    store = open_store()
    outcomes = store.record_usage(
        [write(USERS, unique="u1"), write(USERS, unique="u2"), write(USERS, unique="u1")]
    )
    assert [o.usage for o in outcomes] == [1.0, 2.0, 2.0]
    assert store.record_usage([write(USERS, unique="u2")])[0].usage == 2.0
    assert store.record_usage([write(USERS, unique="u3")])[0].usage == 3.0
    # the same key in the next period counts again, and the periods stay apart
    assert store.record_usage([write(USERS, unique="u1", period=NEXT_PERIOD)])[0].usage == 1.0
    assert counter(store, USERS) == 3.0
    assert counter(store, USERS, period=NEXT_PERIOD) == 1.0


def test_gauge_sets_and_add_mode_adds(open_store: Opener) -> None:
    store = open_store()
    scope = "sub:acct_a/sub_1"
    assert store.record_usage([write(SEATS, 7, scope=scope)])[0].usage == 7.0
    assert store.record_usage([write(SEATS, 3, scope=scope)])[0].usage == 3.0
    assert store.record_usage([write(SEATS, 2, scope=scope, mode=Mode.ADD)])[0].usage == 5.0
    assert store.record_usage([write(SEATS, -9, scope=scope, mode=Mode.ADD)])[0].usage == 0.0
    assert counter(store, SEATS, scope=scope) == 0.0


def test_counters_are_kept_per_scope_feature_and_period(open_store: Opener) -> None:
    store = open_store()
    store.record_usage(
        [
            write(API_CALLS, 1, scope="acct:a1"),
            write(API_CALLS, 2, scope="acct:a2"),
            write(API_CALLS, 3, scope="acct:a1", period=NEXT_PERIOD),
            write(USERS, unique="x", scope="acct:a1"),
        ]
    )
    assert open_store().load_counters() == {
        ("acct:a1", "api-calls", PERIOD): 1.0,
        ("acct:a2", "api-calls", PERIOD): 2.0,
        ("acct:a1", "api-calls", NEXT_PERIOD): 3.0,
        ("acct:a1", "monthly-active-users", PERIOD): 1.0,
    }


# -- idempotency ---------------------------------------------------------------------------------


def test_an_idempotency_key_returns_the_first_outcome(open_store: Opener) -> None:
    store = open_store()
    first = store.record_usage([write(API_CALLS, 5, key="k1")])[0]
    assert (first.status, first.usage) == (Status.APPLIED, 5.0)
    store.record_usage([write(API_CALLS, 1)])
    again = store.record_usage([write(API_CALLS, 5, key="k1")])[0]
    assert (again.status, again.usage, again.period_start) == (Status.DUPLICATE, 5.0, PERIOD)
    # within one batch, and seen by another sidecar on the same database
    batch = store.record_usage([write(API_CALLS, 2, key="k2"), write(API_CALLS, 2, key="k2")])
    assert [(o.status, o.usage) for o in batch] == [(Status.APPLIED, 8.0), (Status.DUPLICATE, 8.0)]
    other = open_store().record_usage([write(API_CALLS, 2, key="k2")])[0]
    assert (other.status, other.usage) == (Status.DUPLICATE, 8.0)
    assert counter(store, API_CALLS) == 8.0


def test_concurrent_retries_of_one_key_on_two_sidecars_apply_once(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    results: list[Status] = []
    lock = threading.Lock()

    def retry(store: Store) -> None:
        for i in range(20):
            outcome = store.record_usage([write(API_CALLS, 1, key=f"retry-{i}")])[0]
            with lock:
                results.append(outcome.status)

    threads = [threading.Thread(target=retry, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(Status.APPLIED) == 20
    assert results.count(Status.DUPLICATE) == 60
    assert counter(stores[0], API_CALLS) == 20.0


# -- admit (Consume) -----------------------------------------------------------------------------


def limit(n: float) -> Admit:
    def admit(current: float, headroom: float) -> str | None:
        return None if current + 1 <= n + headroom else "usage_limit_reached"

    return admit


def test_admit_refuses_without_recording(open_store: Opener) -> None:
    store = open_store()
    store.record_usage([write(API_CALLS, 2)])
    granted = store.record_usage([write(API_CALLS, 1, admit=limit(3), key="c1")])[0]
    assert (granted.status, granted.usage) == (Status.APPLIED, 3.0)
    denied = store.record_usage([write(API_CALLS, 1, admit=limit(3), key="c2")])[0]
    assert (denied.status, denied.usage, denied.message) == (
        Status.DENIED,
        3.0,
        "usage_limit_reached",
    )
    assert counter(store, API_CALLS) == 3.0
    replay = store.record_usage([write(API_CALLS, 1, admit=limit(100), key="c2")])[0]
    assert (replay.status, replay.message) == (Status.DUPLICATE, "usage_limit_reached")
    # a denied unique key is not remembered: it counts once admitted
    store.record_usage([write(USERS, unique="u1", admit=limit(0))])
    assert store.record_usage([write(USERS, unique="u1")])[0].usage == 1.0


def test_admit_is_exact_across_sidecars(open_store: Opener) -> None:
    """16 consumers on two store instances: the counter ends exactly at the limit."""
    stores = [open_store(), open_store()]
    granted: list[int] = []
    lock = threading.Lock()

    def consume(store: Store) -> None:
        mine = 0
        while True:
            outcome = store.record_usage([write(API_CALLS, 1, admit=limit(120))])[0]
            if outcome.status is Status.DENIED:
                break
            mine += 1
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=consume, args=(stores[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 120
    assert counter(stores[1], API_CALLS) == 120.0


# -- reset and prune -----------------------------------------------------------------------------


def test_reset_zeroes_a_counter_and_forgets_its_unique_keys(open_store: Opener) -> None:
    store = open_store()
    store.record_usage([write(API_CALLS, 7), write(API_CALLS, 1, period=NEXT_PERIOD)])
    store.record_usage([write(USERS, unique="u1"), write(USERS, unique="u2")])
    assert store.reset_usage("acct:a1", "api-calls", PERIOD) == 7.0
    assert store.reset_usage("acct:a1", "monthly-active-users", PERIOD) == 2.0
    assert store.reset_usage("acct:nobody", "api-calls", PERIOD) == 0.0
    assert counter(store, API_CALLS) == 0.0
    assert counter(store, API_CALLS, period=NEXT_PERIOD) == 1.0  # other periods untouched
    assert store.record_usage([write(USERS, unique="u1")])[0].usage == 1.0
    assert store.record_usage([write(API_CALLS, 2)])[0].usage == 2.0


def keys_before(at: datetime) -> PrunePlan:
    """A plan that prunes idempotency keys created before `at`, and nothing else."""
    return PrunePlan(at, EVER, EVER, {}, EVER, {}, EVER, EVER)


def test_prune_forgets_old_idempotency_keys(open_store: Opener) -> None:
    store = open_store()
    store.record_usage([write(API_CALLS, 1, key="old-1"), write(API_CALLS, 1, key="old-2")])
    assert store.housekeep(keys_before(datetime.now(UTC) - timedelta(days=7))) == dict.fromkeys(
        PRUNED_KINDS, 0
    )
    assert store.record_usage([write(API_CALLS, 1, key="old-1")])[0].status is Status.DUPLICATE
    removed = store.housekeep(keys_before(datetime.now(UTC) + timedelta(seconds=2)))
    assert removed is not None and removed["idempotency_keys"] == 2
    assert store.record_usage([write(API_CALLS, 1, key="old-1")])[0].status is Status.APPLIED


# -- environments --------------------------------------------------------------------------------


def test_environments_on_one_database_never_see_each_other(open_store: Opener) -> None:
    staging, production = open_store("staging"), open_store("production")
    staging.save_record(record("acct_1", name="staging"))
    production.save_record(record("acct_1", name="production"))
    staging.record_usage([write(API_CALLS, 5, key="k"), write(USERS, unique="u1")])
    out = production.record_usage([write(API_CALLS, 1, key="k"), write(USERS, unique="u1")])
    assert [(o.status, o.usage) for o in out] == [(Status.APPLIED, 1.0), (Status.APPLIED, 1.0)]

    assert staging.load_records()["acct_1"]["name"] == "staging"
    assert production.load_records()["acct_1"]["name"] == "production"
    assert counter(staging, API_CALLS) == 5.0
    assert counter(production, API_CALLS) == 1.0

    assert production.delete_record("acct_1") is True
    assert set(staging.load_records()) == {"acct_1"}
    assert production.reset_usage("acct:a1", "api-calls", PERIOD) == 1.0
    assert counter(staging, API_CALLS) == 5.0
    pruned = production.housekeep(keys_before(datetime.now(UTC) + timedelta(seconds=2)))
    assert pruned is not None and pruned["idempotency_keys"] == 1
    assert staging.record_usage([write(API_CALLS, 5, key="k")])[0].status is Status.DUPLICATE


# -- quota marks and the outbox ------------------------------------------------------------------


def test_a_quota_mark_fires_once_per_counter_and_enqueues_its_entries(open_store: Opener) -> None:
    store = open_store()
    at = datetime(2026, 6, 10, tzinfo=UTC)

    ids = iter(f"d-{i}" for i in range(1, 100))

    def crossing(old: float, new: float) -> list[Firing]:
        if old < 3 <= new:
            entry = OutboxEntry(next(ids), "webhook", "a1", "http://127.0.0.1:9/h", {"used": new})
            return [Firing("free:3", at, (entry,))]
        return []

    first = store.record_usage([write(API_CALLS, 3, on_applied=crossing)])[0]
    assert [f.mark for f in first.fired] == ["free:3"]
    store.reset_usage("acct:a1", "api-calls", NEXT_PERIOD)  # another period: marks stay
    store.record_usage([write(API_CALLS, -3)])
    again = store.record_usage([write(API_CALLS, 3, on_applied=crossing)])[0]
    assert again.fired == ()  # the same mark on the same counter fires once

    counts = store.count_deliveries()
    assert counts[DeliveryStatus.PENDING] == 1
    due = store.claim_deliveries(at, at + timedelta(minutes=1), 10)
    assert [(d.id, d.kind, d.target, dict(d.payload)) for d in due] == [
        ("d-1", "webhook", "http://127.0.0.1:9/h", {"used": 3.0})
    ]
    assert store.claim_deliveries(at, at + timedelta(minutes=1), 10) == []  # leased
    store.finish_delivery("d-1", DeliveryStatus.FAILED, 1, None, "connection refused", at)
    failed = store.get_delivery("d-1")
    assert failed is not None
    assert (failed.status, failed.attempts, failed.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "connection refused",
    )
    assert store.retry_deliveries(None, at) == ["d-1"]
    listed = store.list_deliveries(DeliveryStatus.PENDING, 10)
    assert [(d.id, d.attempts) for d in listed] == [("d-1", 0)]
    store.finish_delivery("d-1", DeliveryStatus.DELIVERED, 1, None, "", at)
    assert store.count_deliveries()[DeliveryStatus.DELIVERED] == 1
    assert store.retry_deliveries(["d-1"], at) == []  # delivered rows stay delivered

    # a reset starts a fresh period for the counter: its marks may fire again
    store.reset_usage("acct:a1", "api-calls", PERIOD)
    fresh = store.record_usage([write(API_CALLS, 3, on_applied=crossing)])[0]
    assert [e.id for f in fresh.fired for e in f.entries] == ["d-3"]
    assert store.count_deliveries()[DeliveryStatus.PENDING] == 1


# -- the per-write rule: limits of a number ------------------------------------------------------


def test_a_counter_never_leaves_the_finite_numbers(open_store: Opener) -> None:
    """Two reports of 1e308 once stored `inf` on PostgreSQL; both stores refuse the second,
    change nothing, do not remember its key, and the counter keeps working."""
    store = open_store()
    first, second = store.record_usage(
        [write(API_CALLS, 1e308, key="big-1"), write(API_CALLS, 1e308, key="big-2")]
    )
    assert (first.status, first.usage) == (Status.APPLIED, 1e308)
    assert (second.status, second.usage) == (Status.REJECTED, 1e308)
    assert "out of range" in second.message
    assert counter(store, API_CALLS) == 1e308
    # the refused key was not used up: once the counter has room, the same key applies
    assert store.record_usage([write(API_CALLS, -1e308, key="refund")])[0].usage == 0.0
    again = store.record_usage([write(API_CALLS, 1e308, key="big-2")])[0]
    assert (again.status, again.usage) == (Status.APPLIED, 1e308)
    replay = open_store().record_usage([write(API_CALLS, 1, key="big-1")])[0]
    assert (replay.status, replay.usage) == (Status.DUPLICATE, 1e308)
    assert open_store().load_counters()[("acct:a1", "api-calls", PERIOD)] == 1e308
    refused = store.record_usage([write(API_CALLS, 1e308, key="big-3")])[0]
    assert refused.status is Status.REJECTED
    # nothing of a refused write is stored, not even its key: the stored keys are the others'
    removed = store.housekeep(keys_before(datetime.now(UTC) + timedelta(seconds=2)))
    assert removed is not None and removed["idempotency_keys"] == 3  # big-1, refund, big-2


def test_a_mark_reached_twice_in_one_batch_fires_once(open_store: Opener) -> None:
    store = open_store()
    at = datetime(2026, 6, 10, tzinfo=UTC)

    def crossing(old: float, new: float) -> list[Firing]:
        entry = OutboxEntry(f"e-{old:g}", "webhook", "a1", "http://127.0.0.1:9/h", {})
        return [Firing("free:3", at, (entry,))] if old < 3 <= new else []

    outcomes = store.record_usage(
        [
            write(API_CALLS, 3, on_applied=crossing),
            write(API_CALLS, -3, on_applied=crossing),
            write(API_CALLS, 4, on_applied=crossing),
        ]
    )
    assert [[f.mark for f in o.fired] for o in outcomes] == [["free:3"], [], []]
    assert [d.id for d in store.list_deliveries(None, 10)] == ["e-0"]


# -- text no store can hold (through the live state, as every API sends it) ----------------------

BAD_TEXT = ["acct\x00x", "\ud800", "k" * 513]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "surrogate", "too-long"])
def test_unusable_text_is_refused_before_the_store_alike_on_both(
    open_store: Opener, bad: str
) -> None:
    store = open_store()
    state = LiveState(CATALOG, store)
    good = UsageReport("acct_acme", "api-calls", 1, idempotency_key="ok-1")
    reports = [
        UsageReport(bad, "api-calls"),
        UsageReport("acct_acme", bad),
        UsageReport("acct_acme", "monthly-active-users", unique_key=bad),
        UsageReport("acct_acme", "api-calls", idempotency_key=bad),
        good,
    ]
    outcomes = state.report(reports)
    assert [o.status for o in outcomes] == [Status.REJECTED] * 4 + [Status.APPLIED]
    for outcome, field in zip(
        outcomes, ["account", "feature", "unique_key", "idempotency_key"], strict=False
    ):
        assert outcome.message.startswith(f"{field} ")
        assert (
            "NUL" in outcome.message or "Unicode" in outcome.message or "bytes" in outcome.message
        )
    with pytest.raises(UsageRejected, match="idempotency_key"):
        Decisions(state).consume(UsageReport("acct_acme", "api-calls", idempotency_key=bad))
    edits: list[tuple[dict[str, Any], str]] = [({"id": bad}, "id ")]
    if len(bad) < 100:  # names and attributes are not index keys: only their text must be usable
        edits += [
            ({"name": bad}, "name "),
            ({"attributes": {"region": bad}}, "attributes.region "),
            ({"attributes": {bad: "eu"}}, "(the key) "),
        ]
    for edit, where in edits:
        with pytest.raises(AdminError, match=r"NUL|Unicode|bytes") as info:
            state.commit({**new_record("acct_new"), **edit})
        assert where in str(info.value)
    assert set(store.load_records()) == set()
    assert open_store().load_counters() == {
        ("acct:acct_acme", "api-calls", outcomes[4].period_start): 1.0
    }


def test_one_poisoned_batch_in_a_group_commit_fails_alone(open_store: Opener) -> None:
    """Concurrent callers share one transaction; text the database cannot encode (an unpaired
    surrogate, here sent past validation) fails only the caller that sent it."""
    store = open_store()
    gate = threading.Event()

    def apply(writes: list[UsageWrite]) -> list[UsageOutcome]:
        gate.wait(5)  # the first caller waits here while the others queue into one group
        return store.record_usage(writes)

    group = GroupCommit(apply, shared_errors=(StoreUnavailable, StoreConflict))
    results: dict[int, object] = {}

    def caller(i: int) -> None:
        w = write(USERS, unique="\ud800" if i == 7 else f"u{i}", key=f"g-{i}")
        try:
            results[i] = group.submit([w])[0].status
        except Exception as exc:
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
    threads[0].start()
    time.sleep(0.1)
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join()
    assert group.grouped > 0 and group.isolated > 0  # they did share a failing transaction
    assert {i: r for i, r in results.items() if r is not Status.APPLIED} == {7: results[7]}
    assert isinstance(results[7], str)
    assert counter(store, USERS) == 19.0


# -- housekeeping (design §14) -------------------------------------------------------------------


def test_housekeeping_prunes_each_kind_and_keeps_what_is_needed(open_store: Opener) -> None:
    store = open_store()
    old, recent = datetime(2020, 1, 1, tzinfo=UTC), PERIOD

    def marking(_old: float, new: float) -> list[Firing]:  # reached by every write: only
        return [Firing("free:1", recent, ())] if new >= 1 else []  # a stored mark stops it

    for period in (old, recent):
        store.record_usage(
            [
                write(API_CALLS, 5, period=period, on_applied=marking),
                write(USERS, unique="u1", period=period, on_applied=marking),
                write(SEATS, 2, period=period),
            ]
        )
    store.save_record(record("acct_old_gone"))
    store.save_record(record("acct_new_gone"))
    store.save_record(record("acct_kept"))
    store.record_usage([write(API_CALLS, 1, key="key-old", period=recent)])
    store.delete_record("acct_old_gone")

    def crossing(_old: float, new: float) -> list[Firing]:
        return [
            Firing(
                f"m{new:g}", recent, (OutboxEntry(f"d{new:g}", "webhook", "a1", "http://x/", {}),)
            )
        ]

    store.record_usage(
        [write(API_CALLS, 1, scope="acct:a9", on_applied=crossing) for _ in range(3)]
    )
    long_ago = datetime(2026, 5, 1, tzinfo=UTC)
    store.finish_delivery("d1", DeliveryStatus.DELIVERED, 1, None, "", long_ago)
    store.finish_delivery("d2", DeliveryStatus.DELIVERED, 1, None, "", recent)
    store.finish_delivery("d3", DeliveryStatus.FAILED, 1, None, "gone", long_ago)

    old_mark, new_mark = "trial.ended:a:s:old", "trial.ended:a:s:new"
    store.fire_lifecycle([Firing(old_mark, long_ago), Firing(new_mark, recent)], recent)

    time.sleep(1.1)  # SQLite keeps key times to the second
    cutoff = datetime.now(UTC)
    store.record_usage([write(API_CALLS, 1, key="key-new", period=recent)])
    store.delete_record("acct_new_gone")

    plan = PrunePlan(
        idempotency_before=cutoff,
        tombstones_before=cutoff,
        deliveries_before=recent - timedelta(days=1),
        usage_before={"api-calls": recent, "monthly-active-users": recent, "seats": EVER},
        usage_default=EVER,
        marks_before={"api-calls": recent},  # unique-feature marks stay (their own cut-off)
        marks_default=EVER,
        audit_before=EVER,
    )
    removed = store.housekeep(plan)
    assert removed is not None
    backend_has_tombstones = not isinstance(store, sqlite_backend.SqliteStore)
    assert removed == {
        "idempotency_keys": 1,
        "tombstones": 1 if backend_has_tombstones else 0,
        "usage_rows": 2,  # api-calls and users of 2020; seats (never resets) stay
        "unique_keys": 1,
        "quota_marks": 1,
        "deliveries": 1,
        "audit_entries": 0,
        "history_buckets": 0,  # this plan keeps every hour (history_before: its default)
        "lifecycle_marks": 1,
        "stripe_events": 0,
    }
    # a lifecycle mark older than the delivery cut-off went; the recent one still holds
    assert store.fire_lifecycle([Firing(new_mark, recent), Firing(old_mark, long_ago)], recent) == [
        old_mark
    ]
    counters = open_store().load_counters()
    assert set(counters) == {
        ("acct:a1", "api-calls", recent),
        ("acct:a1", "monthly-active-users", recent),
        ("acct:a1", "seats", recent),
        ("acct:a1", "seats", old),
        ("acct:a9", "api-calls", PERIOD),
    }
    assert store.record_usage([write(API_CALLS, 1, key="key-new", period=recent)])[0].status is (
        Status.DUPLICATE
    )
    assert store.record_usage([write(API_CALLS, 1, key="key-old", period=recent)])[0].status is (
        Status.APPLIED
    )
    # the unique key of 2020 is gone with its counter; this period's still counts once
    assert store.record_usage([write(USERS, unique="u1", period=recent)])[0].usage == 1.0
    assert store.record_usage([write(USERS, unique="u1", period=old)])[0].usage == 1.0
    # the api-calls mark of 2020 went, this period's stays; the users' marks both stay
    refire = store.record_usage(
        [
            write(API_CALLS, 1, period=old, on_applied=marking),
            write(API_CALLS, 1, on_applied=marking),
        ]
    )
    assert [[f.mark for f in o.fired] for o in refire] == [["free:1"], []]
    assert [d.id for d in store.list_deliveries(None, 10)] == ["d3", "d2"]
    assert set(open_store().load_records()) == {"acct_kept"}


# -- the audit log (design §12) ------------------------------------------------------------------

AUDIT_AT = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
BURN = replace(API_CALLS, key=burn_feature("api-calls", "t1"))


def entry(account: str, action: str, minutes: int = 0, **fields: Any) -> AuditEntry:
    at = AUDIT_AT + timedelta(minutes=minutes)
    return AuditEntry(at, "alice", action, account, fields.pop("target", ""), **fields)


def test_audit_entries_are_stored_with_each_kind_of_change_and_listed_newest_first(
    open_store: Opener,
) -> None:
    a, b = open_store(), open_store()  # two sidecars on one database (one in shared mode)
    a.save_record(record("a1"), audit=entry("a1", "UpsertAccount", 0, after={"name": "x"}))
    b.load_records()  # B holds the version A wrote (shared mode refuses a stale edit)
    b.save_record(record("a1", name="y"), audit=entry("a1", "UpsertAccount", 1, before={"n": 1}))
    a.save_record(record("a2"), audit=entry("a2", "UpsertAccount", 2))
    a.save_record(record("a3"))  # no entry given: none written
    assert a.delete_record("a2", audit=entry("a2", "DeleteAccount", 3)) is True
    assert a.delete_record("a2", audit=entry("a2", "DeleteAccount", 4)) is False  # no change
    a.record_usage([write(API_CALLS, 7)])
    previous = a.reset_usage("acct:a1", "api-calls", PERIOD, audit=entry("a1", "ResetUsage", 5))
    assert previous == 7.0

    def crossing(old: float, new: float) -> list[Firing]:
        outbox = (OutboxEntry("d-1", "webhook", "a1", "http://127.0.0.1:9/h", {}),)
        return [Firing("free:1", AUDIT_AT, outbox)] if old < 1 <= new else []

    a.record_usage([write(API_CALLS, 1, on_applied=crossing)])
    a.finish_delivery("d-1", DeliveryStatus.FAILED, 3, None, "refused", AUDIT_AT)
    retry = entry("a1", "RetryDelivery", 6, target="all_failed")
    assert a.retry_deliveries(None, AUDIT_AT, audit=retry) == ["d-1"]
    assert a.retry_deliveries(None, AUDIT_AT, audit=retry) == []  # nothing retried: no entry

    listed = b.list_audit("", None, 100)
    assert [(e.account, e.action) for e in listed] == [
        ("a1", "RetryDelivery"),
        ("a1", "ResetUsage"),
        ("a2", "DeleteAccount"),
        ("a2", "UpsertAccount"),
        ("a1", "UpsertAccount"),
        ("a1", "UpsertAccount"),
    ]
    assert [e.seq for e in listed] == sorted((e.seq for e in listed), reverse=True)
    newest, reset, *_, second, first = listed
    assert (newest.target, newest.after) == ("all_failed", {"retried": 1, "ids": ["d-1"]})
    assert (reset.before, reset.after) == ({"usage": 7.0}, {"usage": 0.0})
    assert (first.at, first.actor, first.before, first.after) == (
        AUDIT_AT,
        "alice",
        None,
        {"name": "x"},
    )
    assert second.before == {"n": 1} and second.after is None
    assert [e.action for e in a.list_audit("a2", None, 100)] == ["DeleteAccount", "UpsertAccount"]
    since = a.list_audit("", AUDIT_AT + timedelta(minutes=3), 100)
    assert [e.action for e in since] == ["RetryDelivery", "ResetUsage", "DeleteAccount"]
    assert a.list_audit("a1", AUDIT_AT + timedelta(minutes=1), 100) == [*listed[:2], second]
    # pages: `limit` newest, then the ones before the last seq seen
    pages, before = [], None
    while page := a.list_audit("", None, 2, before):
        pages.append(page)
        before = page[-1].seq
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [e for p in pages for e in p] == listed
    assert open_store("elsewhere").list_audit("", None, 100) == []  # environments stay apart


def test_a_change_and_its_audit_entry_are_stored_together_or_not_at_all(
    open_store: Opener,
) -> None:
    store = open_store()
    store.save_record(record("a1"))
    unwritable = entry("a1", "UpsertAccount", before={"not json": object()})
    with pytest.raises(TypeError):
        store.save_record(record("a1", name="changed"), audit=unwritable)
    with pytest.raises(TypeError):
        store.delete_record("a1", audit=unwritable)
    assert open_store().load_records()["a1"]["name"] == record("a1")["name"]

    # the database refuses the change itself: no entry says it happened
    with refusing(store, "a1"), pytest.raises(Exception, match="refused by the test"):
        store.save_record(record("a1", name="changed"), audit=entry("a1", "UpsertAccount"))
    # ResetUsage zeroes a counter and its top-up burn rows in one transaction with its entry:
    # when the burn row cannot be reset, neither is the counter, and nothing is logged
    store.record_usage([write(API_CALLS, 4), write(BURN, 2)])
    with refusing(store, "a1", usage=BURN.key), pytest.raises(Exception, match="refused by"):
        store.reset_usage(
            "acct:a1", "api-calls", PERIOD, burns=[BURN.key], audit=entry("a1", "ResetUsage")
        )
    fresh = open_store()
    assert (counter(fresh, API_CALLS), counter(fresh, BURN)) == (4.0, 2.0)
    assert fresh.list_audit("", None, 100) == []
    assert fresh.load_records()["a1"]["name"] == record("a1")["name"]

    assert store.reset_usage("acct:a1", "api-calls", PERIOD, burns=[BURN.key]) == 4.0
    assert (counter(open_store(), API_CALLS), counter(open_store(), BURN)) == (0.0, 0.0)


def test_housekeeping_prunes_audit_entries_older_than_the_cut_off(open_store: Opener) -> None:
    store = open_store()
    for minutes in (0, 10, 20):
        store.save_record(record("a1"), audit=entry("a1", "UpsertAccount", minutes))
    plan = PrunePlan(EVER, EVER, EVER, {}, EVER, {}, EVER, AUDIT_AT + timedelta(minutes=10))
    removed = store.housekeep(plan)
    assert removed is not None and removed["audit_entries"] == 1
    assert [e.at for e in store.list_audit("", None, 10)] == [
        AUDIT_AT + timedelta(minutes=20),
        AUDIT_AT + timedelta(minutes=10),  # at the cut-off: kept
    ]


@contextmanager
def refusing(store: Store, account: str, usage: str = "") -> Iterator[None]:
    """The database refuses (by a trigger) writes of `account`'s record, or with `usage` the
    reset of that usage row: a fault inside the transaction, after nothing was written yet."""
    if isinstance(store, sqlite_backend.SqliteStore):
        conn = sqlite3.connect(store.path)
        if usage:
            conn.execute(
                f"CREATE TRIGGER refuse BEFORE DELETE ON usage WHEN OLD.feature = '{usage}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.execute(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON accounts WHEN NEW.id = '{account}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        conn.commit()
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER refuse")
            conn.commit()
            conn.close()
        return
    from plangate.sidecar.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    table, column, value = ("usage", "feature", usage) if usage else ("accounts", "id", account)
    with store.connect("test", autocommit=True) as pg:
        pg.execute(
            f"CREATE FUNCTION plangate.{name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        pg.execute(
            f"CREATE TRIGGER {name} BEFORE UPDATE OR INSERT ON plangate.{table} FOR EACH ROW "
            f"WHEN (NEW.environment = '{store.environment}' AND NEW.{column} = '{value}') "
            f"EXECUTE FUNCTION plangate.{name}()"
        )
        try:
            yield
        finally:
            pg.execute(f"DROP TRIGGER {name} ON plangate.{table}")
            pg.execute(f"DROP FUNCTION plangate.{name}()")


def test_stripe_marks_are_stored_with_the_record_or_alone_and_kept_per_environment(
    open_store: Opener,
) -> None:
    """Design §18: an applied event's id and its object's last `created` and account link are
    written in the record's transaction (or alone), read back by any sidecar of the
    environment, and unlinked by an empty account."""
    from plangate.sidecar.store.base import StripeMark, StripeObject

    store, other_env = open_store(), open_store("other")
    assert not store.stripe_seen("evt_1") and store.stripe_object("cus_1") is None
    store.save_record(
        new_record("acct_s"), stripe=StripeMark("evt_1", "customer.created", "cus_1", 10, "acct_s")
    )
    store.mark_stripe(StripeMark("evt_2", "customer.subscription.created", "sub_1", 11, "acct_s"))
    store.mark_stripe(StripeMark("evt_3", "customer.subscription.updated", "sub_1", 12))
    again = open_store()
    assert again.stripe_seen("evt_1") and again.stripe_seen("evt_3")
    assert again.stripe_object("sub_1") == StripeObject(
        "sub_1", "acct_s", 12, "evt_3", "customer.subscription.updated"
    )
    assert [o.object_id for o in again.stripe_objects_of("acct_s")] == ["cus_1", "sub_1"]
    assert not other_env.stripe_seen("evt_1") and other_env.stripe_object("cus_1") is None
    store.mark_stripe(StripeMark("evt_4", "customer.deleted", "cus_1", 13, ""))
    unlinked = again.stripe_object("cus_1")
    assert unlinked is not None and unlinked.account == "" and unlinked.last_created == 13
    # design §14: event ids go with delivered rows; the per-object marks stay (stale stays stale)
    later = datetime.now(UTC) + timedelta(seconds=2)
    plan = PrunePlan(later, later, later, {}, EVER, {}, EVER, EVER)
    removed = store.housekeep(plan)
    assert removed is not None and removed["stripe_events"] == 4
    assert not again.stripe_seen("evt_1")
    assert again.stripe_object("sub_1") is not None
