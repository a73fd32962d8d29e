"""Balances (design §5.1): what credit pools and top-ups cost on the usage write path.

Run by `run.py` (group `balances`), or alone: `python bench/balances.py [--quick]` prints
JSON. In one process, on one SQLite file, through the runtime facade every surface calls
(`Decisions`), without gRPC so that the write path is what is measured:

- `Consume` on a credit-priced feature vs on a plain metered feature (target: ≤ 1.5×),
  interleaved round by round so a busy machine slows both alike;
- `Report` throughput on a feature whose top-ups are burning (target: ≥ 20,000 events/s),
  in batches of 500 as a provider's reporter sends them.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import Stats, emit
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.runtime.edits import records as rec
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.decisions import Decisions
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


def consume_rounds(d: Decisions, rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    """µs per Consume, plain and credit-priced, per round (interleaved)."""
    plain: list[float] = []
    priced: list[float] = []
    for _ in range(rounds):
        for feature, out in (("calls", plain), ("chat", priced)):
            start = time.perf_counter()
            for _ in range(per_round):
                assert d.consume(UsageReport("acct", feature, 1)).granted
            out.append((time.perf_counter() - start) / per_round * 1e6)
    return plain, priced


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
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    rounds, per_round, batches = (2, 20, 3) if args.quick else (7, 200, 40)
    rounds = args.reps or rounds
    with tempfile.TemporaryDirectory() as tmp:
        d = _state(Path(tmp))
        plain, priced = consume_rounds(d, rounds, per_round)
        rates = [report_throughput(d, batches, 500) for _ in range(rounds)]
        d.state.store.close()  # type: ignore[attr-defined]
    emit(
        {
            "measures": {
                "balances.consume_plain": Stats.of(plain, "us", calls_per_rep=per_round).as_json(),
                "balances.consume_priced": Stats.of(
                    priced, "us", calls_per_rep=per_round
                ).as_json(),
                "balances.report_topups": Stats.of(rates, "events/s", batch=500).as_json(),
            },
            "settings": {"rounds": rounds, "per_round": per_round, "batches": batches},
        }
    )


if __name__ == "__main__":
    main()
