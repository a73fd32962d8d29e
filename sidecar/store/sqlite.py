"""The embedded store: one SQLite file in WAL mode, written through `sqlite-utils`.

`synchronous=FULL` makes every commit reach the disk before the call returns, so an
acknowledged report survives `kill -9`. One sidecar owns a file; a lock serialises
writers inside the process (SQLite allows one writer at a time anyway).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from ..engine.history import Bucket, BucketKey, hour_buckets
from ..engine.write_rule import BatchReads, BatchWrites, apply_batch
from .base import (
    AuditEntry,
    CounterKey,
    Delivery,
    DeliveryStatus,
    Firing,
    OutboxEntry,
    PackedRecords,
    PrunePlan,
    Record,
    StoreError,
    UsageOutcome,
    UsageWrite,
)
from .errors import StoreFull, StoreUnavailable
from .rows import (
    AUDIT_COLUMNS,
    DELIVERY_COLUMNS,
    audit_columns,
    audit_from,
    delivery_from,
    outcome_from,
    outcome_text,
    retried,
)
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


def _v3(db: sqlite_utils.Database) -> None:
    """The audit log (design §12): one row per admin change, written with the change."""
    db.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "environment TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, account TEXT NOT NULL, target TEXT NOT NULL, "
        "before TEXT, after TEXT)"
    )
    db.execute("CREATE INDEX audit_account ON audit (environment, account, seq)")
    db.execute("CREATE INDEX audit_at ON audit (environment, at)")


def _v4(db: sqlite_utils.Database) -> None:
    """Usage history (design §6.2): one bucket per counter and hour (`engine.history`)."""
    db.execute(
        "CREATE TABLE usage_hourly (environment TEXT NOT NULL, scope TEXT NOT NULL, "
        "feature TEXT NOT NULL, period_start TEXT NOT NULL, hour TEXT NOT NULL, "
        "added REAL NOT NULL, last REAL NOT NULL, "
        "PRIMARY KEY (environment, scope, feature, period_start, hour))"
    )
    db.execute("CREATE INDEX usage_hourly_hour ON usage_hourly (environment, hour)")


def _v5(db: sqlite_utils.Database) -> None:
    """Lifecycle webhooks (design §7.1): once-only marks of time-driven events, and how far
    the scheduler has looked (so it catches up after downtime)."""
    db.execute(
        "CREATE TABLE lifecycle_marks (environment TEXT NOT NULL, mark TEXT NOT NULL, "
        "fired_at TEXT NOT NULL, PRIMARY KEY (environment, mark))"
    )
    db.execute("CREATE TABLE lifecycle_clock (environment TEXT PRIMARY KEY, upto TEXT NOT NULL)")


def _v6(db: sqlite_utils.Database) -> None:
    """One counter's buckets by hour: `usage_buckets` names the environment, scope and feature
    and a range of hours, which the primary key (period start before hour) cannot serve and
    `usage_hourly_hour` serves by reading every counter's buckets in the range."""
    db.execute(
        "CREATE INDEX usage_hourly_counter ON usage_hourly (environment, scope, feature, hour)"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]
"""Schema versions in order; version N is MIGRATIONS[N-1]. Append, never edit."""


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


Counter = tuple[str, str, str, str]
"""A usage row's key as stored: (environment, scope, feature, period start text)."""

_KEYS_PER_QUERY = 500
"""Idempotency keys looked up per query (well under SQLite's bound on parameters)."""

_COUNTER = "environment = ? AND scope = ? AND feature = ? AND period_start = ?"


class _Rows:
    """The stored form of one batch's counters: the period start texts, made once per instant."""

    def __init__(self, env: str) -> None:
        self.env = env
        self._starts: dict[datetime, str] = {}

    def of(self, key: CounterKey) -> Counter:
        scope, feature, period_start = key
        start = self._starts.get(period_start)
        if start is None:
            start = self._starts[period_start] = ts(period_start)
        return (self.env, scope, feature, start)


FREE_TO_RECOVER = 1 << 20
"""Free bytes a full disk needs again before the store reports itself ready (so that
readiness does not flap while the disk hovers at full)."""


def _free_bytes(path: str) -> int:
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


_TRANSIENT = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
"""Faults that end by themselves (another process holds the lock): not a reason to be unready."""


