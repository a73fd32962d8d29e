"""Time is part of every answer (design §8 "Time"): at an override expiring, a grant or a
subscription starting or ending, a trial ending, a scheduled plan change or end (design §6.1), and a usage
period ending, the cached provider converges
within 100 ms of the instant, the sidecar says `account_changed` (cause "time") on `Watch`,
and `EvaluateAll` carries the instant as `valid_until`.

Boundaries are placed about a second ahead on the real clock. Each check is split so that a
break in any one part fails a test: `valid_until` on the wire (engine + conversion), the
Watch event (timekeeper), convergence through the OpenFeature client (provider cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as flagd_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as flagd_grpc
from support.provider import provider
from support.sidecar import Stubs, in_process
from support.watch import WatchLog

CATALOG = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Reports
        type: metered
        reset: hourly
        anchor: subscription
    plans:
      - name: Free
        entitlements: {reports: 1}
      - name: Pro
        entitlements: {sso: true}
"""

LEAD = 1.2
"""Seconds from setting a boundary up to the instant: room for the set-up calls and a cached read."""
BOUND = 0.1
"""Design §8: every cached client converges within 100 ms of the boundary."""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("time")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield sc


@pytest.fixture
def watch(stubs: Stubs) -> Iterator[WatchLog]:
    log = WatchLog(stubs)
    yield log
    log.close()


@dataclass(frozen=True)
class Boundary:
    feature: str
    before: bool
    after: bool
    setup: Callable[[Stubs, str, datetime], None]


def _value(value: bool) -> struct_pb2.Value:
    return struct_pb2.Value(bool_value=value)


def _override_expiring(stubs: Stubs, account: str, at: datetime) -> None:
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(
            account_id=account, feature="sso", value=_value(True), expires_at=to_timestamp(at)
        ),
        timeout=5,
    )


def _grant_starting(stubs: Stubs, account: str, at: datetime) -> None:
    stubs.admin.CreateGrant(
        pb.CreateGrantRequest(
            account_id=account, feature="sso", value=_value(True), starts_at=to_timestamp(at)
        ),
        timeout=5,
    )


def _grant_ending(stubs: Stubs, account: str, at: datetime) -> None:
    stubs.admin.CreateGrant(
        pb.CreateGrantRequest(
            account_id=account, feature="sso", value=_value(True), ends_at=to_timestamp(at)
        ),
        timeout=5,
    )


def _subscription_starting(stubs: Stubs, account: str, at: datetime) -> None:
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan="pro", starts_at=to_timestamp(at)),
        timeout=5,
    )


def _subscription_ending(stubs: Stubs, account: str, at: datetime) -> None:
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan="pro", ends_at=to_timestamp(at)),
        timeout=5,
    )


def _plan_change_scheduled(stubs: Stubs, account: str, at: datetime) -> None:
    """A phase (design §6.1): free now, pro from `at`."""
    sub = stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan="free"), timeout=5
    )
    stubs.admin.ChangePlan(
        pb.ChangePlanRequest(
            account_id=account, subscription_id=sub.id, plan="pro", at=to_timestamp(at)
        ),
        timeout=5,
    )


def _trial_ending(stubs: Stubs, account: str, at: datetime) -> None:
    """A trial of pro that moves to free at its end (design §6.1)."""
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id=account, plan="pro", trial_ends_at=to_timestamp(at), trial_then="free"
        ),
        timeout=5,
    )


def _end_scheduled(stubs: Stubs, account: str, at: datetime) -> None:
    """`CancelSubscription` at a later instant on a running subscription."""
    sub = stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan="pro"), timeout=5
    )
    stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(
            account_id=account, subscription_id=sub.id, at=to_timestamp(at)
        ),
        timeout=5,
    )


def _period_ending(stubs: Stubs, account: str, at: datetime) -> None:
    """An hourly subscription-anchored period that started an hour before `at`, used up."""
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id=account, plan="free", starts_at=to_timestamp(at - timedelta(hours=1))
        ),
        timeout=5,
    )
    report = pb.UsageReport(account_id=account, feature="reports", amount=1)
    result = stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5).results[0]
    assert result.status == pb.ReportResult.STATUS_APPLIED, result


BOUNDARIES = {
    "override-expiring": Boundary("sso", True, False, _override_expiring),
    "grant-starting": Boundary("sso", False, True, _grant_starting),
    "grant-ending": Boundary("sso", True, False, _grant_ending),
    "subscription-starting": Boundary("sso", False, True, _subscription_starting),
    "subscription-ending": Boundary("sso", True, False, _subscription_ending),
    "usage-period-ending": Boundary("reports", False, True, _period_ending),
    "plan-change-scheduled": Boundary("sso", False, True, _plan_change_scheduled),
    "end-scheduled": Boundary("sso", True, False, _end_scheduled),
    "trial-ending": Boundary("sso", True, False, _trial_ending),
}


