"""Shared mode: usage-write throughput with one and two sidecars on one PostgreSQL database.

What it measures: events per second through the native gRPC API, from 16 concurrent clients
(2 client processes x 8 threads, one channel per thread), for

- `Report` with one event per call, to one **hot** account (every call updates the same
  counter row, the worst case for row locks) and **spread** over 200 accounts;
- `Report` with 50 events per call (what the provider's batching sends), hot account;
- `Consume` on a hot account (check-and-record: exact, so inherently one at a time per counter).

each with one sidecar, then with two sidecars sharing the database (clients split evenly).
Sidecars run as `plangate serve` processes, as in production.

A second table takes gRPC, evaluation and quota checks out of the picture: 16 threads call
`PostgresStore.record_usage` directly (one event per call) in one process, or split over two
processes (two sidecars' stores), each call as its own transaction or through the sidecar's
group commit (`runtime.group_commit`). That is where row locks on a hot counter would show.

Per row: events/s, calls/s, the per-call p50/p99 latency seen by the clients, and how many
write transactions the database committed per second (transaction ids assigned): fewer
transactions than calls is the group commit at work.

The database is a throwaway cluster (the tests' `support.postgres`, default durability:
fsync on, synchronous_commit on) unless `--db postgresql://...` names one.

Run: `python bench/shared_mode.py [--seconds 5] [--db URL]` (about two minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from plangate.protocol.plangate.v1 import plangate_pb2 as pb  # noqa: E402
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc  # noqa: E402
from plangate.sidecar.catalog import load_catalog  # noqa: E402
from plangate.sidecar.engine.usage import UsageReport  # noqa: E402
from plangate.sidecar.runtime.writes.group_commit import GroupCommit  # noqa: E402
from plangate.sidecar.store.base import UsageOutcome, UsageWrite  # noqa: E402
from plangate.sidecar.store.postgres import PostgresStore  # noqa: E402
from support.postgres import PostgresCluster, find_bindir, missing_reason  # noqa: E402
from support.sidecar import EXAMPLE_CATALOG, SubprocessSidecar, copy_catalog  # noqa: E402

CLIENTS = 16
SPREAD_ACCOUNTS = 200
HOT = "acct_hot"
PERIOD = datetime(2026, 1, 1, tzinfo=UTC)

SCENARIOS = [
    # (name, mode, events per call, accounts)
    ("Report, hot account", "report", 1, 1),
    ("Report, spread (200 accounts)", "report", 1, SPREAD_ACCOUNTS),
    ("Report x50 per call, hot account", "report", 50, 1),
    ("Consume, hot account", "consume", 1, 1),
]

STORE_SCENARIOS = [
    # (name, mode, accounts)
    ("hot account, one transaction per call", "store", 1),
    ("hot account, group commit", "grouped", 1),
    ("spread (200 accounts), one transaction per call", "store", SPREAD_ACCOUNTS),
    ("spread (200 accounts), group commit", "grouped", SPREAD_ACCOUNTS),
]


# -- load worker (a separate process: `--worker`) ---------------------------------------------------


def caller(args: argparse.Namespace) -> Callable[[int, str], Callable[[], None]]:
    """For thread n and an account: a function making one call of the worker's mode."""
    if args.mode in ("report", "consume"):
        targets = args.targets.split(",")

        def grpc_call(n: int, account: str) -> Callable[[], None]:
            usage = pb_grpc.UsageStub(grpc.insecure_channel(targets[n % len(targets)]))
            if args.mode == "consume":
                request = pb.ConsumeRequest(account_id=account, feature="api-calls")
                return lambda: usage.Consume(request, timeout=30)
            one = pb.UsageReport(account_id=account, feature="api-calls", amount=1)
            batch = pb.ReportRequest(reports=[one] * args.batch)
            return lambda: usage.Report(batch, timeout=30)

        return grpc_call

    # the store path alone: what LiveState hands the store, without gRPC or evaluation
    store = PostgresStore(args.db, args.environment)
    feature = load_catalog(EXAMPLE_CATALOG).features["api-calls"]
    grouped = GroupCommit[UsageWrite, UsageOutcome](store.record_usage)
    write = grouped.submit if args.mode == "grouped" else store.record_usage

    def store_call(n: int, account: str) -> Callable[[], None]:
        w = UsageWrite(f"acct:{account}", feature, PERIOD, UsageReport(account, "api-calls"))
        return lambda: write([w]) and None

    return store_call


def worker(args: argparse.Namespace) -> None:
    """Run `--threads` clients until `--until`; print the events and per-call latencies of
    the calls made between `--start` and `--until` (wall-clock instants shared by workers)."""
    accounts = [HOT] if args.accounts == 1 else [f"acct_{i}" for i in range(args.accounts)]
    make = caller(args)
    counts: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        calls = [make(n, accounts[(n + 7 * i) % len(accounts)]) for i in range(len(accounts))]
        mine, samples, i = 0, [], 0
        while True:
            t0 = time.time()
            if t0 >= args.until:
                break
            calls[i % len(calls)]()
            i += 1
            t1 = time.time()
            if t0 >= args.start and t1 <= args.until:
                mine += args.batch
                samples.append((t1 - t0) * 1000)
        with lock:
            counts.append(mine)
            latencies.extend(samples)

    first = args.index * args.threads
    threads = [threading.Thread(target=client, args=(first + n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"events": sum(counts), "latencies": latencies}))


