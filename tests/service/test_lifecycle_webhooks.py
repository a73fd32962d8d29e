"""Lifecycle webhooks through a running sidecar (design §7.1): every event type with its
payload, the signature and event headers, per-endpoint event filters, and time-driven events
(trial ending and ended, a scheduled phase taking effect, an end, a top-up expiring) sent once.

The sidecar runs in-process on SQLite with a real HTTP receiver; instants are placed a second
or two ahead on the real clock. Downtime catch-up (a real subprocess) is in
`test_lifecycle_catch_up.py`, the two stores and shared mode in `tests/contract/`.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp
from support.receiver import Call, Receiver
from support.sidecar import Stubs, in_process

SECRET = "whsec-lifecycle-9d2e"
SECRET_ENV = "PLANGATE_TEST_LIFECYCLE_SECRET"
FILE_SECRET = "from-a-file"
EVERY = [
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.ended",
    "trial.ending",
    "trial.ended",
    "topup.added",
    "topup.exhausted",
    "topup.expired",
    "quota.threshold_crossed",
]


def catalog(url: str, secret_file: Path) -> str:
    return textwrap.dedent(f"""
        products:
          - name: Acme
            features:
              - name: SSO
                type: boolean
              - name: API calls
                type: metered
                reset: monthly
            plans:
              - name: Free
                entitlements: {{api-calls: 10}}
                quotas:
                  - feature: api-calls
                    at: ["50%"]
                    actions:
                      - webhook: {url}/quota-action
              - name: Pro
                entitlements: {{sso: true, api-calls: 100}}
              - name: Team
                entitlements: {{sso: true, api-calls: 100}}
                trial: {{days: 14, then: free}}
        webhooks:
          - url: {url}/all
            secret_env: {SECRET_ENV}
            events: [{", ".join(EVERY)}]
          - url: {url}/created
            secret_file: {secret_file}
            events: [subscription.created]
        """)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("lifecycle-webhooks")
    (d / "hook.secret").write_text(FILE_SECRET + "\n")
    (d / "catalog.yaml").write_text(catalog(receiver.url, d / "hook.secret"))
    os.environ[SECRET_ENV] = SECRET
    try:
        with in_process(d / "catalog.yaml", d / "state.db", outbox_poll_seconds=0.2) as sc:
            yield sc
    finally:
        del os.environ[SECRET_ENV]


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def account(stubs: Stubs, name: str) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=name), timeout=5)
    return name


def subscribe(stubs: Stubs, acct: str, plan: str = "free", **fields: Any) -> str:
    request = pb.CreateSubscriptionRequest(account_id=acct, plan=plan, id=f"{acct}-s", **fields)
    return stubs.admin.CreateSubscription(request, timeout=5).id


def one(receiver: Receiver, path: str, acct: str, type: str, timeout: float = 10.0) -> Call:
    (call,) = receiver.wait(path, acct, type, timeout=timeout)
    return call


def assert_headers(call: Call) -> None:
    assert call.headers["X-PlanGate-Event"] == call.type
    assert call.headers["X-PlanGate-Delivery"] == call.event["delivery_id"]
    assert call.signed_with(SECRET)
    assert not call.signed_with("another secret")


def test_subscription_created_updated_canceled_with_payload_and_signature(
    stubs: Stubs, receiver: Receiver
) -> None:
    acct = account(stubs, "acct_lc_admin")
    sub = subscribe(stubs, acct)
    created = one(receiver, "/all", acct, "subscription.created")
    assert_headers(created)
    event = created.event
    assert event["environment"] == "default" and event["account"] == acct
    assert event["subscription"]["id"] == sub and event["subscription"]["plan"] == "free"
    assert event["subscription"]["pending"] == [] and event["subscription"]["trial"] is False

    stubs.admin.ChangePlan(pb.ChangePlanRequest(account_id=acct, subscription_id=sub, plan="pro"))
    updated = one(receiver, "/all", acct, "subscription.updated")
    assert_headers(updated)
    assert updated.event["subscription"]["plan"] == "pro"
    assert updated.event["previous"]["plan"] == "free"

    later = (now() + timedelta(days=30)).replace(microsecond=0)
    stubs.admin.ChangePlan(
        pb.ChangePlanRequest(
            account_id=acct, subscription_id=sub, plan="free", at=to_timestamp(later)
        )
    )
    scheduled = receiver.wait("/all", acct, "subscription.updated", count=2)[1].event
    assert scheduled["subscription"]["plan"] == "pro"  # still in force now
    assert scheduled["subscription"]["pending"] == [
        {"starts_at": iso(later), "plan": "free", "addons": {}}
    ]

    ends = later + timedelta(days=1)
    stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id=acct, subscription_id=sub, at=to_timestamp(ends))
    )
    canceled = one(receiver, "/all", acct, "subscription.canceled")
    assert_headers(canceled)
    assert canceled.event["subscription"]["ends_at"] == iso(ends)
    assert canceled.event["previous"]["ends_at"] is None


def test_endpoint_filters_and_file_secrets(sidecar: Any, stubs: Stubs, receiver: Receiver) -> None:
    acct = account(stubs, "acct_lc_filter")
    sub = subscribe(stubs, acct)
    created = one(receiver, "/created", acct, "subscription.created")
    assert created.signed_with(FILE_SECRET)
    assert created.headers["X-PlanGate-Event"] == "subscription.created"
    stubs.admin.ChangePlan(pb.ChangePlanRequest(account_id=acct, subscription_id=sub, plan="pro"))
    one(receiver, "/all", acct, "subscription.updated")
    # The rows of a change commit with it, so what the store holds for /created is final.
    rows = [
        d.payload["event"]["type"]
        for d in sidecar.store.list_deliveries(None, 1000)
        if d.account == acct and d.target == f"{receiver.url}/created"
    ]
    assert rows == ["subscription.created"]
    assert [c.type for c in receiver.of("/created", acct)] == ["subscription.created"]


def test_trial_ending_ended_and_the_phase_after_it_each_once(
    stubs: Stubs, receiver: Receiver
) -> None:
    acct = account(stubs, "acct_lc_trial")
    trial_end = now() + timedelta(seconds=1.5)
    sub = subscribe(stubs, acct, plan="team", trial_ends_at=to_timestamp(trial_end))
    # A trial shorter than the 3-day lead warns at once, at its start.
    ending = one(receiver, "/all", acct, "trial.ending")
    assert_headers(ending)
    assert ending.event["trial_ends_at"] == iso(trial_end)
    assert ending.event["then"] == "free"
    assert ending.event["subscription"]["trial"] is True
    ended = one(receiver, "/all", acct, "trial.ended")
    assert_headers(ended)
    assert ended.event["at"] == iso(trial_end) and ended.event["then"] == "free"
    assert ended.arrived >= trial_end.timestamp()
    phase = one(receiver, "/all", acct, "subscription.updated")
    assert phase.event["at"] == iso(trial_end)
    assert (phase.event["previous"]["plan"], phase.event["subscription"]["plan"]) == (
        "team",
        "free",
    )
    # then a scheduled end, sent at its instant; nothing before it came twice
    ends = now() + timedelta(seconds=1)
    stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id=acct, subscription_id=sub, at=to_timestamp(ends))
    )
    one(receiver, "/all", acct, "subscription.canceled")
    end = one(receiver, "/all", acct, "subscription.ended")
    assert end.event["at"] == iso(ends) and end.event["subscription"]["plan"] == "free"
    assert end.arrived >= ends.timestamp()
    counts = {t: len(receiver.of("/all", acct, t)) for t in EVERY}
    assert counts["trial.ending"] == counts["trial.ended"] == counts["subscription.ended"] == 1
    assert counts["subscription.updated"] == 1


def test_topup_added_exhausted_expired(stubs: Stubs, receiver: Receiver) -> None:
    acct = account(stubs, "acct_lc_topup")
    subscribe(stubs, acct)  # free: 10 api-calls a month
    expires = now() + timedelta(seconds=1.5)
    stubs.admin.AddTopUp(
        pb.AddTopUpRequest(account_id=acct, feature="api-calls", amount=5, id="pack")
    )
    stubs.admin.AddTopUp(
        pb.AddTopUpRequest(
            account_id=acct,
            feature="api-calls",
            amount=5,
            id="brief",
            priority=20,
            expires_at=to_timestamp(expires),
        )
    )
    added = receiver.wait("/all", acct, "topup.added", count=2)
    assert_headers(added[0])
    assert [c.event["topup"]["id"] for c in added] == ["pack", "brief"]
    assert added[0].event["feature"] == "api-calls" and added[0].event["topup"]["amount"] == 5

    # 10 fill the allowance, 5 more use "pack" up (it burns first); nothing of "brief"
    report = pb.UsageReport(account_id=acct, feature="api-calls", amount=15)
    stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
    exhausted = one(receiver, "/all", acct, "topup.exhausted")
    assert_headers(exhausted)
    assert exhausted.event["topup"]["id"] == "pack"

    expired = one(receiver, "/all", acct, "topup.expired")
    assert_headers(expired)
    assert expired.event["topup"]["id"] == "brief" and expired.event["at"] == iso(expires)


def test_quota_threshold_goes_to_lifecycle_endpoints_too(stubs: Stubs, receiver: Receiver) -> None:
    acct = account(stubs, "acct_lc_quota")
    subscribe(stubs, acct)
    report = pb.UsageReport(account_id=acct, feature="api-calls", amount=6)
    stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
    lifecycle = one(receiver, "/all", acct, "quota.threshold_crossed")
    action = one(receiver, "/quota-action", acct, "quota.threshold_crossed")
    assert_headers(lifecycle)
    assert lifecycle.event["threshold"] == {"at": "50%", "value": 5}
    same = {k: v for k, v in lifecycle.event.items() if k != "delivery_id"}
    assert same == {k: v for k, v in action.event.items() if k != "delivery_id"}
    assert lifecycle.event["delivery_id"] != action.event["delivery_id"]


def test_deleting_an_account_ends_its_subscriptions(stubs: Stubs, receiver: Receiver) -> None:
    acct = account(stubs, "acct_lc_delete")
    sub = subscribe(stubs, acct)
    stubs.admin.DeleteAccount(pb.DeleteAccountRequest(id=acct), timeout=5)
    ended = one(receiver, "/all", acct, "subscription.ended")
    assert ended.event["reason"] == "account_deleted"
    assert ended.event["subscription"]["id"] == sub


def test_a_negative_trial_ending_lead_is_refused_at_start_up(tmp_path: Path) -> None:
    from plangate.sidecar.server.app import Sidecar
    from plangate.sidecar.settings import Settings

    (tmp_path / "catalog.yaml").write_text(catalog("http://127.0.0.1:9", tmp_path / "s"))
    settings = Settings(
        catalog=str(tmp_path / "catalog.yaml"), db=str(tmp_path / "s.db"), trial_ending_days=-1
    )
    with pytest.raises(ValueError, match=r"--trial-ending-days must be 0 or more days, got -1"):
        Sidecar(settings)
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened
