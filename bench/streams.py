"""Usage writes with thousands of change streams open (issue 22 item 2), each figure next to
its floor in the same run.

One `plangate serve` process; the load and the streams come from separate, spawned client
processes so their CPU is never counted on the server's side. Rows produced:

- `streams.report.none`: Report calls/s from `--callers` concurrent callers (one report per
  call, random accounts, every call durable) with no stream open, the median of a run before
  the streams open and one after they close (the machine's background load moves both).
- `streams.report.open`: the same with `--watches` native `Watch` streams (each naming one
  account, as the provider does) and as many flagd `EventStream`s open and read.
- `streams.provider_event`: ms from the answer to a Report on the account a
  `PlanGateProvider` has cached (the change is committed then) to that provider's
  `PROVIDER_CONFIGURATION_CHANGED`, sampled every 0.25 s during the loaded run (the account is
  not among the callers', so each sample times one change); value is the max. The extra
  fields give the same from sending the Report (its durable commit included).

Run: `python bench/streams.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import random
import resource
import statistics
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import catalogs
from harness import Stats, emit, sidecar

PER_CHANNEL = 100  # streams multiplexed on one HTTP/2 connection
WATCHED = 0  # the account the provider caches; the callers write every other account


def report_client(
    target: str, callers: int, seconds: float, accounts: int, out: Queue[float]
) -> None:
    """`callers` channels, each calling Report back to back for `seconds`; puts calls/s."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

    async def run() -> float:
        channels = [grpc.aio.insecure_channel(target) for _ in range(callers)]
        stubs = [pb_grpc.UsageStub(c) for c in channels]
        rng = random.Random(5)

        async def one(stub: Any) -> None:
            account = catalogs.account_id(1 + rng.randrange(accounts - 1))
            report = pb.UsageReport(account_id=account, feature=catalogs.METERED_KEY, amount=1)
            response = await stub.Report(pb.ReportRequest(reports=[report]))
            assert response.results[0].status == pb.ReportResult.STATUS_APPLIED, response

        for stub in stubs:  # connect and warm up
            await one(stub)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def caller(stub: Any) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await one(stub)
                count += 1

        await asyncio.gather(*(caller(s) for s in stubs))
        rate = count / (time.perf_counter() - start)
        for c in channels:
            await c.close()
        return rate

    out.put(asyncio.run(run()))


