"""Shared mode (design §10): several sidecars on one PostgreSQL database.

Two real sidecars (in-process, real gRPC and HTTP) share a throwaway cluster
(`support.postgres`). Each test uses an environment of its own, so tests never see each other's
state. Covered: a change made through one sidecar shows in the other's evaluations quickly
(measured), Consume stays exact with concurrent clients on both, concurrent reports are grouped
without losing a unit, environments stay apart, a sidecar that loses the database keeps
serving from memory, says so on /readyz and catches up when the database is back, an admin
edit from a stale copy is refused rather than lost, and change notifications fit PostgreSQL's
payload limit.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct
from support.sidecar import Stubs, copy_catalog, in_process, wait_for

Pair = tuple[Any, Any, Stubs, Stubs]  # sidecar A, sidecar B, and a client of each


@pytest.fixture
def start_sidecar(postgres_cluster: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts in-process sidecars on the shared database, in this test's own environment."""
    catalog = copy_catalog(tmp_path)
    environment = f"shared-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:

        def start(env: str = environment, **settings: Any) -> Any:
            sidecar = stack.enter_context(
                in_process(catalog, postgres_cluster.url(), environment=env, **settings)
            )
            wait_for(lambda: sidecar.feed.connected, timeout=10)
            return sidecar

        yield start


@pytest.fixture
def pair(start_sidecar: Callable[..., Any]) -> Iterator[Pair]:
    a, b = start_sidecar(), start_sidecar()
    with Stubs(f"127.0.0.1:{a.port}") as sa, Stubs(f"127.0.0.1:{b.port}") as sb:
        yield a, b, sa, sb


def new_account(stubs: Stubs, seen_by: Any, account: str, plan: str = "free") -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account, name=account), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan=plan, id=f"{account}-sub"), timeout=5
    )
    wait_for(lambda: _subscribed(seen_by, account))


def _subscribed(sidecar: Any, account: str) -> bool:
    found = sidecar.state.snapshot.accounts.get(account)
    return found is not None and bool(found.subscriptions)


def evaluate(stubs: Stubs, account: str, feature: str) -> pb.Resolution:
    request = pb.EvaluateRequest(account_id=account, feature=feature)
    response: pb.Resolution = stubs.evaluation.Evaluate(request, timeout=5)
    return response


def used(stubs: Stubs, account: str) -> float:
    return evaluate(stubs, account, "api-calls").metering.used


def report(stubs: Stubs, account: str, amount: float = 1.0) -> None:
    stubs.usage.Report(
        pb.ReportRequest(
            reports=[pb.UsageReport(account_id=account, feature="api-calls", amount=amount)]
        ),
        timeout=10,
    )


def set_concurrency(stubs: Stubs, account: str, value: int) -> None:
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(
            account_id=account,
            feature="execution-concurrency",
            value=struct_pb2.Value(number_value=value),
        ),
        timeout=5,
    )


def concurrency(stubs: Stubs, account: str) -> int:
    return evaluate(stubs, account, "execution-concurrency").as_integer


