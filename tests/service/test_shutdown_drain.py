"""SIGTERM's drain under load (issue 22, item 9; decision 1341): calls that reached the sidecar
while its event loop was busy, before the shutdown began, are answered, not CANCELLED.

A busy loop is what a loaded machine gives: grpc.aio takes arrived calls one at a time from the
loop, and `server.stop()` used to cancel those not taken yet. Here the loop is held by a
callback while the calls arrive, and the stop is queued behind it, as a signal arriving then is.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.server.app import Sidecar
from plangate.sidecar.settings import Settings
from support.sidecar import Stubs, copy_catalog

CALLS = 40
HELD = 2.0  # seconds the loop is held: time enough for every call to reach the server


def _report(s: Stubs, key: str) -> grpc.Future[pb.ReportResponse]:
    r = pb.UsageReport(account_id="acct_acme", feature="api-calls", idempotency_key=key)
    future: grpc.Future[pb.ReportResponse] = s.usage.Report.future(
        pb.ReportRequest(reports=[r]), timeout=30
    )
    return future


def test_calls_that_arrived_while_the_loop_was_busy_are_answered_at_shutdown(
    tmp_path: Path,
) -> None:
    settings = Settings(
        catalog=str(copy_catalog(tmp_path)),
        db=str(tmp_path / "state.db"),
        port=0,
        management_port=0,
        ofrep_port=0,
    )
    sidecar = Sidecar(settings).start()
    stopping: futures.Future[None] | None = None
    try:
        with Stubs(f"127.0.0.1:{sidecar.port}") as s, futures.ThreadPoolExecutor(1) as pool:
            assert _report(s, "warm").result().results[0].status == pb.ReportResult.STATUS_APPLIED
            loop = sidecar._loop.loop  # type: ignore[union-attr]  # what a loaded machine slows
            held = threading.Event()
            loop.call_soon_threadsafe(held.set)
            loop.call_soon_threadsafe(time.sleep, HELD)
            assert held.wait(10)
            calls = [_report(s, f"k-{i}") for i in range(CALLS)]
            stopping = pool.submit(sidecar.stop)  # runs once the loop is free, as SIGTERM would
            answers: list[object] = []
            for call in calls:
                try:
                    answers.append(call.result().results[0].status)
                except grpc.RpcError as exc:
                    answers.append(exc.code())  # was CANCELLED: taken only after the stop began
            stopping.result(timeout=30)
        assert answers == [pb.ReportResult.STATUS_APPLIED] * CALLS, answers
    finally:
        if stopping is None:
            sidecar.stop()
