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
from ..engine.holds import Hold
from ..engine.write_rule import BatchReads, BatchWrites, apply_batch
from . import sqlite_files as files
from .base import (
    AuditEntry,
    CounterKey,
    Delivery,
    DeliveryStatus,
    Firing,
    LoadedAccount,
    OutboxEntry,
    PackedRecords,
    PrunePlan,
    Record,
    StoreError,
    StripeMark,
    StripeObject,
    UsageOutcome,
    UsageWrite,
    _decode,
    scopes_of,
)
from .errors import StoreFull, StoreUnavailable
from .rows import (
    AUDIT_COLUMNS,
    DELIVERY_COLUMNS,
    HOLD_COLUMNS,
    audit_columns,
    audit_from,
    delivery_from,
    hold_from,
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


def _v7(db: sqlite_utils.Database) -> None:
    """Holds (design §17), schema version 7. `state` is active, settled or released; an active hold
    past `expires_at` is expired without anyone writing it."""
    db.execute(
        "CREATE TABLE holds (environment TEXT NOT NULL, id TEXT NOT NULL, "
        "account TEXT NOT NULL, feature TEXT NOT NULL, scope TEXT NOT NULL, "
        "amount REAL NOT NULL, pool TEXT NOT NULL, pool_scope TEXT NOT NULL, "
        "per_unit REAL NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL, "
        "state TEXT NOT NULL, ended_at TEXT, settled REAL, PRIMARY KEY (environment, id))"
    )
    db.execute("CREATE INDEX holds_leg ON holds (environment, state, scope, feature)")
    db.execute("CREATE INDEX holds_pool ON holds (environment, state, pool_scope, pool)")
    db.execute("CREATE INDEX holds_account ON holds (environment, account, state)")


def _v8(db: sqlite_utils.Database) -> None:
    """The Stripe connection (design §18): applied event ids (a repeat changes nothing) and,
    per Stripe object, its account and the last event applied (an older one is stale)."""
    db.execute(
        "CREATE TABLE stripe_events (environment TEXT NOT NULL, event_id TEXT NOT NULL, "
        "applied_at TEXT NOT NULL, PRIMARY KEY (environment, event_id))"
    )
    db.execute(
        "CREATE TABLE stripe_objects (environment TEXT NOT NULL, object_id TEXT NOT NULL, "
        "account TEXT NOT NULL, last_created INTEGER NOT NULL, last_event_id TEXT NOT NULL, "
        "last_type TEXT NOT NULL, PRIMARY KEY (environment, object_id))"
    )
    db.execute("CREATE INDEX stripe_objects_account ON stripe_objects (environment, account)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _v8,
]
"""Schema versions in order; version N is MIGRATIONS[N-1]. Append, never edit."""


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_STRIPE_OBJECT = "object_id, account, last_created, last_event_id, last_type"

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


def _subs(record: Record) -> list[dict[str, Any]]:
    subs = record.get("subscriptions") or ()
    return [s for s in subs if isinstance(s, dict)]


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM plangate_schema").fetchone()
    return int(row[0] or 0)


def _bump(c: sqlite3.Connection) -> None:
    """Change the header's user_version (kept for this): a page that must reach the disk, where
    a no-op UPDATE writes none and so proves nothing about the disk."""
    (version,) = c.execute("PRAGMA user_version").fetchone()
    c.execute(f"PRAGMA user_version = {(int(version) + 1) % (1 << 31)}")


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
    return BatchReads(outcomes, values, uniques, marks, _read_holds(c, rows.env, writes))


def _read_holds(c: sqlite3.Connection, env: str, writes: Sequence[UsageWrite]) -> dict[str, Hold]:
    """The holds the batch's admissions count (active on their legs) and those it ends."""
    out: dict[str, Hold] = {}
    legs = dict.fromkeys(leg for w in writes if w.admit is not None for leg in w.legs)
    for scope, feature in legs:
        for row in c.execute(
            f"SELECT {HOLD_COLUMNS} FROM holds WHERE environment = ? AND state = 'active' "
            "AND ((scope = ? AND feature = ?) OR (pool_scope = ? AND pool = ?))",
            (env, scope, feature, scope, feature),
        ):
            hold = hold_from(row, parse_ts)
            out[hold.id] = hold
    for w in writes:
        if w.ends is not None and w.ends.hold_id not in out:
            row = c.execute(
                f"SELECT {HOLD_COLUMNS} FROM holds WHERE environment = ? AND id = ?",
                (env, w.ends.hold_id),
            ).fetchone()
            if row is not None:
                out[w.ends.hold_id] = hold_from(row, parse_ts)
    return out


def _write_holds(c: sqlite3.Connection, env: str, done: BatchWrites) -> None:
    for h in done.holds:
        c.execute(
            f"INSERT INTO holds (environment, {HOLD_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', NULL, NULL)",
            (
                env,
                h.id,
                h.account,
                h.feature,
                h.scope_key,
                h.amount,
                h.pool,
                h.pool_scope,
                h.per_unit,
                ts(h.created_at),
                ts(h.expires_at),
            ),
        )
    for h in done.ended:
        c.execute(
            "UPDATE holds SET state = ?, ended_at = ?, settled = ? WHERE environment = ? AND id = ?",
            (h.state.value, ts(h.ended_at) if h.ended_at else None, h.settled, env, h.id),
        )


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
        self._damaged: str | None = None  # a damaged file: every write refused until restart
        self._reconnect = False  # the fault may need a new connection to be over (`_reopen`)
        self._log_kept = False  # a lost write-ahead log was copied into the file (`_keep_log`)
        self._guard = self._guarding() if files.has_log(self.path) else None
        try:
            self._conn, fault = self._connect()
        except BaseException:
            self._close_guard()
            raise
        if fault is not None:
            self._fault, self._reconnect = fault, True
        self._files = files.look(self.path)
        self._probe()  # a read-only file opens (and serves reads) but is not ready for writes

    def _guarding(self) -> sqlite3.Connection | None:
        """A read-only connection held while a log left by a crash may be foreign: SQLite
        checkpoints a log into the file when its last connection closes, which would write
        a stale log into a replaced file for good (and delete it) once a damage is found. With
        this one open, no other close is the last, and a read-only one never checkpoints."""
        uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"
        try:
            guard = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error:
            return None
        with contextlib.suppress(sqlite3.Error):  # unreadable: opening fails, and says why
            guard.execute("PRAGMA schema_version").fetchone()  # holds its shared lock from now
        return guard

    def _close_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    def _open(self) -> sqlite3.Connection:
        """A connection in WAL mode on the current schema (or the reason why not)."""
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> tuple[sqlite3.Connection, StoreUnavailable | None]:
        """The store's connection, and the fault that keeps it from writing if it is read as
        it is (a read-only filesystem after a clean stop); else why it cannot be used."""
        try:
            return self._open(), None
        except StoreError as exc:
            raise StoreError(f"{exc}{files.log_hint(self.path)}") from exc
        except sqlite3.DatabaseError as exc:
            if not (files.read_only(exc) and self._unwritable_but_whole()):
                raise self._start_error(exc) from exc
            return self._open_as_it_is(exc), files.described(self.path, exc)

    def _open_as_it_is(self, why: sqlite3.DatabaseError) -> sqlite3.Connection:
        """A clean stop left no log on a filesystem now read-only: the file alone holds
        everything, so it is read as it is (no -shm needed) and the store is unready until
        `_reopen` finds it writable (decision 1340)."""
        uri = f"{Path(self.path).absolute().as_uri()}?immutable=1"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            current = _schema_version(conn)
        except sqlite3.Error:
            current = -1
        if current != len(MIGRATIONS):
            conn.close()
            raise self._start_error(why) from why
        return conn

    def _unwritable_but_whole(self) -> bool:
        """A read-only filesystem with no write-ahead log beside the file: SQLite cannot make
        its -shm file there, yet the file alone holds everything (a clean stop)."""
        return files.read_only_filesystem(self.path) and not files.has_log(self.path)

    def _start_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        if files.damaged(exc):
            return StoreError(files.damage(self.path, exc, opening=True))
        fault = files.described(self.path, exc)
        return StoreError(
            str(fault) if fault else f"{self.path}: cannot use this SQLite database ({exc})"
        )

    # -- faults of the file (deleted, replaced, damaged, disk full, read-only) ---------------

    def _unusable(self, exc: sqlite3.Error) -> StoreUnavailable | None:
        """`exc` as the store's fault (remembered, see `health`), or None if it is none."""
        fault = files.described(self.path, exc)
        if fault is None or files.transient(exc):
            return fault
        if files.damaged(exc) and self._damaged is None:
            if self._guard is not None:  # the log from start-up may be foreign: keep it as is
                fault = StoreUnavailable(files.damage(self.path, exc, opening=True))
                old, self._conn, self._guard = self._conn, self._guard, None
                old.close()  # not the last connection: nothing is checkpointed
            self._damaged = str(fault)
        self._reconnect = self._reconnect or files.read_only(exc)
        self._fault = fault
        return fault

    def health(self) -> str | None:
        """None when writes are known to work. A remembered fault is retried with a write that
        really writes (`_probe`): only that clears it."""
        intruded = files.intruded(self.path, self._files)
        if intruded is not None:
            with self._lock:
                self._keep_log()
            return intruded
        if self._fault is None:
            return None
        if self._damaged is not None:
            return self._damaged
        if isinstance(self._fault, StoreFull) and _free_bytes(self.path) < FREE_TO_RECOVER:
            return str(self._fault)  # a tiny probe could still fit while real writes do not
        problem = self._probe()
        if problem is not None and self._reconnect and self._reopen():
            return None
        return problem

    def _keep_log(self) -> None:
        """The write-ahead log was deleted or replaced: what it holds (acknowledged writes since
        the last checkpoint) lives on only in its open descriptor, so copy it into the database
        file now, while that descriptor is still there (a kill -9 later would lose it)."""
        if self._log_kept or self._files.wal is None:
            return
        now = files.look(self.path)
        if now.main == self._files.main and now.wal != self._files.wal:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(FULL)")
                self._log_kept = True

    def _probe(self) -> str | None:
        """One write transaction that changes a page (the header's user_version) and syncs it at
        COMMIT: None if it commits, and the remembered fault is over; else what stops it."""
        try:
            with self._transaction() as c:
                _bump(c)
        except StoreUnavailable as exc:
            return str(exc)
        self._fault, self._reconnect = None, False
        return None

    def _reopen(self) -> bool:
        """After a read-only or unopenable file: SQLite opened it read-only and stays so (and
        so does every connection of this process to it, as they share its -shm mapping), so
        once the files look writable, every connection is closed and a new one tried. True if
        it writes (and is in use)."""
        if not files.writable(self.path) or files.look(self.path).main != self._files.main:
            return False
        with self._lock:
            self._close_guard()
            self._conn.close()  # read-only: it checkpoints nothing
            try:
                self._conn = self._open()
                self._conn.execute("BEGIN IMMEDIATE")
                _bump(self._conn)
                self._conn.execute("COMMIT")
            except (sqlite3.Error, StoreError):
                self._rollback()
                with contextlib.suppress(sqlite3.Error, StoreError):
                    self._conn.close()
                self._conn, _ = self._connect()
                return False
            self._files = files.look(self.path)
            self._fault, self._reconnect = None, False
        return True

    def _prepare(self, conn: sqlite3.Connection, attempts: int = 100) -> None:
        """WAL mode and the schema. Switching to WAL can answer "locked" at once, without the
        busy timeout (SQLite will not wait where waiting could deadlock), while another process
        opens the same new file; opening is rare, so it simply tries again."""
        for attempt in range(attempts):
            try:
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    @property
    def schema_version(self) -> int:
        return _schema_version(self._conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the missing schema versions, each in its own write transaction. The version
        is read inside that transaction, so concurrent openers apply every step exactly once."""
        known = len(MIGRATIONS)
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plangate_schema'"
        ).fetchone()
        if exists and _schema_version(conn) == known:
            return  # nothing to write: a read-only database opens too (and is reported unready)
        with self._lock:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS plangate_schema (version INTEGER PRIMARY KEY, applied_at TEXT)"
            )
            while True:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    current = _schema_version(conn)
                    if current > known:
                        raise StoreError(
                            f"{self.path}: schema version {current} was written by a newer plangate "
                            f"(this one knows versions up to {known}); upgrade plangate or use another --db"
                        )
                    if current < known:
                        MIGRATIONS[current](sqlite_utils.Database(conn))
                        conn.execute(
                            "INSERT INTO plangate_schema VALUES (?, datetime('now'))",
                            (current + 1,),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                if current == known:
                    return

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the process lock. Faults of the file (locked past the
        busy timeout, disk full, read-only, I/O errors, damaged, deleted, replaced or written
        by another program) are reported as `StoreUnavailable` / `StoreFull` with what to do;
        nothing of the transaction stays."""
        with self._lock:
            if self._damaged is not None:
                raise StoreUnavailable(self._damaged)
            c, committing = self._conn, False
            try:
                c.execute("BEGIN IMMEDIATE")
                yield c
                intruded = files.intruded(self.path, self._files)  # last: what is acknowledged
                if intruded is not None:  # must last
                    self._rollback()
                    self._keep_log()
                    raise StoreUnavailable(intruded)
                committing = True
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                if committing:  # a checkpoint after the commit may have failed half-way
                    self._files = files.look(self.path)
                self._rollback()
                fault = self._unusable(exc)
                if fault is None:
                    raise
                raise fault from exc
            except BaseException:
                self._rollback()
                raise
            self._files = files.look(self.path)  # the commit may have checkpointed: our write

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read under the process lock; a fault of the file is `StoreUnavailable` with what
        to do (a damaged page met here refuses writes too), never a raw SQLite error."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                fault = self._unusable(exc)
                if fault is None:
                    raise
                raise fault from exc

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # a failed disk may refuse this too
                self._conn.execute("ROLLBACK")

    # -- accounts ----------------------------------------------------------------------------

    def load_records(self) -> PackedRecords:
        with self._reading() as c:
            rows = c.execute(
                "SELECT id, record FROM accounts WHERE environment = ?", (self.environment,)
            )
            return PackedRecords.of_texts(rows)

    def load_account(self, account_id: str) -> LoadedAccount:
        """The record by its key; the owners by a scan of the records that name the id (a
        member index is design §19's, not built yet), each checked as JSON members."""
        try:
            return self._load_account(account_id)
        except sqlite3.Error as exc:  # not a fault of the file (`_reading` maps those)
            raise StoreUnavailable(
                f"could not read account {account_id!r} from {self.path}: {exc}"
            ) from exc

    def _load_account(self, account_id: str) -> LoadedAccount:
        env = self.environment
        with self._reading() as c:
            records: dict[str, Record] = {}
            row = c.execute(
                "SELECT record FROM accounts WHERE environment = ? AND id = ?", (env, account_id)
            ).fetchone()
            if row is not None:
                records[account_id] = _decode(row[0])
            needle = json.dumps(account_id)
            for owner, text in c.execute(
                "SELECT id, record FROM accounts WHERE environment = ? AND id != ? "
                "AND instr(record, ?) > 0",
                (env, account_id, needle),
            ):
                record = _decode(text)
                if any(account_id in (s.get("members") or ()) for s in _subs(record)):
                    records[owner] = record
            counters: dict[CounterKey, float] = {}
            for scope in dict.fromkeys([f"acct:{account_id}", *scopes_of(records.values())]):
                for feature, start, value in c.execute(
                    "SELECT feature, period_start, value FROM usage "
                    "WHERE environment = ? AND scope = ?",
                    (env, scope),
                ):
                    counters[(scope, feature, parse_ts(start))] = value
        return LoadedAccount(records, counters)

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
        stripe: StripeMark | None = None,
    ) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO accounts (environment, id, record, updated_at) VALUES (?, ?, ?, datetime('now')) "
                "ON CONFLICT (environment, id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (self.environment, record["id"], json.dumps(record, sort_keys=True)),
            )
            self._audit(c, audit)
            _enqueue(c, self.environment, outbox, ts(datetime.now(UTC)))
            if stripe is not None:
                self._mark_stripe(c, stripe)

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
        with self._reading():
            row = self._conn.execute(
                "SELECT upto FROM lifecycle_clock WHERE environment = ?", (self.environment,)
            ).fetchone()
        return parse_ts(row[0]) if row else None

    # -- the Stripe connection (design §18) --------------------------------------------------

    def _mark_stripe(self, c: sqlite3.Connection, mark: StripeMark) -> None:
        c.execute(
            "INSERT INTO stripe_events VALUES (?, ?, ?)",
            (self.environment, mark.event_id, ts(datetime.now(UTC))),
        )
        c.execute(
            "INSERT INTO stripe_objects VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (environment, object_id) DO UPDATE SET "
            "account = CASE WHEN ? THEN excluded.account ELSE account END, "
            "last_created = excluded.last_created, last_event_id = excluded.last_event_id, "
            "last_type = excluded.last_type",
            (
                self.environment,
                mark.object_id,
                mark.account or "",
                mark.created,
                mark.event_id,
                mark.event_type,
                mark.account is not None,
            ),
        )

    def mark_stripe(self, mark: StripeMark) -> None:
        with self._transaction() as c:
            self._mark_stripe(c, mark)

    def stripe_seen(self, event_id: str) -> bool:
        with self._reading() as c:
            row = c.execute(
                "SELECT 1 FROM stripe_events WHERE environment = ? AND event_id = ?",
                (self.environment, event_id),
            ).fetchone()
        return row is not None

    def stripe_object(self, object_id: str) -> StripeObject | None:
        with self._reading() as c:
            row = c.execute(
                f"SELECT {_STRIPE_OBJECT} FROM stripe_objects WHERE environment = ? AND object_id = ?",
                (self.environment, object_id),
            ).fetchone()
        return None if row is None else StripeObject(*row)

    def stripe_objects_of(self, account_id: str) -> list[StripeObject]:
        with self._reading() as c:
            rows = c.execute(
                f"SELECT {_STRIPE_OBJECT} FROM stripe_objects WHERE environment = ? AND account = ? "
                "ORDER BY object_id",
                (self.environment, account_id),
            ).fetchall()
        return [StripeObject(*row) for row in rows]

    # -- usage -------------------------------------------------------------------------------

    def load_counters(self) -> dict[CounterKey, float]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT scope, feature, period_start, value FROM usage WHERE environment = ?",
                (self.environment,),
            )
            return {
                (scope, feature, parse_ts(start)): value for scope, feature, start, value in rows
            }

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
            if done.holds or done.ended:
                _write_holds(c, rows.env, done)
            _write_buckets(c, rows, hour_buckets(writes, reads.values, done.outcomes))
        return done.outcomes

    def load_holds(self) -> list[Hold]:
        with self._reading() as c:
            rows = c.execute(
                f"SELECT {HOLD_COLUMNS} FROM holds WHERE environment = ? AND state = 'active'",
                (self.environment,),
            ).fetchall()
        return [hold_from(r, parse_ts) for r in rows]

    def get_hold(self, hold_id: str) -> Hold | None:
        with self._reading() as c:
            row = c.execute(
                f"SELECT {HOLD_COLUMNS} FROM holds WHERE environment = ? AND id = ?",
                (self.environment, hold_id),
            ).fetchone()
        return hold_from(row, parse_ts) if row is not None else None

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
        with self._reading():
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
            with self._reading():
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
        with self._reading():
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
        with self._reading():
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
        with self._reading():
            rows = self._conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*args, limit))
            return [audit_from(row, _json_or_none, parse_ts) for row in rows.fetchall()]

    def account_ids(self, after: str, limit: int) -> list[str]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT id FROM accounts WHERE environment = ? AND id > ? ORDER BY id LIMIT ?",
                (self.environment, after, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def count_accounts(self) -> int:
        with self._reading() as c:
            row = c.execute(
                "SELECT count(*) FROM accounts WHERE environment = ?", (self.environment,)
            ).fetchone()
        return int(row[0])

    def count_deliveries(self) -> dict[DeliveryStatus, int]:
        with self._reading():
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
                # Stripe event ids go with delivered rows (30 days, design §14); the per-object
                # marks stay while the object lives, so an old event stays stale
                "stripe_events": c.execute(
                    "DELETE FROM stripe_events WHERE environment = ? AND applied_at < ?",
                    (env, ts(plan.deliveries_before)),
                ).rowcount,
            }

    def close(self) -> None:
        with self._lock:
            self._close_guard()
            self._conn.close()
