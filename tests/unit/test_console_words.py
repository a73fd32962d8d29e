"""The console's wording of targeting rules and audit diffs (design §12.1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plangate.sidecar.catalog.model import Account, Override, Phase, Subscription, TopUp
from plangate.sidecar.engine.boundaries import coming_changes
from plangate.sidecar.server.console.diff import Change, changes
from plangate.sidecar.server.console.format import relative
from plangate.sidecar.server.console.rules import sentences


def test_a_rule_reads_top_to_bottom() -> None:
    rule = {
        "if": [
            {"and": [{"in": ["pro", {"var": "plans"}]}, {"==": [{"var": "account.region"}, "eu"]}]},
            {"fractional": [["on", 20], ["off", 80]]},
            {"starts_with": [{"var": "email"}, "qa-"]},
            "on",
            "off",
        ]
    }
    assert sentences(rule) == [
        "plan in [pro] and account.region = eu → 20 % on, 80 % off",
        "otherwise, if email starts with qa- → on",
        "otherwise → off",
    ]
    assert sentences(None) == ["no rule: the plans decide"]
    assert sentences({"fractional": [{"var": "org"}, ["a", 1], ["b", 3]]}) == [
        "always → 25 % a, 75 % b by org"
    ]


def test_an_unknown_operator_is_shown_as_its_json() -> None:
    assert sentences({"if": [{"weird": [1]}, "on", None]})[0] == '{"weird":[1]} → on'


def test_a_diff_names_each_changed_field() -> None:
    before = {"feature": "seats", "value": 3, "expires_at": None}
    after = {"feature": "seats", "value": 4, "expires_at": "2027-01-01T00:00:00Z"}
    assert changes(before, after) == [
        Change("expires_at", "—", "2027-01-01T00:00:00Z"),
        Change("value", "3", "4"),
    ]
    assert changes(None, {"plan": "pro"}) == [Change("plan", "—", "pro")]
    assert changes({"a": {"b": 1}}, {"a": {"b": 1}}) == []


def test_coming_changes_are_in_time_order_and_say_what_changes() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    account = Account(
        id="a",
        overrides={"seats": Override("seats", 9, expires_at=now + timedelta(days=2))},
        topups=(TopUp("t1", "credits", 50, expires_at=now + timedelta(hours=3)),),
        subscriptions=(
            Subscription(
                id="s",
                owner="a",
                plan="pro",
                starts_at=now - timedelta(days=1),
                ends_at=now + timedelta(days=40),
                phases=(Phase(now + timedelta(days=5), "free"),),
            ),
        ),
    )
    whats = [c.what for c in coming_changes(account, (), now)]
    assert whats == [
        "top-up t1 of credits ends: what is left of it is gone",
        "the override of seats expires: the plan's value applies again",
        "subscription s moves to plan free",
        "subscription s ends: its plan's entitlements stop",
    ]
    assert relative(now + timedelta(days=2, hours=3), now) == "in 2 days 3 h"
    assert relative(now + timedelta(minutes=5), now) == "in 5 min"
