"""Which lifecycle events (design §7.1) an edit or the passing of time makes: the pure rules
in `engine.lifecycle_events`, and the catalog's `webhooks:` as loaded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Account, Phase, Subscription, TopUp, Webhook
from plangate.sidecar.engine.lifecycle_events import (
    LifecycleEvent,
    admin_events,
    next_instant,
    timed_events,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)
LEAD = timedelta(days=3)
EVER = datetime(2000, 1, 1, tzinfo=UTC)
NEVER = datetime(2100, 1, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def account(*subs: Subscription, topups: tuple[TopUp, ...] = ()) -> Account:
    return Account("acct", subscriptions=subs, topups=topups)


def sub(**fields: object) -> Subscription:
    base: dict[str, object] = {"id": "s1", "owner": "acct", "plan": "team", "starts_at": T0}
    base.update(fields)
    return Subscription(**base)  # type: ignore[arg-type]


def kinds(events: list[LifecycleEvent]) -> list[tuple[str, datetime]]:
    return [(e.type, e.at) for e in events]


def test_a_trial_warns_lead_days_before_its_end_then_ends_into_its_next_phase() -> None:
    trial = sub(trial_ends_at=at(14), phases=(Phase(at(14), "free"),))
    events = timed_events(account(trial), EVER, NEVER, LEAD)
    assert kinds(events) == [
        ("trial.ending", at(11)),
        ("trial.ended", at(14)),
        ("subscription.updated", at(14)),
    ]
    ending, ended, phase = events
    assert ending.data["then"] == ended.data["then"] == "free"
    assert ending.data["subscription"]["trial"] is True
    assert phase.data["previous"]["plan"] == "team" and phase.data["subscription"]["plan"] == "free"
    assert len({e.mark for e in events}) == 3 and all(e.mark for e in events)
    assert next_instant(account(trial), at(11), LEAD) == at(14)
    assert next_instant(account(trial), at(14), LEAD) is None


def test_the_window_is_open_at_its_start_and_closed_at_its_end() -> None:
    trial = account(sub(trial_ends_at=at(14)))
    assert kinds(timed_events(trial, at(11), at(14), LEAD)) == [("trial.ended", at(14))]
    assert kinds(timed_events(trial, at(10), at(11), LEAD)) == [("trial.ending", at(11))]
    assert timed_events(trial, at(14), NEVER, LEAD) == []


def test_a_trial_shorter_than_the_lead_warns_at_its_start() -> None:
    short = account(sub(trial_ends_at=at(2)))
    assert kinds(timed_events(short, EVER, NEVER, LEAD))[0] == ("trial.ending", T0)


def test_a_cancel_trial_ends_the_subscription_at_the_trial_end() -> None:
    events = timed_events(account(sub(trial_ends_at=at(14), ends_at=at(14))), EVER, NEVER, LEAD)
    assert kinds(events)[1:] == [("trial.ended", at(14)), ("subscription.ended", at(14))]
    assert events[1].data["then"] == "cancel"


def test_nothing_after_an_end_and_no_expiry_for_a_top_up_voided_before_it() -> None:
    ended = sub(trial_ends_at=at(14), ends_at=at(5), phases=(Phase(at(14), "free"),))
    topups = (
        TopUp("kept", "calls", 5, expires_at=at(3)),
        TopUp("voided", "calls", 5, expires_at=at(3), voided_at=at(1)),
    )
    events = timed_events(account(ended, topups=topups), EVER, NEVER, LEAD)
    assert kinds(events) == [("topup.expired", at(3)), ("subscription.ended", at(5))]
    assert events[0].data["topup"]["id"] == "kept"


def test_moving_an_instant_gives_a_new_mark() -> None:
    one = timed_events(account(sub(ends_at=at(5))), EVER, NEVER, LEAD)[0]
    other = timed_events(account(sub(ends_at=at(6))), EVER, NEVER, LEAD)[0]
    assert one.mark != other.mark


def test_admin_events_per_subscription_and_top_up() -> None:
    before = account(sub(plan="free"))
    assert kinds(admin_events(None, before, T0)) == [("subscription.created", T0)]
    assert admin_events(before, before, T0) == []
    changed = account(sub(plan="pro"))
    (updated,) = admin_events(before, changed, T0)
    assert updated.type == "subscription.updated"
    assert (updated.data["previous"]["plan"], updated.data["subscription"]["plan"]) == (
        "free",
        "pro",
    )
    canceled = account(sub(plan="pro", ends_at=at(30)))
    assert [e.type for e in admin_events(changed, canceled, T0)] == ["subscription.canceled"]
    assert [e.type for e in admin_events(canceled, changed, T0)] == ["subscription.updated"]
    topped = replace(changed, topups=(TopUp("pack", "calls", 5),))
    assert [e.type for e in admin_events(changed, topped, T0)] == ["topup.added"]
    gone = admin_events(canceled, None, T0)
    assert [(e.type, e.data["reason"]) for e in gone] == [("subscription.ended", "account_deleted")]
    assert admin_events(account(sub(ends_at=at(-1))), None, T0) == []  # ended already


def test_the_catalog_webhooks_section() -> None:
    catalog = parse_catalog(
        "products:\n  - name: A\n    features:\n      - name: SSO\n        type: boolean\n"
        "webhooks:\n"
        "  - url: https://hooks.example.com/a\n"
        "    secret_env: HOOK_SECRET\n"
        "    events: [trial.ended, subscription.created, trial.ended]\n"
        "  - url: http://127.0.0.1:9/b\n"
        "    secret_file: /run/secrets/hook\n"
        "    events: [quota.threshold_crossed]\n"
    )
    assert catalog.webhooks == (
        Webhook(
            "https://hooks.example.com/a",
            frozenset({"trial.ended", "subscription.created"}),
            secret_env="HOOK_SECRET",
        ),
        Webhook(
            "http://127.0.0.1:9/b",
            frozenset({"quota.threshold_crossed"}),
            secret_file="/run/secrets/hook",
        ),
    )
    assert catalog.webhooks[0].wants("trial.ended")
    assert not catalog.webhooks[0].wants("quota.threshold_crossed")
