"""The working set in shared mode (design §19 with §10): a sidecar holding at most N accounts
of a PostgreSQL store answers like one holding them all, and still announces changes that
other sidecars make to accounts it does not hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_value
from support.sidecar import Stubs, copy_catalog, in_process, wait_for
from support.watch import WatchLog


@pytest.fixture
def two(postgres_cluster: Any, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """An unlimited sidecar and one with `--max-accounts 3` on one database."""
    catalog = copy_catalog(tmp_path)
    env = f"ws-{uuid.uuid4().hex[:8]}"
    url = postgres_cluster.url()
    with (
        in_process(catalog, url, environment=env) as full,
        in_process(catalog, url, environment=env, max_accounts=3) as ws,
    ):
        wait_for(lambda: full.feed.connected and ws.feed.connected, timeout=10)
        yield full, ws


def sso(stubs: Stubs, account_id: str) -> bool:
    res = stubs.evaluation.Evaluate(pb.EvaluateRequest(account_id=account_id, feature="sso"))
    return bool(res.has_access)


def test_changes_to_accounts_not_held_are_announced_and_read(two: tuple[Any, Any]) -> None:
    full, ws = two
    ids = [f"acct_pg_ws_{i}" for i in range(10)]
    with Stubs(f"127.0.0.1:{full.port}") as a, Stubs(f"127.0.0.1:{ws.port}") as b:
        for account_id in ids:
            a.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=10)
            a.admin.CreateSubscription(
                pb.CreateSubscriptionRequest(account_id=account_id, plan="free"), timeout=10
            )
            a.usage.Report(
                pb.ReportRequest(
                    reports=[pb.UsageReport(account_id=account_id, feature="api-calls", amount=7)]
                ),
                timeout=10,
            )
        for account_id in ids:
            assert not sso(b, account_id)
            used = b.evaluation.Evaluate(
                pb.EvaluateRequest(account_id=account_id, feature="api-calls")
            ).metering.used
            assert used == 7
        assert ws.state.working.held <= 4
        target = ids[0]
        assert not ws.state.working.holds(target)
        watch = WatchLog(b)
        try:
            a.admin.SetOverride(
                pb.SetOverrideRequest(account_id=target, feature="sso", value=to_value(True)),
                timeout=10,
            )
            wait_for(lambda: any(target in e.account_ids for _, e in watch.events), timeout=10)
        finally:
            watch.close()
        assert not ws.state.working.holds(target)  # announced, not read
        assert sso(b, target)  # read on use: the new override
        a.usage.Consume(pb.ConsumeRequest(account_id=target, feature="api-calls"), timeout=10)
        wait_for(
            lambda: (
                b.evaluation.Evaluate(
                    pb.EvaluateRequest(account_id=target, feature="api-calls")
                ).metering.used
                == 8
            ),
            timeout=10,
        )
        listed = b.admin.ListAccounts(pb.ListAccountsRequest(page_size=100), timeout=10)
        assert [x.id for x in listed.accounts if x.id in ids] == ids  # from the store
        assert ws.state.account_count() == full.state.account_count()
        wait_for(lambda: len(ws.state.working) <= 3, timeout=10)  # evicted on the loop again
