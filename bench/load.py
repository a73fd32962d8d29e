"""Sustained concurrent load: several client processes evaluating against one sidecar.

`--clients` processes (multiprocessing, spawned so none inherits gRPC state) each open their
own channel and call the native `Evaluate` RPC back to back for `--seconds`, on accounts
drawn at random from `--accounts` stored accounts and cycling through a boolean, an integer
and a metered feature. Every call is timed; the run reports the aggregate throughput and
the p50/p99 latency over all calls of all clients. It is repeated `--reps` times against
the same sidecar and the median of each figure is reported.

The clients share the machine with the sidecar (a 2-core box runs 4 clients + 1 sidecar),
so this measures a loaded sidecar, not an idle one: the per-call latency here is
expected to be well above the single-client rows.

Run: `python bench/load.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import catalogs
from harness import emit, percentiles, sidecar

FEATURES = (catalogs.BOOLEAN_KEY, catalogs.INTEGER_KEY, catalogs.METERED_KEY)


def client(
    target: str,
    accounts: int,
    seconds: float,
    reps: int,
    seed: int,
    start: Barrier,
    results: Queue[tuple[int, list[int]]],
) -> None:
    """One client process: for each rep, after every client is ready, call for `seconds` and
    put (rep, latency of every call in ns) on `results`."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

    rng = random.Random(seed)
    requests = [
        pb.EvaluateRequest(
            account_id=catalogs.account_id(rng.randrange(accounts)), feature=FEATURES[i % 3]
        )
        for i in range(4096)
    ]
    clock = time.perf_counter_ns
    with grpc.insecure_channel(target) as channel:
        evaluate = pb_grpc.EvaluationStub(channel).Evaluate
        for request in requests[:50]:  # connect and warm up before the clock starts
            evaluate(request)
        for rep in range(reps):
            start.wait()
            samples: list[int] = []
            deadline = clock() + int(seconds * 1e9)
            i = 0
            while True:
                t0 = clock()
                if t0 >= deadline:
                    break
                evaluate(requests[i & 4095])
                samples.append(clock() - t0)
                i += 1
            results.put((rep, samples))


def run_clients(
    target: str, clients: int, accounts: int, seconds: float, reps: int
) -> list[dict[str, Any]]:
    """Spawn the clients once and run `reps` synchronised rounds; one summary per round."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients)
    results: Queue[tuple[int, list[int]]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=client,
            args=(target, accounts, seconds, reps, 1000 + c, barrier, results),
            daemon=True,
        )
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    by_rep: dict[int, list[int]] = {r: [] for r in range(reps)}
    try:
        for _ in range(clients * reps):
            rep, samples = results.get(timeout=seconds + 120)
            by_rep[rep].extend(samples)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    return [
        {"throughput": len(samples) / seconds, **percentiles(samples)}
        for samples in by_rep.values()
    ]


def measure(clients: int, accounts: int, seconds: float, reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="plangate-bench-load-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        catalogs.seed_store(db, catalogs.account_records(accounts))
        with sidecar(catalog, db) as side:
            runs = run_clients(side.target, clients, accounts, seconds, reps)
    throughput = [r["throughput"] for r in runs]
    return {
        "measures": {
            "load.evaluate": {
                "value": round(statistics.median(throughput), 1),
                "unit": "evals/s",
                "reps": [round(t, 1) for t in throughput],
                "min": round(min(throughput), 1),
                "max": round(max(throughput), 1),
                "extra": {
                    "p50_us": statistics.median(r["p50_us"] for r in runs),
                    "p99_us": statistics.median(r["p99_us"] for r in runs),
                    "clients": clients,
                },
            }
        },
        "settings": {
            "clients": clients,
            "accounts": accounts,
            "seconds_per_run": seconds,
            "reps": reps,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    emit(
        measure(
            args.clients or (2 if args.quick else 4),
            args.accounts or (100 if args.quick else 10_000),
            args.seconds or (1.0 if args.quick else 5.0),
            args.reps or (1 if args.quick else 3),
        )
    )


if __name__ == "__main__":
    main()
