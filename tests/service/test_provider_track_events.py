"""OpenFeature `track` through `PlanGateProvider` for events (design §16): a tracking name
that is no feature key becomes a CloudEvent sent through `Usage.Ingest` (type = the name,
subject = the targeting key, data = the attributes plus `value`, source = the provider's),
queued, journaled and retried like a report with the same `(source, id)`; a feature key stays
a usage report; a type no meter reads is accepted by the sidecar as `UNMATCHED` and logged at
debug level only. Usage is read back through the native API, never through the provider."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from support.provider import native_used, new_account, provider
from support.sidecar import Stubs, SubprocessSidecar, in_process, wait_for

CATALOG = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    dimensions: {model: $.model}
  - key: reviews
    event_type: review.done
    value: $.value
products:
  - name: Acme AI
    features:
      - {name: Tokens, type: metered, meter: llm-tokens}
      - {name: Premium tokens, type: metered, meter: {key: llm-tokens, where: {model: gpt-5}}}
      - {name: Reviews, type: metered, meter: reviews}
      - {name: API calls, type: metered}
    plans:
      - name: Pro
        entitlements: {tokens: 100000, premium-tokens: 50000, reviews: 1000, api-calls: 1000}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("track-events")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield sc


def test_a_meter_event_type_is_sent_as_an_event_and_a_feature_key_stays_a_report(
    sidecar: Any, stubs: Stubs
) -> None:
    new_account(stubs, "acct_track_ev", plan="pro")
    with provider(f"127.0.0.1:{sidecar.port}") as p:
        client = api.get_client()
        ctx = EvaluationContext("acct_track_ev")
        client.track(
            "llm.completion",
            ctx,
            TrackingEventDetails(attributes={"tokens": 120, "model": "gpt-5"}),
        )
        client.track(
            "llm.completion",
            ctx,
            TrackingEventDetails(attributes={"tokens": 30, "model": "gpt-5-mini"}),
        )
        client.track("review.done", ctx, TrackingEventDetails(value=4))  # value is data.value
        client.track("api-calls", ctx, TrackingEventDetails(value=2))  # a feature key
        for _ in range(50):  # interleaved: batches alternate between Ingest and Report
            client.track("review.done", ctx, TrackingEventDetails(value=1))
            client.track("api-calls", ctx, TrackingEventDetails(value=1))
        wait_for(lambda: p.pending_reports == 0, timeout=10)
    assert native_used(stubs, "acct_track_ev", "tokens") == 150
    assert native_used(stubs, "acct_track_ev", "premium-tokens") == 120
    assert native_used(stubs, "acct_track_ev", "reviews") == 54
    assert native_used(stubs, "acct_track_ev", "api-calls") == 52


def test_an_event_no_meter_reads_is_logged_at_debug_level_only(
    sidecar: Any, stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    new_account(stubs, "acct_track_other", plan="pro")
    caplog.set_level(logging.DEBUG, logger="plangate.provider")
    with provider(f"127.0.0.1:{sidecar.port}", event_source="checkout-app") as p:
        client = api.get_client()
        ctx = EvaluationContext("acct_track_other")
        client.track(
            "checkout.completed",
            ctx,
            TrackingEventDetails(value=99.5, attributes={"currency": "EUR"}),
        )
        wait_for(lambda: p.pending_reports == 0, timeout=10)
        wait_for(lambda: "checkout.completed" in caplog.text, timeout=5)
    mine = [r for r in caplog.records if "checkout.completed" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.DEBUG], caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_an_event_with_no_account_is_rejected_with_a_warning(
    sidecar: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with provider(f"127.0.0.1:{sidecar.port}") as p:
        client = api.get_client()
        ctx = EvaluationContext("acct_nobody")  # unknown to the sidecar
        client.track("review.done", ctx, TrackingEventDetails(value=1))
        wait_for(lambda: "rejected 1 of 1 tracking events" in caplog.text, timeout=10)
        assert p.pending_reports == 0


def test_journaled_events_are_replayed_with_the_same_ids_and_counted_once(
    tmp_path: Path,
) -> None:
    """Events tracked while the sidecar is down stay in the journal; replaying that journal
    twice (a copy of it, as if the first acknowledgement had been lost) counts them once."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    sc = SubprocessSidecar(tmp_path / "catalog.yaml", tmp_path / "state.db").start()
    journal, copy = tmp_path / "usage.journal", tmp_path / "copy.journal"
    try:
        with Stubs(sc.target) as stubs:
            new_account(stubs, "acct_replay", plan="pro")
        with provider(sc.target, track_journal=str(journal), shutdown_timeout=0.5) as p:
            sc.kill()
            client = api.get_client()
            ctx = EvaluationContext("acct_replay")
            for tokens in (10, 20, 30):
                client.track(
                    "llm.completion", ctx, TrackingEventDetails(attributes={"tokens": tokens})
                )
            api.shutdown()
            assert p.pending_reports == 3  # nobody to deliver them to
        shutil.copyfile(journal, copy)
        sc.start()
        for path in (journal, copy):
            with provider(sc.target, track_journal=str(path)) as p:
                wait_for(lambda p=p: p.pending_reports == 0, timeout=15)
        with Stubs(sc.target) as stubs:
            assert native_used(stubs, "acct_replay", "tokens") == 60
    finally:
        sc.kill()


def test_events_across_a_sidecar_kill_are_counted_exactly_once(tmp_path: Path) -> None:
    """Batches in flight when the sidecar dies are resent with the same ids once it is back:
    none lost, none counted twice."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    sc = SubprocessSidecar(tmp_path / "catalog.yaml", tmp_path / "state.db").start()
    try:
        with Stubs(sc.target) as stubs:
            new_account(stubs, "acct_kill", plan="pro")
        with provider(sc.target) as p:
            client = api.get_client()
            ctx = EvaluationContext("acct_kill")
            for i in range(600):
                if i == 200:
                    sc.kill()  # batches go out every few ms: some are in flight
                if i == 400:
                    assert p.pending_reports > 0  # queued while the sidecar was gone
                    sc.start()
                client.track("llm.completion", ctx, TrackingEventDetails(attributes={"tokens": 1}))
                if i % 50 == 49:
                    time.sleep(0.01)  # spread the stream out, so the kill lands mid-stream
            wait_for(lambda: p.pending_reports == 0, timeout=30)
        with Stubs(sc.target) as stubs:
            assert native_used(stubs, "acct_kill", "tokens") == 600
    finally:
        sc.kill()
