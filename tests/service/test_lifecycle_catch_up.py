"""Time-driven lifecycle events survive downtime (design §7.1): a trial that ends while the
sidecar is stopped is sent exactly once when it comes back, and a second restart (which
looks back over the same span again) sends nothing twice; a trial that ends while the disk is
full is sent once the disk has room again.

`plangate serve` runs as a real subprocess on SQLite (the full disk: in-process on a small
tmpfs, as in test_store_faults.py); the receiver is a real HTTP server.
"""

from __future__ import annotations

import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp
from support.filesystem import fill, small_filesystem
from support.receiver import Receiver
from support.sidecar import Stubs, SubprocessSidecar, in_process

SECRET = "whsec-catch-up"
SECRET_ENV = "PLANGATE_TEST_CATCH_UP_SECRET"


def write_catalog(directory: Path, url: str) -> Path:
    path = directory / "catalog.yaml"
    path.write_text(
        textwrap.dedent(f"""
        products:
          - name: Acme
            features:
              - name: SSO
                type: boolean
              - name: Users
                type: metered
                aggregation: unique
            plans:
              - name: Team
                entitlements: {{sso: true, users: unlimited}}
        webhooks:
          - url: {url}/hook
            secret_env: {SECRET_ENV}
            events: [trial.ending, trial.ended, subscription.ended, subscription.canceled]
        """)
    )
    return path


def trial(stubs: Stubs, account: str, ends: datetime) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id=account,
            plan="team",
            id=f"{account}-s",
            trial_ends_at=to_timestamp(ends),
            trial_then="cancel",
        ),
        timeout=5,
    )


def until(instant: datetime) -> None:
    """Let wall-clock time pass `instant` (what the test is about: time passing while down)."""
    while datetime.now(UTC) <= instant:
        time.sleep(0.05)


def test_a_trial_that_ends_during_downtime_is_sent_once_after_the_restart(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    catalog = write_catalog(tmp_path, receiver.url)
    sidecar = SubprocessSidecar(catalog, tmp_path / "state.db", env={SECRET_ENV: SECRET})
    try:
        sidecar.start()
        ends = datetime.now(UTC) + timedelta(seconds=4)
        with Stubs(sidecar.target) as stubs:
            trial(stubs, "acct_down", ends)
        # running: the warning (a 4-second trial is shorter than the 3-day lead) arrives now
        receiver.wait("/hook", "acct_down", "trial.ending")
        assert sidecar.terminate() == 0
        assert datetime.now(UTC) < ends, "the sidecar must be down before the trial ends"
        until(ends + timedelta(seconds=0.5))
        assert receiver.of("/hook", "acct_down", "trial.ended") == []

        sidecar.start()
        (ended,) = receiver.wait("/hook", "acct_down", "trial.ended")
        assert ended.signed_with(SECRET)
        assert ended.event["at"] == ends.isoformat().replace("+00:00", "Z")
        assert ended.event["then"] == "cancel"
        receiver.wait("/hook", "acct_down", "subscription.ended")

        sidecar.restart()  # kill -9, then the same look back over the same span again
        with Stubs(sidecar.target) as stubs:
            # a later event through the restarted sidecar: once it arrived, a repeat of the
            # catch-up would have arrived before it (the catch-up runs first, then changes)
            trial(stubs, "acct_after", datetime.now(UTC) + timedelta(days=1))
        receiver.wait("/hook", "acct_after", "trial.ending")
        for kind in ("trial.ending", "trial.ended", "subscription.ended"):
            # one event each: a POST repeated by the kill -9 (at least once) keeps its id
            calls = receiver.of("/hook", "acct_down", kind)
            assert len({c.headers["X-PlanGate-Delivery"] for c in calls}) == 1, kind
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- sidecar log ---\n{''.join(sidecar.log)}") from exc
    finally:
        sidecar.kill()
        receiver.close()


def test_a_trial_that_ends_while_the_disk_is_full_is_sent_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = Receiver()
    try:
        with small_filesystem(tmp_path / "fs", "4m") as fs:
            catalog = write_catalog(tmp_path, receiver.url)
            with in_process(catalog, fs / "state.db") as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
                ends = datetime.now(UTC) + timedelta(seconds=4)
                trial(s, "acct_full", ends)
                receiver.wait("/hook", "acct_full", "trial.ending")
                filler = fill(fs)
                for i in range(500):  # the WAL has some room left: use it up
                    report = pb.UsageReport(
                        account_id="acct_full", feature="users", unique_key=f"u{i:04d}" + "x" * 300
                    )
                    try:
                        s.usage.Report(pb.ReportRequest(reports=[report]), timeout=10)
                    except grpc.RpcError as exc:
                        assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                        break
                else:
                    raise AssertionError("the disk never filled up")
                assert datetime.now(UTC) < ends, "the disk must be full before the trial ends"
                until(ends + timedelta(seconds=1.5))  # the scheduler tries, fails, tries again
                assert receiver.of("/hook", "acct_full", "trial.ended") == []
                filler.unlink()
                (ended,) = receiver.wait("/hook", "acct_full", "trial.ended")
                assert ended.event["at"] == ends.isoformat().replace("+00:00", "Z")
                receiver.wait("/hook", "acct_full", "subscription.ended")
                # a later event: once it arrived, nothing of the trial's came twice
                trial(s, "acct_full_after", datetime.now(UTC) + timedelta(days=1))
                receiver.wait("/hook", "acct_full_after", "trial.ending")
                for kind in ("trial.ended", "subscription.ended"):
                    calls = receiver.of("/hook", "acct_full", kind)
                    assert len({c.headers["X-PlanGate-Delivery"] for c in calls}) == 1, kind
    finally:
        receiver.close()
