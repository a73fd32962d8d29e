"""The subscription lifecycle over the Admin API (design §6.1): trials, scheduled plan and
add-on changes and ends (`at` / `when`), removing them again, pending phases in `GetAccount`,
and stored accounts from before phases loading unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp
from plangate.sidecar.engine.periods import add_months
from plangate.sidecar.store.sqlite import SqliteStore
from support.sidecar import Stubs, in_process

CATALOG = """\
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
        entitlements: {seats: 2}
      - name: Pro
        entitlements: {sso: true, seats: 10}
        price: {amount: 49, currency: USD, interval: month}
      - name: Team
        entitlements: {sso: true, seats: 25}
        trial: {days: 14, then: free}
    addons:
      - name: Extra seats
        max_quantity: 5
        entitlements: {seats: 5}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("lifecycle")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield sc


def _subscribe(stubs: Stubs, account: str, starts_at: datetime | None = None) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
    request = pb.CreateSubscriptionRequest(
        account_id=account, plan="free", id=f"{account}-s", starts_at=to_timestamp(starts_at)
    )
    return stubs.admin.CreateSubscription(request, timeout=5).id


def _seats(stubs: Stubs, account: str) -> pb.Resolution:
    return stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account, feature="seats"), timeout=5
    )


def _sub(stubs: Stubs, account: str) -> pb.Subscription:
    got = stubs.admin.GetAccount(pb.GetAccountRequest(id=account), timeout=5)
    return got.subscriptions[0]


def _refused(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value


def test_a_scheduled_plan_change_is_a_pending_phase_until_removed(stubs: Stubs) -> None:
    sub = _subscribe(stubs, "acct_sched")
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    changed = stubs.admin.ChangePlan(
        pb.ChangePlanRequest(
            account_id="acct_sched", subscription_id=sub, plan="pro", at=to_timestamp(later)
        ),
        timeout=5,
    )
    assert changed.plan == "free"  # nothing changes before the instant ...
    assert [(p.plan, p.starts_at.ToDatetime(tzinfo=UTC)) for p in changed.phases] == [
        ("pro", later)
    ]
    assert _seats(stubs, "acct_sched").value.number_value == 2
    # ... which is a time boundary of the current answer
    assert _seats(stubs, "acct_sched").valid_until.ToDatetime(tzinfo=UTC) == later
    # an add-on change at the same instant joins the phase, keeping its plan
    stubs.admin.ChangeAddOns(
        pb.ChangeAddOnsRequest(
            account_id="acct_sched",
            subscription_id=sub,
            addons={"extra-seats": 2},
            at=to_timestamp(later),
        ),
        timeout=5,
    )
    (phase,) = _sub(stubs, "acct_sched").phases
    assert (phase.plan, dict(phase.addons)) == ("pro", {"extra-seats": 2})
    removed = stubs.admin.CancelScheduledChange(
        pb.CancelScheduledChangeRequest(account_id="acct_sched", subscription_id=sub),
        timeout=5,
    )
    assert list(removed.phases) == []
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.CancelScheduledChange(
            pb.CancelScheduledChangeRequest(account_id="acct_sched", subscription_id=sub),
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "no scheduled change pending" in (info.value.details() or "")


def test_a_change_now_applies_at_once(stubs: Stubs) -> None:
    sub = _subscribe(stubs, "acct_now")
    changed = stubs.admin.ChangePlan(
        pb.ChangePlanRequest(account_id="acct_now", subscription_id=sub, plan="pro", when="now"),
        timeout=5,
    )
    assert (changed.plan, list(changed.phases)) == ("pro", [])
    assert _seats(stubs, "acct_now").value.number_value == 10


def test_period_end_follows_the_subscription_anchor(stubs: Stubs) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    sub = _subscribe(stubs, "acct_pe", start)
    end = add_months(start, 1)  # the plan (free) has no price: monthly
    changed = stubs.admin.ChangePlan(
        pb.ChangePlanRequest(
            account_id="acct_pe", subscription_id=sub, plan="pro", when="period_end"
        ),
        timeout=5,
    )
    assert [p.starts_at.ToDatetime(tzinfo=UTC) for p in changed.phases] == [end]
    canceled = stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id="acct_pe", subscription_id=sub, when="period_end"),
        timeout=5,
    )
    assert canceled.ends_at.ToDatetime(tzinfo=UTC) == end
    assert list(canceled.phases) == []  # the change at the end goes with the subscription
    resumed = stubs.admin.ResumeSubscription(
        pb.ResumeSubscriptionRequest(account_id="acct_pe", subscription_id=sub), timeout=5
    )
    assert not resumed.HasField("ends_at")
    error = _refused(
        stubs.admin.ResumeSubscription,
        pb.ResumeSubscriptionRequest(account_id="acct_pe", subscription_id=sub),
    )
    assert "no scheduled end" in (error.details() or "")


