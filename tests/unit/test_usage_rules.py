"""Usage arithmetic (design §5): sum, unique and gauge counters, and report validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Feature
from plangate.sidecar.engine import Mode, UsageRejected, UsageReport, check_report, next_value
from plangate.sidecar.engine.write_rule import (
    BatchReads,
    Firing,
    Status,
    UsageOutcome,
    UsageWrite,
    apply_batch,
)

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


# -- text no store can hold -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("account", "acct\x00", "NUL character (\\x00) at position 4"),
        ("unique_key", "u\x00", "NUL"),
        ("idempotency_key", "\ud800k", "unpaired surrogate at position 0"),
        ("idempotency_key", "k" * 513, "513 bytes long"),
        ("unique_key", "é" * 257, "514 bytes long"),
    ],
)
def test_rejects_text_no_store_can_hold(field: str, value: str, words: str) -> None:
    fields: dict[str, Any] = {"account": "acct_1", "unique_key": "u", field: value}
    rep = UsageReport(feature="active-users", **fields)
    with pytest.raises(UsageRejected) as info:
        check_report(USERS, rep)
    assert str(info.value).startswith(f"{field} ") and words in str(info.value)


def test_accepts_keys_up_to_the_limit() -> None:
    rep = UsageReport("a" * 512, "active-users", unique_key="é" * 256, idempotency_key="ü" * 256)
    assert check_report(USERS, rep) is USERS


# -- the per-write rule (engine.write_rule), without a store ---------------------------------

P = datetime(2026, 6, 1, tzinfo=UTC)


def w(feature: Feature, amount: float = 1.0, **kwargs: Any) -> UsageWrite:
    admit = kwargs.pop("admit", None)
    on_applied = kwargs.pop("on_applied", None)
    rep = UsageReport("acct_1", feature.key, amount, **kwargs)
    return UsageWrite("acct:acct_1", feature, P, rep, admit, on_applied)


def test_the_rule_applies_a_batch_in_order_and_says_what_to_write() -> None:
    c = ("acct:acct_1", "api-calls", P)
    u = ("acct:acct_1", "active-users", P)
    first = UsageOutcome(Status.APPLIED, 4.0, P)
    reads = BatchReads(
        outcomes={"seen": first}, values={c: 3.0, u: 1.0}, uniques={(u, "old")}, marks={(c, "m:5")}
    )

    def fire(old: float, new: float) -> list[Firing]:
        return [Firing(f"m:{t}", P) for t in (5, 6) if old < t <= new]

    done = apply_batch(
        [
            w(CALLS, 9, idempotency_key="seen"),  # a duplicate changes nothing
            w(
                CALLS,
                4,
                admit=lambda current, _headroom: "usage_limit_reached" if current >= 3 else None,
            ),
            w(CALLS, 3, on_applied=fire, idempotency_key="new"),  # 3 -> 6: m:5 fired before
            w(CALLS, 1, idempotency_key="new"),  # the key's first outcome, from this batch
            w(USERS, unique_key="old"),
            w(USERS, unique_key="fresh"),
            w(USERS, unique_key="fresh"),
        ],
        reads,
    )
    assert [(o.status, o.usage) for o in done.outcomes] == [
        (Status.DUPLICATE, 4.0),
        (Status.DENIED, 3.0),
        (Status.APPLIED, 6.0),
        (Status.DUPLICATE, 6.0),
        (Status.APPLIED, 1.0),
        (Status.APPLIED, 2.0),
        (Status.APPLIED, 2.0),
    ]
    assert [f.mark for f in done.outcomes[2].fired] == ["m:6"]
    assert done.values == {c: 6.0, u: 2.0}
    assert done.uniques == [(u, "fresh")]
    assert [(key, f.mark) for key, f in done.marks] == [(c, "m:6")]
    assert set(done.keys) == {"new"}


def test_the_rule_refuses_a_counter_leaving_the_finite_numbers_and_forgets_its_key() -> None:
    c = ("acct:acct_1", "api-calls", P)
    done = apply_batch(
        [w(CALLS, 1e308, idempotency_key="a"), w(CALLS, -1e307, idempotency_key="b")],
        BatchReads(outcomes={}, values={c: 1e308}),
    )
    assert [o.status for o in done.outcomes] == [Status.REJECTED, Status.APPLIED]
    assert "out of range" in done.outcomes[0].message
    assert set(done.keys) == {"b"} and done.values == {c: 1e308 - 1e307}
