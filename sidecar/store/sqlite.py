"""The embedded store: one SQLite file in WAL mode, written through `sqlite-utils`.

`synchronous=FULL` makes every commit reach the disk before the call returns, so an
acknowledged report survives `kill -9`. One sidecar owns a file; a lock serialises
writers inside the process (SQLite allows one writer at a time anyway).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import sqlite_utils

from ..catalog.model import Aggregation
from ..engine.usage import next_value
from .base import CounterKey, Record, Status, UsageOutcome, UsageWrite
from .timefmt import parse_ts, ts


def _v1(db: sqlite_utils.Database) -> None:
    db.table("accounts").create(
        {"environment": str, "id": str, "record": str, "updated_at": str},
        pk=("environment", "id"),
    )
    db.table("usage").create(
        {"environment": str, "scope": str, "feature": str, "period_start": str, "value": float},
        pk=("environment", "scope", "feature", "period_start"),
    )
    db.table("usage_unique").create(
        {"environment": str, "scope": str, "feature": str, "period_start": str, "unique_key": str},
        pk=("environment", "scope", "feature", "period_start", "unique_key"),
    )
    db.table("idempotency").create(
        {"environment": str, "key": str, "outcome": str, "created_at": str},
        pk=("environment", "key"),
    )
    db.table("idempotency").create_index(["created_at"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
"""Schema versions in order; version N is MIGRATIONS[N-1]. Append, never edit."""


class SqliteStore:
    def __init__(self, path: str | Path, environment: str = "default") -> None:
        self.environment = environment
        self.path = str(path)
        self._lock = threading.Lock()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        self._migrate()

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM plangate_schema").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS plangate_schema (version INTEGER PRIMARY KEY, applied_at TEXT)"
            )
            current = self.schema_version
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    migration(self._db)
                    self._conn.execute(
                        "INSERT INTO plangate_schema VALUES (?, datetime('now'))", (version,)
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    # -- accounts ----------------------------------------------------------------------------

    def load_records(self) -> dict[str, Record]:
        rows = self._conn.execute(
            "SELECT id, record FROM accounts WHERE environment = ?", (self.environment,)
        )
        return {account_id: json.loads(record) for account_id, record in rows}

    def save_record(self, record: Record) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO accounts (environment, id, record, updated_at) VALUES (?, ?, ?, datetime('now')) "
                "ON CONFLICT (environment, id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (self.environment, record["id"], json.dumps(record, sort_keys=True)),
            )

    def delete_record(self, account_id: str) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM accounts WHERE environment = ? AND id = ?",
                (self.environment, account_id),
            )
            return cur.rowcount > 0

    # -- usage -------------------------------------------------------------------------------

    def load_counters(self) -> dict[CounterKey, float]:
        rows = self._conn.execute(
            "SELECT scope, feature, period_start, value FROM usage WHERE environment = ?",
            (self.environment,),
        )
        return {(scope, feature, parse_ts(start)): value for scope, feature, start, value in rows}

    def record_usage(self, writes: Sequence[UsageWrite]) -> list[UsageOutcome]:
        env = self.environment
        outcomes: list[UsageOutcome] = []
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for w in writes:
                    outcomes.append(self._apply(c, env, w))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return outcomes

    def _apply(self, c: sqlite3.Connection, env: str, w: UsageWrite) -> UsageOutcome:
        key = w.report.idempotency_key
        if key:
            row = c.execute(
                "SELECT outcome FROM idempotency WHERE environment = ? AND key = ?", (env, key)
            ).fetchone()
            if row is not None:
                first = json.loads(row[0])
                return UsageOutcome(
                    Status.DUPLICATE,
                    first["usage"],
                    parse_ts(first["period_start"]),
                    first["message"],
                )
        start = ts(w.period_start)
        counter = (env, w.scope_key, w.feature.key, start)
        row = c.execute(
            "SELECT value FROM usage WHERE environment = ? AND scope = ? AND feature = ? AND period_start = ?",
            counter,
        ).fetchone()
        current = float(row[0]) if row else 0.0
        denial = w.admit(current) if w.admit is not None else None
        if denial is not None:
            outcome = UsageOutcome(Status.DENIED, current, w.period_start, denial)
        else:
            new_unique = True
            if w.feature.aggregation is Aggregation.UNIQUE:
                cur = c.execute(
                    "INSERT OR IGNORE INTO usage_unique VALUES (?, ?, ?, ?, ?)",
                    (*counter, w.report.unique_key),
                )
                new_unique = cur.rowcount == 1
            value = next_value(w.feature, current, w.report, new_unique)
            c.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT (environment, scope, feature, period_start) "
                "DO UPDATE SET value = excluded.value",
                (*counter, value),
            )
            outcome = UsageOutcome(Status.APPLIED, value, w.period_start)
        if key:
            c.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, datetime('now'))",
                (
                    env,
                    key,
                    json.dumps(
                        {
                            "status": outcome.status.value,
                            "usage": outcome.usage,
                            "period_start": start,
                            "message": outcome.message,
                        }
                    ),
                ),
            )
        return outcome

    def reset_usage(self, scope_key: str, feature: str, period_start: datetime) -> float:
        counter = (self.environment, scope_key, feature, ts(period_start))
        where = "environment = ? AND scope = ? AND feature = ? AND period_start = ?"
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute(f"SELECT value FROM usage WHERE {where}", counter).fetchone()
                c.execute(f"DELETE FROM usage WHERE {where}", counter)
                c.execute(f"DELETE FROM usage_unique WHERE {where}", counter)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return float(row[0]) if row else 0.0

    def prune_idempotency(self, older_than: datetime) -> int:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM idempotency WHERE environment = ? AND created_at < ?",
                (self.environment, older_than.strftime("%Y-%m-%d %H:%M:%S")),
            )
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
