"""Lifecycle webhook rows in the store (design §7.1), on SQLite and PostgreSQL.

- An account edit's outbox rows commit in the edit's own transaction: both or neither.
- `fire_lifecycle` records a time-driven event's mark once; only the call that records it
  enqueues its rows, also when two store instances (two sidecars) race on the same marks.
- The scheduler's watermark only moves forward.
- Two real sidecars on one PostgreSQL send a time-driven event exactly once between them.
"""

from __future__ import annotations

import sqlite3
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.runtime.jobs.lifecycle_scheduler import SLACK, LifecycleScheduler
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.store import sqlite as sqlite_backend
from plangate.sidecar.store.base import Firing, OutboxEntry, Store
from support.receiver import Receiver
from support.sidecar import Stubs, in_process, wait_for

Opener = Callable[..., Store]
AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Store instances of one backend on one database (each call: another sidecar)."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def opener() -> Store:
            store = sqlite_backend.SqliteStore(tmp_path / "state.db")
            opened.append(store)
            return store
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        from plangate.sidecar.store.postgres import PostgresStore

        environment = f"lifecycle-{uuid.uuid4().hex[:8]}"

        def opener() -> Store:
            store = PostgresStore(cluster.url(), environment)
            opened.append(store)
            return store

    yield opener
    for store in opened:
        store.close()


def entry(delivery_id: str, account: str = "acct_1") -> OutboxEntry:
    event = {"type": "subscription.created", "delivery_id": delivery_id, "account": account}
    return OutboxEntry(delivery_id, "webhook", account, "http://127.0.0.1:9/hook", {"event": event})


def record(account_id: str, name: str) -> dict[str, Any]:
    return {"id": account_id, "name": name, "subscriptions": [], "overrides": {}, "grants": []}


def ids(store: Store) -> list[str]:
    return sorted(d.id for d in store.list_deliveries(None, 1000))


REFUSED = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)


def test_an_edit_and_its_outbox_rows_commit_together(open_store: Opener) -> None:
    store = open_store()
    store.save_record(record("acct_1", "v1"), outbox=[entry("d1"), entry("d2")])
    assert ids(store) == ["d1", "d2"]
    assert store.load_records()["acct_1"]["name"] == "v1"
    (row,) = [d for d in store.list_deliveries(None, 10) if d.id == "d1"]
    assert row.payload["event"]["type"] == "subscription.created"
    assert row.kind == "webhook" and row.status.value == "pending"
    # A row that cannot be written (its id is taken) takes the record's change down with it.
    with pytest.raises(REFUSED):
        store.save_record(record("acct_1", "v2"), outbox=[entry("d3"), entry("d1")])
    assert store.load_records()["acct_1"]["name"] == "v1"
    assert ids(store) == ["d1", "d2"]
    # ... and the rows go with a refused delete too; a delete of nothing enqueues nothing
    with pytest.raises(REFUSED):
        store.delete_record("acct_1", outbox=[entry("d2")])
    assert "acct_1" in store.load_records()
    assert store.delete_record("acct_1", outbox=[entry("d4")]) is True
    assert store.delete_record("acct_1", outbox=[entry("d5")]) is False
    assert ids(store) == ["d1", "d2", "d4"]
    assert "acct_1" not in store.load_records()


def test_a_lifecycle_mark_fires_once_and_only_its_first_firing_enqueues(
    open_store: Opener,
) -> None:
    first, second = open_store(), open_store()
    firing = Firing("trial.ended:acct_1:s1:2026-06-01T12:00:00Z", AT, (entry("t1"), entry("t2")))
    assert first.fire_lifecycle([firing], AT) == [firing.mark]
    again = Firing(firing.mark, AT, (entry("t3"),))  # the other sidecar's rows for it
    assert second.fire_lifecycle([again], AT) == []
    assert first.fire_lifecycle([again], AT) == []
    assert ids(first) == ["t1", "t2"]


def test_the_watermark_only_moves_forward(open_store: Opener) -> None:
    store = open_store()
    assert store.lifecycle_upto() is None
    store.fire_lifecycle([], AT)
    assert store.lifecycle_upto() == AT
    store.fire_lifecycle([], AT - timedelta(minutes=1))  # a sidecar with a slower clock
    assert store.lifecycle_upto() == AT
    store.fire_lifecycle([], AT + timedelta(seconds=1))
    assert open_store().lifecycle_upto() == AT + timedelta(seconds=1)


