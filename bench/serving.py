"""The asyncio serving core under load, each figure next to its floor in the same run.

One `plangate serve` process and one `echo_server.py` process (grpc.aio, the sidecar's
options) are started once; the load comes from separate, spawned client processes so the
clients' CPU is never counted on the server's side. Rows produced:

- `serving.load.evaluate` / `serving.load.echo`: calls/s with `--procs` client processes,
  each keeping `--inflight` calls in flight on one grpc.aio channel for `--seconds`: the
  sidecar's `Evaluate` (random accounts, boolean / integer / metered features) and the echo
  of the same request bytes. Both clients send and receive raw bytes (no protobuf work on the
  client), so the client side costs the same for both. Rounds alternate sidecar, echo,
  sidecar, ... so background load hits both. `*_p99` rows carry the p99 per call (us).
- `serving.consume.concurrent`: events/s of `Consume` from 16 concurrent clients (16
  channels in one client process, each calling back to back), every call durable (the
  group commit puts concurrent calls into one fsync'd transaction).
- `serving.streams.idle_p99` / `serving.streams.open_p99`: p99 of sequential `Evaluate`
  calls with nothing open, then with `--watches` native Watch streams, as many flagd
  EventStreams and twice as many idle HTTP connections (management and OFREP ports) held
  open by `--holders` other processes.
- `serving.streams.event`: ms from a usage Report to the LAST of those streams having read
  the change (CLOCK_MONOTONIC is one clock for every process on the machine).

Run: `python bench/serving.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import re
import resource
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import catalogs
from echo_server import METHOD as ECHO_METHOD
from echo_server import echo_server
from harness import Stats, emit, percentiles, sidecar

EVALUATE = "/plangate.v1.Evaluation/Evaluate"
FEATURES = (catalogs.BOOLEAN_KEY, catalogs.INTEGER_KEY, catalogs.METERED_KEY)
PER_CHANNEL = 100  # streams multiplexed on one HTTP/2 connection, as in the scale test
SETTLE = 2.0  # s of quiet before "nothing open" is measured


def _requests(accounts: int, seed: int) -> list[bytes]:
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb

    rng = random.Random(seed)
    return [
        pb.EvaluateRequest(
            account_id=catalogs.account_id(rng.randrange(accounts)), feature=FEATURES[i % 3]
        ).SerializeToString()
        for i in range(1024)
    ]


# -- concurrent unary load ------------------------------------------------------------------


def load_client(
    rounds: list[tuple[str, str]],
    inflight: int,
    seconds: float,
    accounts: int,
    seed: int,
    barrier: Barrier,
    out: Queue[tuple[int, list[int]]],
) -> None:
    """One client process: for each (target, method) round, after every client is ready,
    keep `inflight` calls going for `seconds`; put (round, per-call latencies in ns)."""
    import grpc

    requests = _requests(accounts, seed)

    async def run() -> None:
        channels = {t: grpc.aio.insecure_channel(t) for t, _ in rounds}
        calls = {
            (t, m): channels[t].unary_unary(m, request_serializer=None, response_deserializer=None)
            for t, m in rounds
        }
        for call in calls.values():  # connect and warm up before any clock starts
            for r in requests[:50]:
                await call(r)
        clock = time.perf_counter_ns
        for index, key in enumerate(rounds):
            call = calls[key]
            barrier.wait()
            deadline = clock() + int(seconds * 1e9)
            samples: list[int] = []

            async def worker(
                offset: int,
                call: Any = call,
                samples: list[int] = samples,
                deadline: int = deadline,
            ) -> None:
                i = offset
                while True:
                    t0 = clock()
                    if t0 >= deadline:
                        return
                    await call(requests[i & 1023])
                    samples.append(clock() - t0)
                    i += inflight

            await asyncio.gather(*(worker(k) for k in range(inflight)))
            out.put((index, samples))
        for channel in channels.values():
            await channel.close()

    asyncio.run(run())


def concurrent_load(
    sidecar_target: str,
    echo_target: str,
    procs: int,
    inflight: int,
    seconds: float,
    accounts: int,
    reps: int,
) -> dict[str, Stats]:
    rounds = [(sidecar_target, EVALUATE), (echo_target, ECHO_METHOD)] * reps
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out: Queue[tuple[int, list[int]]] = ctx.Queue()
    workers = [
        ctx.Process(
            target=load_client,
            args=(rounds, inflight, seconds, accounts, 500 + p, barrier, out),
            daemon=True,
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    by_round: dict[int, list[int]] = {i: [] for i in range(len(rounds))}
    try:
        for _ in range(procs * len(rounds)):
            index, samples = out.get(timeout=seconds + 180)
            by_round[index].extend(samples)
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    result: dict[str, Stats] = {}
    for name, parity in (("evaluate", 0), ("echo", 1)):
        runs = [by_round[i] for i in range(parity, len(rounds), 2)]
        rates = [len(s) / seconds for s in runs]
        p99s = [percentiles(s)["p99_us"] for s in runs]
        extra = {
            "p50_us": statistics.median(percentiles(s)["p50_us"] for s in runs),
            "p99_us": statistics.median(p99s),
            "clients": procs,
            "inflight_per_client": inflight,
        }
        result[f"serving.load.{name}"] = Stats.of(rates, "calls/s", **extra)
        result[f"serving.load.{name}_p99"] = Stats.of(p99s, "us")
    return result


# -- concurrent Consume -----------------------------------------------------------------------


def consume_client(
    target: str,
    clients: int,
    seconds: float,
    reps: int,
    accounts: int,
    out: Queue[list[float]],
) -> None:
    """`clients` channels, each calling Consume back to back; puts events/s per rep."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

    async def run() -> list[float]:
        channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
        stubs = [pb_grpc.UsageStub(c) for c in channels]
        serial = iter(range(10**9))

        async def one(stub: Any, c: int) -> None:
            k = next(serial)
            response = await stub.Consume(
                pb.ConsumeRequest(
                    account_id=catalogs.account_id((c * 7 + k) % accounts),
                    feature=catalogs.METERED_KEY,
                    amount=1,
                    idempotency_key=f"bench-cc-{k}",
                )
            )
            assert response.granted, response

        for c, stub in enumerate(stubs):  # connect and warm up
            await one(stub, c)
        rates = []
        for _ in range(reps):
            count = 0
            start = time.perf_counter()
            deadline = start + seconds

            async def client(stub: Any, c: int, deadline: float = deadline) -> None:
                nonlocal count
                while time.perf_counter() < deadline:
                    await one(stub, c)
                    count += 1

            await asyncio.gather(*(client(s, c) for c, s in enumerate(stubs)))
            rates.append(count / (time.perf_counter() - start))
        for c in channels:
            await c.close()
        return rates

    out.put(asyncio.run(run()))


