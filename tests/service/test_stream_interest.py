"""Change events reach only the streams that need them (issue 22 item 2, decision 1310).

A `Watch` that names its accounts hears those accounts' changes and no other account's; an
`EvaluateAll` naming the stream's `watch_id` adds its account; a `Watch` that names none and
a flagd `EventStream` get account changes coalesced (one message for a burst of writes); the
provider's stream declares interest in exactly the accounts it caches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct
from plangate.provider import PlanGateProvider
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import Stubs, copy_catalog, in_process, wait_for

COALESCE = 3.0  # s between two batches to a broad stream, in the burst test


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("interest")
    with in_process(copy_catalog(tmp), tmp / "s.db", heartbeat_seconds=60.0) as running:
        yield running


@pytest.fixture
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s


class Stream:
    """Every message of one server stream, read on a thread into a queue."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    def next(self, timeout: float = 20.0) -> Any:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)


def _report(stubs: Stubs, account: str) -> None:
    report = pb.UsageReport(account_id=account, feature="api-calls", amount=1)
    response = stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=10)
    assert response.results[0].status == pb.ReportResult.STATUS_APPLIED, response


def _next_account_event(stream: Stream) -> pb.AccountChanged:
    while True:
        message = stream.next()
        if message.WhichOneof("event") == "account_changed":
            return message.account_changed


def test_a_watch_naming_accounts_hears_only_those(stubs: Stubs) -> None:
    stream = Stream(stubs.evaluation.Watch(pb.WatchRequest(accounts=["acct_acme"])))
    try:
        ready = stream.next()
        assert ready.WhichOneof("event") == "ready" and ready.ready.watch_id
        _report(stubs, "acct_globex")  # not asked for: never sent to this stream
        _report(stubs, "acct_acme")
        event = _next_account_event(stream)
        assert list(event.account_ids) == ["acct_acme"] and event.cause == "usage"
    finally:
        stream.close()


def test_evaluate_all_naming_the_stream_adds_its_account(stubs: Stubs) -> None:
    stream = Stream(stubs.evaluation.Watch(pb.WatchRequest(accounts_only=True)))
    try:
        watch_id = stream.next().ready.watch_id
        _report(stubs, "acct_acme")  # nothing asked for yet
        request = pb.EvaluateAllRequest(account_id="acct_globex", watch_id=watch_id)
        assert stubs.evaluation.EvaluateAll(request, timeout=10).resolutions
        _report(stubs, "acct_globex")
        event = _next_account_event(stream)
        assert list(event.account_ids) == ["acct_globex"]
    finally:
        stream.close()


def test_an_unknown_watch_id_is_ignored(stubs: Stubs) -> None:
    request = pb.EvaluateAllRequest(account_id="acct_acme", watch_id="no-such-stream")
    assert stubs.evaluation.EvaluateAll(request, timeout=10).resolutions


def test_broad_streams_get_coalesced_messages_naming_every_change(tmp_path: Path) -> None:
    """Twelve writes to three accounts, back to back: a flagd EventStream and a Watch that
    names no accounts get at most one message per interval (the first at once), and between
    them every changed account is named."""
    with (
        in_process(
            copy_catalog(tmp_path), tmp_path / "s.db", stream_coalesce_seconds=COALESCE
        ) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
    ):
        flagd = Stream(v2_grpc.ServiceStub(stubs.channel).EventStream(v2_pb.EventStreamRequest()))
        broad = Stream(stubs.evaluation.Watch(pb.WatchRequest()))
        try:
            assert flagd.next().type == "provider_ready"
            assert broad.next().WhichOneof("event") == "ready"
            accounts = {"acct_acme", "acct_globex", "acct_initech"}
            started = time.monotonic()
            for account in sorted(accounts) * 4:
                _report(stubs, account)
            took = time.monotonic() - started
            named: set[str] = set()
            watch_messages = 0
            while named != accounts:
                event = _next_account_event(broad)
                watch_messages += 1
                named.update(event.account_ids)
            changes: list[Any] = []
            while not changes or len(changes) < watch_messages:
                message = flagd.next()
                if message.type == "configuration_change":
                    changes.append(message)
            assert all("api-calls" in from_struct(m.data)["flags"] for m in changes)
            # the first change of an interval is sent at once, the rest at the interval's end
            most = 2 + int(took / COALESCE)
            assert watch_messages <= most and len(changes) <= most, (took, watch_messages)
        finally:
            flagd.close()
            broad.close()


def test_the_provider_declares_the_accounts_it_caches(sidecar: Any, stubs: Stubs) -> None:
    provider = PlanGateProvider(target=f"127.0.0.1:{sidecar.port}")
    api.set_provider_and_wait(provider, "interest")
    client = api.get_client("interest")
    changed: queue.Queue[EventDetails] = queue.Queue()
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed.put)
    try:
        ctx = EvaluationContext("acct_globex")
        found = client.get_boolean_details("api-calls", False, ctx)  # cached: interest declared
        assert found.error_code is None, found
        hub = sidecar.state.events
        wait_for(lambda: "acct_globex" in hub._by_account, timeout=10)
        assert "acct_acme" not in hub._by_account
        _report(stubs, "acct_acme")  # not cached: this provider is not told
        _report(stubs, "acct_globex")
        details = changed.get(timeout=20)
        assert details.metadata is not None
        assert details.metadata["account_ids"] == "acct_globex"
    finally:
        api.shutdown()
