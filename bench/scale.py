"""Scale: evaluation latency and memory with N accounts in the snapshot.

For one N, in a process of its own (so sizes never share a heap):
1. a child process seeds a SQLite store with N account records in the admin API's shape
   (see catalogs.account_records: a realistic mix of plans and add-on quantities, one
   subscription each, its own id and start instant);
2. this process imports everything, loads the catalog and opens the store, then reads
   its RSS (the baseline);
3. it builds the sidecar's live state exactly as `plangate serve` does at start-up
   (`LiveState(catalog, store)`: read every record, validate it, build the snapshot) and
   reads RSS again after a full collection. (RSS - baseline) / N is the memory an account
   costs the sidecar, everything it keeps for it included;
4. it times `Decisions.evaluate` (what every RPC calls) on accounts drawn at random
   from all N, so at 1M the lookups walk memory that does not fit any CPU cache. With
   `--compare M` it also loads a second, M-account state (after the RSS reading) and
   times it interleaved with the first, so the large/small latency ratio comes from one
   process at one time rather than two runs on a drifting machine.
5. it does the same through the `Evaluate` RPC (the sidecar's servicer on a gRPC server
   configured like the sidecar's), which is the latency an application sees.

It also reports how many distinct entitlement mappings the `PlanResolver` computed: with
accounts sharing plan + add-on combinations, that is the number of combinations, not N.

Run: `python bench/scale.py --accounts 1000000 --compare 1000` prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import catalogs
from harness import Case, emit, interleaved, settled_rss


def seed(db: Path, accounts: int) -> None:
    catalogs.seed_store(db, catalogs.account_records(accounts))


def _rpc_case(name: str, live: Any, population: int, calls: int) -> tuple[Case, Any]:
    """A `Case` calling Evaluate (boolean feature, random accounts) on a gRPC server set up
    like the sidecar's (same servicer, grpc.aio on a loop thread, same options) over `live`."""
    import grpc
    from plangate.protocol.plangate.v1 import plangate_pb2 as pb
    from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
    from plangate.sidecar.runtime.serve.decisions import Decisions
    from plangate.sidecar.server.app import GRPC_OPTIONS
    from plangate.sidecar.server.evaluation import EvaluationService
    from plangate.sidecar.server.loop import LoopThread
    from plangate.sidecar.server.metrics import Metrics
    from plangate.sidecar.server.wire import RefuseUndecodable

    loop = LoopThread("bench-loop")

    async def open_server() -> tuple[Any, int]:
        # served as the sidecar serves it: its wire layer sends answers already encoded as-is
        server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[RefuseUndecodable()])
        servicer = EvaluationService(Decisions(live), live.events, Metrics())
        pb_grpc.add_EvaluationServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(open_server())
    stub = pb_grpc.EvaluationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    rng = random.Random(3)
    requests = [
        pb.EvaluateRequest(
            account_id=catalogs.account_id(rng.randrange(population)),
            feature=catalogs.BOOLEAN_KEY,
            type=pb.VALUE_TYPE_BOOLEAN,
        )
        for _ in range(calls * 4)
    ]
    it = itertools.cycle(requests)
    evaluate = stub.Evaluate

    class Stopper:
        def stop(self, grace: float | None) -> None:
            loop.run(server.stop(grace))
            loop.close()

    return Case(name, lambda: evaluate(next(it)), calls, per_call=True), Stopper()


