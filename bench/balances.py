"""Balances (design §5.1): what credit pools and top-ups cost on the usage write path.

Run on its own (not part of `run.py`): `.venv/bin/python bench/balances.py [--quick]`.
In one process, on one SQLite file, through the runtime facade every surface calls
(`Decisions`), without gRPC so that the write path is what is measured:

- `Consume` on a credit-priced feature vs on a plain metered feature (target: ≤ 1.5×),
  interleaved round by round so a busy machine slows both alike;
- `Report` throughput on a feature whose top-ups are burning (target: ≥ 20,000 events/s),
  in batches of 500 as a provider's reporter sends them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.runtime import records as rec
from plangate.sidecar.runtime.decisions import Decisions
from plangate.sidecar.runtime.state import LiveState
from plangate.sidecar.store.sqlite import SqliteStore

CATALOG = textwrap.dedent(
    """
    products:
      - name: Bench
        features:
          - {name: Credits, type: credits}
          - {name: Chat, type: metered, credits: {pool: credits, per_unit: 2}}
          - {name: Calls, type: metered}
          - {name: Events, type: metered}
        plans:
          - name: Big
            entitlements: {credits: 1000000000, chat: unlimited, calls: 1000000000, events: 10}
    """
)


def _state(directory: Path) -> Decisions:
    state = LiveState(parse_catalog(CATALOG), SqliteStore(directory / "bench.db"))
    record = rec.new_record("acct")
    record, _ = rec.add_subscription(
        record, "big", {}, datetime(2026, 1, 1, tzinfo=UTC), None, None, [], ""
    )
    for i in range(5):  # events: a 10 allowance, then five top-ups burning in turn
        record, _ = rec.add_topup(record, "events", 1e9, i, None, None, f"t{i}")
    state.commit(record)
    return Decisions(state)


def consume_ratio(d: Decisions, rounds: int, per_round: int) -> tuple[float, float, float]:
    """(plain µs, priced µs, ratio of medians) over interleaved rounds."""
    plain: list[float] = []
    priced: list[float] = []
    for _ in range(rounds):
        for feature, out in (("calls", plain), ("chat", priced)):
            start = time.perf_counter()
            for _ in range(per_round):
                assert d.consume(UsageReport("acct", feature, 1)).granted
            out.append((time.perf_counter() - start) / per_round * 1e6)
    p, c = statistics.median(plain), statistics.median(priced)
    return p, c, c / p


def report_throughput(d: Decisions, batches: int, size: int) -> float:
    """Events per second of `Report` batches on the feature with burning top-ups."""
    batch = [UsageReport("acct", "events", 1) for _ in range(size)]
    d.report(batch)  # warm up: the allowance is used, burning has begun
    start = time.perf_counter()
    for _ in range(batches):
        d.report(batch)
    return batches * size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; numbers mean nothing")
    args = parser.parse_args()
    rounds, per_round, batches = (2, 20, 3) if args.quick else (7, 200, 40)
    with tempfile.TemporaryDirectory() as tmp:
        d = _state(Path(tmp))
        plain, priced, ratio = consume_ratio(d, rounds, per_round)
        rate = report_throughput(d, batches, 500)
        d.state.store.close()  # type: ignore[attr-defined]
    print(f"Consume plain metered   {plain:9.1f} µs")
    print(f"Consume credit-priced   {priced:9.1f} µs   ratio {ratio:.2f}  (target <= 1.5)")
    print(f"Report, top-ups burning {rate:9.0f} events/s   (target >= 20000)")


if __name__ == "__main__":
    main()
