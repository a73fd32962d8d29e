"""OFREP event streams (OFREP ADR-0008, decision 1311): what idle SSE streams cost the
serving core, and how soon a change reaches a stream, each next to its floor or bound.

One `plangate serve` process; the idle streams are held by a separate, spawned process so its
CPU is never counted on the server's side. Rows produced:

- `ofrep_sse.idle_p99` / `ofrep_sse.open_p99`: p99 of sequential `Evaluate` calls with
  nothing open (before and after), then with `--sse` idle OFREP SSE streams held by another
  process (two samples); medians. Target: open within 2x of idle (design §2.1: an idle
  stream costs no thread).
- `ofrep_sse.refetch`: ms from sending a `Report` on an account (its durable commit
  included) to `refetchEvaluation` on that account's SSE stream, read by this process, with
  the `--sse` idle streams of other accounts open; one sample every 1.3 s (longer than the
  stream's 1 s coalescing, so each sample times the first change of a quiet stream). Value:
  the max of the samples; the extra fields give the same from the Report's answer (the event
  often arrives before it). Target: 200 ms.

Run: `python bench/ofrep_sse.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import re
import resource
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import catalogs
from harness import Stats, emit, percentiles, sidecar


def sse_holder(
    base: str, connections: int, accounts: int, commands: Queue[str], out: Queue[str]
) -> None:
    """Open `connections` OFREP SSE streams (the URL each bulk answer names, accounts in
    turn) and leave them idle; report "open", close on "close"."""
    import aiohttp

    async def run() -> None:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        ) as session:
            urls = []
            for i in range(min(connections, accounts)):
                body = {"context": {"targetingKey": catalogs.account_id(i)}}
                async with session.post(f"{base}/ofrep/v1/evaluate/flags", json=body) as r:
                    urls.append((await r.json())["eventStreams"][0]["url"])
            responses = []
            for i in range(connections):
                response = await session.get(urls[i % len(urls)])
                await response.content.readline()  # ": ready"
                responses.append(response)
            out.put("open")
            await asyncio.get_running_loop().run_in_executor(None, commands.get)
            for response in responses:
                response.close()
        out.put("closed")

    asyncio.run(run())


def _sequential_p99(target: str, accounts: int, calls: int) -> float:
    """p99 in us of `calls` sequential raw Evaluate calls on a fresh channel."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb

    rng = random.Random(9)
    requests = [
        pb.EvaluateRequest(
            account_id=catalogs.account_id(rng.randrange(accounts)), feature=catalogs.BOOLEAN_KEY
        ).SerializeToString()
        for _ in range(1024)
    ]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/plangate.v1.Evaluation/Evaluate", request_serializer=None, response_deserializer=None
        )
        for r in requests[:50]:
            call(r)
        samples = []
        for i in range(calls):
            t0 = time.perf_counter_ns()
            call(requests[i & 1023])
            samples.append(time.perf_counter_ns() - t0)
    return percentiles(samples)["p99_us"]


def sse_idle(
    side: Any, args: argparse.Namespace
) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Evaluate p99s in us with nothing open (before and after) and with `args.sse` idle SSE
    streams open (twice: on a shared machine one sample of each is mostly noise), then, with
    them still open, the refetch samples of one more account (ms)."""
    found = re.search(r"OFREP http://\S+:(\d+)", "".join(side.log))
    assert found is not None, "the sidecar did not say its OFREP port"
    base = f"http://127.0.0.1:{found.group(1)}"
    connections, accounts, calls = args.sse, args.accounts, args.calls
    idle = [_sequential_p99(side.target, accounts, calls)]
    ctx = mp.get_context("spawn")
    commands: Queue[str] = ctx.Queue()
    out: Queue[str] = ctx.Queue()
    holder = ctx.Process(
        target=sse_holder, args=(base, connections, accounts, commands, out), daemon=True
    )
    holder.start()
    try:
        assert out.get(timeout=300) == "open"
        time.sleep(1.0)
        busy = [_sequential_p99(side.target, accounts, calls) for _ in range(2)]
        probe = catalogs.account_id(accounts)  # no idle stream names it
        refetch = asyncio.run(_refetch_samples(side.target, base, probe, args.samples, args.every))
        commands.put("close")
        assert out.get(timeout=120) == "closed"
    finally:
        holder.join(10)
        if holder.is_alive():
            holder.kill()
    time.sleep(1.0)
    idle.append(_sequential_p99(side.target, accounts, calls))
    return idle, busy, refetch


async def _refetch_samples(
    target: str, base: str, account: str, count: int, every: float
) -> list[float]:
    """(ms from each Report's answer, ms from sending it) to the `refetchEvaluation` it causes
    on `account`'s stream; a change not heard within 5 s counts 5,000 ms."""
    import aiohttp
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

    report = pb.UsageReport(account_id=account, feature=catalogs.METERED_KEY, amount=1)
    samples: list[tuple[float, float]] = []
    async with (
        grpc.aio.insecure_channel(target) as channel,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
    ):
        usage = pb_grpc.UsageStub(channel)
        body = {"context": {"targetingKey": account}}
        async with session.post(f"{base}/ofrep/v1/evaluate/flags", json=body) as r:
            url = (await r.json())["eventStreams"][0]["url"]
        async with session.get(url) as stream:
            await stream.content.readline()  # ": ready"

            async def refetch() -> float:
                while True:
                    line = await stream.content.readline()
                    assert line, "the stream ended"
                    if line.startswith(b"data:"):
                        assert json.loads(line[5:])["type"] == "refetchEvaluation"
                        return time.monotonic()

            for _ in range(count):
                await asyncio.sleep(every)
                heard = asyncio.ensure_future(refetch())
                sent = time.monotonic()
                await usage.Report(pb.ReportRequest(reports=[report]), timeout=10)
                acked = time.monotonic()  # the change exists from its (durable) commit
                try:
                    at = await asyncio.wait_for(heard, 5.0)
                except TimeoutError:
                    at = acked + 5.0
                samples.append((max(0.0, at - acked) * 1000, (at - sent) * 1000))
    return samples


def measure(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited by the sidecar
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.sse + 4096)), hard))
    with tempfile.TemporaryDirectory(prefix="plangate-bench-ofrep-sse-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        catalogs.seed_store(db, [catalogs.pro_record(i) for i in range(args.accounts + 1)])
        with sidecar(catalog, db) as side:
            idle, busy, refetch = sse_idle(side, args)
    return {
        "measures": {
            "ofrep_sse.idle_p99": Stats.of(idle, "us", calls=args.calls).as_json(),
            "ofrep_sse.open_p99": Stats.of(
                busy, "us", calls=args.calls, sse_connections=args.sse
            ).as_json(),
            "ofrep_sse.refetch": Stats.of(
                [max(s for _, s in refetch)],
                "ms",
                samples=len(refetch),
                median_ms=statistics.median(s for _, s in refetch),
                from_answer_median_ms=statistics.median(a for a, _ in refetch),
                from_answer_max_ms=max(a for a, _ in refetch),
                sse_connections=args.sse,
            ).as_json(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "quick"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)  # one run by design; accepted for run.py
    parser.add_argument("--sse", type=int, default=None, help="idle SSE streams (default 1000)")
    args = parser.parse_args()
    args.sse = args.sse or (50 if args.quick else 1000)
    args.accounts = 100 if args.quick else 1000
    args.calls = 200 if args.quick else 2000
    args.samples = 3 if args.quick else 20
    args.every = (
        1.3  # s: past the stream's 1 s coalescing, so each change is a quiet stream's first
    )
    emit(measure(args))


if __name__ == "__main__":
    main()
