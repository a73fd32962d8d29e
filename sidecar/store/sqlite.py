"""The embedded store: one SQLite file in WAL mode, written through `sqlite-utils`.

`synchronous=FULL` makes every commit reach the disk before the call returns, so an
acknowledged report survives `kill -9`. One sidecar owns a file; a lock serialises
writers inside the process (SQLite allows one writer at a time anyway).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote  # json.dumps' own (C) quoting
from pathlib import Path
from typing import Any

import sqlite_utils

from ..catalog.model import Aggregation
from ..engine.usage import next_value
from .base import (
    CounterKey,
    Delivery,
    DeliveryStatus,
    Firing,
    PackedRecords,
    Record,
    Status,
    StoreError,
    UsageOutcome,
    UsageWrite,
)
from .errors import StoreUnavailable
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


def _v2(db: sqlite_utils.Database) -> None:
    """Quotas (design §7): once-per-counter marks and the durable outbox."""
    db.execute(
        "CREATE TABLE quota_fired (environment TEXT NOT NULL, scope TEXT NOT NULL, "
        "feature TEXT NOT NULL, period_start TEXT NOT NULL, mark TEXT NOT NULL, "
        "fired_at TEXT NOT NULL, "
        "PRIMARY KEY (environment, scope, feature, period_start, mark))"
    )
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "environment TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, "
        "account TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL, "
        "status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "last_error TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, "
        "updated_at TEXT NOT NULL, next_attempt_at TEXT, UNIQUE (environment, id))"
    )
    db.execute("CREATE INDEX outbox_due ON outbox (environment, status, next_attempt_at)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2]
"""Schema versions in order; version N is MIGRATIONS[N-1]. Append, never edit."""


Counter = tuple[str, str, str, str]
"""A usage row's key as stored: (environment, scope, feature, period start text)."""

_KEYS_PER_QUERY = 500
"""Idempotency keys looked up per query (well under SQLite's bound on parameters)."""


def _outcome_text(outcome: UsageOutcome, start: str) -> str:
    """What `json.dumps` makes of an outcome (same text, same key order), without its generic
    walk: one of these is written per idempotency key, so it is on the Report hot path."""
    usage = outcome.usage
    # json.dumps writes a finite float as its repr; anything else (an int from a caller) it decides
    number = repr(usage) if type(usage) is float and math.isfinite(usage) else json.dumps(usage)
    return (
        f'{{"status": {_quote(outcome.status.value)}, "usage": {number}, '
        f'"period_start": {_quote(start)}, "message": {_quote(outcome.message)}}}'
    )


class _Batch:
    """What one `record_usage` transaction has read and will write.

    Counters and idempotency keys are read at most once per batch and kept here as the
    writes change them, so a batch of N reports on K counters costs K reads and one
    write per counter instead of four statements per report. `flush` writes it all back
    inside the same transaction.
    """

    def __init__(self, conn: sqlite3.Connection, env: str, writes: Sequence[UsageWrite]) -> None:
        self.conn = conn
        self.env = env
        self._values: dict[Counter, float] = {}
        self._dirty: dict[Counter, None] = {}
        self._starts: dict[datetime, str] = {}
        self._known = self._stored_outcomes([w.report.idempotency_key for w in writes])
        self._new_keys: list[tuple[str, str, str]] = []

    def _stored_outcomes(self, keys: list[str]) -> dict[str, UsageOutcome]:
        """The first outcomes already stored under any of `keys`, as duplicates."""
        wanted = list(dict.fromkeys(k for k in keys if k))
        found: dict[str, UsageOutcome] = {}
        for i in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[i : i + _KEYS_PER_QUERY]
            rows = self.conn.execute(
                "SELECT key, outcome FROM idempotency WHERE environment = ? "
                f"AND key IN ({', '.join('?' * len(chunk))})",
                (self.env, *chunk),
            )
            for key, text in rows:
                first = json.loads(text)
                found[key] = UsageOutcome(
                    Status.DUPLICATE,
                    first["usage"],
                    parse_ts(first["period_start"]),
                    first["message"],
                )
        return found

    def seen(self, key: str) -> UsageOutcome | None:
        """The duplicate outcome for `key` if it was stored before or earlier in this batch."""
        first = self._known.get(key)
        if first is None or first.status is Status.DUPLICATE:
            return first
        return UsageOutcome(Status.DUPLICATE, first.usage, first.period_start, first.message)

    def remember(self, key: str, outcome: UsageOutcome, start: str) -> None:
        """Store `outcome` as the first one under `key` (written by `flush`)."""
        self._known[key] = outcome
        self._new_keys.append((self.env, key, _outcome_text(outcome, start)))

    def counter(self, w: UsageWrite) -> Counter:
        start = self._starts.get(w.period_start)
        if start is None:
            start = self._starts[w.period_start] = ts(w.period_start)
        return (self.env, w.scope_key, w.feature.key, start)

    def current(self, counter: Counter) -> float:
        value = self._values.get(counter)
        if value is None:
            row = self.conn.execute(
                "SELECT value FROM usage WHERE environment = ? AND scope = ? AND feature = ? "
                "AND period_start = ?",
                counter,
            ).fetchone()
            value = self._values[counter] = float(row[0]) if row else 0.0
        return value

    def set(self, counter: Counter, value: float) -> None:
        self._values[counter] = value
        self._dirty[counter] = None

    def flush(self) -> None:
        if self._dirty:
            self.conn.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (environment, scope, feature, period_start) "
                "DO UPDATE SET value = excluded.value",
                [(*counter, self._values[counter]) for counter in self._dirty],
            )
        if self._new_keys:
            self.conn.executemany(
                "INSERT INTO idempotency VALUES (?, ?, ?, datetime('now'))",
                self._new_keys,
            )


