"""SIGTERM (design §2.1): every stream ends with UNAVAILABLE, so clients reconnect; calls in
flight drain; the process exits within 5 s — also with garbage on a reflection stream."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import SubprocessSidecar, copy_catalog, in_process, wait_for

pytestmark = pytest.mark.slow

EXIT_LIMIT = 5.0
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


async def _ends_with(call: Any) -> tuple[grpc.StatusCode, float]:
    """Read `call` to its end; (its status, when it ended)."""
    try:
        while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), time.monotonic()
    return await call.code(), time.monotonic()


async def _streams(channel: grpc.aio.Channel) -> list[Any]:
    """Open streams of every kind, each past its first message."""
    native = pb_grpc.EvaluationStub(channel)
    v2, v1 = v2_grpc.ServiceStub(channel), v1_grpc.ServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    calls: list[Any] = [
        *(native.Watch(pb.WatchRequest()) for _ in range(50)),
        *(v2.EventStream(v2_pb.EventStreamRequest()) for _ in range(50)),
        *(v1.EventStream(v1_pb.EventStreamRequest()) for _ in range(20)),
        *(health.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)),
    ]
    await asyncio.gather(*(call.read() for call in calls))
    return calls


async def _terminate(sidecar: SubprocessSidecar, garbage: bool) -> dict[str, Any]:
    assert sidecar.proc is not None
    async with grpc.aio.insecure_channel(sidecar.target) as channel:
        calls = await _streams(channel)
        idle = [
            await asyncio.open_connection("127.0.0.1", port)
            for port in (sidecar.management_port, sidecar.ofrep_port)
            for _ in range(20)
        ]
        reflection = channel.stream_stream(REFLECTION)  # type: ignore[call-arg]  # raw bytes
        idle_reflection = reflection()  # type: ignore[call-arg]
        await idle_reflection.write(b"")  # an empty request: a valid (empty) message
        refused: grpc.StatusCode | None = None
        if garbage:
            broken = reflection()  # type: ignore[call-arg]
            await broken.write(b"\xff\xff\xff\xff\x0f garbage")
            refused, _ = await _ends_with(broken)
        # a unary call in flight when the signal arrives still gets its answer
        usage = pb_grpc.UsageStub(channel)
        report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)
        in_flight = usage.Report(pb.ReportRequest(reports=[report] * 2000), timeout=10)
        await asyncio.sleep(0)
        sent = time.monotonic()
        sidecar.proc.send_signal(signal.SIGTERM)
        ended = await asyncio.wait_for(
            asyncio.gather(*(_ends_with(call) for call in calls)), timeout=EXIT_LIMIT
        )
        answered = await in_flight
        code = await asyncio.to_thread(sidecar.proc.wait, EXIT_LIMIT * 2)
        exited = time.monotonic() - sent
        for _, writer in idle:
            writer.close()
        idle_reflection.cancel()
    return {
        "codes": {c for c, _ in ended},
        "slowest_stream": max(t for _, t in ended) - sent,
        "exited": exited,
        "exit_code": code,
        "refused": refused,
        "reported": len(answered.results),
    }


def _run(tmp_path: Path, garbage: bool) -> dict[str, Any]:
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "s.db").start()
    try:
        return asyncio.run(_terminate(sidecar, garbage))
    finally:
        sidecar.kill()


def test_sigterm_ends_every_stream_unavailable_and_exits_within_5s(tmp_path: Path) -> None:
    numbers = _run(tmp_path, garbage=False)
    print(f"\nshutdown: {numbers}")
    assert numbers["codes"] == {grpc.StatusCode.UNAVAILABLE}
    assert numbers["slowest_stream"] < 1.0
    assert numbers["reported"] == 2000  # drained, not cut off
    assert numbers["exit_code"] == 0 and numbers["exited"] < EXIT_LIMIT


def test_garbage_on_a_reflection_stream_is_refused_and_sigterm_still_exits(
    tmp_path: Path,
) -> None:
    numbers = _run(tmp_path, garbage=True)
    print(f"\nshutdown after garbage: {numbers}")
    assert numbers["refused"] == grpc.StatusCode.INVALID_ARGUMENT
    assert numbers["codes"] == {grpc.StatusCode.UNAVAILABLE}
    assert numbers["exit_code"] == 0 and numbers["exited"] < EXIT_LIMIT


def test_a_stream_opened_while_stopping_is_refused_without_ready(tmp_path: Path) -> None:
    """Shutdown closes the event hub before the drain; a client reconnecting in that window
    must not hear "ready" from the dying sidecar (it would take it for the restarted one and
    declare its interest on a stream about to end), but UNAVAILABLE, and reconnect later."""
    with in_process(copy_catalog(tmp_path), tmp_path / "state.db") as sidecar:
        sidecar.state.events.close()  # the first step of the sidecar's stop
        wait_for(lambda: sidecar.state.events.closed)
        with grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            calls: list[Any] = [
                pb_grpc.EvaluationStub(channel).Watch(pb.WatchRequest(), timeout=5),
                pb_grpc.EvaluationStub(channel).Watch(
                    pb.WatchRequest(accounts_only=True), timeout=5
                ),
                v2_grpc.ServiceStub(channel).EventStream(v2_pb.EventStreamRequest(), timeout=5),
                v1_grpc.ServiceStub(channel).EventStream(v1_pb.EventStreamRequest(), timeout=5),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as caught:
                    first = next(call)
                    pytest.fail(f"a stopping sidecar said {first!r}")
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        url = f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/events?account=acct_acme"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