# -- orchestration -----------------------------------------------------------------------------------


def next_xid(cluster_url: str) -> int:
    """The next transaction id PostgreSQL will assign. Only transactions that write take one,
    so the difference over a window counts the store's write transactions exactly (reads,
    the feed's pings and this query itself take none)."""
    import psycopg

    with psycopg.connect(cluster_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        return int(row[0]) if row else 0


def setup_accounts(target: str) -> None:
    channel = grpc.insecure_channel(target)
    admin = pb_grpc.AdminStub(channel)
    for account in [HOT, *(f"acct_{i}" for i in range(SPREAD_ACCOUNTS))]:
        admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=10)
        admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=account, plan="enterprise"), timeout=10
        )  # enterprise: api-calls unlimited, so no call is refused
    channel.close()


def measure(url: str, seconds: float, processes: int, **worker_args: Any) -> dict[str, Any]:
    """Start `processes` workers splitting CLIENTS threads, measure `seconds` after a warm-up."""
    warmup = 1.5
    start = time.time() + 2.5 + warmup  # time for the workers to start, then a warm-up
    until = start + seconds
    cmd = [sys.executable, __file__, "--worker", "--threads", str(CLIENTS // processes)]
    cmd += ["--start", repr(start), "--until", repr(until)]
    for name, value in worker_args.items():
        cmd += [f"--{name}", str(value)]
    procs = [
        subprocess.Popen([*cmd, "--index", str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(processes)
    ]
    time.sleep(max(0.0, start - time.time()))
    before = next_xid(url)
    time.sleep(max(0.0, until - time.time()))
    after = next_xid(url)
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    events = sum(r["events"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    calls = len(latencies)
    return {
        "events_per_s": events / seconds,
        "calls_per_s": calls / seconds,
        "txns_per_s": (after - before) / seconds,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[int(0.99 * (calls - 1))] if latencies else float("nan"),
    }


def machine(url: str) -> str:
    import psycopg

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"PostgreSQL {version[0] if version else '?'} (fsync={fsync[0] if fsync else '?'}, "
        f"synchronous_commit={sync[0] if sync else '?'}) on the same machine; "
        f"load average before the run {load}"
    )


def row(label: str, name: str, r: dict[str, Any]) -> str:
    return (
        f"{label:>8}  {name:<50}{r['events_per_s']:>9.0f}{r['calls_per_s']:>9.0f}"
        f"{r['txns_per_s']:>8.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
    )


def header(label: str) -> str:
    text = (
        f"{label:>8}  {'workload':<50}{'events/s':>9}{'calls/s':>9}"
        f"{'txns/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    )
    return f"{text}\n{'-' * len(text)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--db", help="an existing PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("targets", "mode", "environment"):
        parser.add_argument(f"--{name}", default="", help=argparse.SUPPRESS)
    for name in ("batch", "accounts", "index", "threads"):
        parser.add_argument(f"--{name}", type=int, default=1, help=argparse.SUPPRESS)
    for name in ("start", "until"):
        parser.add_argument(f"--{name}", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    with ExitStack() as stack:
        url = args.db
        if not url:
            reason, bindir = missing_reason(), find_bindir()
            if reason or bindir is None:
                print(f"cannot run: {reason}", file=sys.stderr)
                return 2
            url = stack.enter_context(PostgresCluster(bindir)).url()
        catalog = copy_catalog(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        print(f"machine: {machine(url)}")
        print(
            f"{CLIENTS} concurrent clients (threads in 2 processes; 1 per store process in the "
            f"second table), {args.seconds:.0f} s measured per row after a warm-up\n"
        )
        print("Through the sidecars (plangate serve processes, native gRPC API):")
        print(header("sidecars"))
        for count in (1, 2):
            environment = f"bench-{uuid.uuid4().hex[:8]}"
            sidecars = [
                stack.enter_context(SubprocessSidecar(catalog, url, "--environment", environment))  # type: ignore[arg-type]
                for _ in range(count)
            ]
            setup_accounts(sidecars[0].target)
            time.sleep(0.5)  # let the other sidecar see the accounts
            targets = ",".join(s.target for s in sidecars)
            for name, mode, batch, accounts in SCENARIOS:
                r = measure(
                    url, args.seconds, 2, mode=mode, targets=targets, batch=batch, accounts=accounts
                )
                print(row(str(count), name, r), flush=True)
            for sidecar in sidecars:
                sidecar.kill()

        print("\nThe store path alone (PostgresStore.record_usage, one event per call, no gRPC):")
        print(header("stores"))
        for count in (1, 2):
            environment = f"bench-{uuid.uuid4().hex[:8]}"
            for name, mode, accounts in STORE_SCENARIOS:
                r = measure(
                    url, args.seconds, count, mode=mode, db=url, environment=environment,
                    accounts=accounts,
                )  # fmt: skip
                print(row(str(count), name, r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
