"""Provider events (design §8) against real sidecars: READY after Watch says ready,
CONFIGURATION_CHANGED on catalog and account changes, STALE when the sidecar is SIGKILLed,
ERROR after the grace period, READY again when it is restarted on the same port — and
evaluations that return the caller's default within the deadline while it is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider import PlanGateProvider
from support.provider import EventLog, new_account, provider
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, in_process

READY = ProviderEvent.PROVIDER_READY
STALE = ProviderEvent.PROVIDER_STALE
ERROR = ProviderEvent.PROVIDER_ERROR
CHANGED = ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
ALL_FEATURES = sorted(
    [
        "ai-completions",
        "ai-credits",
        "api-calls",
        "beta-dashboard",
        "execution-concurrency",
        "exports",
        "image-generations",
        "integrations",
        "legacy-reports",
        "monthly-active-users",
        "pipeline-editor-v2",
        "scheduled-exports",
        "seats",
        "sso",
        "support-tier",
        "theme",
    ]
)
DEADLINE_MS = 300
SLACK = 0.25  # scheduling noise on a busy 2-core machine


@pytest.fixture
def subprocess_sidecar(tmp_path: Path) -> Iterator[SubprocessSidecar]:
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "state.db").start()
    try:
        yield sidecar
    finally:
        sidecar.kill()


def _status_events(log: EventLog, since: int) -> list[ProviderEvent]:
    return [e for e in log.kinds(since) if e is not CHANGED]


def _assert_default_fast(account: str) -> None:
    """While the sidecar is gone, every type answers the caller's default, within the deadline."""
    client = api.get_client()
    ctx = EvaluationContext(account)
    limit = DEADLINE_MS / 1000 + SLACK
    for method, key, default in (
        (client.get_boolean_details, "sso", False),
        (client.get_integer_details, "execution-concurrency", -1),
        (client.get_float_details, "api-calls", -1.0),
        (client.get_string_details, "support-tier", "offline"),
        (client.get_object_details, "integrations", ["offline"]),
    ):
        started = time.monotonic()
        details = method(key, default, ctx)  # type: ignore[operator,arg-type]  # one loop over five typed methods
        elapsed = time.monotonic() - started
        assert details.value == default, key
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY, key
        assert elapsed < limit, f"{key}: {elapsed:.3f}s"

    async def run() -> None:
        started = time.monotonic()
        value = await client.get_boolean_value_async("sso", False, ctx)
        assert value is False
        assert time.monotonic() - started < limit

    asyncio.run(run())


def test_stale_error_and_ready_again_across_a_sigkill(
    subprocess_sidecar: SubprocessSidecar,
) -> None:
    sidecar = subprocess_sidecar
    with EventLog() as log, provider(sidecar.target, grace_period_ms=1000, deadline_ms=DEADLINE_MS):
        log.wait(READY)
        client = api.get_client()
        acme = EvaluationContext("acct_acme")
        assert client.get_boolean_value("sso", False, acme) is True  # and now cached

        mark = log.mark()
        sidecar.kill()
        killed = time.monotonic()
        stale = log.wait(STALE, mark, timeout=5)
        assert stale.at - killed < 3.0  # at once (the reset), not at a missed heartbeat
        assert client.get_provider_status() == ProviderStatus.STALE
        _assert_default_fast("acct_acme")  # the cached True is not served while blind

        error = log.wait(ERROR, mark, timeout=4)
        assert 0.9 <= error.at - stale.at < 2.5, "ERROR must follow the 1 s grace period"
        assert client.get_provider_status() == ProviderStatus.ERROR
        _assert_default_fast("acct_globex")

        sidecar.start()  # same ports as before
        restarted = time.monotonic()
        ready = log.wait(READY, mark, timeout=10)
        assert ready.at - restarted < 3.0
        assert client.get_provider_status() == ProviderStatus.READY
        assert client.get_boolean_value("sso", False, acme) is True
        assert _status_events(log, mark) == [STALE, ERROR, READY]

        assert client.get_integer_value("execution-concurrency", 0, acme) == 25


