"""Quota thresholds (design §7): what fires, when, once, and under whose plan.

These run the real live state over a real SQLite store, without servers: a usage write
either records a threshold's mark and enqueues its outbox rows in its own transaction, or
nothing. The outbox worker is driven by hand (`run_once`) where actions must be applied.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.catalog import Catalog, parse_catalog
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.runtime.edits import records as rec
from plangate.sidecar.runtime.jobs.outbox import OutboxWorker
from plangate.sidecar.runtime.jobs.quota_actions import apply_action
from plangate.sidecar.runtime.live.events import AccountChanged
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.decisions import Decisions
from plangate.sidecar.store.base import DeliveryStatus, Firing
from plangate.sidecar.store.sqlite import SqliteStore

JUNE = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
JULY = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)

CATALOG = """
products:
  - name: Acme
    features:
      - name: API calls
        type: metered
        reset: monthly
        anchor: calendar
      - name: Seats
        type: metered
        aggregation: gauge
        reset: never
        scope: subscription
    plans:
      - name: Starter
        entitlements: {api-calls: 100, seats: 3}
        quotas:
          - feature: api-calls
            at: [50%, 80%, 90, 100%]
            actions:
              - webhook: http://127.0.0.1:9/hook
          - feature: seats
            at: [3]
            actions:
              - webhook: http://127.0.0.1:9/seats
      - name: Growth
        extends: starter
        entitlements: {api-calls: 1000}
      - name: Scale
        extends: starter
        entitlements: {api-calls: unlimited}
        quotas:
          - feature: api-calls
            at: [50%, 5000]
            actions:
              - webhook: http://127.0.0.1:9/scale
      - name: Trial
        entitlements: {api-calls: 10}
        quotas:
          - feature: api-calls
            at: [80%]
            actions:
              - change_plan: starter
          - feature: api-calls
            at: [100%]
            actions:
              - override: {feature: api-calls, value: {limit: 10, soft: true}}
accounts:
  - id: acct_file
    subscriptions:
      - plan: trial
        starts_at: 2026-01-01T00:00:00Z
