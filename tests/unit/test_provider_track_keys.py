"""`track` without an `idempotency_key`: the provider's own keys (decision 2104), seen in the
journal a provider leaves behind when no sidecar ever answered."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ProviderNotReadyError
from plangate.provider import PlanGateProvider
from plangate.provider.journal import TrackJournal

NOWHERE = "127.0.0.1:1"  # nothing listens: every call waits for a sidecar that never comes


def _offline_session(journal: Path, tracks: int) -> None:
    provider = PlanGateProvider(
        NOWHERE,
        track_journal=str(journal),
        init_timeout_ms=200,
        shutdown_timeout=0.2,
        report_deadline=30.0,  # still waiting when shutdown gives up: the call is cancelled
    )
    with pytest.raises(ProviderNotReadyError):
        provider.initialize(EvaluationContext())
    for _ in range(tracks):
        provider.track("api-calls", EvaluationContext("acct_acme"))
    provider.shutdown()
    assert provider.pending_reports > 0


def test_keys_are_unique_per_report_and_per_session_and_shutdown_offline_is_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    journal = tmp_path / "usage.journal"
    _offline_session(journal, 3)
    _offline_session(journal, 3)  # replays the first three, adds three of its own
    left = TrackJournal(str(journal))
    try:
        keys = [report.idempotency_key for _, report in left.unacknowledged()]
    finally:
        left.close()
    assert len(keys) == len(set(keys)) == 6
    prefixes = [key.rsplit("-", 1)[0] for key in keys]
    assert prefixes[0] == prefixes[2] != prefixes[3] == prefixes[5]
    assert not crashed, [str(c.exc_value) for c in crashed]  # a cancelled call ends quietly