def _code(exc: sqlite3.Error) -> int:
    """The primary SQLite result code of `exc` (extended codes carry it in the low byte)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None if there is none (or it is not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _read_batch(c: sqlite3.Connection, rows: _Rows, writes: Sequence[UsageWrite]) -> BatchReads:
    """What the rule needs to know about `writes`, read inside their transaction: each key,
    counter, unique key and quota mark once per batch, however many writes share it."""
    keys = list(dict.fromkeys(w.report.idempotency_key for w in writes if w.report.idempotency_key))
    outcomes: dict[str, UsageOutcome] = {}
    for i in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[i : i + _KEYS_PER_QUERY]
        found = c.execute(
            "SELECT key, outcome FROM idempotency WHERE environment = ? "
            f"AND key IN ({', '.join('?' * len(chunk))})",
            (rows.env, *chunk),
        )
        outcomes.update((key, outcome_from(json.loads(text))) for key, text in found)
    values: dict[CounterKey, float] = {}
    for key in dict.fromkeys(k for w in writes for k in w.counters):
        row = c.execute(f"SELECT value FROM usage WHERE {_COUNTER}", rows.of(key)).fetchone()
        if row is not None:
            values[key] = float(row[0])
    wanted = dict.fromkeys((w.counter, w.report.unique_key) for w in writes if w.counts_unique)
    uniques = {
        (key, unique)
        for key, unique in wanted
        if c.execute(
            f"SELECT 1 FROM usage_unique WHERE {_COUNTER} AND unique_key = ?",
            (*rows.of(key), unique),
        ).fetchone()
    }
    marks = {
        (key, mark)
        for key in dict.fromkeys(k for w in writes for k in w.quota_counters)
        for (mark,) in c.execute(f"SELECT mark FROM quota_fired WHERE {_COUNTER}", rows.of(key))
    }
    return BatchReads(outcomes, values, uniques, marks)


def _write_batch(c: sqlite3.Connection, rows: _Rows, done: BatchWrites) -> None:
    """Store what the rule changed, in the caller's transaction."""
    if done.values:
        c.executemany(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (environment, scope, feature, period_start) "
            "DO UPDATE SET value = excluded.value",
            [(*rows.of(key), value) for key, value in done.values.items()],
        )
    if done.uniques:
        c.executemany(
            "INSERT INTO usage_unique VALUES (?, ?, ?, ?, ?)",
            [(*rows.of(key), unique) for key, unique in done.uniques],
        )
    for key, firing in done.marks:
        at = ts(firing.at)
        c.execute(
            "INSERT INTO quota_fired VALUES (?, ?, ?, ?, ?, ?)", (*rows.of(key), firing.mark, at)
        )
        _enqueue(c, rows.env, firing.entries, at)
    if done.keys:
        c.executemany(
            "INSERT INTO idempotency VALUES (?, ?, ?, datetime('now'))",
            [(rows.env, key, outcome_text(outcome)) for key, outcome in done.keys.items()],
        )


def _write_buckets(
    c: sqlite3.Connection, rows: _Rows, buckets: Mapping[BucketKey, tuple[float, float]]
) -> None:
    """Add a batch's hourly history (`engine.history.hour_buckets`) in its transaction."""
    if buckets:
        c.executemany(
            "INSERT INTO usage_hourly VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (environment, scope, feature, period_start, hour) "
            "DO UPDATE SET added = added + excluded.added, last = excluded.last",
            [
                (*rows.of((scope, feature, start)), ts(hour), added, last)
                for (scope, feature, start, hour), (added, last) in buckets.items()
            ],
        )


def _enqueue(c: sqlite3.Connection, env: str, entries: Sequence[OutboxEntry], at: str) -> None:
    """Outbox rows due at `at`, in the caller's transaction."""
    c.executemany(
        "INSERT INTO outbox (environment, id, kind, account, target, payload, status, "
        "attempts, last_error, created_at, updated_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, '', ?, ?, ?)",
        [
            (
                env,
                e.id,
                e.kind,
                e.account,
                e.target,
                json.dumps(e.payload, sort_keys=True),
                at,
                at,
                at,
            )
            for e in entries
        ],
    )