def test_two_sidecars_racing_on_the_same_marks_enqueue_each_once(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    marks = [f"subscription.ended:acct_{i}:s:{AT.isoformat()}" for i in range(30)]
    barrier = threading.Barrier(len(stores))
    won: list[list[str]] = [[] for _ in stores]

    def race(n: int) -> None:
        barrier.wait()
        for mark in marks:  # one call per mark, as the scheduler fires accounts one by one
            firing = Firing(mark, AT, (entry(f"{n}-{mark}"),))
            won[n] += stores[n].fire_lifecycle([firing], AT)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(won[0] + won[1]) == sorted(marks)  # every mark once, by one of them
    rows = ids(stores[0])
    assert len(rows) == len(marks)
    assert sorted(r.split("-", 1)[1] for r in rows) == sorted(marks)


# -- two real sidecars on one PostgreSQL -------------------------------------------------------


def shared_catalog(directory: Path, url: str) -> Path:
    path = directory / "catalog.yaml"
    path.write_text(
        textwrap.dedent(f"""
        products:
          - name: Acme
            features:
              - name: SSO
                type: boolean
            plans:
              - name: Free
                entitlements: {{}}
              - name: Team
                entitlements: {{sso: true}}
                trial: {{days: 14, then: free}}
        webhooks:
          - url: {url}/hook
            events: [trial.ending, trial.ended, subscription.updated, subscription.ended]
        """)
    )
    return path


def test_in_shared_mode_exactly_one_sidecar_sends_each_time_driven_event(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    receiver = Receiver()
    catalog = shared_catalog(tmp_path, receiver.url)
    environment = f"shared-lc-{uuid.uuid4().hex[:8]}"
    try:
        with ExitStack() as stack:
            a, b = (
                stack.enter_context(
                    in_process(catalog, postgres_cluster.url(), environment=environment)
                )
                for _ in range(2)
            )
            wait_for(lambda: a.feed.connected and b.feed.connected, timeout=10)
            with Stubs(f"127.0.0.1:{a.port}") as sa:
                accounts = [f"acct_shared_{i}" for i in range(5)]
                ends = datetime.now(UTC) + timedelta(seconds=2)
                for acct in accounts:
                    sa.admin.UpsertAccount(pb.UpsertAccountRequest(id=acct), timeout=5)
                    sa.admin.CreateSubscription(
                        pb.CreateSubscriptionRequest(
                            account_id=acct,
                            plan="team",
                            id=f"{acct}-s",
                            trial_ends_at=to_timestamp(ends),
                        ),
                        timeout=5,
                    )
                # both sidecars know every trial before it ends, so both try to send it
                wait_for(lambda: all(x in b.state.snapshot.accounts for x in accounts))
                for acct in accounts:
                    receiver.wait("/hook", acct, "trial.ended")
                    receiver.wait("/hook", acct, "subscription.updated")
                sent_by = [
                    (d.account, d.payload["event"]["type"])
                    for d in a.store.list_deliveries(None, 1000)
                ]
                # a later event on every account, then count: nothing arrived twice
                for acct in accounts:
                    sa.admin.CancelSubscription(
                        pb.CancelSubscriptionRequest(account_id=acct, subscription_id=f"{acct}-s"),
                        timeout=5,
                    )
                for acct in accounts:
                    receiver.wait("/hook", acct, "subscription.ended")
        for acct in accounts:
            types = [c.type for c in receiver.of("/hook", acct)]
            assert sorted(types) == sorted(
                ["trial.ending", "trial.ended", "subscription.updated", "subscription.ended"]
            ), (acct, types)
        assert len(sent_by) == 3 * len(accounts)  # one row each in the shared outbox
    finally:
        receiver.close()


# -- the scheduler's catch-up reads the watermark --------------------------------------------


def test_the_scheduler_catches_up_a_downtime_longer_than_its_look_back(
    open_store: Opener, tmp_path: Path
) -> None:
    """Stopped at T0, started again two hours later: the trial that ended in between (far
    beyond `SLACK`) is found from the stored watermark, and sent once."""
    catalog = parse_catalog(shared_catalog(tmp_path, "http://127.0.0.1:9").read_text())
    t0 = datetime.now(UTC).replace(microsecond=0)
    ends = t0 + timedelta(hours=1)
    assert ends - t0 > SLACK
    before = LiveState(catalog, open_store(), clock=lambda: t0)
    before.commit(
        {
            "id": "acct_1",
            "subscriptions": [
                {
                    "id": "s1",
                    "plan": "team",
                    "starts_at": t0.isoformat(),
                    "trial_ends_at": ends.isoformat(),
                }
            ],
        }
    )
    first = LifecycleScheduler(before, timedelta(days=3))
    first.start()
    wait_for(lambda: before.store.lifecycle_upto() == t0)
    first.stop()

    after = LiveState(catalog, open_store(), clock=lambda: t0 + timedelta(hours=2))
    second = LifecycleScheduler(after, timedelta(days=3))
    second.start()
    try:

        def ended() -> list[str]:
            return [
                d.payload["event"]["at"]
                for d in after.store.list_deliveries(None, 100)
                if d.payload["event"]["type"] == "trial.ended"
            ]

        assert wait_for(ended) == [ends.isoformat().replace("+00:00", "Z")]
        wait_for(lambda: after.store.lifecycle_upto() == t0 + timedelta(hours=2))
    finally:
        second.stop()
    assert len(ended()) == 1
