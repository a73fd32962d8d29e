"""A calendar period end touches every account at once (design §8 "Time"): the sidecar sends
one `account_changed` with `all_accounts` (no ids) at the instant, and the cached provider
drops everything it holds.

The sidecar's clock is set an hour-ish ahead so the top of the hour is a second away. The
provider keeps the real clock, so the `valid_until` it holds lies in its future: only the
Watch event can make it converge, which is exactly what this test is about.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.server.app import Sidecar
from plangate.sidecar.settings import Settings
from support.provider import provider
from support.sidecar import Stubs
from support.watch import WatchLog

CATALOG = """\
products:
  - name: Acme
    features:
      - name: API calls
        type: metered
        reset: hourly
        anchor: calendar
    plans:
      - name: Free
        entitlements: {api-calls: 1}
"""

LEAD = 1.5
"""Seconds from setting the clock to the sidecar's top of the hour."""
BOUND = 0.1
"""Design §8: every cached client converges within 100 ms of the boundary."""


@pytest.fixture
def sidecar(tmp_path: Any) -> Iterator[Any]:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    settings = Settings(
        catalog=str(tmp_path / "catalog.yaml"),
        db=str(tmp_path / "state.db"),
        port=0,
        management_port=0,
        ofrep_port=0,
    )
    sc = Sidecar(settings).start()
    try:
        yield sc
    finally:
        sc.stop(grace=0.5)


def next_hour(after: datetime) -> datetime:
    return after.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def test_calendar_period_end_reaches_every_cached_account(sidecar: Any) -> None:
    real = datetime.now(UTC)
    if next_hour(real) - real < timedelta(seconds=10):  # the real hour would turn mid-test
        time.sleep((next_hour(real) - real).total_seconds() + 0.5)
        real = datetime.now(UTC)
    # The timekeeper has indexed the real next hour; the shifted clock reaches it in LEAD s.
    offset = next_hour(real) - real - timedelta(seconds=LEAD)
    t = time.time() + LEAD
    sidecar.state.clock = lambda: datetime.now(UTC) + offset
    with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
        watch = WatchLog(stubs)
        try:
            accounts = ["acct_a", "acct_b"]
            for account in accounts:  # each at its limit for the hour about to end
                stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
                stubs.admin.CreateSubscription(
                    pb.CreateSubscriptionRequest(account_id=account, plan="free"), timeout=5
                )
                report = pb.UsageReport(account_id=account, feature="api-calls")
                stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
            with provider(f"127.0.0.1:{sidecar.port}"):
                client = api.get_client()
                for account in accounts:
                    assert not client.get_boolean_value(
                        "api-calls", True, EvaluationContext(account)
                    )
                assert time.time() < t - 0.2, "set-up took too long"
                polls: list[tuple[float, str, bool]] = []
                while time.time() < t + BOUND + 0.3:
                    for account in accounts:
                        ctx = EvaluationContext(account)
                        polls.append(
                            (
                                time.time(),
                                account,
                                client.get_boolean_value("api-calls", False, ctx),
                            )
                        )
                    time.sleep(0.003)
            arrived, event = watch.wait_time_event("acct_a")
        finally:
            watch.close()
    assert all(not allowed for at, _, allowed in polls if at < t - 0.01), polls
    late = [(round(at - t, 3), a, allowed) for at, a, allowed in polls if at >= t + BOUND]
    assert late and all(allowed for *_, allowed in late), late
    assert event.all_accounts and not event.account_ids, event
    assert t - 0.01 <= arrived < t + 1.0, f"announced {arrived - t:+.3f} s from the instant"