def concurrent_consume(
    target: str, clients: int, seconds: float, reps: int, accounts: int
) -> Stats:
    ctx = mp.get_context("spawn")
    out: Queue[list[float]] = ctx.Queue()
    proc = ctx.Process(
        target=consume_client, args=(target, clients, seconds, reps, accounts, out), daemon=True
    )
    proc.start()
    try:
        rates = out.get(timeout=reps * seconds + 180)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return Stats.of(rates, "events/s", clients=clients)


# -- streams and idle connections -------------------------------------------------------------


def stream_holder(
    target: str,
    http_ports: list[int],
    watches: int,
    idle_http: int,
    reps: int,
    commands: Queue[str],
    out: Queue[tuple[str, float]],
) -> None:
    """Per rep: open `watches` Watch streams, as many flagd EventStreams and `idle_http` idle
    HTTP connections; report "open"; on "wait", report the monotonic time the last stream
    read its change; on "close", close everything."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
    from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
    from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc

    async def first(stream: Any, wanted: str, native: bool) -> float:
        while True:
            message = await stream.read()
            if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                raise RuntimeError(f"stream ended before {wanted}")
            kind = message.WhichOneof("event") if native else message.type
            if kind == wanted:
                return time.monotonic()

    async def command() -> str:
        return await asyncio.get_running_loop().run_in_executor(None, commands.get)

    async def run() -> None:
        for _ in range(reps):
            channels = [
                grpc.aio.insecure_channel(target) for _ in range(max(1, 2 * watches // PER_CHANNEL))
            ]
            natives, flagds = [], []
            for i in range(watches):
                natives.append(
                    pb_grpc.EvaluationStub(channels[i % len(channels)]).Watch(pb.WatchRequest())
                )
                stub = v2_grpc.ServiceStub(channels[(watches + i) % len(channels)])
                flagds.append(stub.EventStream(v2_pb.EventStreamRequest()))
            await asyncio.gather(*(first(w, "ready", True) for w in natives))
            await asyncio.gather(*(first(f, "provider_ready", False) for f in flagds))
            writers = []
            for start in range(0, idle_http, 200):
                opened = await asyncio.gather(
                    *(
                        asyncio.open_connection("127.0.0.1", http_ports[i % len(http_ports)])
                        for i in range(start, min(idle_http, start + 200))
                    )
                )
                writers += [w for _, w in opened]
            heard = [asyncio.ensure_future(first(w, "account_changed", True)) for w in natives]
            heard += [
                asyncio.ensure_future(first(f, "configuration_change", False)) for f in flagds
            ]
            out.put(("open", time.monotonic()))
            assert await command() == "wait"
            arrivals = await asyncio.wait_for(asyncio.gather(*heard), timeout=60)
            out.put(("heard", max(arrivals)))
            assert await command() == "close"
            for stream in (*natives, *flagds):
                stream.cancel()
            for w in writers:
                w.close()
            await asyncio.gather(*(c.close(None) for c in channels))
            out.put(("closed", time.monotonic()))

    asyncio.run(run())


def _sequential_p99(target: str, requests: list[bytes], calls: int) -> tuple[float, float]:
    """(p50, p99) in us of `calls` sequential raw Evaluate calls on a fresh channel."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EVALUATE, request_serializer=None, response_deserializer=None)
        for r in requests[:50]:
            call(r)
        clock = time.perf_counter_ns
        samples = []
        for i in range(calls):
            t0 = clock()
            call(requests[i & 1023])
            samples.append(clock() - t0)
    p = percentiles(samples)
    return p["p50_us"], p["p99_us"]


