"""Quota automations through a running sidecar (design §7): webhooks from the durable outbox,
override / change_plan actions, Watch events, the Admin RPCs, the CLI, metrics and kill -9.

Webhooks go to a real HTTP receiver on 127.0.0.1 that fails on command; signatures are
checked here with hmac directly, not with the sidecar's own code.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.cli.main import main as cli
from support.receiver import Receiver
from support.sidecar import Stubs, SubprocessSidecar, in_process, wait_for

SECRET = "whsec-test-4f1c"
SECRET_ENV = "PLANGATE_TEST_QUOTA_SECRET"
MAX_ATTEMPTS = 4


def write_catalog(directory: Path, url: str) -> Path:
    secret_file = directory / "webhook.secret"
    secret_file.write_text("from-a-file\n")
    path = directory / "catalog.yaml"
    path.write_text(
        textwrap.dedent(f"""
        products:
          - name: Acme
            features:
              - name: API calls
                type: metered
                reset: monthly
                anchor: calendar
            plans:
              - name: Starter
                entitlements: {{api-calls: 100}}
                quotas:
                  - feature: api-calls
                    at: [80%, 100%]
                    actions:
                      - webhook: {url}/signed
                        secret_env: {SECRET_ENV}
              - name: Bare
                entitlements: {{api-calls: 100}}
                quotas:
                  - feature: api-calls
                    at: [80%]
                    actions:
                      - webhook: {url}/unsigned
              - name: Filed
                entitlements: {{api-calls: 100}}
                quotas:
                  - feature: api-calls
                    at: [80%]
                    actions:
                      - webhook: {url}/filed
                        secret_file: {secret_file}
              - name: Locked
                entitlements: {{api-calls: 100}}
                quotas:
                  - feature: api-calls
                    at: [80%]
                    actions:
                      - webhook: {url}/locked
                        secret_env: PLANGATE_TEST_QUOTA_SECRET_NOT_SET
              - name: Trial
                entitlements: {{api-calls: 10}}
                quotas:
                  - feature: api-calls
                    at: [80%]
                    actions:
                      - change_plan: pro
              - name: Pro
                entitlements: {{api-calls: 100}}
                quotas:
                  - feature: api-calls
                    at: [100%]
                    actions:
                      - override: {{feature: api-calls, value: {{limit: 100, soft: true}}}}
        accounts:
          - id: acct_file
            subscriptions:
              - plan: trial
                starts_at: 2026-01-01T00:00:00Z
        """)
    )
    return path


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("quotas")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, SECRET)
        mp.delenv("PLANGATE_TEST_QUOTA_SECRET_NOT_SET", raising=False)
        with in_process(
            write_catalog(d, receiver.url),
            d / "state.db",
            webhook_backoff_seconds=0.05,
            webhook_max_attempts=MAX_ATTEMPTS,
            webhook_timeout_seconds=2.0,
            outbox_poll_seconds=0.05,
        ) as sc:
            yield sc


def subscribe(stubs: Stubs, account: str, plan: str) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account))
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan=plan, id=f"{account}-sub")
    )


def report(stubs: Stubs, account: str, amount: float) -> None:
    reply = stubs.usage.Report(
        pb.ReportRequest(
            reports=[pb.UsageReport(account_id=account, feature="api-calls", amount=amount)]
        )
    )
    assert reply.results[0].status == pb.ReportResult.STATUS_APPLIED


def deliveries(stubs: Stubs, account: str, status: str = "") -> list[pb.Delivery]:
    reply = stubs.admin.ListDeliveries(pb.ListDeliveriesRequest(status=status, page_size=1000))
    return [d for d in reply.deliveries if d.account_id == account]


def sample(sidecar: Any, name: str, **labels: str) -> float:
    value = sidecar.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


# -- webhooks ----------------------------------------------------------------------------------


def test_a_webhook_failing_three_times_is_delivered_once_signed(
    sidecar: Any, stubs: Stubs, receiver: Receiver
) -> None:
    retries_before = sample(sidecar, "plangate_webhook_deliveries_total", result="retry")
    delivered_before = sample(sidecar, "plangate_webhook_deliveries_total", result="delivered")
    fired_before = sample(sidecar, "plangate_quota_fired_total", feature="api-calls")
    receiver.fail["acct_retry"] = 3
    subscribe(stubs, "acct_retry", "starter")
    report(stubs, "acct_retry", 85)

    wait_for(lambda: receiver.about("acct_retry", 200), timeout=10)
    time.sleep(0.3)  # room for a (wrong) second delivery to show up
    calls = receiver.about("acct_retry")
    assert [c.status for c in calls] == [503, 503, 503, 200]
    assert len({c.delivery for c in calls}) == 1  # one delivery, retried under one id
    assert [c.headers["X-PlanGate-Attempt"] for c in calls] == ["1", "2", "3", "4"]
    ok = calls[-1]
    assert ok.path == "/signed" and ok.headers["Content-Type"] == "application/json"
    assert ok.signed_with(SECRET)
    assert not ok.signed_with("another-secret")
    event = ok.event
    assert event["delivery_id"] == ok.delivery
    assert event["account"] == "acct_retry" and event["feature"] == "api-calls"
    assert event["threshold"] == {"at": "80%", "value": 80}
    assert (event["usage"], event["limit"], event["plan"]) == (85, 100, "starter")
    assert event["period"]["start"].endswith("T00:00:00Z") and event["period"]["end"]
    assert event["fired_at"] and event["type"] == "quota.threshold_crossed"

    [row] = deliveries(stubs, "acct_retry")
    assert (row.id, row.status, row.attempts, row.threshold) == (ok.delivery, "delivered", 4, "80%")
    assert row.last_error.startswith("HTTP 503")
    assert (
        sample(sidecar, "plangate_webhook_deliveries_total", result="retry") - retries_before == 3
    )
    assert (
        sample(sidecar, "plangate_webhook_deliveries_total", result="delivered") - delivered_before
        == 1
    )
    assert sample(sidecar, "plangate_quota_fired_total", feature="api-calls") - fired_before == 1
    wait_for(lambda: sample(sidecar, "plangate_outbox_pending") == 0)


def test_after_max_attempts_a_delivery_fails_until_an_operator_retries(
    sidecar: Any, stubs: Stubs, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_before = sample(sidecar, "plangate_webhook_deliveries_total", result="failed")
    receiver.fail["acct_gives_up"] = 1000
    subscribe(stubs, "acct_gives_up", "starter")
    report(stubs, "acct_gives_up", 100)  # 80% and 100%: two deliveries
    wait_for(lambda: len(deliveries(stubs, "acct_gives_up", "failed")) == 2, timeout=10)
    assert len(receiver.about("acct_gives_up")) == 2 * MAX_ATTEMPTS
    assert (
        sample(sidecar, "plangate_webhook_deliveries_total", result="failed") - failed_before == 2
    )
    wait_for(lambda: sample(sidecar, "plangate_outbox_failed") >= 2)
    assert sidecar.readiness()[1]["outbox"]["failed"] >= 2  # /readyz detail

    target = ["--target", f"127.0.0.1:{sidecar.port}", "--json"]
    assert cli(["deliveries", "list", "--status", "failed", *target]) == 0
    listed = json.loads(capsys.readouterr().out)["deliveries"]
    ids = {d["id"] for d in listed if d["account_id"] == "acct_gives_up"}
    assert len(ids) == 2
    assert all(d["attempts"] == MAX_ATTEMPTS for d in listed if d["id"] in ids)

    receiver.fail["acct_gives_up"] = 0
    first = sorted(ids)[0]
    assert cli(["deliveries", "retry", first, *target]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == [first]
    wait_for(lambda: len(receiver.about("acct_gives_up", 200)) == 1, timeout=10)
    assert cli(["deliveries", "retry", "--all-failed", *target]) == 0
    assert json.loads(capsys.readouterr().out)["retried"] >= 1
    log = stubs.admin.ListAuditLog(pb.ListAuditLogRequest()).entries
    retries = [(e.action, e.account_id, e.target) for e in log if e.action == "RetryDelivery"]
    assert retries[-1] == ("RetryDelivery", "acct_gives_up", first)
    assert retries[-2][1:] == ("", "all_failed")
    wait_for(lambda: len(deliveries(stubs, "acct_gives_up", "delivered")) == 2, timeout=10)
    assert {c.delivery for c in receiver.about("acct_gives_up", 200)} == ids
    assert all(c.signed_with(SECRET) for c in receiver.about("acct_gives_up", 200))

    # A delivered one cannot be retried; an unknown id is not found.
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.RetryDelivery(pb.RetryDeliveryRequest(id=first))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "nothing to retry" in (info.value.details() or "")
    assert cli(["deliveries", "retry", "no-such-id", *target]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_unsigned_file_secret_and_missing_secret(
    sidecar: Any, stubs: Stubs, receiver: Receiver
) -> None:
    for account, plan in (
        ("acct_bare", "bare"),
        ("acct_filed", "filed"),
        ("acct_locked", "locked"),
    ):
        subscribe(stubs, account, plan)
        report(stubs, account, 80)
    [bare] = wait_for(lambda: receiver.about("acct_bare", 200))
    assert "X-PlanGate-Signature" not in bare.headers
    [filed] = wait_for(lambda: receiver.about("acct_filed", 200))
    assert filed.signed_with("from-a-file")  # the file's content, stripped of its newline
    # A secret that is named but not set is never replaced by "unsigned": the attempts fail.
    [locked] = wait_for(lambda: deliveries(stubs, "acct_locked", "failed"), timeout=10)
    assert "PLANGATE_TEST_QUOTA_SECRET_NOT_SET is not set" in locked.last_error
    assert receiver.about("acct_locked") == []


def test_listing_validates_and_pages(sidecar: Any, stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ListDeliveries(pb.ListDeliveriesRequest(status="lost"))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "pending, delivered, failed" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.RetryDelivery(pb.RetryDeliveryRequest())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    subscribe(stubs, "acct_pages", "bare")
    report(stubs, "acct_pages", 80)
    everything = stubs.admin.ListDeliveries(pb.ListDeliveriesRequest(page_size=1000)).deliveries
    assert len(everything) >= 3
    seen: list[str] = []
    token = ""
    while True:
        page = stubs.admin.ListDeliveries(pb.ListDeliveriesRequest(page_size=2, page_token=token))
        seen += [d.id for d in page.deliveries]
        token = page.next_page_token
        if not token:
            break
    assert seen == [d.id for d in everything]  # newest first, every row once


# -- override and change_plan ------------------------------------------------------------------


class Watcher:
    """Collects `Watch` events about `account` in a thread (naming it: a stream that names no
    account gets changes coalesced, one event per cause and interval, decision 1310)."""

    def __init__(self, stubs: Stubs, account: str) -> None:
        self.events: list[pb.WatchEvent] = []
        self.call = stubs.evaluation.Watch(pb.WatchRequest(accounts=[account]))
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.events and self.events[0].HasField("ready"))

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError:
            pass

    def quota_events(self, account: str) -> int:
        return sum(
            1
            for e in self.events
            if e.HasField("account_changed")
            and e.account_changed.cause == "quota"
            and account in e.account_changed.account_ids
        )


@pytest.mark.parametrize("account", ["acct_api", "acct_file"])
def test_change_plan_and_override_are_evaluated_and_watched(stubs: Stubs, account: str) -> None:
    if account == "acct_api":
        subscribe(stubs, account, "trial")
    watcher = Watcher(stubs, account)

    def check() -> pb.Resolution:
        return stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id=account, feature="api-calls")
        )

    report(stubs, account, 8)  # 80% of Trial's 10: move to Pro
    wait_for(lambda: check().variant == "pro", timeout=10)
    assert wait_for(lambda: watcher.quota_events(account) >= 2)  # fired, then plan changed
    report(stubs, account, 92)  # 100% of Pro's 100: a soft override
    wait_for(lambda: check().variant == "override", timeout=10)
    res = check()
    assert (res.metering.limit, res.metering.soft_limit, res.has_access) == (100, True, True)
    assert wait_for(lambda: watcher.quota_events(account) >= 4)

    got = stubs.admin.GetAccount(pb.GetAccountRequest(id=account))
    assert got.declared == (account == "acct_file")
    assert [s.plan for s in got.subscriptions] == ["pro"]
    assert [o.feature for o in got.overrides] == ["api-calls"]
    kinds = {(d.kind, d.status) for d in deliveries(stubs, account)}
    assert kinds == {("change_plan", "delivered"), ("override", "delivered")}
    log = stubs.admin.ListAuditLog(pb.ListAuditLogRequest(account_id=account)).entries
    quota = [(e.actor, e.action, e.target) for e in log if e.actor == "quota"]
    assert quota == [("quota", "override", "api-calls"), ("quota", "change_plan", sub_of(got))]
    watcher.call.cancel()


def sub_of(account: pb.Account) -> str:
    [sub] = account.subscriptions
    return sub.id


def _plan(stubs: Stubs, account: str) -> str:
    return stubs.admin.GetAccount(pb.GetAccountRequest(id=account)).subscriptions[0].plan


def test_quota_changes_on_a_declared_account_can_be_undone_but_not_extended(stubs: Stubs) -> None:
    account = "acct_file"
    if not stubs.admin.GetAccount(pb.GetAccountRequest(id=account)).overrides:
        # Run alone: let the quotas move it to Pro and then override it, as above.
        report(stubs, account, 8)
        wait_for(lambda: _plan(stubs, account) == "pro", timeout=10)
        report(stubs, account, 92)
        wait_for(
            lambda: stubs.admin.GetAccount(pb.GetAccountRequest(id=account)).overrides, timeout=10
        )
    got = stubs.admin.GetAccount(pb.GetAccountRequest(id=account))
    assert [s.plan for s in got.subscriptions] == ["pro"]
    sub = got.subscriptions[0].id
    # Anything beyond the quota layer stays refused: the file owns the account.
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ChangePlan(
            pb.ChangePlanRequest(account_id=account, subscription_id=sub, plan="bare")
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    # Clearing the quota override and moving back to the file's plan agree with the file.
    stubs.admin.ClearOverride(pb.ClearOverrideRequest(account_id=account, feature="api-calls"))
    stubs.admin.ChangePlan(
        pb.ChangePlanRequest(account_id=account, subscription_id=sub, plan="trial")
    )
    got = stubs.admin.GetAccount(pb.GetAccountRequest(id=account))
    assert [s.plan for s in got.subscriptions] == ["trial"] and not got.overrides
    log = stubs.admin.ListAuditLog(pb.ListAuditLogRequest(account_id=account)).entries
    assert [(e.actor, e.action) for e in log[:2]] == [
        ("anonymous", "ChangePlan"),
        ("anonymous", "ClearOverride"),
    ]
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ClearOverride(pb.ClearOverrideRequest(account_id=account, feature="api-calls"))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


# -- kill -9 -----------------------------------------------------------------------------------


def test_deliveries_pending_at_kill_9_are_delivered_once_after_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.down = True
    env = {
        SECRET_ENV: SECRET,
        "PLANGATE_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "PLANGATE_WEBHOOK_MAX_ATTEMPTS": "1000",
        "PLANGATE_WEBHOOK_TIMEOUT_SECONDS": "1",
        "PLANGATE_OUTBOX_POLL_SECONDS": "0.05",
    }
    sc = SubprocessSidecar(write_catalog(tmp_path, receiver.url), tmp_path / "state.db", env=env)
    try:
        sc.start()
        with Stubs(sc.target) as stubs:
            subscribe(stubs, "acct_crash", "starter")
            report(stubs, "acct_crash", 85)  # 80%
            wait_for(lambda: len(receiver.about("acct_crash")) >= 2, timeout=10)  # failing, pending
            time.sleep(0.1)  # between attempts rather than inside one
            report(stubs, "acct_crash", 15)  # 100%: acknowledged, then killed straight away
        sc.kill()
        assert not receiver.about("acct_crash", 200)
        receiver.down = False
        sc.start()
        wait_for(lambda: len(receiver.about("acct_crash", 200)) == 2, timeout=20)
        time.sleep(0.5)  # room for a (wrong) duplicate
        ok = receiver.about("acct_crash", 200)
        assert sorted(c.event["threshold"]["at"] for c in ok) == ["100%", "80%"]
        assert len({c.delivery for c in ok}) == 2
        assert all(c.signed_with(SECRET) for c in ok)
        with Stubs(sc.target) as stubs:
            rows = deliveries(stubs, "acct_crash")
            assert sorted(r.status for r in rows) == ["delivered", "delivered"]
            assert {r.id for r in rows} == {c.delivery for c in ok}
    finally:
        sc.kill()
        receiver.close()
