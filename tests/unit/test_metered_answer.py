"""The one metered answer (`plangate.protocol.metering`) and the one usage write built on it."""

from __future__ import annotations

from datetime import UTC, datetime

from plangate.protocol.metering import Denial, PoolCover, Terms, metered_answer
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import StateView, UsageReport, evaluate
from plangate.sidecar.runtime.writes.usage_write import usage_write

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_held_counts_for_access_and_remaining_but_not_overage() -> None:
    answer = metered_answer(Terms(10.0), 4.0, 3.0, held=4.0)
    assert (answer.has_access, answer.denial) == (False, Denial.USAGE_LIMIT_REACHED)
    assert (answer.limit, answer.remaining, answer.overage) == (10.0, 2.0, 0.0)
    assert metered_answer(Terms(10.0), 12.0, 0.0, held=1.0).overage == 2.0


def test_the_ceiling_adds_top_ups_and_overage_starts_above_their_burn() -> None:
    answer = metered_answer(Terms(10.0, topup_burned=3.0, topup_remaining=5.0), 14.0, 5.0)
    assert (answer.has_access, answer.limit, answer.remaining, answer.overage) == (
        False,
        18.0,
        4.0,
        1.0,
    )


def test_a_pool_bounds_remaining_in_units_and_denies_after_the_own_limit() -> None:
    pool = PoolCover(per_unit=2.0, covered=False, remaining=7.0)
    answer = metered_answer(Terms(None), 0.0, 1.0, pool=pool)
    assert (answer.has_access, answer.denial, answer.remaining) == (
        False,
        Denial.CREDITS_EXHAUSTED,
        3.0,
    )
    own_first = metered_answer(Terms(0.0), 0.0, 1.0, pool=pool)
    assert own_first.denial is Denial.REQUESTED_EXCEEDS_LIMIT


def test_burned_at_moves_the_burn_and_keeps_the_ceiling() -> None:
    terms = Terms(10.0, topup_burned=2.0, topup_remaining=6.0)
    assert terms.burned_at(15.0) == Terms(10.0, topup_burned=5.0, topup_remaining=3.0)
    assert terms.burned_at(30.0) == Terms(10.0, topup_burned=8.0, topup_remaining=0.0)
    assert terms.burned_at(4.0) == Terms(10.0, topup_burned=0.0, topup_remaining=8.0)


CATALOG = parse_catalog(
    """\
products:
  - name: Acme
    features:
      - {name: Credits, type: credits, reset: monthly}
      - {name: Chat, type: metered, reset: monthly, credits: {pool: credits, per_unit: 2}}
    plans:
      - name: Plan
        entitlements: {credits: 20, chat: 5}
accounts:
  - id: acct
    subscriptions: [{plan: plan}]
    topups: [{id: t1, feature: chat, amount: 3}]
"""
)


def test_report_and_consume_build_the_same_write_but_for_the_admission() -> None:
    snap = StateView.of(CATALOG)
    feature = CATALOG.features["chat"]
    report = UsageReport("acct", "chat", 4.0)
    reported = usage_write(snap, report, feature, at=NOW, now=NOW, environment="test")
    decision = evaluate(snap, "acct", "chat", {"requested": 4.0}, NOW)
    consumed = usage_write(
        snap,
        report,
        feature,
        at=NOW,
        now=NOW,
        environment="test",
        decision=decision,
        requested=4.0,
    )
    for write in (reported, consumed):
        assert write.counter == reported.counter
        assert write.balance == reported.balance
        assert write.pool is not None and reported.pool is not None
        assert write.pool.counter == reported.pool.counter
    assert reported.admit is None and reported.pool.admit is None
    assert consumed.admit is not None and consumed.pool is not None
    assert consumed.pool.admit is not None
    assert consumed.admit(0.0, 3.0) is None  # 4 fits 5 + 3 top-up
    assert consumed.admit(5.0, 3.0) == "usage_limit_reached"
    assert consumed.pool.admit(13.0, 0.0) == "credits_exhausted"  # 13 + 8 credits > 20