def test_a_frozen_sidecar_never_hangs_evaluations(
    subprocess_sidecar: SubprocessSidecar,
) -> None:
    """SIGSTOP keeps the TCP connection open but silent: calls must end at the deadline, and the
    silent Watch stream must be noticed (heartbeat timeout) without any connection reset."""
    sidecar = subprocess_sidecar
    assert sidecar.proc is not None
    with (
        EventLog() as log,
        provider(sidecar.target, deadline_ms=DEADLINE_MS, heartbeat_timeout=6.0),
    ):
        log.wait(READY)
        client = api.get_client()
        mark = log.mark()
        os.kill(sidecar.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            value = client.get_boolean_value("sso", False, EvaluationContext("acct_globex"))
            elapsed = time.monotonic() - started
            assert value is False
            assert DEADLINE_MS / 1000 - 0.05 <= elapsed < DEADLINE_MS / 1000 + SLACK
            log.wait(STALE, mark, timeout=9)
        finally:
            os.kill(sidecar.proc.pid, signal.SIGCONT)
        log.wait(READY, mark, timeout=5)
        assert client.get_boolean_value("sso", False, EvaluationContext("acct_globex")) is True


def test_sigterm_is_noticed_at_once_and_events_resume_after_a_restart(
    subprocess_sidecar: SubprocessSidecar,
) -> None:
    """Issue 11.10: a graceful shutdown ends the Watch stream with UNAVAILABLE, so the
    provider goes STALE at once (not at its next missed heartbeat), and after a restart on
    the same port it is READY and hears of changes again."""
    sidecar = subprocess_sidecar
    with (
        EventLog() as log,
        provider(sidecar.target, grace_period_ms=5000, deadline_ms=DEADLINE_MS),
    ):
        log.wait(READY)
        mark = log.mark()
        assert sidecar.proc is not None
        sidecar.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stale = log.wait(STALE, mark, timeout=5)
        # at once (1 s on a quiet machine; room for a loaded CI box), not at the next missed
        # heartbeat or after the drain's 5 s grace
        assert stale.at - signalled < 3.0
        assert sidecar.proc.wait(10) == 0

        sidecar.start()  # same ports as before
        log.wait(READY, mark, timeout=10)
        # the provider hears of the accounts it has asked about (decision 1310)
        api.get_client().get_boolean_value("sso", False, EvaluationContext("acct_acme"))
        mark = log.mark()
        with Stubs(sidecar.target) as stubs:
            report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)
            stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
        changed = log.wait(CHANGED, mark, timeout=5)
        assert "api-calls" in (changed.details.flags_changed or [])


def test_configuration_changed_on_catalog_and_account_changes(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path)
    with (
        in_process(catalog, tmp_path / "state.db", poll_seconds=0.2) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
        EventLog() as log,
        provider(f"127.0.0.1:{sidecar.port}"),
    ):
        log.wait(READY)
        client = api.get_client()
        initech = EvaluationContext("acct_initech")
        assert client.get_string_value("support-tier", "?", initech) == "community"

        # Catalog: the changed feature keys, the new version in the metadata.
        mark = log.mark()
        text = catalog.read_text()
        catalog.write_text(text.replace("default: community", "default: email", 1))
        changed = log.wait(CHANGED, mark, timeout=5)
        assert changed.details.flags_changed == ["support-tier"]
        version = changed.details.metadata["catalog_version"]
        assert version == sidecar.state.catalog.version
        assert client.get_string_value("support-tier", "?", initech) == "email"

        # Account: every feature key, the account ids in the metadata — of an account this
        # provider has asked about (decision 1310), even before it existed.
        events = EvaluationContext("acct_events")
        assert client.get_boolean_value("sso", False, events) is False
        mark = log.mark()
        new_account(stubs, "acct_events", plan="pro")
        moved = log.wait(CHANGED, mark, timeout=5)
        assert moved.details.flags_changed == ALL_FEATURES
        assert "acct_events" in str(moved.details.metadata["account_ids"]).split(",")
        assert moved.details.metadata["cause"] == "admin"
        assert client.get_boolean_value("sso", False, EvaluationContext("acct_events")) is True
        assert _status_events(log, mark) == []


def test_initialize_waits_for_ready_and_ready_follows_a_late_sidecar(tmp_path: Path) -> None:
    """With no sidecar yet, set_provider_and_wait fails after the init timeout; the provider
    keeps trying and announces READY once a sidecar appears on its target."""
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "state.db").start()
    target = sidecar.target
    sidecar.kill()
    try:
        with EventLog() as log:
            p = PlanGateProvider(target, init_timeout_ms=500)
            started = time.monotonic()
            with pytest.raises(Exception, match="no PlanGate sidecar answered"):
                api.set_provider_and_wait(p)
            assert time.monotonic() - started < 1.5
            client = api.get_client()
            assert client.get_provider_status() == ProviderStatus.ERROR
            mark = log.mark()
            sidecar.start()
            log.wait(READY, mark, timeout=10)
            assert client.get_boolean_value("sso", False, EvaluationContext("acct_acme"))
    finally:
        api.clear_providers()
        sidecar.kill()
