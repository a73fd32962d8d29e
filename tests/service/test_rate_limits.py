"""Rate windows (design §17) through a real sidecar over gRPC: Consume admits up to the limit
of the sliding window and recovers as it slides, Evaluate answers the window, the add-on and
the override limits, Report is refused, nothing reaches the store, and
`PlanGateProvider.consume` answers a rate feature."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from openfeature.evaluation_context import EvaluationContext
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.provider import provider
from support.sidecar import Stubs, in_process, wait_for

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: API rate, type: rate, window: second}
      - {name: Hourly rate, type: rate, window: hour}
      - {name: Tokens, type: metered}
    plans:
      - {name: Basic, entitlements: {api-rate: 5, hourly-rate: 3, tokens: 100}}
    addons:
      - {name: Burst, entitlements: {hourly-rate: 10}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rates")
    (d / "catalog.yaml").write_text(CATALOG)
    return d


@pytest.fixture(scope="module")
def sidecar(folder: Path) -> Iterator[Any]:
    with in_process(folder / "catalog.yaml", folder / "state.db") as sc:
        yield sc


@pytest.fixture
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s


def account(stubs: Stubs, account_id: str, **addons: int) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="basic", addons=addons),
        timeout=5,
    )
    return account_id


def consume(stubs: Stubs, account_id: str, feature: str, amount: float = 1, key: str = "") -> Any:
    request = pb.ConsumeRequest(
        account_id=account_id, feature=feature, amount=amount, idempotency_key=key
    )
    return stubs.usage.Consume(request, timeout=5)


def evaluated(stubs: Stubs, account_id: str, feature: str) -> pb.Resolution:
    return stubs.evaluation.Evaluate(  # type: ignore[no-any-return]
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )


def test_consume_admits_up_to_the_limit_then_recovers_as_the_window_slides(stubs: Stubs) -> None:
    acct = account(stubs, "acct_slide")

    def fill() -> bool:
        """Five admitted, then one more refused (retried while the window still holds an
        earlier try's requests, or the second rolled over between the calls)."""
        first = consume(stubs, acct, "api-rate", 5)
        return bool(first.granted) and not consume(stubs, acct, "api-rate").granted

    wait_for(lambda: fill() or None, timeout=30)
    refused = consume(stubs, acct, "api-rate")
    assert refused.denial == "rate_limited" and not refused.resolution.has_access
    # the window slides: within a couple of seconds the same request is admitted again
    wait_for(lambda: consume(stubs, acct, "api-rate").granted, timeout=10)


def test_evaluation_answers_the_window_and_the_most_generous_limit(stubs: Stubs) -> None:
    plain = account(stubs, "acct_hour")
    burst = account(stubs, "acct_burst", burst=1)
    assert consume(stubs, plain, "hourly-rate", 2).granted
    res = evaluated(stubs, plain, "hourly-rate")
    assert res.has_access and res.as_integer == 1 and res.metering.limit == 3
    assert res.volatile  # design §17: never cached by the provider
    assert not consume(stubs, plain, "hourly-rate", 2).granted
    assert consume(stubs, burst, "hourly-rate", 12).granted  # plan 3 + add-on 10
    assert evaluated(stubs, burst, "hourly-rate").as_integer == 1
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(account_id=plain, feature="hourly-rate", value=_value(50)),
        timeout=5,
    )
    assert evaluated(stubs, plain, "hourly-rate").as_integer == 48


def test_a_repeated_key_answers_the_first_result(stubs: Stubs) -> None:
    acct = account(stubs, "acct_key")
    first = consume(stubs, acct, "hourly-rate", 2, key="req-1")
    again = consume(stubs, acct, "hourly-rate", 2, key="req-1")
    assert first.granted and again.granted and again.duplicate
    assert evaluated(stubs, acct, "hourly-rate").as_integer == 1


def test_report_on_a_rate_feature_is_refused_and_nothing_reaches_the_store(
    stubs: Stubs, folder: Path
) -> None:
    acct = account(stubs, "acct_store")
    before = _stored(folder / "state.db")
    assert consume(stubs, acct, "hourly-rate", 1, key="k").granted
    answer = stubs.usage.Report(
        pb.ReportRequest(reports=[pb.UsageReport(account_id=acct, feature="hourly-rate")]),
        timeout=5,
    )
    (result,) = answer.results
    assert result.status == pb.ReportResult.STATUS_REJECTED
    assert "hourly-rate is a rate feature" in result.message and "Consume" in result.message
    assert _stored(folder / "state.db") == before


def test_no_entitlement_is_refused_as_no_entitlement(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_none"), timeout=5)
    answer = consume(stubs, "acct_none", "api-rate")
    assert not answer.granted and answer.denial == "no_entitlement"


def test_the_provider_consumes_a_rate_feature(sidecar: Any, stubs: Stubs) -> None:
    acct = account(stubs, "acct_provider")
    with provider(f"127.0.0.1:{sidecar.port}") as p:
        ctx = EvaluationContext(acct)
        first = p.consume("hourly-rate", ctx, 3)
        assert first.granted and first.decision.flag_metadata["remaining"] == 0
        refused = p.consume("hourly-rate", ctx, 1)
        assert not refused.granted and refused.denial == "rate_limited"
        assert p.resolve_integer_details("hourly-rate", 7, ctx).value == 0


def test_the_provider_never_caches_a_rate_answer(sidecar: Any, stubs: Stubs) -> None:
    """A Consume by another client sends no change event; the provider still reads it, since
    a rate answer is volatile and every evaluation asks the sidecar."""
    acct = account(stubs, "acct_uncached")
    with provider(f"127.0.0.1:{sidecar.port}") as p:
        ctx = EvaluationContext(acct)
        assert p.resolve_integer_details("hourly-rate", 7, ctx).value == 3
        assert consume(stubs, acct, "hourly-rate", 2).granted
        assert p.resolve_integer_details("hourly-rate", 7, ctx).value == 1
        assert p.resolve_boolean_details("hourly-rate", False, ctx).value is True


def _value(n: int) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=n)


def _stored(db: Path) -> tuple[int, ...]:
    """Rows of the usage tables (counters, hourly history, idempotency keys)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return tuple(
            c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("usage", "usage_hourly", "idempotency")
        )