class SqliteStore:
    def __init__(self, path: str | Path, environment: str = "default") -> None:
        self.environment = environment
        self.path = str(path)
        self._lock = threading.Lock()
        self._fault: StoreUnavailable | None = None  # a fault of the file the last write met
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
            fault = self._unusable(exc)
            raise StoreError(
                str(fault) if fault else f"{self.path}: cannot use this SQLite database ({exc})"
            ) from exc
        self._identity = _identity(self.path)
        self._probe()  # a read-only file opens (and serves reads) but is not ready for writes

    # -- faults of the file (deleted, replaced, disk full, read-only) ------------------------

    def _replaced(self) -> str | None:
        """Whether `path` still names the file this connection writes: a deleted or replaced
        file would silently swallow every write acknowledged from now on."""
        if self._identity is None:
            return None
        now = _identity(self.path)
        if now == self._identity:
            return None
        what = "deleted" if now is None else "replaced by another file"
        return (
            f"the database file {self.path} was {what} while the sidecar was running; writes "
            "are refused because they would be lost. Restore the file (or move the new one away) "
            "and restart the sidecar"
        )

    def _unusable(self, exc: sqlite3.Error) -> StoreUnavailable | None:
        """`exc` in words an operator can act on, or None if it is not a fault of the file."""
        code = _code(exc)
        if code in _TRANSIENT:
            return StoreUnavailable(f"{self.path} is locked by another process: {exc}")
        if code == sqlite3.SQLITE_FULL:
            return StoreFull(
                f"the disk holding {self.path} is full ({exc}); nothing was recorded. Free space "
                "on that filesystem: writes resume by themselves, and a retry is safe"
            )
        if code == sqlite3.SQLITE_READONLY:
            message = (
                f"{self.path} cannot be written ({exc}); make the file, its -wal and -shm files "
                "and its directory writable and the filesystem read-write, then restart the "
                "sidecar if the file was read-only when it started"
            )
        elif code == sqlite3.SQLITE_IOERR:
            message = (
                f"I/O error writing {self.path} ({exc}); check the disk and the filesystem "
                "(kernel log, mount state); writes resume by themselves once it works again"
            )
        elif code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            message = (
                f"{self.path} cannot be used ({exc}); check that the file and its directory exist "
                "and are writable (SQLite keeps -wal and -shm files next to it) and that the file "
                "is intact (restore it from a backup if it is damaged)"
            )
        else:
            return None
        return StoreUnavailable(message)

    def health(self) -> str | None:
        replaced = self._replaced()
        if replaced is not None or self._fault is None:
            return replaced
        if isinstance(self._fault, StoreFull) and _free_bytes(self.path) < FREE_TO_RECOVER:
            return str(self._fault)  # a tiny probe could still fit while real writes do not
        return self._probe()

    def _probe(self) -> str | None:
        """One tiny write transaction: None if it commits, else what stops it (remembered as
        the store's fault until a write succeeds)."""
        try:
            with self._transaction() as c:
                c.execute(
                    "UPDATE plangate_schema SET applied_at = applied_at "
                    "WHERE version = (SELECT max(version) FROM plangate_schema)"
                )
        except StoreUnavailable as exc:
            return str(exc)
        return None

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
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plangate_schema'"
        ).fetchone()
        if exists and self.schema_version == known:
            return  # nothing to write: a read-only database opens too (and is reported unready)
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
        """One write transaction under the process lock. Faults of the file (locked past the
        busy timeout, disk full, read-only, I/O errors, deleted or replaced) are reported as
        `StoreUnavailable` / `StoreFull` with what to do; nothing of the transaction stays."""
        with self._lock:
            c = self._conn
            try:
                changes = c.total_changes
                c.execute("BEGIN IMMEDIATE")
                yield c
                replaced = self._replaced()  # checked last: an acknowledged write must last
                if replaced is not None:
                    raise StoreUnavailable(replaced)
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                fault = self._unusable(exc)
                if fault is None:
                    raise
                if _code(exc) not in _TRANSIENT:
                    self._fault = fault
                raise fault from exc
            except BaseException:
                self._rollback()
                raise
            if c.total_changes != changes:  # only a write that wrote proves the fault over
                self._fault = None

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # a failed disk may refuse this too
                self._conn.execute("ROLLBACK")

    # -- accounts ----------------------------------------------------------------------------

    def load_records(self) -> PackedRecords:
        rows = self._conn.execute(
            "SELECT id, record FROM accounts WHERE environment = ?", (self.environment,)
        )
        return PackedRecords.of_texts(rows)

    def _audit(self, c: sqlite3.Connection, entry: AuditEntry | None) -> None:
        """Append `entry` inside the caller's transaction (nothing if None)."""
        if entry is None:
            return
        c.execute(
            "INSERT INTO audit (environment, at, actor, action, account, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.environment, ts(entry.at), *audit_columns(entry)),
        )

    def save_record(
        self,
        record: Record,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO accounts (environment, id, record, updated_at) VALUES (?, ?, ?, datetime('now')) "
                "ON CONFLICT (environment, id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (self.environment, record["id"], json.dumps(record, sort_keys=True)),
            )
            self._audit(c, audit)
            _enqueue(c, self.environment, outbox, ts(datetime.now(UTC)))

    def refresh_records(self, ids: Sequence[str]) -> dict[str, Record | None]:
        """Nothing: only this process writes the file, so memory is never behind it."""
        return {}

    def delete_record(
        self,
        account_id: str,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        with self._transaction() as c:
            cur = c.execute(
                "DELETE FROM accounts WHERE environment = ? AND id = ?",
                (self.environment, account_id),
            )
            if cur.rowcount > 0:
                self._audit(c, audit)
                _enqueue(c, self.environment, outbox, ts(datetime.now(UTC)))
            return cur.rowcount > 0

    # -- lifecycle marks (design §7.1) -------------------------------------------------------

    def fire_lifecycle(self, firings: Sequence[Firing], upto: datetime) -> list[str]:
        with self._transaction() as c:
            fired: list[str] = []
            for f in firings:
                cur = c.execute(
                    "INSERT INTO lifecycle_marks VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (self.environment, f.mark, ts(f.at)),
                )
                if cur.rowcount > 0:
                    fired.append(f.mark)
                    _enqueue(c, self.environment, f.entries, ts(datetime.now(UTC)))
            c.execute(
                "INSERT INTO lifecycle_clock VALUES (?, ?) ON CONFLICT (environment) "
                "DO UPDATE SET upto = max(upto, excluded.upto)",
                (self.environment, ts(upto)),
            )
        return fired

    def lifecycle_upto(self) -> datetime | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT upto FROM lifecycle_clock WHERE environment = ?", (self.environment,)
            ).fetchone()
        return parse_ts(row[0]) if row else None

    # -- usage -------------------------------------------------------------------------------

    def load_counters(self) -> dict[CounterKey, float]:
        rows = self._conn.execute(
            "SELECT scope, feature, period_start, value FROM usage WHERE environment = ?",
            (self.environment,),
        )
        return {(scope, feature, parse_ts(start)): value for scope, feature, start, value in rows}

    def record_usage(self, writes: Sequence[UsageWrite]) -> list[UsageOutcome]:
        """Apply `writes` in order in one transaction: read, `apply_batch`, write back.

        A batch is the unit of work (a Report call, or a group of concurrent calls), so its
        statements are batched too: each idempotency key, counter and mark is read once and
        each changed row written once, whatever the number of reports sharing it.
        """
        rows = _Rows(self.environment)
        with self._transaction() as c:
            reads = _read_batch(c, rows, writes)
            done = apply_batch(writes, reads)
            _write_batch(c, rows, done)
            _write_buckets(c, rows, hour_buckets(writes, reads.values, done.outcomes))
        return done.outcomes

    def reset_usage(
        self,
        scope_key: str,
        feature: str,
        period_start: datetime,
        *,
        burns: Sequence[str] = (),
        audit: AuditEntry | None = None,
    ) -> float:
        start = ts(period_start)
        counter = (self.environment, scope_key, feature, start)
        with self._transaction() as c:
            row = c.execute(f"SELECT value FROM usage WHERE {_COUNTER}", counter).fetchone()
            previous = float(row[0]) if row else 0.0
            for name in (feature, *burns):
                key = (self.environment, scope_key, name, start)
                for table in ("usage", "usage_unique", "quota_fired", "usage_hourly"):
                    c.execute(f"DELETE FROM {table} WHERE {_COUNTER}", key)
            if audit is not None:
                self._audit(c, replace(audit, before={"usage": previous}, after={"usage": 0.0}))
        return previous

    def usage_buckets(
        self, scope_key: str, feature: str, since: datetime, until: datetime
    ) -> list[Bucket]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT period_start, hour, added, last FROM usage_hourly WHERE environment = ? "
                "AND scope = ? AND feature = ? AND hour >= ? AND hour < ? ORDER BY hour",
                (self.environment, scope_key, feature, ts(since), ts(until)),
            ).fetchall()
        return [Bucket(parse_ts(p), parse_ts(h), float(a), float(v)) for p, h, a, v in rows]

    def counters_of(
        self, scope_keys: Sequence[str], until: datetime
    ) -> list[tuple[str, str, datetime, float]]:
        out: list[tuple[str, str, datetime, float]] = []
        for i in range(0, len(scope_keys), _KEYS_PER_QUERY):
            chunk = scope_keys[i : i + _KEYS_PER_QUERY]
            with self._lock:
                rows = self._conn.execute(
                    "SELECT scope, feature, period_start, value FROM usage WHERE environment = ? "
                    f"AND scope IN ({', '.join('?' * len(chunk))}) AND period_start < ?",
                    (self.environment, *chunk, ts(until)),
                ).fetchall()
            out += [(s, f, parse_ts(p), float(v)) for s, f, p, v in rows]
        out.sort(key=lambda r: (r[0], r[1], r[2]))
        return out

    # -- outbox ------------------------------------------------------------------------------

    _DELIVERY = DELIVERY_COLUMNS

    @staticmethod
    def _delivery(row: Sequence[Any]) -> Delivery:
        return delivery_from(row, json.loads, parse_ts)

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
        with self._transaction() as c:
            c.execute(
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

    def retry_deliveries(
        self, ids: Sequence[str] | None, now: datetime, *, audit: AuditEntry | None = None
    ) -> list[str]:
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
            if changed and audit is not None:
                self._audit(c, replace(audit, after=retried(changed)))
        return changed

    # -- audit log ---------------------------------------------------------------------------

    def list_audit(
        self, account: str, since: datetime | None, limit: int, before_seq: int | None = None
    ) -> list[AuditEntry]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE environment = ?"
        args: list[Any] = [self.environment]
        if account:
            sql += " AND account = ?"
            args.append(account)
        if since is not None:
            sql += " AND at >= ?"
            args.append(ts(since))
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit))
            return [audit_from(row, _json_or_none, parse_ts) for row in rows.fetchall()]

    def count_deliveries(self) -> dict[DeliveryStatus, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, count(*) FROM outbox WHERE environment = ? GROUP BY status",
                (self.environment,),
            ).fetchall()
        counts = dict.fromkeys(DeliveryStatus, 0)
        counts.update({DeliveryStatus(status): int(n) for status, n in rows})
        return counts

    def housekeep(self, plan: PrunePlan) -> dict[str, int]:
        """One transaction; a single sidecar owns a SQLite file, so no one else prunes it."""
        env = self.environment
        with self._transaction() as c:

            def by_feature(table: str, cutoffs: Mapping[str, datetime], default: datetime) -> int:
                removed = sum(
                    c.execute(
                        f"DELETE FROM {table} WHERE environment = ? AND feature = ? "
                        "AND period_start < ?",
                        (env, feature, ts(before)),
                    ).rowcount
                    for feature, before in cutoffs.items()
                )
                others = ", ".join("?" * len(cutoffs))
                return (
                    removed
                    + c.execute(
                        f"DELETE FROM {table} WHERE environment = ? AND period_start < ? "
                        f"AND feature NOT IN ({others})",
                        (env, ts(default), *cutoffs),
                    ).rowcount
                )

            return {
                "idempotency_keys": c.execute(
                    "DELETE FROM idempotency WHERE environment = ? AND created_at < ?",
                    (env, plan.idempotency_before.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")),
                ).rowcount,
                "tombstones": 0,  # a deleted account's row is deleted: one sidecar, no one to tell
                "usage_rows": by_feature("usage", plan.usage_before, plan.usage_default),
                "unique_keys": by_feature("usage_unique", plan.usage_before, plan.usage_default),
                "quota_marks": by_feature("quota_fired", plan.marks_before, plan.marks_default),
                "history_buckets": c.execute(
                    "DELETE FROM usage_hourly WHERE environment = ? AND hour < ?",
                    (env, ts(plan.history_before)),
                ).rowcount,
                "deliveries": c.execute(
                    "DELETE FROM outbox WHERE environment = ? AND status = 'delivered' "
                    "AND updated_at < ?",
                    (env, ts(plan.deliveries_before)),
                ).rowcount,
                "audit_entries": c.execute(
                    "DELETE FROM audit WHERE environment = ? AND at < ?",
                    (env, ts(plan.audit_before)),
                ).rowcount,
                "lifecycle_marks": c.execute(
                    "DELETE FROM lifecycle_marks WHERE environment = ? AND fired_at < ?",
                    (env, ts(plan.deliveries_before)),
                ).rowcount,
            }

    def close(self) -> None:
        with self._lock:
            self._conn.close()
