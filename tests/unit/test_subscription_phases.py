"""Subscription phases (design §6.1): the phase in force at `now` is what evaluation reads,
each phase start is a time boundary, and `when: period_end` follows the billing anchor."""

from __future__ import annotations

from datetime import datetime

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.engine import StateView, evaluate
from plangate.sidecar.engine.boundaries import account_change
from plangate.sidecar.engine.lifecycle import billing_period_end, effective_at
from plangate.sidecar.engine.typed import detail, metadata

START = "2026-01-31T10:00:00Z"
SWITCH = "2026-03-01T00:00:00Z"
BACK = "2026-04-01T00:00:00Z"

CATALOG = f"""\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: integer
        default: 1
    plans:
      - name: Free
        entitlements: {{seats: 2}}
      - name: Pro
        entitlements: {{sso: true, seats: 10}}
        price: {{amount: 49, currency: USD, interval: month}}
      - name: Annual
        entitlements: {{sso: true}}
        price: {{amount: 490, currency: USD, interval: year}}
      - name: Team
        entitlements: {{sso: true}}
        trial: {{days: 14, then: free}}
      - name: Brief
        trial: {{days: 3, then: cancel}}
    addons:
      - name: Extra seats
        max_quantity: 5
        entitlements: {{seats: 5}}
accounts:
  - id: moving
    subscriptions:
      - id: m
        plan: free
        starts_at: "{START}"
        phases:
          - {{starts_at: "{SWITCH}", plan: pro, addons: {{extra-seats: 2}}}}
          - {{starts_at: "{BACK}", plan: free}}
  - id: yearly
    subscriptions: [{{id: y, plan: annual, starts_at: "{START}"}}]
  - id: leap
    subscriptions: [{{id: l, plan: pro, starts_at: "2024-01-31T10:00:00Z"}}]
  - id: trying
    subscriptions:
      - {{plan: pro, starts_at: "{START}", trial_ends_at: "{SWITCH}"}}
"""


@pytest.fixture(scope="module")
def snap() -> StateView:
    return StateView.of(parse_catalog(CATALOG))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("now", "sso", "seats", "variant"),
    [
        ("2026-02-15T00:00:00Z", False, 2, "free"),
        (SWITCH, True, 20, "pro+extra-seats"),  # the phase holds from its first instant on
        ("2026-03-31T23:59:59Z", True, 20, "pro+extra-seats"),
        (BACK, False, 2, "free"),
    ],
)
def test_the_phase_in_force_at_now_decides(
    snap: StateView, now: str, sso: bool, seats: int, variant: str
) -> None:
    at = _at(now)
    assert evaluate(snap, "moving", "sso", {}, at).value is sso
    decision = evaluate(snap, "moving", "seats", {}, at)
    assert (decision.value, decision.variant) == (seats, variant)


def test_each_phase_start_is_a_boundary(snap: StateView) -> None:
    before = _at("2026-02-15T00:00:00Z")
    assert evaluate(snap, "moving", "sso", {}, before).valid_until == _at(SWITCH)
    assert evaluate(snap, "moving", "sso", {}, _at(SWITCH)).valid_until == _at(BACK)
    account = snap.accounts["moving"]
    assert account_change(account, (), before) == _at(SWITCH)
    assert account_change(account, (), _at(SWITCH)) == _at(BACK)


def test_a_phase_keeps_the_subscription_and_its_anchor(snap: StateView) -> None:
    sub = snap.accounts["moving"].subscriptions[0]
    later = sub.at(_at(SWITCH))
    assert (later.id, later.plan, dict(later.addons)) == ("m", "pro", {"extra-seats": 2})
    assert later.starts_at == sub.starts_at
    assert sub.at(_at("2026-02-01T00:00:00Z")) is sub


@pytest.mark.parametrize(
    ("account", "now", "end"),
    [
        # monthly from Jan 31: the February period ends on the last day of February
        ("moving", "2026-02-10T00:00:00Z", "2026-02-28T10:00:00Z"),
        ("leap", "2024-02-10T00:00:00Z", "2024-02-29T10:00:00Z"),
        # and the next one on the anchor's day again
        ("leap", "2024-03-05T00:00:00Z", "2024-03-31T10:00:00Z"),
        # the plan's price interval: yearly
        ("yearly", "2026-06-01T00:00:00Z", "2027-01-31T10:00:00Z"),
    ],
)
def test_period_end_follows_the_anchor_and_the_price_interval(
    snap: StateView, account: str, now: str, end: str
) -> None:
    sub = snap.accounts[account].subscriptions[0]
    assert billing_period_end(snap.catalog, sub, _at(now)) == _at(end)


