"""Usage arithmetic (design §5): sum, unique and gauge counters, and report validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from plangate.sidecar.catalog import Feature, parse_catalog
from plangate.sidecar.engine import Mode, UsageRejected, UsageReport, check_report, next_value

CATALOG = parse_catalog(
    """\
products:
  - name: Acme
    features:
      - {name: API calls, type: metered, aggregation: sum}
      - {name: Active users, type: metered, aggregation: unique}
      - {name: Seats, type: metered, aggregation: gauge, reset: never}
      - {name: SSO, type: boolean}
      - {name: Concurrency, type: integer}
"""
)
CALLS = CATALOG.features["api-calls"]
USERS = CATALOG.features["active-users"]
SEATS = CATALOG.features["seats"]


def report(feature: str, amount: float = 1.0, **kwargs: Any) -> UsageReport:
    return UsageReport(account="acct_1", feature=feature, amount=amount, **kwargs)


def apply(feature: Feature, current: float, rep: UsageReport, new_unique: bool = True) -> float:
    check_report(feature, rep)
    return next_value(feature, current, rep, new_unique)


# -- sum ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "amount", "expected"),
    [
        (0, 1, 1),
        (10, 5, 15),
        (10, 2.5, 12.5),
        (10, -4, 6),  # a refund
        (10, -10, 0),
        (3, -10, 0),  # refunds never go below 0
        (0, -1, 0),
    ],
)
def test_sum_adds_and_refunds_floor_at_zero(current: float, amount: float, expected: float) -> None:
    assert apply(CALLS, current, report("api-calls", amount)) == expected


def test_sum_mode_add_is_the_default_and_mode_set_sets() -> None:
    assert apply(CALLS, 10, report("api-calls", 5, mode=Mode.ADD)) == 15
    assert apply(CALLS, 10, report("api-calls", 3, mode=Mode.SET)) == 3
    assert apply(CALLS, 10, report("api-calls", 0, mode=Mode.SET)) == 0


def test_sum_rejects_a_unique_key() -> None:
    with pytest.raises(UsageRejected, match="unique_key applies only to unique features"):
        check_report(CALLS, report("api-calls", unique_key="user_1"))


# -- unique ---------------------------------------------------------------------------------


def test_unique_counts_only_new_keys() -> None:
    rep = report("active-users", unique_key="user_1")
    assert apply(USERS, 0, rep, new_unique=True) == 1
    assert apply(USERS, 1, rep, new_unique=False) == 1
    assert apply(USERS, 1, report("active-users", unique_key="user_2"), new_unique=True) == 2
    # The amount does not matter: one distinct key counts once.
    assert apply(USERS, 2, report("active-users", 50, unique_key="user_3"), new_unique=True) == 3


def test_unique_requires_a_unique_key() -> None:
    with pytest.raises(UsageRejected, match="unique_key"):
        check_report(USERS, report("active-users"))


def test_unique_refuses_mode_set() -> None:
    with pytest.raises(UsageRejected, match="mode 'set'"):
        check_report(USERS, report("active-users", unique_key="u", mode=Mode.SET))


# -- gauge ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "amount"), [(0, 3), (10, 3), (3, 10), (7, 0)])
def test_gauge_sets_the_value(current: float, amount: float) -> None:
    assert apply(SEATS, current, report("seats", amount)) == amount


def test_gauge_mode_add_adjusts_and_floors_at_zero() -> None:
    assert apply(SEATS, 5, report("seats", 2, mode=Mode.ADD)) == 7
    assert apply(SEATS, 5, report("seats", -2, mode=Mode.ADD)) == 3
    assert apply(SEATS, 1, report("seats", -2, mode=Mode.ADD)) == 0


def test_gauge_rejects_a_negative_value() -> None:
    with pytest.raises(UsageRejected, match=">= 0"):
        check_report(SEATS, report("seats", -1))


# -- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sso", "concurrency"])
def test_rejects_non_metered_features(key: str) -> None:
    with pytest.raises(UsageRejected, match="only metered features take usage"):
        check_report(CATALOG.features[key], report(key))


def test_rejects_unknown_feature() -> None:
    with pytest.raises(UsageRejected, match="unknown feature 'teleport'"):
        check_report(CATALOG.features.get("teleport"), report("teleport"))


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_amounts(amount: float) -> None:
    with pytest.raises(UsageRejected, match="finite number"):
        check_report(CALLS, report("api-calls", amount))


def test_rejects_missing_account() -> None:
    with pytest.raises(UsageRejected, match="account is required"):
        check_report(CALLS, UsageReport(account="", feature="api-calls"))


def test_accepted_report_returns_its_feature() -> None:
    assert check_report(CALLS, report("api-calls", 3)) is CALLS
    assert check_report(USERS, report("active-users", unique_key="u")) is USERS
