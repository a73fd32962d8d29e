"""Balances stay exact (design §5.1) on both stores, across sidecars, and through `kill -9`.

- 32 concurrent Consume clients on a pool shared by three credit-priced features, with a
  top-up, never take the pool past its ceiling: on SQLite (one sidecar) and on PostgreSQL
  with two sidecars' live states on one database; and what was granted, times the rates,
  is exactly what the pool recorded.
- The same through two real sidecars in shared mode (gRPC).
- SIGKILL in the middle of a storm of reports on a credit-priced feature loses no
  acknowledged burn and, once clients retry with their idempotency keys, counts none twice:
  the feature, its pool and the top-up burn move together or not at all.
"""

from __future__ import annotations

import random
import textwrap
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.runtime.edits import records as rec
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.decisions import Decisions
from plangate.sidecar.runtime.writes.balances import topup_balances
from plangate.sidecar.store.base import Store
from plangate.sidecar.store.sqlite import SqliteStore
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, in_process, wait_for

RATES = {"chat": 1.0, "images": 5.0, "search": 2.0}
CATALOG = parse_catalog(
    textwrap.dedent(
        """
        products:
          - name: Acme
            features:
              - {name: Credits, type: credits, reset: monthly, anchor: calendar}
              - {name: Chat, type: metered, credits: {pool: credits, per_unit: 1}}
              - {name: Images, type: metered, credits: {pool: credits, per_unit: 5}}
              - {name: Search, type: metered, credits: {pool: credits, per_unit: 2}}
            plans:
              - name: Basic
                entitlements: {credits: 300, chat: unlimited, images: unlimited, search: unlimited}
        """
    )
)
ALLOWANCE, TOPUP = 300.0, 157.0


def _storm(consumers: list[Decisions], account: str) -> dict[str, float]:
    """32 clients Consume random priced features until every one is refused; granted units."""
    granted = dict.fromkeys(RATES, 0.0)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(n)
        mine = dict.fromkeys(RATES, 0.0)
        refused: set[str] = set()
        try:
            while len(refused) < len(RATES):
                feature = rng.choice(sorted(set(RATES) - refused))
                amount = float(rng.randint(1, 3))
                c = consumers[n % len(consumers)].consume(UsageReport(account, feature, amount))
                if c.granted:
                    mine[feature] += amount
                else:
                    assert c.denial == "credits_exhausted", c.denial
                    if amount == 1.0:
                        refused.add(feature)
        except BaseException as exc:
            errors.append(exc)
        with lock:
            for k, v in mine.items():
                granted[k] += v

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return granted


