"""`Decision.valid_until` (design §8 "Time"): the first instant the answer could change by time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import StateView, evaluate

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SOON = "2026-06-15T12:30:00Z"
LATER = "2026-06-20T00:00:00Z"

CATALOG = f"""\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: integer
        default: 1
      - name: API calls
        type: metered
        reset: monthly
        anchor: calendar
      - name: Jobs
        type: metered
        reset: daily
        anchor: subscription
      - name: Storage
        type: metered
        reset: never
    plans:
      - name: Free
        entitlements: {{seats: 2, api-calls: 100, jobs: 5, storage: 10}}
      - name: Pro
        entitlements: {{sso: true, seats: 10}}
accounts:
  - {{id: plain, subscriptions: [{{plan: free}}]}}
  - id: overridden
    subscriptions: [{{plan: free}}]
    overrides: {{sso: {{value: true, expires_at: "{SOON}"}}}}
  - id: expired
    subscriptions: [{{plan: free}}]
    overrides: {{sso: {{value: true, expires_at: "2026-06-01T00:00:00Z"}}}}
  - id: granted
    subscriptions: [{{plan: free}}]
    grants: [{{feature: sso, value: true, ends_at: "{SOON}"}}, {{feature: seats, value: 50, starts_at: "{LATER}"}}]
  - id: upgrading
    subscriptions:
      - {{plan: free, ends_at: "{LATER}"}}
      - {{plan: pro, starts_at: "{SOON}"}}
  - id: owner
    subscriptions: [{{id: team, plan: pro, starts_at: "{SOON}", members: [member]}}]
  - id: anchored
    subscriptions: [{{plan: free, starts_at: "2026-01-01T06:00:00Z"}}]
"""


@pytest.fixture(scope="module")
def snap() -> StateView:
    return StateView.of(parse_catalog(CATALOG))


def until(snap: StateView, account: str, feature: str) -> datetime | None:
    return evaluate(snap, account, feature, {}, NOW).valid_until


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_nothing_timed_never_changes(snap: StateView) -> None:
    assert until(snap, "plain", "sso") is None
    assert until(snap, "plain", "storage") is None  # reset: never
    assert until(snap, "expired", "sso") is None  # an expired override never comes back


def test_unknown_account_never_changes(snap: StateView) -> None:
    assert until(snap, "ghost", "sso") is None


def test_override_expiring(snap: StateView) -> None:
    assert until(snap, "overridden", "sso") == at(SOON)
    assert until(snap, "overridden", "seats") is None  # other features are not overridden
    after = evaluate(snap, "overridden", "sso", {}, at(SOON))
    assert (after.variant, after.valid_until) == ("default", None)


def test_grant_ending_and_starting(snap: StateView) -> None:
    assert until(snap, "granted", "sso") == at(SOON)
    assert until(snap, "granted", "seats") == at(LATER)  # the grant that starts later


def test_subscription_starting_and_ending(snap: StateView) -> None:
    assert until(snap, "upgrading", "sso") == at(SOON)  # pro starts
    d = evaluate(snap, "upgrading", "sso", {}, at(SOON))
    assert (d.has_access, d.valid_until) == (True, at(LATER))  # then free ends


def test_shared_subscription_starting_reaches_members(snap: StateView) -> None:
    assert until(snap, "member", "sso") == at(SOON)
    assert until(snap, "owner", "sso") == at(SOON)


def test_calendar_period_end(snap: StateView) -> None:
    assert until(snap, "plain", "api-calls") == datetime(2026, 7, 1, tzinfo=UTC)


def test_subscription_anchored_period_end(snap: StateView) -> None:
    assert until(snap, "anchored", "jobs") == datetime(2026, 6, 16, 6, 0, tzinfo=UTC)


def test_earliest_boundary_wins(snap: StateView) -> None:
    # free ends at LATER, pro starts at SOON, the calendar month ends after both
    assert until(snap, "upgrading", "api-calls") == at(SOON)
