"""Client-side measures against one sidecar process, with their floors in the same process.

Rows produced (microseconds per call unless noted):
- `floor.inmemory`: OpenFeature client + the SDK's `InMemoryProvider` (a static flag).
  The least any OpenFeature evaluation costs: the SDK's own work (hooks, context merge,
  details objects) with a dict lookup for a provider.
- `floor.inmemory.track`: `client.track` on that client: the SDK's own share of a `track`
  (context merge, provider look-up; the provider's `track` does nothing).
- `provider.track`, `provider.track.journal`: `client.track` through `PlanGateProvider`
  without and with `track_journal` (amortised: the sender thread's work shares the GIL).
- `floor.grpc_echo`: a raw unary call to `echo_server.py`, carrying the bytes of the
  EvaluateRequest the uncached row sends. The least any RPC-based evaluation costs.
- `provider.cached.{boolean,integer,metered}`: `client.get_*_value` through
  `PlanGateProvider` with its cache on, answered from the cached `EvaluateAll`.
- `provider.uncached.boolean`: the same boolean lookup with the cache off (one Evaluate
  RPC per call, sidecar evaluates from memory).
- `rpc.evaluate`: the native `Evaluate` RPC called directly (no OpenFeature layer).
- `server_cpu.{grpc_echo,evaluate}`: CPU µs the serving process spends per call (echo server;
  sidecar `Evaluate`), interleaved: the per-RPC cost without the machine's wall-clock noise.
- `rpc.evaluate_all`: `EvaluateAll` for a Pro account of a 50-feature catalog.
- `usage.report`: events/s through `Report`, batches of `--batch` reports with idempotency
  keys, acknowledged only once durable (SQLite WAL, synchronous=FULL).
- `usage.consume`: events/s of sequential `Consume` calls (each an atomic, durable
  check-and-record).

Floors and the rows held against them run interleaved (see harness.interleaved).
Run alone: `python bench/client.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import catalogs
import grpc
from echo_server import METHOD, echo_server
from harness import Case, Stats, emit, interleaved, server_cpu_per_call, sidecar
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

ACCOUNTS = 100  # Pro accounts in the store; the single-account rows use the first


def _floor_client() -> Any:
    flags = {catalogs.BOOLEAN_KEY: InMemoryFlag("on", {"on": True, "off": False})}
    api.set_provider_and_wait(InMemoryProvider(flags), domain="floor")
    return api.get_client("floor")


def _provider_client(target: str, cache: bool, journal: Path | None = None) -> tuple[Any, Any]:
    """An OpenFeature client on a PlanGateProvider; raises if the provider cannot be used."""
    from plangate.provider import PlanGateProvider

    domain = "journaled" if journal else "cached" if cache else "uncached"
    provider = PlanGateProvider(
        target=target,
        cache=cache,
        deadline_ms=5000,
        track_journal=str(journal) if journal else None,
    )
    api.set_provider_and_wait(provider, domain=domain)
    return api.get_client(domain), provider


def _throughput(batches: int, run_batch: Callable[[], int], reps: int) -> Stats:
    """events/s over `batches` calls of `run_batch` (which returns events handled), per rep."""
    run_batch()  # warm-up: first transaction, prepared statements, channel
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        events = sum(run_batch() for _ in range(batches))
        rates.append(events / (time.perf_counter() - start))
    return Stats.of(rates, "events/s")


def measure(quick: bool, reps: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"measures": {}, "errors": {}, "settings": {}}
    n_mem, n_rpc, n_all = (1000, 100, 10) if quick else (20000, 2000, 200)
    with tempfile.TemporaryDirectory(prefix="plangate-bench-") as tmp:
        d = Path(tmp)
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        catalogs.seed_store(db, [catalogs.pro_record(i) for i in range(ACCOUNTS)])
        account = catalogs.account_id(0)
        ctx = EvaluationContext(account)
        with sidecar(catalog, db) as side, echo_server() as echo:
            channel = grpc.insecure_channel(side.target)
            evaluation = pb_grpc.EvaluationStub(channel)
            usage = pb_grpc.UsageStub(channel)
            echo_channel = grpc.insecure_channel(echo.target)
            echo_call = echo_channel.unary_unary(  # raw bytes in and out
                METHOD, request_serializer=None, response_deserializer=None
            )
            one = pb.EvaluateRequest(
                account_id=account, feature=catalogs.BOOLEAN_KEY, type=pb.VALUE_TYPE_BOOLEAN
            )
            one_bytes = one.SerializeToString()
            all_req = pb.EvaluateAllRequest(account_id=account)
            assert evaluation.Evaluate(one).as_boolean is True, "Pro account must have sso"
            assert len(evaluation.EvaluateAll(all_req).resolutions) == 50

            floor = _floor_client()
            cases = [
                Case("floor.inmemory", lambda: floor.get_boolean_value("sso", False, ctx), n_mem),
                Case("floor.grpc_echo", lambda: echo_call(one_bytes), n_rpc, per_call=True),
                Case("rpc.evaluate", lambda: evaluation.Evaluate(one), n_rpc, per_call=True),
                Case(
                    "rpc.evaluate_all",
                    lambda: evaluation.EvaluateAll(all_req),
                    n_all,
                    per_call=True,
                ),
            ]
            providers: list[Any] = []
            try:
                cached, p1 = _provider_client(side.target, cache=True)
                uncached, p2 = _provider_client(side.target, cache=False)
                journaled, p3 = _provider_client(side.target, True, d / "usage.journal")
                providers += [p1, p2, p3]
                assert cached.get_boolean_value("sso", False, ctx) is True
                assert uncached.get_boolean_value("sso", False, ctx) is True
                b, i, m = catalogs.BOOLEAN_KEY, catalogs.INTEGER_KEY, catalogs.METERED_KEY
                cases += [
                    Case(
                        "provider.cached.boolean",
                        lambda: cached.get_boolean_value(b, False, ctx),
                        n_mem,
                    ),
                    Case(
                        "provider.cached.integer",
                        lambda: cached.get_integer_value(i, 0, ctx),
                        n_mem,
                    ),
                    Case(
                        "provider.cached.metered",
                        lambda: cached.get_boolean_value(m, False, ctx),
                        n_mem,
                    ),
                    # `track` returns once the report is queued (and, journaled, written to
                    # the file; fsync batched every 10 ms): amortised cost per call, design §21
                    Case("floor.inmemory.track", lambda: floor.track(m, ctx), n_mem),
                    Case("provider.track", lambda: cached.track(m, ctx), n_mem),
                    Case("provider.track.journal", lambda: journaled.track(m, ctx), n_mem),
                    Case(
                        "provider.uncached.boolean",
                        lambda: uncached.get_boolean_value(b, False, ctx),
                        n_rpc,
                        per_call=True,
                    ),
                ]
            except Exception as exc:  # the provider is optional for the rest of the run
                out["errors"]["provider"] = "".join(traceback.format_exception_only(exc)).strip()
            for name, stats in interleaved(cases, reps).items():
                out["measures"][name] = stats.as_json()
            for provider in providers:  # their Watch streams would see every usage write
                provider.shutdown()

            # The servers' own CPU per call: wall times on a shared box move with its other
            # load, CPU seconds of the serving process much less (bench/README, 12-08 run).
            assert side.proc.pid and echo.proc.pid
            cpu = server_cpu_per_call(
                {
                    "server_cpu.grpc_echo": (echo.proc.pid, lambda: echo_call(one_bytes)),
                    "server_cpu.evaluate": (side.proc.pid, lambda: evaluation.Evaluate(one)),
                },
                n_rpc,
                reps,
            )
            for name, stats in cpu.items():
                out["measures"][name] = stats.as_json()

            counter = itertools.count()

            def report_batch() -> int:
                base = next(counter) * batch
                reports = [
                    pb.UsageReport(
                        account_id=catalogs.account_id((base + k) % ACCOUNTS),
                        feature=catalogs.METERED_KEY,
                        amount=1,
                        idempotency_key=f"bench-report-{base + k}",
                    )
                    for k in range(batch)
                ]
                results = usage.Report(pb.ReportRequest(reports=reports)).results
                assert all(r.status == pb.ReportResult.STATUS_APPLIED for r in results)
                return len(results)

            consumed = itertools.count()

            def consume_one() -> int:
                k = next(consumed)
                response = usage.Consume(
                    pb.ConsumeRequest(
                        account_id=catalogs.account_id(k % ACCOUNTS),
                        feature=catalogs.METERED_KEY,
                        amount=1,
                        idempotency_key=f"bench-consume-{k}",
                    )
                )
                assert response.granted
                return 1

            # Report batches are built inside the timed loop: a client has to build them too.
            out["measures"]["usage.report"] = _throughput(
                1 if quick else 10, report_batch, reps
            ).as_json()
            out["measures"]["usage.consume"] = _throughput(
                10 if quick else 300, consume_one, reps
            ).as_json()
            echo_channel.close()
            channel.close()
    out["settings"] = {
        "reps": reps,
        "report_batch": batch,
        "accounts": ACCOUNTS,
        "catalog_features": 50,
        "calls_per_rep": {"in_memory": n_mem, "rpc": n_rpc, "evaluate_all": n_all},
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1000, help="reports per Report call")
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 7)
    emit(measure(args.quick, reps, args.batch))


if __name__ == "__main__":
    main()