def test_a_request_takes_at_or_when_but_not_both(snap: StateView) -> None:
    sub = snap.accounts["moving"].subscriptions[0]
    now = _at("2026-02-10T00:00:00Z")
    assert effective_at(snap.catalog, sub, now, None, "") == now
    assert effective_at(snap.catalog, sub, now, None, "now") == now
    assert effective_at(snap.catalog, sub, now, _at(BACK), "") == _at(BACK)
    with pytest.raises(ValueError, match="either at or when"):
        effective_at(snap.catalog, sub, now, _at(BACK), "period_end")
    with pytest.raises(ValueError, match="when must be one of now, period_end"):
        effective_at(snap.catalog, sub, now, None, "tomorrow")
    with pytest.raises(ValueError, match="in the past"):
        effective_at(snap.catalog, sub, now, _at(START), "")


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        (f'[{{starts_at: "{START}", plan: pro}}]', "a phase must start after its subscription"),
        (
            f'[{{starts_at: "{BACK}", plan: pro}}, {{starts_at: "{SWITCH}", plan: free}}]',
            "phases must be in order of starts_at",
        ),
        (f'[{{starts_at: "{SWITCH}", plan: gold}}]', "unknown plan 'gold'"),
        (f'[{{starts_at: "{SWITCH}", plan: pro, addons: {{nope: 1}}}}]', "unknown add-on"),
        ("[{plan: pro}]", "expected an ISO-8601 timestamp"),
        (f'[{{starts_at: "{SWITCH}", plan: pro, color: red}}]', "color"),
    ],
)
def test_bad_phases_are_refused(phases: str, message: str) -> None:
    text = CATALOG.split("accounts:")[0] + (
        f"accounts:\n  - id: a\n    subscriptions:\n"
        f'      - {{plan: free, starts_at: "{START}", phases: {phases}}}\n'
    )
    with pytest.raises(CatalogError) as info:
        parse_catalog(text)
    assert any(message in p.message for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


def test_trial_metadata_while_the_trial_runs_and_its_end_is_a_boundary(snap: StateView) -> None:
    during = evaluate(snap, "trying", "sso", {}, _at("2026-02-10T00:00:00Z"))
    assert during.valid_until == _at(SWITCH)
    assert metadata(during)["trial"] is True
    assert metadata(during)["trial_ends_at"] == "2026-03-01T00:00:00Z"
    assert (detail(during)["trial"], detail(during)["trial_ends_at"]) == (
        True,
        "2026-03-01T00:00:00Z",
    )
    after = metadata(evaluate(snap, "trying", "sso", {}, _at(SWITCH)))
    assert "trial" not in after and "trial_ends_at" not in after
    assert account_change(snap.accounts["trying"], (), _at("2026-02-10T00:00:00Z")) == _at(SWITCH)


def test_plan_trials_are_read_from_the_catalog(snap: StateView) -> None:
    team, brief = snap.catalog.plans["team"].trial, snap.catalog.plans["brief"].trial
    assert team is not None and (team.days, team.then) == (14, "free")
    assert brief is not None and (brief.days, brief.then) == (3, "cancel")
    assert snap.catalog.plans["pro"].trial is None


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        ("{days: 0}", "must be a whole number of days >= 1"),
        ("{days: 7, then: gold}", "must be continue, cancel or a plan of product 'acme'"),
        ("{days: 7, length: 3}", "length"),
    ],
)
def test_bad_trials_are_refused(trial: str, message: str) -> None:
    text = CATALOG.split("accounts:")[0].replace(
        "trial: {days: 3, then: cancel}", f"trial: {trial}"
    )
    with pytest.raises(CatalogError) as info:
        parse_catalog(text)
    assert any(message in p.message for p in info.value.problems), [
        str(p) for p in info.value.problems
    ]


def _superseding(successor: str) -> str:
    return CATALOG.split("accounts:")[0].replace(
        "trial: {days: 3, then: cancel}", f"superseded_by: {successor}"
    )


@pytest.mark.parametrize("successor", ["gold", "brief"])  # unknown, itself
def test_superseded_by_must_name_another_plan(successor: str) -> None:
    with pytest.raises(CatalogError, match="must name another plan of product 'acme'"):
        parse_catalog(_superseding(successor))


def test_superseded_by_is_read() -> None:
    assert parse_catalog(_superseding("pro")).plans["brief"].superseded_by == "pro"