def test_contradictory_or_past_schedules_are_refused_and_change_nothing(stubs: Stubs) -> None:
    sub = _subscribe(stubs, "acct_bad")
    before = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_bad"), timeout=5)
    past = to_timestamp(datetime.now(UTC) - timedelta(days=1))
    future = to_timestamp(datetime.now(UTC) + timedelta(days=1))
    cases: list[tuple[Any, str]] = [
        (pb.ChangePlanRequest(plan="pro", at=past), "in the past"),
        (pb.ChangePlanRequest(plan="pro", at=future, when="period_end"), "either at or when"),
        (pb.ChangePlanRequest(plan="pro", when="soon"), "when must be one of now, period_end"),
        (pb.ChangePlanRequest(plan="gold", at=future), "unknown plan 'gold'"),
        (pb.ChangeAddOnsRequest(addons={"extra-seats": 9}, at=future), "max_quantity"),
        (pb.CancelSubscriptionRequest(when="later"), "when must be one of"),
    ]
    calls = {
        pb.ChangePlanRequest: stubs.admin.ChangePlan,
        pb.ChangeAddOnsRequest: stubs.admin.ChangeAddOns,
        pb.CancelSubscriptionRequest: stubs.admin.CancelSubscription,
    }
    for request, message in cases:
        request.account_id, request.subscription_id = "acct_bad", sub
        error = _refused(calls[type(request)], request)
        assert message in (error.details() or ""), (request, error.details())
    assert stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_bad"), timeout=5) == before


def test_stored_accounts_from_before_phases_load_and_keep_phases_across_restarts(
    tmp_path: Path,
) -> None:
    """A record in today's shape (no `phases`, a `trial_ends_at`) written by the store as it
    is, then a sidecar with phases: nothing is lost, and a scheduled phase survives a restart."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    db = tmp_path / "state.db"
    old = {
        "id": "acct_old",
        "name": "Old",
        "attributes": {"region": "eu"},
        "subscriptions": [
            {
                "id": "old-s",
                "plan": "pro",
                "addons": {"extra-seats": 1},
                "starts_at": "2026-01-01T00:00:00Z",
                "trial_ends_at": "2026-01-15T00:00:00Z",
                "members": [],
            }
        ],
        "overrides": {},
        "grants": [],
    }
    store = SqliteStore(db)
    store.save_record(old)
    store.close()
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    with in_process(tmp_path / "catalog.yaml", db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        sub = _sub(s, "acct_old")
        assert (sub.plan, dict(sub.addons), list(sub.phases)) == ("pro", {"extra-seats": 1}, [])
        assert sub.trial_ends_at.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 15, tzinfo=UTC)
        assert _seats(s, "acct_old").value.number_value == 15
        s.admin.ChangePlan(
            pb.ChangePlanRequest(
                account_id="acct_old", subscription_id="old-s", plan="free", at=to_timestamp(later)
            ),
            timeout=5,
        )
    with in_process(tmp_path / "catalog.yaml", db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        account = s.admin.GetAccount(pb.GetAccountRequest(id="acct_old"), timeout=5)
        (phase,) = account.subscriptions[0].phases
        assert (phase.plan, dict(phase.addons)) == ("free", {"extra-seats": 1})
        assert phase.starts_at.ToDatetime(tzinfo=UTC) == later
        assert dict(account.attributes) == {"region": "eu"}


def _trial(stubs: Stubs, account: str, **fields: Any) -> pb.Subscription:
    return stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, **fields), timeout=5
    )


def test_a_plan_trial_is_written_ahead_and_shown_in_the_metadata(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_trial"), timeout=5)
    start = datetime.now(UTC).replace(microsecond=0)
    sub = _trial(stubs, "acct_trial", plan="team", starts_at=to_timestamp(start))
    end = start + timedelta(days=14)
    assert sub.trial_ends_at.ToDatetime(tzinfo=UTC) == end
    # then: free, as a phase from the trial's end
    assert [(p.plan, p.starts_at.ToDatetime(tzinfo=UTC)) for p in sub.phases] == [("free", end)]
    res = _seats(stubs, "acct_trial")
    assert res.value.number_value == 25
    assert res.metadata.fields["trial"].bool_value is True
    assert res.metadata.fields["trial_ends_at"].string_value == end.isoformat().replace(
        "+00:00", "Z"
    )
    assert res.valid_until.ToDatetime(tzinfo=UTC) == end
    # one trial per account and plan ...
    with pytest.raises(grpc.RpcError) as info:
        _trial(stubs, "acct_trial", plan="team")
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "already had a trial of plan 'team'" in (info.value.details() or "")
    assert "allow_repeat_trial" in (info.value.details() or "")
    # ... unless the call allows another
    again = _trial(stubs, "acct_trial", plan="team", allow_repeat_trial=True, trial_then="cancel")
    assert again.ends_at == again.trial_ends_at and list(again.phases) == []


def test_a_trial_without_one_on_the_plan_and_its_refusals(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_trial2"), timeout=5)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    sub = _trial(stubs, "acct_trial2", plan="pro", trial_ends_at=to_timestamp(end))
    assert sub.trial_ends_at.ToDatetime(tzinfo=UTC) == end
    assert (list(sub.phases), sub.HasField("ends_at")) == ([], False)  # continue
    assert _seats(stubs, "acct_trial2").metadata.fields["trial"].bool_value is True
    before = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_trial2"), timeout=5)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"plan": "free", "trial_then": "cancel"}, "trial_then needs a trial"),
        ({"plan": "team", "trial_then": "gold"}, "trial_then must be continue, cancel or a plan"),
        (
            {"plan": "team", "trial_ends_at": to_timestamp(end - timedelta(days=30))},
            "trial_ends_at must be after starts_at",
        ),
    ]
    for fields, message in cases:
        error = _refused(
            stubs.admin.CreateSubscription,
            pb.CreateSubscriptionRequest(account_id="acct_trial2", **fields),
        )
        assert message in (error.details() or ""), error.details()
    assert stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_trial2"), timeout=5) == before