def measure(
    catalog_path: Path,
    db: Path,
    accounts: int,
    reps: int,
    calls: int,
    compare: Path | None,
    rpc_calls: int = 0,
) -> dict[str, Any]:
    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.runtime.live.state import LiveState
    from plangate.sidecar.runtime.serve.decisions import Decisions
    from plangate.sidecar.store.sqlite import SqliteStore

    catalog = load_catalog(catalog_path)
    store = SqliteStore(db)
    baseline = settled_rss()
    start = time.perf_counter()
    state = LiveState(catalog, store)
    load_seconds = time.perf_counter() - start
    after = settled_rss()
    if len(state.snapshot.accounts) != accounts:
        raise RuntimeError(f"expected {accounts} accounts, loaded {len(state.snapshot.accounts)}")

    def cycler(live: LiveState, population: int, feature: str, seed: int) -> Any:
        rng = random.Random(seed)
        ids = [catalogs.account_id(rng.randrange(population)) for _ in range(calls)]
        it = itertools.cycle(ids)
        evaluate = Decisions(live).evaluate
        return lambda: evaluate(next(it), feature, {})

    per_rep = calls // 2
    cases = [
        Case("boolean", cycler(state, accounts, catalogs.BOOLEAN_KEY, 1), per_rep, warmup=calls),
        Case("metered", cycler(state, accounts, catalogs.METERED_KEY, 2), per_rep, warmup=calls),
    ]
    small = None
    if compare is not None:
        # The same evaluations on a small snapshot, interleaved in this process, so the
        # large/small latency ratio is not disturbed by the machine drifting between runs.
        small = LiveState(catalog, SqliteStore(compare))
        population = len(small.snapshot.accounts)
        cases += [
            Case("small_boolean", cycler(small, population, catalogs.BOOLEAN_KEY, 1), per_rep),
            Case("small_metered", cycler(small, population, catalogs.METERED_KEY, 2), per_rep),
        ]
    servers: list[Any] = []
    if rpc_calls:
        # The same lookup as users make it: an Evaluate RPC answered by the sidecar's own
        # servicer over each state (in this process; client and server share it equally).
        targets = [("rpc", state, accounts)]
        if small is not None:
            targets.append(("small_rpc", small, len(small.snapshot.accounts)))
        for name, live, population in targets:
            case, server = _rpc_case(name, live, population, rpc_calls)
            cases.append(case)
            servers.append(server)
    stats = interleaved(cases, reps)
    for server in servers:
        server.stop(None)
    resolver = getattr(state.snapshot.plans, "_cache", None)
    out: dict[str, Any] = {
        "accounts": accounts,
        "rss_baseline_bytes": baseline,
        "rss_bytes": after,
        "bytes_per_account": (after - baseline) / accounts,
        "load_seconds": round(load_seconds, 3),
        "eval_boolean": stats["boolean"].as_json(),
        "eval_metered": stats["metered"].as_json(),
        **({"rpc_boolean": stats["rpc"].as_json()} if "rpc" in stats else {}),
        "resolver_entries": len(resolver) if resolver is not None else None,
    }
    if small is not None:
        out["compare"] = {
            "accounts": len(small.snapshot.accounts),
            "eval_boolean": stats["small_boolean"].as_json(),
            "eval_metered": stats["small_metered"].as_json(),
            **({"rpc_boolean": stats["small_rpc"].as_json()} if "small_rpc" in stats else {}),
        }
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, required=True)
    parser.add_argument("--compare", type=int, default=0, help="also time a snapshot this small")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50_000, help="evaluations per rep x2")
    parser.add_argument("--rpc-calls", type=int, default=1000, help="Evaluate RPCs per rep")
    parser.add_argument("--seed-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_into is not None:  # the child that writes the store
        seed(args.seed_into, args.accounts)
        return
    with tempfile.TemporaryDirectory(prefix="plangate-bench-scale-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db, small = d / "state.db", d / "small.db"
        started = time.perf_counter()
        for path, count in ((db, args.accounts), (small, args.compare)):
            if count:
                subprocess.run(
                    [sys.executable, __file__, "--accounts", str(count), "--seed-into", str(path)],
                    check=True,
                )
        seeded = time.perf_counter() - started
        result = measure(
            catalog,
            db,
            args.accounts,
            args.reps,
            args.calls,
            small if args.compare else None,
            args.rpc_calls,
        )
        result["seed_seconds"] = round(seeded, 3)
    emit(result)


if __name__ == "__main__":
    main()
