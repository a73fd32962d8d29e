"""`track_journal` (design §21): usage tracked by an application survives its crash exactly once.

An application process tracks, prints that `track` returned and is SIGKILLed at once; the next
process replays what the sidecar never acknowledged, before it is ready, with the same
idempotency keys. Five kills over 1,000 tracks must leave the sidecar's counter exact.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ProviderFatalError
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider import PlanGateProvider
from plangate.provider.journal import TrackJournal
from support.provider import native_used, provider
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, wait_for

pytestmark = pytest.mark.slow

APP = """
import sys, time
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from plangate.provider import PlanGateProvider

target, journal, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
api.set_provider_and_wait(PlanGateProvider(target, track_journal=journal, init_timeout_ms=30000))
print("ready", flush=True)
client = api.get_client()
ctx = EvaluationContext("acct_acme")
for _ in range(count):
    client.track("api-calls", ctx, TrackingEventDetails(value=1))
print("tracked", flush=True)
if count:
    time.sleep(120)  # killed before this ends
api.shutdown()
"""


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SubprocessSidecar]:
    running = SubprocessSidecar(copy_catalog(tmp_path / "catalog"), tmp_path / "state.db").start()
    try:
        yield running
    finally:
        running.kill()


def _app(target: str, journal: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APP, target, str(journal), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    for got in proc.stdout:
        if got.strip() == line:
            return
    raise AssertionError(
        f"the application ended before {line!r}: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_sigkill_right_after_track_loses_nothing_and_counts_nothing_twice(
    sidecar: SubprocessSidecar, tmp_path: Path
) -> None:
    journal = tmp_path / "usage.journal"
    with Stubs(sidecar.target) as stubs:
        before = native_used(stubs, "acct_acme", "api-calls")
        for _ in range(5):
            app = _app(sidecar.target, journal, 200)
            try:
                _until(app, "tracked")
            finally:
                app.kill()  # SIGKILL: no shutdown, no flush
                app.wait(10)
        last = _app(sidecar.target, journal, 0)  # replays the rest, then shuts down cleanly
        _until(last, "tracked")
        assert last.wait(30) == 0
        assert native_used(stubs, "acct_acme", "api-calls") == before + 1000
        assert journal.read_bytes() == b""  # everything acknowledged: compacted away


def test_a_second_process_on_the_journal_fails_naming_the_file(
    sidecar: SubprocessSidecar, tmp_path: Path
) -> None:
    journal = tmp_path / "usage.journal"
    with provider(sidecar.target, track_journal=str(journal)):
        second = PlanGateProvider(sidecar.target, track_journal=str(journal))
        with pytest.raises(ProviderFatalError, match=str(journal)):
            second.initialize(EvaluationContext())
    third = PlanGateProvider(sidecar.target, track_journal=str(journal))  # released on shutdown
    third.initialize(EvaluationContext())
    third.shutdown()


def test_a_damaged_tail_is_skipped_with_a_warning_and_the_rest_is_replayed(
    sidecar: SubprocessSidecar, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "usage.journal"
    earlier = TrackJournal(str(journal))  # as a process that crashed would have left it
    for n in (1, 2):
        report = pb.UsageReport(
            account_id="acct_acme", feature="api-calls", amount=7, idempotency_key=f"journal-{n}"
        )
        earlier.append(n, report)
    earlier.close()
    with journal.open("ab") as f:
        f.write(b'1234abcd {"n":3,"r":"CgljY')  # a write cut short
    with Stubs(sidecar.target) as stubs:
        before = native_used(stubs, "acct_acme", "api-calls")
        with (
            caplog.at_level(logging.WARNING, "plangate.provider"),
            provider(sidecar.target, track_journal=str(journal)),
        ):
            # replayed before READY: set_provider_and_wait returned, so it is counted
            assert native_used(stubs, "acct_acme", "api-calls") == before + 14
            assert api.get_client().get_boolean_value(
                "api-calls", False, EvaluationContext("acct_acme")
            )
        assert "damaged" in caplog.text and str(journal) in caplog.text
        wait_for(lambda: journal.read_bytes() == b"", timeout=5)