def readyz(sidecar: Any) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{sidecar.management_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- propagation -----------------------------------------------------------------------------------


def test_a_change_on_one_sidecar_reaches_the_other_within_200ms_at_p99(pair: Pair) -> None:
    """200 changes through A (usage reports and admin overrides, alternating), each timed from
    just before A is called until B's Evaluate answers with it: A's commit included."""
    _a, b, sa, sb = pair
    account = "acct_latency"
    new_account(sa, b, account)
    totals: list[float] = []
    calls: list[float] = []  # of which: the call on A (write + commit)

    def until_seen(check: Callable[[], bool], start: float, i: int) -> None:
        while not check():
            assert time.perf_counter() - start < 5, f"change {i} not visible on B after 5 s"
            time.sleep(0.0005)  # B's feed thread shares this process: do not starve it

    for i in range(200):
        if i % 2 == 0:
            expected = used(sa, account) + 1
            start = time.perf_counter()
            report(sa, account)
            calls.append((time.perf_counter() - start) * 1000)
            until_seen(lambda: used(sb, account) == expected, start, i)  # noqa: B023
        else:
            value = i % 100
            start = time.perf_counter()
            set_concurrency(sa, account, value)
            calls.append((time.perf_counter() - start) * 1000)
            until_seen(lambda: concurrency(sb, account) == value, start, i)  # noqa: B023
        totals.append((time.perf_counter() - start) * 1000)

    def p(samples: list[float], q: float) -> float:
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    p50, p99 = p(totals, 0.50), p(totals, 0.99)
    print(
        f"\nshared mode, A -> B visibility over {len(totals)} changes: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(totals):.1f} ms (the call on A alone: p50 "
        f"{p(calls, 0.5):.1f} ms, p99 {p(calls, 0.99):.1f} ms)"
    )
    assert p99 < 200, f"p99 {p99:.1f} ms"


def test_watch_streams_on_the_other_sidecar_hear_of_remote_changes(pair: Pair) -> None:
    """Providers connected to B drop their cache when A changes an account or its usage."""
    _a, b, sa, sb = pair
    account = "acct_watched"
    new_account(sa, b, account)
    events: list[tuple[str, tuple[str, ...]]] = []
    stream = sb.evaluation.Watch(pb.WatchRequest(), timeout=20)
    assert next(stream).WhichOneof("event") == "ready"

    def collect() -> None:
        try:
            for event in stream:
                if event.WhichOneof("event") == "account_changed":
                    change = event.account_changed
                    events.append((change.cause, tuple(change.account_ids)))
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    threading.Thread(target=collect, daemon=True).start()
    time.sleep(0.1)
    set_concurrency(sa, account, 4)
    wait_for(lambda: ("sync", (account,)) in events)
    report(sa, account, 2)
    wait_for(lambda: ("usage", (account,)) in events)
    stream.cancel()


def test_environments_share_the_database_but_not_their_state(
    start_sidecar: Callable[..., Any],
) -> None:
    staging = start_sidecar()
    production = start_sidecar(env=f"prod-{uuid.uuid4().hex[:8]}")
    with Stubs(f"127.0.0.1:{staging.port}") as ss, Stubs(f"127.0.0.1:{production.port}") as sp:
        new_account(ss, staging, "acct_env")
        report(ss, "acct_env", 7)
        new_account(sp, production, "acct_env")
        report(sp, "acct_env", 1)
        assert used(ss, "acct_env") == 7.0
        assert used(sp, "acct_env") == 1.0
        assert staging.store.channel != production.store.channel
        time.sleep(0.2)  # time for any stray notification to arrive
        # neither feed ever received a change it did not make itself
        assert staging.feed.applied == 0
        assert production.feed.applied == 0


# -- exactness -------------------------------------------------------------------------------------


def test_consume_from_16_clients_on_two_sidecars_grants_exactly_the_limit(pair: Pair) -> None:
    a, b, sa, sb = pair
    account = "acct_consume"
    new_account(sa, b, account)  # Free: api-calls is a hard limit of 1000
    report(sa, account, 700)
    wait_for(lambda: used(sb, account) == 700.0)
    granted: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(sidecar: Any) -> None:
        mine = 0
        try:
            with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
                while True:
                    response = stubs.usage.Consume(
                        pb.ConsumeRequest(account_id=account, feature="api-calls", amount=1),
                        timeout=10,
                    )
                    if not response.granted:
                        assert response.denial == "usage_limit_reached", response.denial
                        break
                    mine += 1
        except BaseException as exc:
            errors.append(exc)
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=client, args=((a, b)[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    print(f"\nConsume: {sorted(granted)} granted per client, {sum(granted)} in all")
    assert sum(granted) == 300
    wait_for(lambda: used(sa, account) == 1000.0 and used(sb, account) == 1000.0)
    assert a.store.load_counters() == b.store.load_counters()


def test_concurrent_reports_are_grouped_and_none_is_lost(pair: Pair) -> None:
    """16 clients report to one hot account through both sidecars at once."""
    a, b, sa, sb = pair
    account = "acct_hot"
    new_account(sa, b, account, plan="enterprise")
    calls_per_client = 40
    errors: list[BaseException] = []

    def client(sidecar: Any) -> None:
        try:
            with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
                for _ in range(calls_per_client):
                    report(stubs, account, 1)
        except BaseException as exc:
            errors.append(exc)

    groups_before = a.state._usage_writes.groups + b.state._usage_writes.groups
    threads = [threading.Thread(target=client, args=((a, b)[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = 16 * calls_per_client
    wait_for(lambda: used(sa, account) == total and used(sb, account) == total)
    groups = a.state._usage_writes.groups + b.state._usage_writes.groups - groups_before
    print(f"\n{total} Report calls written in {groups} transactions")
    assert groups < total  # concurrent calls shared transactions


# -- outages -------------------------------------------------------------------------------------


def test_a_database_restart_keeps_serving_and_readiness_follows(
    pair: Pair, postgres_cluster: Any
) -> None:
    a, b, sa, sb = pair
    account = "acct_outage"
    new_account(sa, b, account)
    report(sa, account, 5)
    wait_for(lambda: used(sb, account) == 5.0)

    postgres_cluster.stop("fast")
    try:
        wait_for(lambda: readyz(a)[0] == 503 and readyz(b)[0] == 503, timeout=10)
        status, detail = readyz(b)
        assert status == 503
        assert detail["ready"] is False
        assert detail["store"]["feed"] == "disconnected"
        assert detail["store"]["error"]
        # evaluations keep answering from memory; writes say the database is unavailable
        assert used(sb, account) == 5.0
        assert evaluate(sb, account, "sso").reason in ("DEFAULT", "TARGETING_MATCH")
        with pytest.raises(grpc.RpcError) as failed:
            report(sa, account, 1)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        postgres_cluster.start()

    wait_for(lambda: readyz(a)[0] == 200 and readyz(b)[0] == 200, timeout=15)
    report(sa, account, 2)  # A's first write after the restart reconnects by itself
    wait_for(lambda: used(sb, account) == 7.0)


def test_a_sidecar_cut_off_from_the_database_catches_up_when_it_is_back(
    pair: Pair, postgres_cluster: Any
) -> None:
    """B loses its connections (and cannot reconnect) while A keeps writing: B misses those
    notifications, serves what it had, and once it reconnects a full reconcile catches it up."""
    a, b, sa, sb = pair
    account = "acct_catchup"
    new_account(sa, b, account)
    set_concurrency(sa, account, 3)
    report(sa, account, 1)
    wait_for(lambda: concurrency(sb, account) == 3 and used(sb, account) == 1.0)
    b.feed.retry_seconds = b.feed.max_retry_seconds = 0.2

    database = postgres_cluster.url().rsplit("/", 1)[1]
    postgres_cluster.execute(
        f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false", database="postgres"
    )
    try:
        postgres_cluster.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"plangate/%/{b.store.instance}",),
            database="postgres",
        )
        wait_for(lambda: readyz(b)[0] == 503, timeout=10)
        assert readyz(a)[0] == 200  # A kept its connections

        set_concurrency(sa, account, 9)
        report(sa, account, 4)
        sa.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_new_meanwhile"), timeout=5)
        time.sleep(0.3)  # B is not listening: nothing reaches it
        assert concurrency(sb, account) == 3
        assert used(sb, account) == 1.0
        assert readyz(b)[0] == 503
    finally:
        postgres_cluster.execute(
            f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true", database="postgres"
        )

    wait_for(lambda: readyz(b)[0] == 200, timeout=10)
    assert concurrency(sb, account) == 9
    assert used(sb, account) == 5.0
    assert "acct_new_meanwhile" in b.state.snapshot.accounts


def test_admin_changes_through_either_sidecar_land_in_one_audit_log(pair: Pair) -> None:
    _a, b, sa, sb = pair
    sa.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_both", name="via A"), timeout=5)
    wait_for(lambda: "acct_both" in b.state.snapshot.accounts)
    sb.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_both", name="via B"), timeout=5)
    for stubs in (sa, sb):
        reply = stubs.admin.ListAuditLog(pb.ListAuditLogRequest(account_id="acct_both"), timeout=5)
        assert [from_struct(e.after)["name"] for e in reply.entries] == ["via B", "via A"]


# -- admin edits racing across sidecars ----------------------------------------------------------


def test_an_admin_edit_made_from_a_stale_copy_is_refused_not_lost(postgres_cluster: Any) -> None:
    """Two sidecars' stores: B edits an account from the version it holds while A's newer
    change has not reached it yet. B's write is refused (ABORTED over gRPC); A's change stays."""
    from plangate.sidecar.store.errors import StoreConflict
    from plangate.sidecar.store.postgres import PostgresStore

    environment = f"conflict-{uuid.uuid4().hex[:8]}"
    a, b, c = (PostgresStore(postgres_cluster.url(), environment) for _ in range(3))
    try:
        base = {"id": "acct_race", "name": "v1", "subscriptions": [], "grants": []}
        a.save_record(base)
        assert b.load_records()["acct_race"]["name"] == "v1"  # B holds v1
        a.save_record({**base, "name": "v2 through A"})
        with pytest.raises(StoreConflict):
            b.save_record({**base, "name": "edited from v1 through B"})
        assert a.load_records()["acct_race"]["name"] == "v2 through A"
        b.load_records()  # B catches up (the change feed does this within milliseconds) ...
        b.save_record({**base, "name": "v3 through B"})  # ... and the retry applies
        assert a.load_records()["acct_race"]["name"] == "v3 through B"
        with pytest.raises(StoreConflict):  # C never saw the account: it cannot "create" it
            c.save_record(base)
    finally:
        for store in (a, b, c):
            store.close()


# -- the notification format -----------------------------------------------------------------------


def test_change_notifications_split_under_the_payload_limit_and_decode_back() -> None:
    from datetime import UTC, datetime, timedelta

    from plangate.sidecar.store.postgres import NOTIFY_LIMIT, decode_changes, encode_changes

    start = datetime(2026, 6, 1, tzinfo=UTC)
    accounts = [(f"acct_{i:04d}_{'x' * 40}", 10_000 + i) for i in range(300)]
    counters = [
        ((f"sub:acct_{i}/sub_{i}", "monthly-active-users", start + timedelta(hours=i)), i * 1.5, i)
        for i in range(400)
    ]
    payloads = list(encode_changes(accounts, counters))
    assert len(payloads) > 1
    assert all(len(p.encode()) <= NOTIFY_LIMIT for p in payloads)
    got_accounts: dict[str, int] = {}
    got_counters: dict[Any, tuple[float, int]] = {}
    for payload in payloads:
        a, c, reload_all = decode_changes(payload)
        assert not reload_all
        got_accounts.update(a)
        got_counters.update(c)
    assert got_accounts == dict(accounts)
    assert got_counters == {key: (value, version) for key, value, version in counters}
    # an entry that cannot fit any payload asks listeners to re-read everything instead
    (huge,) = encode_changes([("a" * 9000, 1)], [])
    assert decode_changes(huge) == ({}, {}, True)
