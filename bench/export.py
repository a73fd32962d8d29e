"""Usage export (design §6.2): 1,000,000 rows in bounded memory.

Run on its own: `.venv/bin/python bench/export.py [--quick] [--json]`.
One SQLite file is filled directly (accounts × metered features, one counter each in the
current month), a `LiveState` loads it as a sidecar does, and `export_usage` — what the
`Usage.Export` stream pages through — is drained into CSV text thrown away, as the CLI writes
it. Measured: rows per second, and the growth of the resident set during the export over
the settled RSS after loading (the live state itself holds every counter in memory; the
export must add only about one page of rows to it, whatever the number of rows).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import tempfile
import time
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path

from harness import emit, rss_bytes, settled_rss
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.history import export_usage
from plangate.sidecar.store.sqlite import SqliteStore
from plangate.sidecar.store.timefmt import ts

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
MB = 1024 * 1024


def catalog_text(features: int) -> str:
    names = "\n".join(
        f"          - {{name: F{i}, type: metered, reset: monthly, anchor: calendar}}"
        for i in range(features)
    )
    limits = ", ".join(f"f{i}: 1000" for i in range(features))
    return (
        "products:\n  - name: Bench\n    features:\n"
        f"{names}\n    plans:\n      - name: Basic\n        entitlements: {{{limits}}}\n"
    )


def fill(db: Path, accounts: int, features: int) -> None:
    """Accounts on Basic with one June counter per feature, written straight into the tables."""
    SqliteStore(db).close()  # the schema
    conn = sqlite3.connect(db)
    start = ts(JUNE)
    with conn:
        conn.executemany(
            "INSERT INTO accounts VALUES ('default', ?, ?, datetime('now'))",
            (
                (
                    f"acct_{n:07d}",
                    json.dumps(
                        {
                            "id": f"acct_{n:07d}",
                            "subscriptions": [
                                {"id": f"sub_{n:07d}", "plan": "basic", "starts_at": start}
                            ],
                        }
                    ),
                )
                for n in range(accounts)
            ),
        )
        conn.executemany(
            "INSERT INTO usage VALUES ('default', ?, ?, ?, ?)",
            (
                (f"acct:acct_{n:07d}", f"f{i}", start, float(n % 1500))
                for n in range(accounts)
                for i in range(features)
            ),
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; numbers mean nothing")
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    accounts = args.accounts or (1_000 if args.quick else 20_000)
    features = args.features or (10 if args.quick else 50)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        fill(db, accounts, features)
        store = SqliteStore(db)
        state = LiveState(parse_catalog(catalog_text(features)), store, clock=lambda: NOW)
        before = settled_rss()
        peak, rows, size = before, 0, 0
        sink = io.StringIO()
        out = csv.writer(sink)
        started = time.perf_counter()
        for row in export_usage(state, JUNE, datetime(2026, 7, 1, tzinfo=UTC)):
            out.writerow(astuple(row))
            rows += 1
            if rows % 10_000 == 0:
                peak = max(peak, rss_bytes())
                size += sink.tell()
                sink.seek(0)
                sink.truncate()
        seconds = time.perf_counter() - started
        peak = max(peak, rss_bytes())
        store.close()
    assert rows == accounts * features, (rows, accounts * features)
    result = {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "rss_before_mb": round(before / MB, 1),
        "rss_growth_mb": round((peak - before) / MB, 1),
        "csv_mb": round(size / MB, 1),
    }
    if args.json:
        emit(result)
        return
    print(f"exported {rows} rows ({accounts} accounts × {features} features) in {seconds:.1f} s")
    print(f"  {result['rows_per_second']} rows/s, ~{result['csv_mb']} MB of CSV")
    print(f"  RSS after loading the state   {result['rss_before_mb']:8.1f} MB")
    print(f"  RSS growth during the export  {result['rss_growth_mb']:8.1f} MB (peak over settled)")


if __name__ == "__main__":
    main()