def _cross(kind: str, sidecar: Any, stubs: Stubs) -> float:
    """Set up boundary `kind` for a new account, read it through the cached provider before
    the instant and poll it past the instant; asserts the reads; returns the instant."""
    boundary = BOUNDARIES[kind]
    account = f"acct_time_{kind}"
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
    instant = datetime.fromtimestamp(round(time.time() + LEAD, 3), UTC)
    boundary.setup(stubs, account, instant)
    t = instant.timestamp()

    # the wire: EvaluateAll says when the answer stops holding
    everything = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=account), timeout=5)
    res = everything.resolutions[boundary.feature]
    assert res.HasField("valid_until"), res
    assert res.valid_until.ToDatetime(tzinfo=UTC) == instant

    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        ctx = EvaluationContext(account)
        assert (
            client.get_boolean_value(boundary.feature, not boundary.before, ctx) is boundary.before
        )
        assert time.time() < t - 0.2, "set-up took too long to see the answer before the boundary"
        polls: list[tuple[float, bool]] = []
        while time.time() < t + BOUND + 0.3:
            started = time.time()
            polls.append(
                (started, client.get_boolean_value(boundary.feature, boundary.before, ctx))
            )
            time.sleep(0.003)
    # never early: every read before the instant still had the old answer
    assert all(value is boundary.before for at, value in polls if at < t - 0.01), polls
    # converged: every read that started 100 ms after the instant has the new answer
    late = [(round(at - t, 3), value) for at, value in polls if at >= t + BOUND]
    assert late and all(value is boundary.after for _, value in late), late
    return t


@pytest.mark.parametrize("kind", list(BOUNDARIES))
def test_boundary_converges_and_is_announced(
    kind: str, sidecar: Any, stubs: Stubs, watch: WatchLog
) -> None:
    t = _cross(kind, sidecar, stubs)
    # the sidecar itself announced it at the instant (cause "time"), not before
    arrived, event = watch.wait_time_event(f"acct_time_{kind}")
    assert arrived >= t - 0.01, f"announced {t - arrived:.3f} s early"
    assert arrived - t < 1.0, f"announced {arrived - t:.3f} s late"
    assert not event.all_accounts


@pytest.fixture(scope="module")
def unannounced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sidecar whose timekeeper is stopped: no time events, only `valid_until` (as from a
    sidecar that predates them, or a Watch event lost in transit)."""
    d = tmp_path_factory.mktemp("quiet")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        sc.timekeeper.stop()
        yield sc


@pytest.mark.parametrize("kind", ["override-expiring", "usage-period-ending"])
def test_provider_honours_valid_until_without_an_event(kind: str, unannounced: Any) -> None:
    with Stubs(f"127.0.0.1:{unannounced.port}") as stubs:
        _cross(kind, unannounced, stubs)


@pytest.mark.parametrize(
    "kind", ["override-expiring", "trial-ending", "plan-change-scheduled", "end-scheduled"]
)
def test_flagd_clients_hear_the_boundary(kind: str, sidecar: Any, stubs: Stubs) -> None:
    """flagd providers cache too: their EventStream gets `configuration_change` at the instant,
    and the flag metadata says when (RFC 3339)."""
    account = f"acct_time_flagd_{kind}"
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
    instant = datetime.fromtimestamp(round(time.time() + LEAD, 3), UTC)
    BOUNDARIES[kind].setup(stubs, account, instant)
    t = instant.timestamp()
    channel = grpc.insecure_channel(f"127.0.0.1:{sidecar.port}")
    flagd = flagd_grpc.ServiceStub(channel)
    context = struct_pb2.Struct()
    context.update({"targetingKey": account})
    res = flagd.ResolveBoolean(flagd_pb.ResolveBooleanRequest(flag_key="sso", context=context))
    assert res.value is BOUNDARIES[kind].before
    assert res.metadata.fields["valid_until"].string_value == instant.isoformat().replace(
        "+00:00", "Z"
    )
    changes: list[float] = []
    stream = flagd.EventStream(flagd_pb.EventStreamRequest())

    def read() -> None:
        try:
            for message in stream:
                if message.type == "configuration_change" and "sso" in message.data["flags"]:
                    changes.append(time.time())
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + LEAD + 5
        while not any(at >= t - 0.01 for at in changes) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stream.cancel()
        reader.join(5)
        channel.close()
    at_instant = [round(at - t, 3) for at in changes if at >= t - 0.01]
    assert at_instant and at_instant[0] < 1.0, changes