"""


def catalog() -> Catalog:
    return parse_catalog(textwrap.dedent(CATALOG), "catalog.yaml")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[LiveState]:
    store = SqliteStore(tmp_path / "state.db")
    live = LiveState(catalog(), store, clock=lambda: JUNE)
    yield live
    store.close()


def subscribe(state: LiveState, account: str, *plans: str, members: tuple[str, ...] = ()) -> None:
    record = rec.new_record(account)
    for i, plan in enumerate(plans):
        record, _ = rec.add_subscription(
            record,
            plan,
            {},
            datetime(2026, 1, 1, tzinfo=UTC),
            None,
            None,
            list(members),
            f"{account}-{i}",
        )
    state.commit(record)


def report(state: LiveState, account: str, amount: float, at: datetime = JUNE, **kw: Any) -> Any:
    [outcome] = state.report(
        [UsageReport(account, kw.pop("feature", "api-calls"), amount, timestamp=at, **kw)]
    )
    return outcome


def fired(state: LiveState) -> list[tuple[str, str, Any]]:
    """(account, threshold as written, usage) per enqueued delivery, oldest first."""
    rows = reversed(state.store.list_deliveries(None, 1000))
    return [
        (d.account, d.payload["event"]["threshold"]["at"], d.payload["event"]["usage"])
        for d in rows
    ]


# -- crossing ----------------------------------------------------------------------------------


def test_percent_and_absolute_thresholds_fire_when_usage_reaches_them(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    assert report(state, "a", 49).fired == ()
    assert fired(state) == []
    outcome = report(state, "a", 1)  # 50 reaches 50% exactly
    assert [f.mark for f in outcome.fired] == ["starter:50%"]
    report(state, "a", 35)  # 85: past 80%
    report(state, "a", 5)  # 90: the absolute 90
    report(state, "a", 9)  # 99: nothing
    report(state, "a", 1)  # 100: 100%
    assert fired(state) == [("a", "50%", 50), ("a", "80%", 85), ("a", "90", 90), ("a", "100%", 100)]


def test_a_write_crossing_several_thresholds_fires_each(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    outcome = report(state, "a", 120)
    assert sorted(f.mark for f in outcome.fired) == [
        "starter:100%",
        "starter:50%",
        "starter:80%",
        "starter:90",
    ]
    rows = state.store.list_deliveries(None, 100)
    assert len({d.id for d in rows}) == 4
    values = sorted(d.payload["event"]["threshold"]["value"] for d in rows)
    assert values == [50, 80, 90, 100]


def test_each_threshold_fires_once_per_period(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    report(state, "a", 60)
    report(state, "a", -30)  # a refund takes usage back below 50% ...
    report(state, "a", 30)  # ... and crossing it again fires nothing
    assert fired(state) == [("a", "50%", 60)]
    report(state, "a", 55, at=JULY)  # a new monthly period: armed again
    rows = state.store.list_deliveries(None, 100)
    assert [r.payload["event"]["period"]["start"] for r in rows] == [
        "2026-07-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
    ]


def test_a_duplicate_report_fires_nothing(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    report(state, "a", 40, idempotency_key="k1")
    assert report(state, "a", 40, idempotency_key="k2").fired  # 80: 50% and 80%
    again = report(state, "a", 40, idempotency_key="k2")
    assert again.status.value == "duplicate" and again.fired == ()
    assert len(fired(state)) == 2


def test_consume_fires_and_a_denied_consume_does_not(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    assert Decisions(state).consume(UsageReport("a", "api-calls", 85, timestamp=JUNE)).granted
    assert not Decisions(state).consume(UsageReport("a", "api-calls", 30, timestamp=JUNE)).granted
    assert fired(state) == [("a", "50%", 85), ("a", "80%", 85)]


def test_reset_usage_starts_a_fresh_period_that_fires_again(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    live = LiveState(state.catalog, state.store)  # real clock: reset applies to "now"
    now = live.clock()
    report(live, "a", 60, at=now)
    live.reset_usage("a", "api-calls")
    report(live, "a", 60, at=now)
    assert [t for _, t, _ in fired(live)] == ["50%", "50%"]


def test_firing_tells_watchers_with_cause_quota(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    events = state.events.subscribe(0.01)
    report(state, "a", 10)
    report(state, "a", 50)
    causes = [e.cause for e in events.pending() if isinstance(e, AccountChanged)]
    assert causes == ["usage", "usage", "quota"]


# -- whose quotas ------------------------------------------------------------------------------


def test_percentages_are_of_the_effective_limit_when_a_grant_wins(state: LiveState) -> None:
    subscribe(state, "a", "starter")
    record, _ = rec.add_grant(state.record_of("a"), "api-calls", 200, None, None, "g1")
    state.commit(record)
    report(state, "a", 89)  # 50% and 80% of the plan's 100 would have fired here
    assert fired(state) == []
    report(state, "a", 11)  # 100: the absolute 90, and 50% of the grant's 200
    assert sorted(t for _, t, _ in fired(state)) == ["50%", "90"]
    row = next(
        d
        for d in state.store.list_deliveries(None, 10)
        if d.payload["event"]["threshold"]["at"] == "50%"
    )
    event = row.payload["event"]
    assert (event["plan"], event["limit"], event["threshold"]) == (
        "starter",
        200,
        {"at": "50%", "value": 100},
    )


def test_the_winning_subscription_supplies_the_quotas(state: LiveState) -> None:
    # Growth (1000) beats Starter (100); Growth declares no quotas and inherits Starter's.
    subscribe(state, "a", "starter", "growth")
    report(state, "a", 85)
    assert fired(state) == []  # past Starter's 50% and 80%, but Growth supplies the limit
    report(state, "a", 415)  # 500: the inherited absolute 90, and 50% of 1000
    assert sorted(t for _, t, _ in fired(state)) == ["50%", "90"]
    row = next(
        d
        for d in state.store.list_deliveries(None, 10)
        if d.payload["event"]["threshold"]["at"] == "50%"
    )
    event = row.payload["event"]
    assert (event["plan"], event["subscription"], event["threshold"]["value"]) == (
        "growth",
        "a-1",
        500,
    )


def test_unlimited_skips_percentages_but_not_amounts(state: LiveState) -> None:
    subscribe(state, "a", "scale")
    report(state, "a", 4999)
    assert fired(state) == []
    report(state, "a", 1)
    assert fired(state) == [("a", "5000", 5000)]
    [row] = state.store.list_deliveries(None, 10)
    assert row.payload["event"]["unlimited"] is True and row.payload["event"]["limit"] is None


def test_a_pooled_feature_fires_once_for_the_subscription(state: LiveState) -> None:
    subscribe(state, "owner", "starter", members=("m1",))
    report(state, "m1", 3, feature="seats")  # a gauge: set to 3
    report(state, "owner", 3, feature="seats")
    [row] = state.store.list_deliveries(None, 10)
    event = row.payload["event"]
    assert (row.account, event["reported_by"], event["scope"]) == ("owner", "m1", "sub:owner-0")


# -- one transaction ---------------------------------------------------------------------------


def test_a_failing_quota_check_rolls_the_usage_write_back(state: LiveState) -> None:
    """The mark, the outbox rows and the usage commit together: one failing undoes all."""
    subscribe(state, "a", "starter")
    write = state._write_for(UsageReport("a", "api-calls", 60, timestamp=JUNE), JUNE)
    assert write.on_applied is not None
    check = write.on_applied

    def then_fail(old: float, new: float) -> list[Firing]:
        out = list(check(old, new))
        assert out  # the real check fired 50%, so its rows were being written
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        state.store.record_usage([replace(write, on_applied=then_fail)])
    assert state.store.load_counters() == {}
    assert state.store.list_deliveries(None, 10) == []
    # The same write again commits usage, mark and row together ...
    [outcome] = state.store.record_usage([write])
    assert outcome.usage == 60
    assert [f.mark for f in outcome.fired] == ["starter:50%"]
    # ... and a mark already recorded for the counter enqueues nothing, whoever reports it.
    [firing] = outcome.fired

    def same_again(old: float, new: float) -> list[Firing]:
        return [firing]

    small = replace(write, report=replace(write.report, amount=1), on_applied=same_again)
    assert state.store.record_usage([small])[0].fired == ()
    assert len(state.store.list_deliveries(None, 10)) == 1


def test_marks_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    live = LiveState(catalog(), store, clock=lambda: JUNE)
    subscribe(live, "a", "starter")
    report(live, "a", 60)
    store.close()
    store = SqliteStore(tmp_path / "state.db")
    live = LiveState(catalog(), store, clock=lambda: JUNE)
    report(live, "a", 1)  # still past 50%: nothing new
    assert len(store.list_deliveries(None, 10)) == 1
    assert store.count_deliveries()[DeliveryStatus.PENDING] == 1
    store.close()


# -- override and change_plan ------------------------------------------------------------------


def test_actions_apply_to_api_accounts_once(state: LiveState) -> None:
    subscribe(state, "a", "trial")
    events = state.events.subscribe(0.01)
    worker = OutboxWorker(state)
    report(state, "a", 8)  # 80% of 10: move to starter
    assert worker.run_once() == 1
    assert state.account("a").subscriptions[0].plan == "starter"
    assert Decisions(state).evaluate("a", "api-calls", {}).decision.variant == "starter"
    quota_events = [
        e for e in events.pending() if isinstance(e, AccountChanged) and e.cause == "quota"
    ]
    assert len(quota_events) == 2  # the firing, then the plan change
    # Replaying the same row (a crash before it was marked) changes nothing.
    [row] = state.store.list_deliveries(None, 10)
    assert row.status is DeliveryStatus.DELIVERED
    assert apply_action(state, row) is False


def test_a_change_plan_action_moves_the_phase_in_force(state: LiveState) -> None:
    """Design §6.1: a subscription now in a later phase (growth → trial in May) is moved
    from that phase's plan, and its earlier phase stays history."""
    subscribe(state, "a", "growth")
    record = rec.edited(state.record_of("a"))
    record["subscriptions"][0]["phases"] = [{"starts_at": "2026-05-01T00:00:00Z", "plan": "trial"}]
    state.commit(record)
    assert state.account("a").subscriptions[0].at(JUNE).plan == "trial"
    report(state, "a", 8)  # 80% of trial's 10: move to starter
    assert OutboxWorker(state).run_once() == 1
    sub = state.account("a").subscriptions[0]
    assert (sub.plan, sub.at(JUNE).plan) == ("growth", "starter")
    assert Decisions(state).evaluate("a", "api-calls", {}).decision.variant == "starter"


