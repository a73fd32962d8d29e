"""Metered access (design §4): U + R against L, soft limits, overage caps, periods, scopes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.protocol.metering import Denial, metered_access
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import Decision, Reason, StateView, evaluate, metadata
from support.usage import FakeUsage, usage_of

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)  # start of NOW's calendar month

CATALOG = """\
products:
  - name: Acme
    features:
      - name: API calls
        type: metered
        reset: monthly
        anchor: calendar
      - name: Jobs
        type: metered
        reset: monthly
        anchor: subscription
      - name: Seats
        type: metered
        aggregation: gauge
        reset: never
        scope: subscription
      - name: Credits
        type: metered
        reset: never
        default: 10
    plans:
      - name: Hard
        entitlements: {api-calls: 100, jobs: 10, seats: 5}
      - name: Soft
        entitlements: {api-calls: {limit: 100, soft: true}}
      - name: Capped
        entitlements: {api-calls: {limit: 100, soft: true, overage_cap: 20}}
      - name: Unlimited
        entitlements: {api-calls: unlimited}
      - name: Zero
        entitlements: {api-calls: 0}
    addons:
      - name: Call pack
        max_quantity: 10
        entitlements: {api-calls: 50}
      - name: No calls
        entitlements: {api-calls: 0}
      - name: All calls
        entitlements: {api-calls: unlimited}
accounts:
  - {id: hard, subscriptions: [{plan: hard, starts_at: 2026-01-31T00:00:00Z}]}
  - {id: soft, subscriptions: [{plan: soft}]}
  - {id: capped, subscriptions: [{plan: capped}]}
  - {id: unlimited, subscriptions: [{plan: unlimited}]}
  - {id: packed, subscriptions: [{plan: hard, addons: {call-pack: 2}}]}
  - {id: zero, subscriptions: [{plan: zero, addons: {no-calls: 1}}]}
  - {id: boundless, subscriptions: [{plan: hard, addons: {all-calls: 1}}]}
  - {id: two, subscriptions: [{plan: hard}, {plan: capped}]}
  - {id: grant, subscriptions: [{plan: hard}], grants: [{feature: api-calls, value: 1000}]}
  - {id: down, subscriptions: [{plan: soft}], overrides: {api-calls: 5}}
  - id: owner
    subscriptions: [{id: team, plan: hard, members: [member]}]
  - id: plain