def _account(state: LiveState, account: str) -> None:
    r = rec.new_record(account)
    r, _ = rec.add_subscription(
        r, "basic", {}, datetime(2026, 1, 1, tzinfo=UTC), None, None, [], ""
    )
    r, _ = rec.add_topup(r, "credits", TOPUP, 10, None, None, "pack")
    state.commit(r)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_32_consumers_never_take_a_shared_pool_below_zero(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stores: list[Store] = []
    if backend == "sqlite":
        stores.append(SqliteStore(tmp_path / "state.db"))
    else:
        from plangate.sidecar.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_cluster").url()
        env = f"pool-{uuid.uuid4().hex[:8]}"
        stores += [PostgresStore(url, env), PostgresStore(url, env)]
    try:
        first = LiveState(CATALOG, stores[0])
        _account(first, "acct_pool")
        states = [first] + [LiveState(CATALOG, s) for s in stores[1:]]  # a second sidecar
        granted = _storm([Decisions(s) for s in states], "acct_pool")
        credits = sum(granted[k] * RATES[k] for k in RATES)
        print(f"\n{backend}: granted {granted} = {credits} credits")
        pool = stores[0].load_counters()
        used = {f: v for (_s, f, _p), v in pool.items() if "#" not in f}
        assert used["credits"] == credits  # every granted unit counted on the pool, once
        assert credits <= ALLOWANCE + TOPUP  # never past the ceiling
        assert credits >= ALLOWANCE + TOPUP - 2 * max(RATES.values())  # and nearly all of it
        for feature, units in granted.items():
            assert used.get(feature, 0.0) == units
        fresh = LiveState(CATALOG, stores[0])  # what a restart reads back
        (pack,) = topup_balances(fresh.snapshot, "acct_pool", fresh.clock())
        assert pack.burned == credits - ALLOWANCE
    finally:
        for s in stores:
            s.close()  # type: ignore[attr-defined]


def test_a_pool_stays_exact_across_two_sidecars_in_shared_mode(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    catalog = copy_catalog(tmp_path)  # the example: ai-credits, 100 a month on Free
    env = f"pool-{uuid.uuid4().hex[:8]}"
    url = postgres_cluster.url()
    with (
        in_process(catalog, url, environment=env) as a,
        in_process(catalog, url, environment=env) as b,
        Stubs(f"127.0.0.1:{a.port}") as sa,
    ):
        wait_for(lambda: a.feed.connected and b.feed.connected, timeout=10)
        sa.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_shared"), timeout=5)
        sa.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_shared", plan="free"), timeout=5
        )
        sa.admin.AddTopUp(
            pb.AddTopUpRequest(account_id="acct_shared", feature="ai-credits", amount=45),
            timeout=5,
        )
        wait_for(lambda: "acct_shared" in b.state.snapshot.accounts, timeout=10)
        wait_for(lambda: b.state.snapshot.accounts["acct_shared"].topups, timeout=10)
        rates = {"ai-completions": 1, "image-generations": 10}
        granted = dict.fromkeys(rates, 0)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def client(n: int) -> None:
            sidecar = (a, b)[n % 2]
            feature = sorted(rates)[n % 2]
            try:
                with Stubs(f"127.0.0.1:{sidecar.port}") as s:
                    while True:
                        reply = s.usage.Consume(
                            pb.ConsumeRequest(account_id="acct_shared", feature=feature, amount=1),
                            timeout=10,
                        )
                        if not reply.granted:
                            assert reply.denial in ("credits_exhausted", "usage_limit_reached")
                            break
                        with lock:
                            granted[feature] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        credits = sum(granted[k] * rates[k] for k in rates)
        counters = a.store.load_counters()
        pool = sum(v for (_s, f, _p), v in counters.items() if f == "ai-credits")
        assert pool == credits <= 145  # 100 a month + the 45 top-up, never more
        assert granted["image-generations"] <= 5  # its own Free limit
        assert credits > 145 - 10


def test_kill_9_during_a_report_storm_loses_no_burn_and_counts_none_twice(
    tmp_path: Path,
) -> None:
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "state.db").start()
    account = "acct_initech"  # declared: Free (100 credits a month) and a 500-credit top-up

    def batch(b: int) -> pb.ReportRequest:
        return pb.ReportRequest(
            reports=[
                pb.UsageReport(
                    account_id=account,
                    feature="ai-completions",
                    amount=b % 3 + 1,
                    idempotency_key=f"storm-{b}-{i}",
                )
                for i in range(10)
            ]
        )

    batches = [batch(b) for b in range(40)]
    total = sum(10 * (b % 3 + 1) for b in range(40))

    def counters(s: Stubs) -> tuple[float, float, float]:
        own = s.evaluation.Evaluate(
            pb.EvaluateRequest(account_id=account, feature="ai-completions"), timeout=5
        )
        pool = s.evaluation.Evaluate(
            pb.EvaluateRequest(account_id=account, feature="ai-credits"), timeout=5
        )
        (pack,) = s.admin.ListTopUps(pb.ListTopUpsRequest(account_id=account), timeout=5).topups
        return own.metering.used, pool.metering.used, pack.burned

    try:
        acknowledged: list[int] = []

        def send() -> None:
            with Stubs(sidecar.target) as s:
                for b, request in enumerate(batches):
                    try:
                        s.usage.Report(request, timeout=5)
                    except grpc.RpcError:
                        return
                    acknowledged.append(b)

        sender = threading.Thread(target=send)
        sender.start()
        while len(acknowledged) < 10 and sender.is_alive():
            sender.join(0.001)
        sidecar.kill()
        sender.join()
        acked = sum(10 * (b % 3 + 1) for b in acknowledged)
        sidecar.restart()
        with Stubs(sidecar.target) as s:
            own, pool, burned = counters(s)
            assert own == pool  # the feature and its pool commit together
            assert burned == max(0.0, min(500.0, pool - 100))  # and so does the burn
            assert acked <= own <= acked + 30  # at most one unanswered batch landed
            for request in batches:  # clients retry everything with the same keys
                s.usage.Report(request, timeout=5)
            assert counters(s) == (total, total, min(500.0, total - 100))
        sidecar.restart()
        with Stubs(sidecar.target) as s:
            assert counters(s) == (total, total, min(500.0, total - 100))
    finally:
        sidecar.kill()
