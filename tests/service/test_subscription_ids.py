"""Subscription ids are unique across accounts: pooled usage (`scope: subscription`) is counted
under the id, and usage events find the subscription's people through it."""

from __future__ import annotations

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.catalog import CatalogError, parse_catalog
from support.admin import Events, fingerprint
from support.sidecar import EXAMPLE_CATALOG, Stubs


def test_the_catalog_refuses_one_subscription_id_on_two_accounts() -> None:
    text = EXAMPLE_CATALOG.read_text() + (
        "  - id: acct_one\n"
        "    subscriptions:\n"
        "      - {plan: pro, id: main}\n"
        "  - id: acct_two\n"
        "    subscriptions:\n"
        "      - {plan: pro, id: main}\n"
    )
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "catalog.yaml")
    (problem,) = caught.value.problems
    assert problem.path.endswith("subscriptions[0].id")
    lines = text.splitlines()
    second = max(i for i, line in enumerate(lines) if line == "      - {plan: pro, id: main}")
    assert problem.line == second + 1  # acct_two's subscription, not acct_one's
    assert "'main' is already used (by account 'acct_one')" in problem.message


def test_the_admin_api_refuses_an_id_another_account_uses(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_ids_a"))
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_ids_a", plan="pro", id="shared-id")
    )
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_ids_b"))
    before = fingerprint(stubs)
    for taken in ("shared-id", "acct_acme/0"):  # an API id, and one the catalog file declares
        with pytest.raises(grpc.RpcError) as caught:
            stubs.admin.CreateSubscription(
                pb.CreateSubscriptionRequest(account_id="acct_ids_b", plan="pro", id=taken)
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"subscription id '{taken}' is already used by account" in (
            caught.value.details() or ""
        )
    assert fingerprint(stubs) == before


def test_pooled_usage_on_an_api_subscription_tells_its_members(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pool"))
    sub = stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_pool", plan="pro", members=["user_pool"])
    )
    assert not sub.id.startswith("acct_pool")  # a generated id carries no owner to guess from
    events = Events(stubs, accounts=("acct_pool", "user_pool"))
    try:
        result = stubs.usage.Report(
            pb.ReportRequest(
                reports=[pb.UsageReport(account_id="user_pool", feature="seats", amount=3)]
            )
        )
        assert result.results[0].status == pb.ReportResult.STATUS_APPLIED
        events.expect("acct_pool", "user_pool", cause="usage")
    finally:
        events.stream.cancel()