class SqliteStore:
    def __init__(self, path: str | Path, environment: str = "default") -> None:
        self.environment = environment
        self.path = str(path)
        self._lock = threading.Lock()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        try:
            self._prepare()
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path}: cannot use this SQLite database ({exc})") from exc

    def _prepare(self, attempts: int = 100) -> None:
        """WAL mode and the schema. Switching to WAL can answer "locked" at once, without the
        busy timeout (SQLite will not wait where waiting could deadlock), while another process
        opens the same new file; opening is rare, so it simply tries again."""
        for attempt in range(attempts):
            try:
                self._conn.execute("PRAGMA busy_timeout=5000")
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("SELECT max(version) FROM plangate_schema").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        """Apply the missing schema versions, each in its own write transaction. The version
        is read inside that transaction, so concurrent openers apply every step exactly once."""
        known = len(MIGRATIONS)
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS plangate_schema (version INTEGER PRIMARY KEY, applied_at TEXT)"
            )
            while True:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    current = self.schema_version
                    if current > known:
                        raise StoreError(
                            f"{self.path}: schema version {current} was written by a newer plangate "
                            f"(this one knows versions up to {known}); upgrade plangate or use another --db"
                        )
                    if current < known:
                        MIGRATIONS[current](self._db)
                        self._conn.execute(
                            "INSERT INTO plangate_schema VALUES (?, datetime('now'))",
                            (current + 1,),
                        )
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                if current == known:
                    return

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the process lock; a database held locked by another
        process past the busy timeout is reported as `StoreUnavailable` (retryable)."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                yield c
                c.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreUnavailable(
                        f"{self.path} is locked by another process: {exc}"
                    ) from exc
                raise
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    # -- accounts ----------------------------------------------------------------------------

    def load_records(self) -> PackedRecords:
        rows = self._conn.execute(
            "SELECT id, record FROM accounts WHERE environment = ?", (self.environment,)
        )
        return PackedRecords.of_texts(rows)

    def save_record(self, record: Record) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO accounts (environment, id, record, updated_at) VALUES (?, ?, ?, datetime('now')) "
                "ON CONFLICT (environment, id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (self.environment, record["id"], json.dumps(record, sort_keys=True)),
            )

    def delete_record(self, account_id: str) -> bool:
        with self._transaction() as c:
            cur = c.execute(
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
        """Apply `writes` in order in one transaction.

        A batch is the unit of work (a Report call, or a group of concurrent calls), so its
        statements are batched too: the idempotency keys are looked up in one query, each
        counter is read once and written once at the end, and the new idempotency rows go in
        one `executemany`. The outcomes are exactly those of applying the writes one by one.
        """
        with self._transaction() as c:
            batch = _Batch(c, self.environment, writes)
            outcomes = [self._apply(batch, w) for w in writes]
            batch.flush()
        return outcomes

    def _apply(self, batch: _Batch, w: UsageWrite) -> UsageOutcome:
        key = w.report.idempotency_key
        if key:
            first = batch.seen(key)
            if first is not None:
                return first
        counter = batch.counter(w)
        current = batch.current(counter)
        denial = w.admit(current) if w.admit is not None else None
        if denial is not None:
            outcome = UsageOutcome(Status.DENIED, current, w.period_start, denial)
        else:
            new_unique = True
            if w.feature.aggregation is Aggregation.UNIQUE:
                cur = batch.conn.execute(
                    "INSERT OR IGNORE INTO usage_unique VALUES (?, ?, ?, ?, ?)",
                    (*counter, w.report.unique_key),
                )
                new_unique = cur.rowcount == 1
            value = next_value(w.feature, current, w.report, new_unique)
            if not math.isfinite(value):  # 1e308 + 1e308: a counter must stay a number
                return UsageOutcome(
                    Status.REJECTED,
                    current,
                    w.period_start,
                    f"{w.feature.key}: usage {current:g} + {w.report.amount:g} is out of range",
                )
            batch.set(counter, value)
            fired = self._fire(batch.conn, counter, w, current, value) if w.on_applied else ()
            outcome = UsageOutcome(Status.APPLIED, value, w.period_start, fired=fired)
        if key:
            batch.remember(key, outcome, counter[3])
        return outcome

    @staticmethod
    def _fire(
        c: sqlite3.Connection,
        counter: Counter,
        w: UsageWrite,
        old: float,
        new: float,
    ) -> tuple[Firing, ...]:
        """Record the marks `w.on_applied` reports (each once per counter) and enqueue the
        entries of the new ones, inside the caller's transaction."""
        assert w.on_applied is not None
        recorded: list[Firing] = []
        for firing in w.on_applied(old, new):
            cur = c.execute(
                "INSERT OR IGNORE INTO quota_fired VALUES (?, ?, ?, ?, ?, ?)",
                (*counter, firing.mark, ts(firing.at)),
            )
            if cur.rowcount != 1:
                continue
            recorded.append(firing)
            at = ts(firing.at)
            for e in firing.entries:
                c.execute(
                    "INSERT INTO outbox (environment, id, kind, account, target, payload, status, "
                    "attempts, last_error, created_at, updated_at, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, '', ?, ?, ?)",
                    (
                        counter[0],
                        e.id,
                        e.kind,
                        e.account,
                        e.target,
                        json.dumps(e.payload, sort_keys=True),
                        at,
                        at,
                        at,
                    ),
                )
        return tuple(recorded)

    def reset_usage(self, scope_key: str, feature: str, period_start: datetime) -> float:
        counter = (self.environment, scope_key, feature, ts(period_start))
        where = "environment = ? AND scope = ? AND feature = ? AND period_start = ?"
        with self._transaction() as c:
            row = c.execute(f"SELECT value FROM usage WHERE {where}", counter).fetchone()
            c.execute(f"DELETE FROM usage WHERE {where}", counter)
            c.execute(f"DELETE FROM usage_unique WHERE {where}", counter)
            c.execute(f"DELETE FROM quota_fired WHERE {where}", counter)
        return float(row[0]) if row else 0.0

    # -- outbox ------------------------------------------------------------------------------

    _DELIVERY = (
        "seq, id, kind, account, target, payload, status, attempts, last_error, "
        "created_at, updated_at, next_attempt_at"
    )

    @staticmethod
    def _delivery(row: Sequence[Any]) -> Delivery:
        seq, id_, kind, account, target, payload, status, attempts, error, created, updated, due = (
            row
        )
        return Delivery(
            seq=int(seq),
            id=id_,
            kind=kind,
            account=account,
            target=target,
            payload=json.loads(payload),
            status=DeliveryStatus(status),
            attempts=int(attempts),
            last_error=error,
            created_at=parse_ts(created),
            updated_at=parse_ts(updated),
            next_attempt_at=parse_ts(due) if due else None,
        )

    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        with self._transaction() as c:
            rows = c.execute(
                f"SELECT {self._DELIVERY} FROM outbox WHERE environment = ? "
                "AND status = 'pending' AND next_attempt_at <= ? ORDER BY seq LIMIT ?",
                (self.environment, ts(now), limit),
            ).fetchall()
            c.executemany(
                "UPDATE outbox SET next_attempt_at = ? WHERE seq = ?",
                [(ts(lease_until), row[0]) for row in rows],
            )
        return [self._delivery(row) for row in rows]

    def finish_delivery(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str,
        at: datetime,
    ) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, "
                "last_error = CASE WHEN ? = '' THEN last_error ELSE ? END, updated_at = ? "
                "WHERE environment = ? AND id = ?",
                (
                    status.value,
                    attempts,
                    ts(next_attempt_at) if next_attempt_at else None,
                    error,
                    error,
                    ts(at),
                    self.environment,
                    delivery_id,
                ),
            )

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._DELIVERY} FROM outbox WHERE environment = ? AND id = ?",
                (self.environment, delivery_id),
            ).fetchone()
        return self._delivery(row) if row else None

    def list_deliveries(
        self, status: DeliveryStatus | None, limit: int, before_seq: int | None = None
    ) -> list[Delivery]:
        sql = f"SELECT {self._DELIVERY} FROM outbox WHERE environment = ?"
        args: list[Any] = [self.environment]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit))
            return [self._delivery(row) for row in rows.fetchall()]

    def retry_deliveries(self, ids: Sequence[str] | None, now: datetime) -> list[str]:
        with self._transaction() as c:
            if ids is None:
                rows = c.execute(
                    "SELECT id FROM outbox WHERE environment = ? AND status = 'failed'",
                    (self.environment,),
                ).fetchall()
            else:
                marks = ", ".join("?" * len(ids))
                rows = c.execute(
                    f"SELECT id FROM outbox WHERE environment = ? AND status != 'delivered' "
                    f"AND id IN ({marks})",
                    (self.environment, *ids),
                ).fetchall()
            changed = [row[0] for row in rows]
            c.executemany(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, "
                "updated_at = ? WHERE environment = ? AND id = ?",
                [(ts(now), ts(now), self.environment, i) for i in changed],
            )
        return changed

    def count_deliveries(self) -> dict[DeliveryStatus, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, count(*) FROM outbox WHERE environment = ? GROUP BY status",
                (self.environment,),
            ).fetchall()
        counts = dict.fromkeys(DeliveryStatus, 0)
        counts.update({DeliveryStatus(status): int(n) for status, n in rows})
        return counts

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
