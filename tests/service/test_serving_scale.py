"""Streams and idle connections cost no thread (design §2.1).

A thousand native `Watch` streams, a thousand flagd `EventStream`s and two thousand idle HTTP
connections held open at once, while `Evaluate` keeps answering in well under a second and
every stream hears of a change within 2 s; and a thousand cancelled health `Watch` calls leave
the server answering (the thread-per-stream server deadlocked on them).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import copy_catalog, in_process

pytestmark = pytest.mark.slow

WATCHES = 1000
EVENT_STREAMS = 1000
IDLE_HTTP = 2000
PER_CHANNEL = 100  # streams multiplexed on one HTTP/2 connection
LATENCY_LIMIT = 1.0
EVENT_LIMIT = 2.0


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> Iterator[None]:
    """Both ends of every connection live in this process: raise the soft limit for them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4 * IDLE_HTTP + 2048)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("scale")
    with in_process(copy_catalog(tmp), tmp / "s.db", heartbeat_seconds=30.0) as running:
        yield running


async def _first_event(stream: Any, wanted: str, field: str) -> float:
    """Wait on `stream` for a message whose `field` is `wanted`; returns the time it came."""
    while True:
        message = await stream.read()
        if message is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise AssertionError(f"stream ended before a {wanted} message")
        kind = message.WhichOneof("event") if field == "event" else message.type
        if kind == wanted:
            return time.monotonic()


async def _open_streams(target: str) -> tuple[list[Any], list[Any], list[grpc.aio.Channel]]:
    channels = [
        grpc.aio.insecure_channel(target) for _ in range((WATCHES + EVENT_STREAMS) // PER_CHANNEL)
    ]
    watches, flagd = [], []
    for i in range(WATCHES):
        native = pb_grpc.EvaluationStub(channels[i // PER_CHANNEL])
        watches.append(native.Watch(pb.WatchRequest()))
    for i in range(EVENT_STREAMS):
        stub = v2_grpc.ServiceStub(channels[(WATCHES + i) // PER_CHANNEL])
        flagd.append(stub.EventStream(v2_pb.EventStreamRequest()))
    # every stream is open once its first message (ready) has arrived
    await asyncio.gather(*(_first_event(w, "ready", "event") for w in watches))
    await asyncio.gather(*(_first_event(f, "provider_ready", "type") for f in flagd))
    return watches, flagd, channels


async def _idle_http(ports: list[int]) -> list[asyncio.StreamWriter]:
    """Connections that stay open without sending a request."""
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, IDLE_HTTP, 200):  # in bursts, as a fleet of clients would connect
        opened = await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", ports[i % len(ports)])
                for i in range(start, min(IDLE_HTTP, start + 200))
            )
        )
        writers.extend(w for _, w in opened)
    return writers


async def _evaluations(target: str, until: asyncio.Event) -> list[float]:
    """Evaluate one after another until `until` is set; every latency, each must succeed."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EvaluationStub(channel)
        request = pb.EvaluateRequest(account_id="acct_acme", feature="sso")
        while not until.is_set() or len(latencies) < 20:
            start = time.monotonic()
            result = await stub.Evaluate(request, timeout=LATENCY_LIMIT * 5)
            latencies.append(time.monotonic() - start)
            assert result.as_boolean is True
            await asyncio.sleep(0.01)
    return latencies


async def _at_scale(sidecar: Any) -> dict[str, float]:
    target = f"127.0.0.1:{sidecar.port}"
    done = asyncio.Event()
    evaluating = asyncio.ensure_future(_evaluations(target, done))
    writers = await _idle_http([sidecar.management_port, sidecar.ofrep_port])
    watches, flagd, channels = await _open_streams(target)
    assert sidecar.state.events.subscriber_count >= WATCHES + EVENT_STREAMS
    heard = [
        *(asyncio.ensure_future(_first_event(w, "account_changed", "event")) for w in watches),
        *(asyncio.ensure_future(_first_event(f, "configuration_change", "type")) for f in flagd),
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        changed = time.monotonic()
        report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)
        await pb_grpc.UsageStub(channel).Report(pb.ReportRequest(reports=[report]), timeout=5)
    arrivals = await asyncio.wait_for(asyncio.gather(*heard), timeout=EVENT_LIMIT * 5)
    # the idle connections are still open and the ports still answer a new request
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.management_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    done.set()
    latencies = await evaluating
    for stream in (*watches, *flagd):
        stream.cancel()
    for w in writers:
        w.close()
    await asyncio.gather(*(ch.close(None) for ch in channels))
    return {
        "max_latency": max(latencies),
        "evaluations": len(latencies),
        "slowest_event": max(arrivals) - changed,
    }


def test_thousands_of_streams_and_idle_connections_while_evaluating(sidecar: Any) -> None:
    numbers = asyncio.run(_at_scale(sidecar))
    print(f"\nscale: {numbers}")
    assert numbers["max_latency"] < LATENCY_LIMIT, numbers
    assert numbers["slowest_event"] < EVENT_LIMIT, numbers


async def _cancelled_health_watches(target: str) -> health_pb2.HealthCheckResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(4):
            calls = [stub.Watch(health_pb2.HealthCheckRequest()) for _call in range(250)]
            await asyncio.gather(*(call.read() for call in calls))  # each one is served ...
            for call in calls:
                call.cancel()  # ... then cancelled by the client
        await asyncio.sleep(0.2)
        return await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_a_thousand_cancelled_health_watches_leave_the_server_answering(tmp_path: Path) -> None:
    with in_process(copy_catalog(tmp_path), tmp_path / "s.db") as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        answer = asyncio.run(_cancelled_health_watches(target))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(target) as channel:
            result = pb_grpc.EvaluationStub(channel).Evaluate(
                pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
            )
        assert result.as_boolean is True