def stream_holder(
    target: str, watches: int, accounts: int, commands: Queue[str], out: Queue[str]
) -> None:
    """Open `watches` Watch streams (stream i names account i) and as many flagd
    EventStreams, read every message; report "open", close on "close"."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
    from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
    from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc

    async def drain(stream: Any, opened: asyncio.Event) -> None:
        try:
            await stream.read()  # ready / provider_ready
            opened.set()
            while await stream.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
                pass
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            opened.set()

    async def run() -> None:
        channels = [
            grpc.aio.insecure_channel(target) for _ in range(max(1, 2 * watches // PER_CHANNEL))
        ]
        streams = []
        for i in range(watches):
            native = pb_grpc.EvaluationStub(channels[i % len(channels)])
            request = pb.WatchRequest(accounts=[catalogs.account_id(i % accounts)])
            streams.append(native.Watch(request))
            flagd = v2_grpc.ServiceStub(channels[(watches + i) % len(channels)])
            streams.append(flagd.EventStream(v2_pb.EventStreamRequest()))
        opened = [asyncio.Event() for _ in streams]
        readers = [asyncio.ensure_future(drain(s, o)) for s, o in zip(streams, opened, strict=True)]
        await asyncio.gather(*(o.wait() for o in opened))
        out.put("open")
        await asyncio.get_running_loop().run_in_executor(None, commands.get)
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(c.close(None) for c in channels))
        out.put("closed")

    asyncio.run(run())


def _reports_per_second(target: str, callers: int, seconds: float, accounts: int) -> float:
    ctx = mp.get_context("spawn")
    out: Queue[float] = ctx.Queue()
    proc = ctx.Process(
        target=report_client, args=(target, callers, seconds, accounts, out), daemon=True
    )
    proc.start()
    try:
        return out.get(timeout=seconds + 180)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


class ProviderProbe:
    """A `PlanGateProvider` caching one account; times a Report on it to the provider's
    configuration-changed event, every `every` s until stopped."""

    def __init__(self, target: str, every: float) -> None:
        import grpc
        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext
        from openfeature.event import ProviderEvent
        from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
        from plangate.provider import PlanGateProvider

        self.account = catalogs.account_id(WATCHED)
        self._every = every
        self._events: queue.Queue[float] = queue.Queue()
        api.set_provider_and_wait(PlanGateProvider(target=target), "bench-streams")
        self._client = api.get_client("bench-streams")
        self._client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._changed)
        self._ctx = EvaluationContext(self.account)
        self._channel = grpc.insecure_channel(target)
        self._usage = pb_grpc.UsageStub(self._channel)
        self._stop = threading.Event()
        self.samples: list[float] = []  # ms from the Report's answer to the event
        self.totals: list[float] = []  # ms from sending the Report (its commit included)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _changed(self, details: Any) -> None:
        if self.account in str((details.metadata or {}).get("account_ids", "")):
            self._events.put(time.monotonic())

    def _run(self) -> None:
        from plangate.protocol.plangate.v1 import plangate_pb2 as pb

        report = pb.UsageReport(account_id=self.account, feature=catalogs.METERED_KEY, amount=1)
        while not self._stop.wait(self._every):
            self._client.get_boolean_value(catalogs.METERED_KEY, False, self._ctx)  # cached
            while not self._events.empty():
                self._events.get_nowait()
            sent = time.monotonic()
            self._usage.Report(pb.ReportRequest(reports=[report]), timeout=10)
            acked = time.monotonic()  # the change exists from its (durable) commit
            try:
                heard = self._events.get(timeout=5)
            except queue.Empty:
                heard = acked + 5
            self.samples.append(max(0.0, heard - acked) * 1000)
            self.totals.append((heard - sent) * 1000)

    def start(self) -> None:
        self._client.get_boolean_value(catalogs.METERED_KEY, False, self._ctx)
        self._thread.start()

    def stop(self) -> None:
        from openfeature import api

        self._stop.set()
        self._thread.join(15)
        self._channel.close()
        api.shutdown()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited by the sidecar
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.watches + 4096)), hard)
    )
    with tempfile.TemporaryDirectory(prefix="plangate-bench-streams-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        catalogs.seed_store(db, [catalogs.pro_record(i) for i in range(args.accounts)])
        with sidecar(catalog, db) as side:
            target = side.target
            none = _reports_per_second(target, args.callers, args.seconds, args.accounts)
            ctx = mp.get_context("spawn")
            commands: Queue[str] = ctx.Queue()
            out: Queue[str] = ctx.Queue()
            holder = ctx.Process(
                target=stream_holder,
                args=(target, args.watches, args.accounts, commands, out),
                daemon=True,
            )
            holder.start()
            try:
                assert out.get(timeout=300) == "open"
                time.sleep(2.0)  # the opening burst is over
                probe = ProviderProbe(target, every=0.25)
                probe.start()
                try:
                    opened = _reports_per_second(target, args.callers, args.seconds, args.accounts)
                finally:
                    probe.stop()
                commands.put("close")
                assert out.get(timeout=120) == "closed"
            finally:
                holder.join(10)
                if holder.is_alive():
                    holder.kill()
            time.sleep(2.0)  # the closing burst is over
            after = _reports_per_second(target, args.callers, args.seconds, args.accounts)
    detail = {"callers": args.callers, "seconds": args.seconds}
    streams = {"watches": args.watches, "event_streams": args.watches}
    samples = probe.samples or [float("nan")]
    return {
        "measures": {
            "streams.report.none": Stats.of([none, after], "calls/s", **detail).as_json(),
            "streams.report.open": Stats.of([opened], "calls/s", **detail, **streams).as_json(),
            "streams.provider_event": Stats.of(
                [max(samples)],
                "ms",
                samples=len(probe.samples),
                median_ms=statistics.median(samples),
                from_send_median_ms=statistics.median(probe.totals or [float("nan")]),
                from_send_max_ms=max(probe.totals or [float("nan")]),
                **streams,
            ).as_json(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "quick"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)  # one run by design; accepted for run.py
    args = parser.parse_args()
    args.callers = 8
    args.seconds = 2.0 if args.quick else 10.0
    args.accounts = 100 if args.quick else 1000
    args.watches = 50 if args.quick else 1000
    emit(measure(args))


if __name__ == "__main__":
    main()
