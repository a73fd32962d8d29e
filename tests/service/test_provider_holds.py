"""`PlanGateProvider.consume` and `reserve` (design §17) against a real sidecar: consume admits
or refuses with the decision, a hold counts until settled or released, the hold as a context
manager releases on an exception and when left unended (decision 2301), and each write drops
the provider's cached answers. What was recorded is read back through the native API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import GeneralError, TargetingKeyMissingError
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider import PlanGateProvider
from support.provider import native_used, provider
from support.sidecar import Stubs, in_process

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: Tokens, type: metered, reset: monthly, anchor: calendar}
      - {name: SSO, type: boolean}
    plans:
      - name: Basic
        entitlements: {tokens: 100, sso: true}
"""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d: Path = tmp_path_factory.mktemp("provider-holds")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield f"127.0.0.1:{sc.port}"


@pytest.fixture
def p(target: str) -> Iterator[PlanGateProvider]:
    with provider(target) as made:
        yield made


def account(target: str, account_id: str) -> EvaluationContext:
    with Stubs(target) as stubs:
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=account_id, plan="basic"), timeout=5
        )
    return EvaluationContext(account_id)


def native(target: str, account_id: str) -> tuple[float, float]:
    """(used, held) of tokens as the sidecar itself answers."""
    with Stubs(target) as stubs:
        res = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id=account_id, feature="tokens"), timeout=5
        )
    return res.metering.used, res.metering.held


def test_consume_admits_within_the_limit_and_refuses_beyond_with_the_decision(
    target: str, p: PlanGateProvider
) -> None:
    ctx = account(target, "acct_consume")
    first = p.consume("tokens", ctx, 60)
    assert first.granted and first.denial == "" and first.usage == 60
    assert first.decision.value is True
    assert first.decision.flag_metadata["remaining"] == 40
    refused = p.consume("tokens", ctx, 50)
    assert not refused.granted
    assert refused.denial == "usage_limit_reached"
    assert refused.decision.flag_metadata["used"] == 60
    with Stubs(target) as stubs:
        assert native_used(stubs, "acct_consume", "tokens") == 60


def test_consume_with_a_repeated_key_answers_the_first_result(
    target: str, p: PlanGateProvider
) -> None:
    ctx = account(target, "acct_consume_key")
    assert p.consume("tokens", ctx, 10, idempotency_key="job-1").granted
    again = p.consume("tokens", ctx, 10, idempotency_key="job-1")
    assert again.duplicate and again.usage == 10
    assert native(target, "acct_consume_key") == (10, 0)


def test_a_provider_answer_after_consume_reads_the_write(target: str, p: PlanGateProvider) -> None:
    ctx = account(target, "acct_consume_cache")
    client = api.get_client()
    assert client.get_integer_value("tokens", 0, ctx) == 100  # now cached
    assert p.consume("tokens", ctx, 100).granted
    assert client.get_boolean_value("tokens", True, ctx) is False
    assert client.get_integer_value("tokens", -1, ctx) == 0


def test_a_hold_counts_until_settled_and_the_settle_records_the_real_amount(
    target: str, p: PlanGateProvider
) -> None:
    ctx = account(target, "acct_reserve")
    hold = p.reserve("tokens", ctx, 70, ttl_seconds=600)
    assert hold.granted and hold.id.startswith("hold_")
    assert hold.expires_at is not None and hold.expires_at > datetime.now(UTC)
    assert hold.decision.flag_metadata["held"] == 70
    assert native(target, "acct_reserve") == (0, 70)
    refused = p.reserve("tokens", ctx, 40)  # 70 held + 40 > 100
    assert not refused.granted and refused.denial == "usage_limit_reached"
    with pytest.raises(ValueError, match="not granted"):
        refused.settle(1)
    after = hold.settle(55)
    assert after.flag_metadata["used"] == 55 and not hold.over_ceiling
    assert native(target, "acct_reserve") == (55, 0)
    with pytest.raises(ValueError, match="already settled"):
        hold.release()


def test_a_hold_used_as_a_context_manager_is_released_when_the_work_fails(
    target: str, p: PlanGateProvider
) -> None:
    ctx = account(target, "acct_reserve_fail")
    with pytest.raises(RuntimeError, match="render failed"), p.reserve("tokens", ctx, 80) as hold:
        assert native(target, "acct_reserve_fail") == (0, 80)
        raise RuntimeError("render failed")
    assert hold.ended == "released"
    assert native(target, "acct_reserve_fail") == (0, 0)


def test_a_hold_left_unended_by_its_block_is_released_and_a_settled_one_kept(
    target: str, p: PlanGateProvider
) -> None:
    ctx = account(target, "acct_reserve_block")
    with p.reserve("tokens", ctx, 30) as forgotten:
        pass
    assert forgotten.ended == "released"
    with p.reserve("tokens", ctx, 30) as hold:
        hold.settle(25)
    assert hold.ended == "settled"
    assert native(target, "acct_reserve_block") == (25, 0)


def test_bad_reservations_raise_and_reserve_nothing(target: str, p: PlanGateProvider) -> None:
    ctx = account(target, "acct_reserve_bad")
    with pytest.raises(GeneralError, match=r"INVALID_ARGUMENT.*ttl_seconds"):
        p.reserve("tokens", ctx, 10, ttl_seconds=0)
    with pytest.raises(GeneralError, match="INVALID_ARGUMENT"):
        p.reserve("sso", ctx, 1)
    with pytest.raises(TargetingKeyMissingError):
        p.reserve("tokens", EvaluationContext(), 1)
    assert native(target, "acct_reserve_bad") == (0, 0)