def test_override_action_on_an_api_account(state: LiveState) -> None:
    subscribe(state, "a", "trial")
    worker = OutboxWorker(state)
    report(state, "a", 10, at=JUNE)  # 80% and 100% at once: plan change and override
    worker.run_once()
    decision = Decisions(state).evaluate("a", "api-calls", {}).decision
    assert (decision.variant, decision.metering and decision.metering.soft_limit) == (
        "override",
        True,
    )
    assert state.records["a"]["overrides"]["api-calls"]["value"] == {"limit": 10, "soft": True}


def test_actions_layer_over_a_declared_account(state: LiveState) -> None:
    worker = OutboxWorker(state)
    report(state, "acct_file", 10)
    worker.run_once()
    account = state.account("acct_file")
    assert account.declared
    assert account.subscriptions[0].plan == "starter"
    assert "api-calls" in account.overrides
    # The layer is runtime state in the store record; the file's own fields are untouched.
    assert state.records["acct_file"]["quota"] == {
        "plans": {"acct_file/0": {"from": "trial", "to": "starter"}},
        "overrides": {"api-calls": {"value": {"limit": 10, "soft": True}, "expires_at": None}},
    }
    # It survives a restart (it is stored) ...
    again = LiveState(state.catalog, state.store, clock=lambda: JUNE)
    assert again.account("acct_file").subscriptions[0].plan == "starter"
    # ... and a file edit that changes that subscription's plan wins over it.
    edited = CATALOG.replace(
        "      - plan: trial\n        starts_at", "      - plan: growth\n        starts_at"
    )
    again.replace_catalog(parse_catalog(textwrap.dedent(edited), "catalog.yaml"))
    assert again.account("acct_file").subscriptions[0].plan == "growth"