"""


@pytest.fixture
def snap(usage: FakeUsage) -> StateView:
    return StateView.of(parse_catalog(CATALOG), usage)


def calls(
    snapshot: StateView,
    account: str,
    used: float | None = None,
    at: datetime = NOW,
    feature: str = "api-calls",
    **context: Any,
) -> Decision:
    if used is not None:
        usage_of(snapshot).set(f"acct:{account}", feature, JUNE, used)
    return evaluate(snapshot, account, feature, context, at)


# -- hard limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "requested", "allowed", "denial"),
    [
        (0, 1, True, None),
        (99, 1, True, None),  # U + R = L
        (100, 1, False, Denial.USAGE_LIMIT_REACHED),  # U + R = L + 1
        (90, 10, True, None),
        (90, 11, False, Denial.USAGE_LIMIT_REACHED),
        (0, 100, True, None),
        (0, 101, False, Denial.REQUESTED_EXCEEDS_LIMIT),  # can never fit
        (40, 101, False, Denial.REQUESTED_EXCEEDS_LIMIT),
        (100, 0, True, None),  # asking for nothing at the limit
        (150, 1, False, Denial.USAGE_LIMIT_REACHED),
    ],
)
def test_hard_limit(
    snap: StateView, used: float, requested: float, allowed: bool, denial: Denial | None
) -> None:
    d = calls(snap, "hard", used, requested=requested)
    assert (d.has_access, d.denial) == (allowed, denial)
    assert d.reason is Reason.TARGETING_MATCH
    assert d.metering.limit == 100
    assert d.metering.used == used


def test_requested_defaults_to_one(snap: StateView) -> None:
    assert calls(snap, "hard", 99).has_access
    assert not calls(snap, "hard", 100).has_access


def test_limit_used_remaining_overage(snap: StateView) -> None:
    d = calls(snap, "hard", 30.5)
    m = d.metering
    assert (m.limit, m.used, m.remaining, m.overage) == (100, 30.5, 69.5, 0)
    assert (m.soft_limit, m.overage_cap, m.unlimited) == (False, None, False)
    assert d.value == 100
    over = calls(snap, "soft", 130).metering
    assert (over.remaining, over.overage) == (0, 30)
    meta = metadata(d)
    assert (meta["limit"], meta["used"], meta["remaining"], meta["unlimited"]) == (
        100,
        30.5,
        69.5,
        False,
    )


# -- soft limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(("used", "requested"), [(0, 1), (100, 1), (5000, 1), (0, 10**9)])
def test_soft_limit_without_cap_always_allows(
    snap: StateView, used: float, requested: float
) -> None:
    d = calls(snap, "soft", used, requested=requested)
    assert (d.has_access, d.denial) == (True, None)
    assert d.metering.soft_limit
    assert d.metering.overage == max(0, used - 100)


@pytest.mark.parametrize(
    ("used", "requested", "allowed", "denial"),
    [
        (100, 20, True, None),  # U + R - L = cap
        (119, 1, True, None),
        (120, 1, False, Denial.USAGE_LIMIT_REACHED),  # one past L + cap
        (100, 21, False, Denial.USAGE_LIMIT_REACHED),
        (0, 120, True, None),
        (0, 121, False, Denial.REQUESTED_EXCEEDS_LIMIT),
    ],
)
def test_soft_limit_with_overage_cap(
    snap: StateView, used: float, requested: float, allowed: bool, denial: Denial | None
) -> None:
    d = calls(snap, "capped", used, requested=requested)
    assert (d.has_access, d.denial) == (allowed, denial)
    assert (d.metering.soft_limit, d.metering.overage_cap) == (True, 20)


def test_unlimited(snap: StateView) -> None:
    d = calls(snap, "unlimited", 10**12, requested=10**9)
    assert (d.has_access, d.denial, d.unlimited) == (True, None, True)
    m = d.metering
    assert (m.limit, m.remaining, m.unlimited, m.used) == (None, None, True, 10**12)
    meta = metadata(d)
    assert meta["unlimited"] is True
    assert "limit" not in meta and "remaining" not in meta


@given(
    limit=st.one_of(st.none(), st.integers(0, 1000)),
    soft=st.booleans(),
    cap=st.one_of(st.none(), st.integers(0, 500)),
    used=st.integers(0, 2000),
    requested=st.integers(0, 2000),
)
@settings(max_examples=300, deadline=None)
def test_access_matches_the_design_formula(
    limit: int | None, soft: bool, cap: int | None, used: float, requested: float
) -> None:
    if not soft:
        cap = None
    allowed, denial = metered_access(limit, used, requested, soft=soft, overage_cap=cap)
    expected = (
        limit is None
        or used + requested <= limit
        or (soft and (cap is None or used + requested - limit <= cap))
    )
    assert allowed == expected
    assert (denial is None) == allowed
    if not allowed:
        assert limit is not None
        ceiling = limit + (cap or 0)
        assert denial is (
            Denial.REQUESTED_EXCEEDS_LIMIT if requested > ceiling else Denial.USAGE_LIMIT_REACHED
        )


# -- sources ------------------------------------------------------------------------------


def test_addon_limits_add_times_quantity(snap: StateView) -> None:
    d = calls(snap, "packed", 199)
    assert d.metering.limit == 100 + 50 * 2
    assert d.variant == "hard+call-pack"
    assert d.has_access
    assert not calls(snap, "packed", 200).has_access


def test_zero_limits_stack_to_zero(snap: StateView) -> None:
    d = calls(snap, "zero", 0)
    assert (d.value, d.metering.limit, d.has_access) == (0, 0, False)
    assert d.denial is Denial.REQUESTED_EXCEEDS_LIMIT


def test_unlimited_addon_makes_the_limit_unlimited(snap: StateView) -> None:
    d = calls(snap, "boundless", 10**6)
    assert d.unlimited and d.has_access


def test_two_subscriptions_the_larger_ceiling_wins(snap: StateView) -> None:
    # hard 100 vs soft 100 capped at +20: the same limit, a higher ceiling.
    d = calls(snap, "two", 110)
    assert (d.metering.limit, d.metering.soft_limit, d.variant) == (100, True, "capped")
    assert d.has_access


def test_grant_and_override(snap: StateView) -> None:
    granted = calls(snap, "grant", 500)
    assert (granted.metering.limit, granted.variant, granted.has_access) == (1000, "grant", True)
    lowered = calls(snap, "down", 5)  # soft plan, but the override is a hard 5
    assert (lowered.metering.limit, lowered.metering.soft_limit) == (5, False)
    assert lowered.denial is Denial.USAGE_LIMIT_REACHED


def test_no_entitlement(snap: StateView) -> None:
    d = calls(snap, "soft", 0, feature="jobs")  # the soft plan has no jobs
    assert (d.reason, d.variant, d.has_access) == (Reason.DEFAULT, "default", False)
    assert d.denial is Denial.NO_ENTITLEMENT
    assert d.metering.limit == 0


def test_metered_default(snap: StateView) -> None:
    # "credits" defaults to 10 for everyone without an entitlement.
    usage_of(snap).set("acct:plain", "credits", datetime(1970, 1, 1, tzinfo=UTC), 9)
    d = calls(snap, "plain", feature="credits")
    assert (d.reason, d.metering.limit, d.has_access, d.denial) == (Reason.DEFAULT, 10, True, None)
    assert not calls(snap, "plain", feature="credits", requested=2).has_access


def test_unknown_account(snap: StateView) -> None:
    d = calls(snap, "ghost")
    assert (d.reason, d.has_access, d.denial) == (Reason.DEFAULT, False, Denial.ACCOUNT_NOT_FOUND)


# -- periods and counters ------------------------------------------------------------------


def test_calendar_period_reads_this_months_counter(snap: StateView) -> None:
    usage_of(snap).set("acct:hard", "api-calls", datetime(2026, 5, 1, tzinfo=UTC), 100)
    d = calls(snap, "hard")
    assert d.metering.used == 0  # May's usage does not count in June
    assert (d.metering.period_start, d.metering.period_end) == (
        JUNE,
        datetime(2026, 7, 1, tzinfo=UTC),
    )
    assert usage_of(snap).reads[-1] == ("acct:hard", "api-calls", JUNE)
    assert metadata(d)["period_end"] == "2026-07-01T00:00:00Z"


def test_subscription_anchored_period(snap: StateView) -> None:
    # "hard" started on Jan 31: its months run ... Feb 28, Mar 31, Apr 30, May 31, Jun 30 ...
    start = datetime(2026, 5, 31, tzinfo=UTC)
    usage_of(snap).set("acct:hard", "jobs", start, 10)
    d = calls(snap, "hard", feature="jobs")
    assert (d.metering.period_start, d.metering.period_end) == (
        start,
        datetime(2026, 6, 30, tzinfo=UTC),
    )
    assert (d.metering.used, d.has_access) == (10, False)
    march = calls(snap, "hard", feature="jobs", at=datetime(2026, 3, 10, tzinfo=UTC))
    assert march.metering.period_start == datetime(2026, 2, 28, tzinfo=UTC)
    assert march.metering.period_end == datetime(2026, 3, 31, tzinfo=UTC)
    assert march.metering.used == 0 and march.has_access


def test_subscription_scope_pools_usage(snap: StateView) -> None:
    owner = calls(snap, "owner", feature="seats")
    assert owner.metering.period_end is None  # reset: never
    usage_of(snap).set("sub:team", "seats", owner.metering.period_start, 5)
    for account in ("owner", "member"):
        d = calls(snap, account, feature="seats")
        assert d.metering.scope_key == "sub:team"
        assert (d.metering.used, d.metering.remaining, d.has_access) == (5, 0, False)
        assert d.metering.period_start == owner.metering.period_start
    # api-calls is account-scoped: the member's own counter.
    usage_of(snap).set("acct:owner", "api-calls", JUNE, 100)
    assert not calls(snap, "owner").has_access
    assert calls(snap, "member").has_access
