"""Sums of finite amounts that overflow (decision 1301): refused by `overflow`, saturated on read."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Account, MeteredLimit, Override, Subscription, TopUp
from plangate.sidecar.engine import StateView, evaluate
from plangate.sidecar.engine.combine import stack
from plangate.sidecar.engine.sums import LARGEST, overflows, saturated
from plangate.sidecar.engine.typed import Kind, resolve_as

NOW = datetime(2026, 6, 15, tzinfo=UTC)
CATALOG = parse_catalog(
    """
products:
  - name: Acme
    features:
      - {name: API calls, type: metered, reset: monthly}
    plans:
      - name: Free
        entitlements: {api-calls: 1000}
    addons:
      - name: Huge
        entitlements: {api-calls: 1.0e+308}
""",
    "catalog.yaml",
)
SUB = Subscription("s1", "a1", "free", starts_at=datetime(2026, 1, 1, tzinfo=UTC))


def _account(*amounts: float, **changes: object) -> Account:
    topups = tuple(TopUp(f"u{i}", "api-calls", a) for i, a in enumerate(amounts))
    fields: dict[str, object] = {"subscriptions": (SUB,), "topups": topups, **changes}
    return Account("a1", **fields)  # type: ignore[arg-type]


def _view(account: Account) -> StateView:
    return StateView(CATALOG, {account.id: account})


def test_saturated_keeps_finite_numbers_and_caps_the_rest() -> None:
    assert saturated(12.5) == 12.5
    assert saturated(math.inf) == LARGEST == sys.float_info.max
    assert saturated(-math.inf) == -LARGEST
    assert saturated(math.nan) == LARGEST


def test_two_top_ups_of_1e308_overflow_one_does_not() -> None:
    plans = _view(_account()).plans
    assert overflows(_account(1e308), plans) == {}
    (problem,) = overflows(_account(1e308, 1e308), plans).values()
    assert "api-calls" in problem and "1e+308 + 1e+308" in problem


def test_a_voided_top_up_no_longer_counts() -> None:
    plans = _view(_account()).plans
    voided = TopUp("v", "api-calls", 1e308, voided_at=datetime(2026, 2, 1, tzinfo=UTC))
    account = _account(1e308)
    assert not overflows(
        Account("a1", subscriptions=(SUB,), topups=(*account.topups, voided)), plans
    )


def test_a_large_allowance_counts_with_the_top_ups() -> None:
    big = {"api-calls": Override("api-calls", MeteredLimit(1.5e308))}
    plans = _view(_account()).plans
    assert overflows(_account(1e308, overrides=big), plans)
    assert not overflows(_account(1e307, overrides=big), plans)


def test_add_ons_that_overflow_are_named() -> None:
    sub = Subscription("s2", "a1", "free", addons={"huge": 2})
    plans = _view(_account()).plans
    (problem,) = overflows(_account(subscriptions=(sub,)), plans).values()
    assert "'s2'" in problem
    assert stack(MeteredLimit(1000.0), MeteredLimit(1e308), 2) == MeteredLimit(LARGEST)


@given(st.lists(st.floats(1.0, 1e308), min_size=1, max_size=5))
def test_evaluation_of_any_stored_top_ups_answers_finite_numbers(amounts: list[float]) -> None:
    snapshot = _view(_account(*amounts))
    decision = evaluate(snapshot, "a1", "api-calls", {}, NOW)
    m = decision.metering
    assert m is not None and m.limit is not None and m.remaining is not None
    assert math.isfinite(m.limit) and math.isfinite(m.remaining) and decision.has_access
    assert math.isfinite(m.topup_remaining)
    feature = CATALOG.features["api-calls"]
    assert resolve_as(decision, feature, Kind.INTEGER) <= 2**63 - 1