def test_a_plan_change_that_no_longer_fits_fails_without_retrying(state: LiveState) -> None:
    subscribe(state, "a", "trial")
    report(state, "a", 8)
    now = state.clock()
    state.commit(rec.schedule_change(state.record_of("a"), "a-0", now, now, plan="growth"))
    worker = OutboxWorker(state)
    worker.run_once()
    [row] = state.store.list_deliveries(None, 10)
    assert row.status is DeliveryStatus.FAILED and row.attempts == 1
    assert "now on plan 'growth'" in row.last_error
    assert state.account("a").subscriptions[0].plan == "growth"


def test_thresholds_are_resolved_from_the_snapshot_alone() -> None:
    """`engine.thresholds` is pure: no store, no clock; (old, new) alone say what is crossed."""
    from plangate.sidecar.engine import StateView
    from plangate.sidecar.engine.thresholds import thresholds_for

    snap = StateView.of(catalog())
    api_calls = snap.catalog.features["api-calls"]
    found = thresholds_for(snap, "acct_file", api_calls, JUNE)
    assert found is not None
    assert (found.account, found.plan, found.limit) == ("acct_file", "trial", 10.0)
    assert [(p.label, p.value) for p in found.points] == [("80%", 8.0), ("100%", 10.0)]
    assert [p.label for p in found.crossed(7, 10)] == ["80%", "100%"]
    assert [p.label for p in found.crossed(8, 9)] == []  # 80% was reached before this write
    assert thresholds_for(snap, "acct_file", snap.catalog.features["seats"], JUNE) is None