def streams(
    side: Any, watches: int, holders: int, calls: int, reps: int, accounts: int
) -> dict[str, Stats]:
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

    ports = [int(p) for p in re.findall(r"http://\S+:(\d+)", "".join(side.log))]
    ctx = mp.get_context("spawn")
    commands = [ctx.Queue() for _ in range(holders)]
    out: Queue[tuple[str, float]] = ctx.Queue()
    each = watches // holders
    procs = [
        ctx.Process(
            target=stream_holder,
            args=(side.target, ports, each, 2 * each, reps, commands[h], out),
            daemon=True,
        )
        for h in range(holders)
    ]
    requests = _requests(accounts, 9)
    idle, busy, events = [], [], []
    report = pb.ReportRequest(
        reports=[pb.UsageReport(account_id=catalogs.account_id(0), feature=catalogs.METERED_KEY)]
    )
    with grpc.insecure_channel(side.target) as channel:
        usage = pb_grpc.UsageStub(channel)
        started = False
        try:
            for _ in range(reps):
                time.sleep(SETTLE)  # the previous rep's thousands of closes are not "nothing"
                idle.append(_sequential_p99(side.target, requests, calls)[1])
                if not started:
                    for p in procs:
                        p.start()
                    started = True
                for _h in range(holders):
                    assert out.get(timeout=300)[0] == "open"
                busy.append(_sequential_p99(side.target, requests, calls)[1])
                for q in commands:
                    q.put("wait")
                changed = time.monotonic()
                usage.Report(report, timeout=10)
                heard = [out.get(timeout=120) for _h in range(holders)]
                events.append((max(t for _, t in heard) - changed) * 1000)
                for q in commands:
                    q.put("close")
                for _h in range(holders):
                    assert out.get(timeout=120)[0] == "closed"
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
    detail = {"watches": watches, "event_streams": watches, "idle_http": 2 * watches}
    return {
        "serving.streams.idle_p99": Stats.of(idle, "us", calls_per_rep=calls),
        "serving.streams.open_p99": Stats.of(busy, "us", calls_per_rep=calls, **detail),
        "serving.streams.event": Stats.of(events, "ms", holders=holders, **detail),
    }


# -- main -------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited by the sidecar
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * args.watches + 4096)), hard)
    )
    measures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="plangate-bench-serving-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        catalogs.seed_store(db, [catalogs.pro_record(i) for i in range(args.accounts)])
        with sidecar(catalog, db) as side, echo_server() as echo:
            load = concurrent_load(
                side.target,
                echo.target,
                args.procs,
                args.inflight,
                args.seconds,
                args.accounts,
                args.reps,
            )
            consume = concurrent_consume(side.target, 16, args.seconds, args.reps, args.accounts)
            held = streams(
                side, args.watches, args.holders, args.calls, args.stream_reps, args.accounts
            )
    for name, stats in {**load, "serving.consume.concurrent": consume, **held}.items():
        measures[name] = stats.as_json()
    return {
        "measures": measures,
        "settings": {k: v for k, v in vars(args).items() if k != "quick"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    quick = args.quick
    args.reps = args.reps or (1 if quick else 5)
    args.procs = 1 if quick else 2
    args.inflight = 4 if quick else 8
    args.seconds = 0.5 if quick else 2.0
    args.accounts = 100
    args.watches = 50 if quick else 1000
    args.holders = 1 if quick else 2
    args.calls = 100 if quick else 1000
    args.stream_reps = 1 if quick else 3
    emit(measure(args))


if __name__ == "__main__":
    main()
