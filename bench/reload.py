"""Catalog reload: how long a catalog change takes to reach evaluations.

What the sidecar does when the watched file changes: `load_catalog` (read, parse, validate)
then `LiveState.replace_catalog` (re-validate every stored account against the new catalog,
swap the snapshot, work out which features changed). Both are timed separately, and so is
the longest pause a thread waking every millisecond sees while the catalog loads.

The catalog has `--plans` plans × `--features` features, every plan writing every
entitlement (1,000 × 200 = 200,000 values: a worst case). Two versions that differ in one
entitlement alternate, so every reload is a real change; the store holds `--accounts`
accounts spread over the plans, which `replace_catalog` re-validates.

Run: `python bench/reload.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import catalogs
from harness import Stats, emit


class _Ticker:
    """A thread that wakes every millisecond, as the serving loop would to answer a call:
    its longest gap while a catalog loads is how long evaluations would stall (libyaml's
    composer held the GIL for a whole file; decision 1322)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.longest = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.longest


def measure(plans: int, features: int, accounts: int, reps: int) -> dict[str, Any]:
    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.runtime.live.state import LiveState
    from plangate.sidecar.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory(prefix="plangate-bench-reload-") as tmp:
        d = Path(tmp)
        data = catalogs.big_catalog(plans, features)
        first = catalogs.write_yaml(data, d / "v1.yaml")
        plan0 = data["products"][0]["plans"][0]["entitlements"]
        plan0["feature-1"] = int(plan0["feature-1"]) + 1  # an integer feature: a real change
        second = catalogs.write_yaml(data, d / "v2.yaml")
        size = first.stat().st_size
        db = d / "state.db"
        plan_keys = [f"plan-{j}" for j in range(plans)]
        catalogs.seed_store(db, catalogs.records_on_plans(plan_keys, accounts))
        store = SqliteStore(db)
        state = LiveState(load_catalog(first), store)
        loads, replaces, totals, pauses = [], [], [], []
        for rep in range(reps):
            path = second if rep % 2 == 0 else first
            ticker = _Ticker()
            t0 = time.perf_counter()
            catalog = load_catalog(path)
            t1 = time.perf_counter()
            pauses.append(ticker.stop())
            changed = state.replace_catalog(catalog)
            t2 = time.perf_counter()
            if changed != ("feature-1",):
                raise RuntimeError(f"expected exactly feature-1 to change, got {changed[:5]}")
            loads.append(t1 - t0)
            replaces.append(t2 - t1)
            totals.append(t2 - t0)
        store.close()
    return {
        "measures": {
            "reload.total": Stats.of(totals, "s").as_json(),
            "reload.load_catalog": Stats.of(loads, "s").as_json(),
            "reload.replace_catalog": Stats.of(replaces, "s").as_json(),
            "reload.longest_pause_of_another_thread": Stats.of(pauses, "s").as_json(),
        },
        "settings": {
            "plans": plans,
            "features": features,
            "entitlements": plans * features,
            "stored_accounts": accounts,
            "catalog_bytes": size,
            "format": "yaml",
            "reps": reps,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plans", type=int, default=None)
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    emit(
        measure(
            args.plans or (50 if args.quick else 1000),
            args.features or (20 if args.quick else 200),
            args.accounts or (100 if args.quick else 10_000),
            args.reps or (2 if args.quick else 3),
        )
    )


if __name__ == "__main__":
    main()
