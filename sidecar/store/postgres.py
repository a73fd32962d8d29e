"""The shared store: PostgreSQL through psycopg 3, for many sidecars on one database (design §10).

Why it is built this way:

- **Environments.** Every table's key starts with the environment, and each environment has
  its own notification channel, so staging and production can share a database and never see
  each other's accounts, usage, idempotency keys or changes.
- **Versions.** Every change to an account or a usage counter takes the next number of one
  database sequence and stores it with the row; the transaction that makes the change also
  sends `NOTIFY` on the environment's channel naming what changed and at which version (and,
  for counters, the new value). The change feed (`sync.pg_feed`) applies a change only when its
  version is newer than what memory holds (`Versions`), so notifications, periodic
  reconciliation and this process's own writes may arrive in any order and memory still only
  moves forward. Deleting an account leaves a tombstone (record NULL, with a version) so that a
  reconciling sidecar can tell "deleted" from "created after my snapshot"; a reset sets a counter
  to 0 with a new version for the same reason.
- **Exact Consume across sidecars.** A usage batch locks each counter it touches
  (`INSERT ... ON CONFLICT DO NOTHING` so the row exists, then `SELECT ... FOR UPDATE`) before it
  reads the value, so `admit` sees the committed value and no other sidecar can change it until
  this transaction commits.
- **No deadlocks.** Every transaction takes its locks in one global order: idempotency keys
  (sorted), then counters (sorted, each statement sorting in SQL with the C collation), so two
  batches can wait for each other but never in a cycle. Should PostgreSQL still report a
  deadlock or serialization failure, the transaction is retried (it was rolled back).
- **Idempotency across sidecars.** A report's idempotency key is claimed first with
  `INSERT ... ON CONFLICT DO NOTHING`: if another sidecar is applying the same key right now,
  the insert waits for it to finish, and the key then counts as a duplicate of its outcome.
- **Connections.** One lock-protected connection writes (autocommit off: each call is one
  transaction); the change feed opens its own. A connection lost before COMMIT was sent is
  retried once on a fresh connection (the server rolled the transaction back with the
  connection); one lost while committing raises `StoreUnavailable` saying the outcome is
  unknown (idempotency keys make the client's retry safe).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from ..engine.history import Bucket, BucketKey, hour_buckets
from ..engine.holds import Hold
from ..engine.write_rule import BatchReads, apply_batch
from .base import (
    AuditEntry,
    CounterKey,
    Delivery,
    DeliveryStatus,
    Firing,
    LoadedAccount,
    OutboxEntry,
    PrunePlan,
    Record,
    StripeMark,
    StripeObject,
    UsageOutcome,
    UsageWrite,
    scopes_of,
)
from .errors import StoreConflict, StoreFull, StoreUnavailable
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

log = logging.getLogger("plangate.store.postgres")

T = TypeVar("T")
Connection = psycopg.Connection[Any]


MIGRATION_LOCK = 0x706C_616E_6761_7465  # "plangate": one sidecar migrates, the others wait
HOUSEKEEPING_LOCK = 0x706C_6764  # "plgd", with the environment: one sidecar prunes at a time

MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE SEQUENCE plangate.change_seq",
        """CREATE TABLE plangate.accounts (
            environment text NOT NULL,
            id text NOT NULL,
            record jsonb,
            version bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (environment, id))""",
        """CREATE TABLE plangate.usage (
            environment text NOT NULL,
            scope text NOT NULL,
            feature text NOT NULL,
            period_start timestamptz NOT NULL,
            value double precision NOT NULL,
            version bigint NOT NULL,
            PRIMARY KEY (environment, scope, feature, period_start))""",
        """CREATE TABLE plangate.usage_unique (
            environment text NOT NULL,
            scope text NOT NULL,
            feature text NOT NULL,
            period_start timestamptz NOT NULL,
            unique_key text NOT NULL,
            PRIMARY KEY (environment, scope, feature, period_start, unique_key))""",
        """CREATE TABLE plangate.idempotency (
            environment text NOT NULL,
            key text NOT NULL,
            outcome jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (environment, key))""",
        "CREATE INDEX idempotency_created ON plangate.idempotency (environment, created_at)",
    ),
    (  # quotas (design §7): once-per-counter marks and the durable outbox
        """CREATE TABLE plangate.quota_fired (
            environment text NOT NULL,
            scope text NOT NULL,
            feature text NOT NULL,
            period_start timestamptz NOT NULL,
            mark text NOT NULL,
            fired_at timestamptz NOT NULL,
            PRIMARY KEY (environment, scope, feature, period_start, mark))""",
        """CREATE TABLE plangate.outbox (
            seq bigserial PRIMARY KEY,
            environment text NOT NULL,
            id text NOT NULL,
            kind text NOT NULL,
            account text NOT NULL,
            target text NOT NULL,
            payload jsonb NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            last_error text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            next_attempt_at timestamptz,
            UNIQUE (environment, id))""",
        "CREATE INDEX outbox_due ON plangate.outbox (environment, status, next_attempt_at)",
    ),
    (  # 3: the audit log (design §12), one row per admin change, written with the change
        """CREATE TABLE plangate.audit (
            seq bigserial PRIMARY KEY,
            environment text NOT NULL,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            account text NOT NULL,
            target text NOT NULL,
            before jsonb,
            after jsonb)""",
        "CREATE INDEX audit_account ON plangate.audit (environment, account, seq)",
        "CREATE INDEX audit_at ON plangate.audit (environment, at)",
    ),
    (  # 4: usage history (design §6.2): one bucket per counter and hour (`engine.history`)
        """CREATE TABLE plangate.usage_hourly (
            environment text NOT NULL,
            scope text NOT NULL,
            feature text NOT NULL,
            period_start timestamptz NOT NULL,
            hour timestamptz NOT NULL,
            added double precision NOT NULL,
            last double precision NOT NULL,
            PRIMARY KEY (environment, scope, feature, period_start, hour))""",
        "CREATE INDEX usage_hourly_hour ON plangate.usage_hourly (environment, hour)",
    ),
    (  # 5: lifecycle webhooks (design §7.1): once-only marks and the scheduler's watermark
        """CREATE TABLE plangate.lifecycle_marks (
            environment text NOT NULL,
            mark text NOT NULL,
            fired_at timestamptz NOT NULL,
            PRIMARY KEY (environment, mark))""",
        """CREATE TABLE plangate.lifecycle_clock (
            environment text PRIMARY KEY,
            upto timestamptz NOT NULL)""",
    ),
    (  # 6: holds (design §17)
        """CREATE TABLE plangate.holds (
            environment text NOT NULL,
            id text NOT NULL,
            account text NOT NULL,
            feature text NOT NULL,
            scope text NOT NULL,
            amount double precision NOT NULL,
            pool text NOT NULL,
            pool_scope text NOT NULL,
            per_unit double precision NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            state text NOT NULL,
            ended_at timestamptz,
            settled double precision,
            PRIMARY KEY (environment, id))""",
        "CREATE INDEX holds_leg ON plangate.holds (environment, state, scope, feature)",
        "CREATE INDEX holds_pool ON plangate.holds (environment, state, pool_scope, pool)",
        "CREATE INDEX holds_account ON plangate.holds (environment, account, state)",
    ),
    (  # 7: the Stripe connection (design §18): applied event ids, per-object last applied
        """CREATE TABLE plangate.stripe_events (
            environment text NOT NULL,
            event_id text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (environment, event_id))""",
        """CREATE TABLE plangate.stripe_objects (
            environment text NOT NULL,
            object_id text NOT NULL,
            account text NOT NULL,
            last_created bigint NOT NULL,
            last_event_id text NOT NULL,
            last_type text NOT NULL,
            PRIMARY KEY (environment, object_id))""",
        "CREATE INDEX stripe_objects_account ON plangate.stripe_objects (environment, account)",
    ),
]
"""Schema versions in order; version N is MIGRATIONS[N-1]. Append, never edit, and keep each
step additive so that sidecars still on the previous release keep working during a rollout."""

_STRIPE_OBJECT = "object_id, account, last_created, last_event_id, last_type"

NOTIFY_LIMIT = 7900
"""Bytes per NOTIFY payload; PostgreSQL refuses 8000 or more, so changes go in several."""

# -- SQL used by usage writes (each statement sorts what it locks: see the module docstring) ----

_CLAIM_KEYS = """
INSERT INTO plangate.idempotency (environment, key)
SELECT %s, k FROM unnest(%s::text[]) AS k ORDER BY k COLLATE "C"
ON CONFLICT DO NOTHING
RETURNING key"""

_KEY_OUTCOMES = """
SELECT key, outcome FROM plangate.idempotency WHERE environment = %s AND key = ANY(%s::text[])"""

_NEXT_VERSIONS = "SELECT nextval('plangate.change_seq') FROM generate_series(1, %s)"

_ENSURE_COUNTERS = """
INSERT INTO plangate.usage (environment, scope, feature, period_start, value, version)
SELECT %s, c.scope, c.feature, c.period_start, 0, 0
FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS c(scope, feature, period_start)
ORDER BY c.scope COLLATE "C", c.feature COLLATE "C", c.period_start
ON CONFLICT DO NOTHING"""

_LOCK_COUNTERS = """
SELECT u.scope, u.feature, u.period_start, u.value FROM plangate.usage AS u
WHERE u.environment = %s AND (u.scope, u.feature, u.period_start) IN (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[]))
ORDER BY u.scope COLLATE "C", u.feature COLLATE "C", u.period_start
FOR UPDATE"""

_SEEN_UNIQUE = """
SELECT scope, feature, period_start, unique_key FROM plangate.usage_unique
WHERE environment = %s AND (scope, feature, period_start, unique_key) IN (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[]))"""

_ADD_UNIQUE = """
INSERT INTO plangate.usage_unique (environment, scope, feature, period_start, unique_key)
SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[])
ON CONFLICT DO NOTHING"""

_SET_COUNTERS = """
UPDATE plangate.usage AS u SET value = v.value, version = v.version
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::int8[])
    AS v(scope, feature, period_start, value, version)
WHERE u.environment = %s
  AND (u.scope, u.feature, u.period_start) = (v.scope, v.feature, v.period_start)"""

_FIRED_MARKS = """
SELECT scope, feature, period_start, mark FROM plangate.quota_fired
WHERE environment = %s AND (scope, feature, period_start) IN (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[]))"""

_ADD_MARKS = """
INSERT INTO plangate.quota_fired (environment, scope, feature, period_start, mark, fired_at)
SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::timestamptz[])"""

_ADD_OUTBOX = """
INSERT INTO plangate.outbox (environment, id, kind, account, target, payload, status,
    created_at, updated_at, next_attempt_at)
SELECT %s, v.id, v.kind, v.account, v.target, v.payload::jsonb, 'pending', v.at, v.at, v.at
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
    WITH ORDINALITY AS v(id, kind, account, target, payload, at, n)
ORDER BY v.n"""

_UNCLAIM_KEYS = """
DELETE FROM plangate.idempotency
WHERE environment = %s AND key = ANY(%s::text[]) AND outcome IS NULL"""

_SET_OUTCOMES = """
UPDATE plangate.idempotency AS i SET outcome = v.outcome::jsonb
FROM unnest(%s::text[], %s::text[]) AS v(key, outcome)
WHERE i.environment = %s AND i.key = v.key"""


def channel_for(environment: str) -> str:
    """The NOTIFY channel of one environment (an identifier: at most 63 bytes)."""
    name = f"plangate:{environment}"
    if len(name.encode()) <= 63:
        return name
    return "plangate:" + hashlib.sha256(environment.encode()).hexdigest()[:40]


def _read_holds(conn: Connection, env: str, writes: Sequence[UsageWrite]) -> dict[str, Hold]:
    """The holds the batch's admissions count (active on their legs) and those it ends (their
    rows locked, so two sidecars never end one hold twice)."""
    out: dict[str, Hold] = {}
    legs = sorted({leg for w in writes if w.admit is not None for leg in w.legs})
    for scope, feature in legs:
        for row in conn.execute(
            f"SELECT {HOLD_COLUMNS} FROM plangate.holds WHERE environment = %s "
            "AND state = 'active' AND ((scope = %s AND feature = %s) "
            "OR (pool_scope = %s AND pool = %s))",
            (env, scope, feature, scope, feature),
        ).fetchall():
            hold = hold_from(row, utc)
            out[hold.id] = hold
    ends = sorted({w.ends.hold_id for w in writes if w.ends is not None})
    if ends:
        for row in conn.execute(
            f"SELECT {HOLD_COLUMNS} FROM plangate.holds WHERE environment = %s "
            "AND id = ANY(%s) ORDER BY id FOR UPDATE",
            (env, ends),
        ).fetchall():
            hold = hold_from(row, utc)
            out[hold.id] = hold
    return out


def _write_holds(conn: Connection, env: str, made: Sequence[Hold], ended: Sequence[Hold]) -> None:
    for h in made:
        conn.execute(
            f"INSERT INTO plangate.holds (environment, {HOLD_COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'active', NULL, NULL)",
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
                h.created_at,
                h.expires_at,
            ),
        )
    for h in ended:
        conn.execute(
            "UPDATE plangate.holds SET state = %s, ended_at = %s, settled = %s "
            "WHERE environment = %s AND id = %s",
            (h.state.value, h.ended_at, h.settled, env, h.id),
        )


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


# -- change notifications ----------------------------------------------------------------------

AccountChange = tuple[str, int]
"""(account id, version)."""

CounterChange = tuple[CounterKey, float, int]
"""(counter, value, version)."""


def encode_changes(
    accounts: Iterable[AccountChange], counters: Iterable[CounterChange]
) -> Iterator[str]:
    """NOTIFY payloads naming the changes, each under the payload limit.

    `{"a": [[id, version], ...], "c": [[scope, feature, period start, value, version], ...]}`.
    An entry that cannot fit at all turns into `{"reconcile": true}`: listeners then reload.
    """
    entries: list[tuple[str, Any]] = [("a", [i, v]) for i, v in accounts]
    entries += [("c", [s, f, ts(p), value, v]) for (s, f, p), value, v in counters]
    batch: dict[str, list[Any]] = {}
    size = 2
    for kind, entry in entries:
        text = json.dumps(entry, separators=(",", ":"))
        cost = len(text) + len(kind) + 6
        if cost + 2 > NOTIFY_LIMIT:
            yield '{"reconcile":true}'
            continue
        if size + cost > NOTIFY_LIMIT:
            yield json.dumps(batch, separators=(",", ":"))
            batch, size = {}, 2
        batch.setdefault(kind, []).append(entry)
        size += cost
    if batch:
        yield json.dumps(batch, separators=(",", ":"))


def decode_changes(
    payload: str,
) -> tuple[dict[str, int], dict[CounterKey, tuple[float, int]], bool]:
    """Accounts (id -> version), counters (key -> (value, version)) and whether to reload all."""
    data = json.loads(payload)
    accounts = {str(i): int(v) for i, v in data.get("a", [])}
    counters = {
        (str(s), str(f), parse_ts(p)): (float(value), int(v))
        for s, f, p, value, v in data.get("c", [])
    }
    return accounts, counters, bool(data.get("reconcile"))


# -- reading (shared with the change feed, which reads on its own connection) ------------------


def read_accounts(
    conn: Connection, environment: str, ids: Sequence[str] | None = None
) -> dict[str, tuple[Record | None, int]]:
    """Every account row (or those in `ids`) as id -> (record or None if deleted, version)."""
    if ids is None:
        cur = conn.execute(
            "SELECT id, record, version FROM plangate.accounts WHERE environment = %s",
            (environment,),
        )
    else:
        cur = conn.execute(
            "SELECT id, record, version FROM plangate.accounts "
            "WHERE environment = %s AND id = ANY(%s::text[])",
            (environment, list(ids)),
        )
    return {account_id: (record, int(version)) for account_id, record, version in cur}


_ADD_BUCKETS = """
INSERT INTO plangate.usage_hourly AS h (environment, scope, feature, period_start, hour, added, last)
SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],
    %s::float8[], %s::float8[])
ON CONFLICT (environment, scope, feature, period_start, hour)
DO UPDATE SET added = h.added + excluded.added, last = excluded.last"""


def _add_buckets(
    conn: Connection, env: str, buckets: Mapping[BucketKey, tuple[float, float]]
) -> None:
    """Add a batch's hourly history (`engine.history.hour_buckets`) in its transaction. Its
    counters are locked already, so no other transaction writes these buckets meanwhile."""
    if buckets:
        rows = [(*key, added, last) for key, (added, last) in buckets.items()]
        conn.execute(_ADD_BUCKETS, (env, *_columns(rows, 6)))


def read_counters(conn: Connection, environment: str) -> dict[CounterKey, tuple[float, int]]:
    """Every counter of the environment as key -> (value, version)."""
    cur = conn.execute(
        "SELECT scope, feature, period_start, value, version FROM plangate.usage "
        "WHERE environment = %s",
        (environment,),
    )
    return {
        (scope, feature, utc(start)): (float(value), int(version))
        for scope, feature, start, value, version in cur
    }


class Versions:
    """The newest change version this process holds in memory for each account and counter.

    The store advances it for its own commits and its loads; the change feed advances it
    (holding the live state's write lock) before applying a change, and skips a change whose
    version is not newer. That keeps memory monotonic whatever order changes arrive in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, int] = {}
        self._counters: dict[CounterKey, int] = {}

    def advance_account(self, account_id: str, version: int) -> bool:
        """Record `version` for the account; False (and no change) if it is not newer."""
        with self._lock:
            if version <= self._accounts.get(account_id, -1):
                return False
            self._accounts[account_id] = version
            return True

    def advance_counter(self, key: CounterKey, version: int) -> bool:
        with self._lock:
            if version <= self._counters.get(key, -1):
                return False
            self._counters[key] = version
            return True

    def account(self, account_id: str) -> int | None:
        return self._accounts.get(account_id)

    def counter(self, key: CounterKey) -> int | None:
        return self._counters.get(key)


class PostgresStore:
    """The `Store` of one environment in a PostgreSQL database shared with other sidecars."""

    def __init__(
        self, url: str, environment: str = "default", connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.environment = environment
        self.channel = channel_for(environment)
        self.instance = uuid.uuid4().hex[:8]
        """This store's name among the sidecars; connections carry it in `application_name`."""
        self.connect_timeout = connect_timeout
        self.versions = Versions()
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._fault: str | None = None  # disk full / read-only, seen by the last transaction
        self._migrate()

    # -- connections -------------------------------------------------------------------------

    def connect(self, role: str, autocommit: bool = False) -> Connection:
        """A new connection named `plangate/<role>/<instance>`; StoreUnavailable if it fails."""
        try:
            return psycopg.connect(
                self.url,
                autocommit=autocommit,
                application_name=f"plangate/{role}/{self.instance}",
                connect_timeout=max(1, round(self.connect_timeout)),
                # A dead peer on a silent network is noticed in ~20 s rather than hours.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=3,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc

    def _writer(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect("store")
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _transaction(
        self, work: Callable[[Connection], T], attempts: int = 3, writes: bool = True
    ) -> T:
        """Run `work` in one transaction and commit it, retrying what is safe to retry. A
        committed transaction that `writes` ends a fault seen before; a read proves nothing."""
        with self._lock:
            for attempt in range(1, attempts + 1):
                conn = self._writer()
                try:
                    result = work(conn)
                except (pg_errors.InsufficientResources, pg_errors.ReadOnlySqlTransaction) as exc:
                    self._rollback(conn)
                    fault = _fault_of(exc)
                    self._fault = str(fault)
                    raise fault from exc
                except pg_errors.TransactionRollback as exc:  # deadlock / serialization failure
                    self._rollback(conn)
                    if attempt == attempts:
                        raise StoreUnavailable(f"PostgreSQL: {_first_line(exc)}") from exc
                    log.warning("retrying a transaction after: %s", _first_line(exc))
                    continue
                except psycopg.OperationalError as exc:
                    # Nothing was committed: COMMIT was never sent. Retry on a fresh connection.
                    self._discard()
                    if attempt == attempts:
                        raise StoreUnavailable(
                            f"lost the PostgreSQL connection: {_first_line(exc)}"
                        ) from exc
                    continue
                except BaseException:
                    self._rollback(conn)
                    raise
                try:
                    conn.commit()
                except psycopg.OperationalError as exc:
                    self._discard()
                    raise StoreUnavailable(
                        "lost the PostgreSQL connection while committing; the outcome is unknown "
                        f"(a retry with the same idempotency key is safe): {_first_line(exc)}"
                    ) from exc
                if writes:
                    self._fault = None
                return result
        raise AssertionError("unreachable")

    def health(self) -> str | None:
        """The fault the last write met (disk full, read-only), while it lasts. An unreachable
        database is the change feed's to report (`sync.pg_feed`), without waiting on it here."""
        if self._fault is None:
            return None
        try:  # one tiny write tells whether it is over
            self._transaction(
                lambda conn: conn.execute(
                    "UPDATE plangate.schema_version SET applied_at = applied_at "
                    "WHERE version = (SELECT min(version) FROM plangate.schema_version)"
                ),
                attempts=1,
            )
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def _rollback(self, conn: Connection) -> None:
        try:
            conn.rollback()
        except psycopg.Error:
            self._discard()

    def _read(self, work: Callable[[Connection], T]) -> T:
        return self._transaction(work, writes=False)

    # -- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the schema to this release's version. A database already there is only read
        (no DDL, no lock, no CREATE privilege needed); otherwise one sidecar migrates under an
        advisory lock while the others wait, then find nothing left to do."""

        def work(conn: Connection) -> None:
            exists = conn.execute("SELECT to_regclass('plangate.schema_version')").fetchone()
            current = self._version(conn) if exists and exists[0] is not None else 0
            if current >= len(MIGRATIONS):
                if current > len(MIGRATIONS):
                    log.warning(
                        "database schema version %d is newer than this sidecar's (%d); "
                        "running on it (schema steps are additive)",
                        current,
                        len(MIGRATIONS),
                    )
                return
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS plangate")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS plangate.schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = self._version(conn)
            for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO plangate.schema_version (version) VALUES (%s)", (version,)
                )
                log.info("PostgreSQL schema migrated to version %d", version)

        self._transaction(work)

    @staticmethod
    def _version(conn: Connection) -> int:
        row = conn.execute(
            "SELECT coalesce(max(version), 0) FROM plangate.schema_version"
        ).fetchone()
        return int(row[0]) if row else 0

    @property
    def schema_version(self) -> int:
        return self._read(self._version)

    # -- accounts ----------------------------------------------------------------------------

    def load_records(self) -> dict[str, Record]:
        rows = self._read(lambda conn: read_accounts(conn, self.environment))
        out: dict[str, Record] = {}
        for account_id, (record, version) in rows.items():
            self.versions.advance_account(account_id, version)
            if record is not None:
                out[account_id] = record
        return out

    def _audit(self, conn: Connection, entry: AuditEntry | None) -> None:
        """Append `entry` inside the caller's transaction (nothing if None)."""
        if entry is None:
            return
        conn.execute(
            "INSERT INTO plangate.audit (environment, at, actor, action, account, target, "
            "before, after) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)",
            (self.environment, entry.at, *audit_columns(entry)),
        )

    def save_record(
        self,
        record: Record,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
        stripe: StripeMark | None = None,
    ) -> None:
        """Upsert the record, but only over the version this sidecar holds in memory.

        Admin edits are read-modify-write of the whole record, built from memory under the
        live state's write lock (`LiveState.edit`), which every change of memory and of
        `versions` holds too: so the version held here is the one the edit was built from.
        If another sidecar changed the account since (its notification not applied here yet),
        writing would silently undo that change; `StoreConflict` refuses instead, and the
        edit is rebuilt from the current record (`refresh_records`).
        """
        account_id = str(record["id"])
        expected = self.versions.account(account_id)

        def work(conn: Connection) -> int:
            row = conn.execute(
                "INSERT INTO plangate.accounts AS a (environment, id, record, version) "
                "VALUES (%s, %s, %s::jsonb, nextval('plangate.change_seq')) "
                "ON CONFLICT (environment, id) DO UPDATE SET record = excluded.record, "
                "version = excluded.version, updated_at = now() WHERE a.version = %s "
                "RETURNING version",
                (
                    self.environment,
                    account_id,
                    json.dumps(record, sort_keys=True),
                    -1 if expected is None else expected,
                ),
            ).fetchone()
            if row is None:
                raise StoreConflict(
                    f"account {account_id!r} was just changed through another sidecar; "
                    "retry the request (this sidecar is catching up now)"
                )
            version = int(row[0])
            self._audit(conn, audit)
            _enqueue(conn, self.environment, outbox)
            if stripe is not None:
                self._mark_stripe(conn, stripe)
            self._notify(conn, accounts=[(account_id, version)])
            return version

        self.versions.advance_account(account_id, self._transaction(work))

    def refresh_records(self, ids: Sequence[str]) -> dict[str, Record | None]:
        rows = self._read(lambda conn: read_accounts(conn, self.environment, ids))
        return {
            account_id: record
            for account_id, (record, version) in rows.items()
            if self.versions.advance_account(account_id, version)
        }

    def delete_record(
        self,
        account_id: str,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        def work(conn: Connection) -> int | None:
            row = conn.execute(
                "UPDATE plangate.accounts SET record = NULL, "
                "version = nextval('plangate.change_seq'), updated_at = now() "
                "WHERE environment = %s AND id = %s AND record IS NOT NULL RETURNING version",
                (self.environment, account_id),
            ).fetchone()
            if row is None:
                return None
            self._audit(conn, audit)
            _enqueue(conn, self.environment, outbox)
            self._notify(conn, accounts=[(account_id, int(row[0]))])
            return int(row[0])

        version = self._transaction(work)
        if version is None:
            return False
        self.versions.advance_account(account_id, version)
        return True

    # -- lifecycle marks (design §7.1; several sidecars fire the same events) -----------------

    def fire_lifecycle(self, firings: Sequence[Firing], upto: datetime) -> list[str]:
        def work(conn: Connection) -> list[str]:
            fired: list[str] = []
            for f in firings:
                # A mark another sidecar is inserting makes this wait for its commit, then
                # do nothing: the row is the claim, so exactly one of them enqueues.
                row = conn.execute(
                    "INSERT INTO plangate.lifecycle_marks (environment, mark, fired_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING mark",
                    (self.environment, f.mark, f.at),
                ).fetchone()
                if row is not None:
                    fired.append(f.mark)
                    _enqueue(conn, self.environment, f.entries)
            conn.execute(
                "INSERT INTO plangate.lifecycle_clock AS c (environment, upto) VALUES (%s, %s) "
                "ON CONFLICT (environment) DO UPDATE SET upto = greatest(c.upto, excluded.upto)",
                (self.environment, upto),
            )
            return fired

        return self._transaction(work)

    def lifecycle_upto(self) -> datetime | None:
        def work(conn: Connection) -> datetime | None:
            row = conn.execute(
                "SELECT upto FROM plangate.lifecycle_clock WHERE environment = %s",
                (self.environment,),
            ).fetchone()
            return utc(row[0]) if row else None

        return self._read(work)

    # -- the Stripe connection (design §18) --------------------------------------------------

    def _mark_stripe(self, conn: Connection, mark: StripeMark) -> None:
        conn.execute(
            "INSERT INTO plangate.stripe_events (environment, event_id) VALUES (%s, %s)",
            (self.environment, mark.event_id),
        )
        conn.execute(
            "INSERT INTO plangate.stripe_objects AS o VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (environment, object_id) DO UPDATE SET "
            "account = CASE WHEN %s THEN excluded.account ELSE o.account END, "
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
        def work(conn: Connection) -> None:
            self._mark_stripe(conn, mark)

        self._transaction(work)

    def stripe_seen(self, event_id: str) -> bool:
        def work(conn: Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM plangate.stripe_events WHERE environment = %s AND event_id = %s",
                (self.environment, event_id),
            ).fetchone()
            return row is not None

        return self._read(work)

    def stripe_object(self, object_id: str) -> StripeObject | None:
        def work(conn: Connection) -> StripeObject | None:
            row = conn.execute(
                f"SELECT {_STRIPE_OBJECT} FROM plangate.stripe_objects "
                "WHERE environment = %s AND object_id = %s",
                (self.environment, object_id),
            ).fetchone()
            return None if row is None else StripeObject(*row)

        return self._read(work)

    def stripe_objects_of(self, account_id: str) -> list[StripeObject]:
        def work(conn: Connection) -> list[StripeObject]:
            rows = conn.execute(
                f"SELECT {_STRIPE_OBJECT} FROM plangate.stripe_objects "
                "WHERE environment = %s AND account = %s ORDER BY object_id",
                (self.environment, account_id),
            ).fetchall()
            return [StripeObject(*row) for row in rows]

        return self._read(work)

    # -- usage -------------------------------------------------------------------------------

    def load_counters(self) -> dict[CounterKey, float]:
        rows = self._read(lambda conn: read_counters(conn, self.environment))
        for key, (_value, version) in rows.items():
            self.versions.advance_counter(key, version)
        return {key: value for key, (value, _version) in rows.items()}

    def account_ids(self, after: str, limit: int) -> list[str]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT id FROM plangate.accounts WHERE environment = %s "
                'AND id COLLATE "C" > %s AND record IS NOT NULL ORDER BY id COLLATE "C" LIMIT %s',
                (self.environment, after, limit),
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    def count_accounts(self) -> int:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT count(*) FROM plangate.accounts WHERE environment = %s "
                "AND record IS NOT NULL",
                (self.environment,),
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def load_account(self, account_id: str) -> LoadedAccount:
        """In one read transaction: the row by its key, the owners by jsonb containment (a
        member index is design §19's, not built yet) and the counters by scope."""
        env = self.environment

        def read(conn: Connection) -> tuple[dict[str, tuple[Record, int]], dict[CounterKey, Any]]:
            rows = {i: (r, v) for i, (r, v) in read_accounts(conn, env, [account_id]).items() if r}
            member = json.dumps({"subscriptions": [{"members": [account_id]}]})
            for owner, record, version in conn.execute(
                "SELECT id, record, version FROM plangate.accounts "
                "WHERE environment = %s AND id <> %s AND record @> %s::jsonb",
                (env, account_id, member),
            ):
                rows[owner] = (record, int(version))
            scopes = list(
                dict.fromkeys([f"acct:{account_id}", *scopes_of(r for r, _ in rows.values())])
            )
            cur = conn.execute(
                "SELECT scope, feature, period_start, value, version FROM plangate.usage "
                "WHERE environment = %s AND scope = ANY(%s::text[])",
                (env, scopes),
            )
            counters = {(sc, f, utc(st)): (float(val), int(ver)) for sc, f, st, val, ver in cur}
            return rows, counters

        rows, counters = self._read(read)
        for rid, (_record, version) in rows.items():
            self.versions.advance_account(rid, version)
        for key, (_value, version) in counters.items():
            self.versions.advance_counter(key, version)
        return LoadedAccount(
            {rid: record for rid, (record, _v) in rows.items()},
            {key: value for key, (value, _v) in counters.items()},
        )

    def load_holds(self) -> list[Hold]:
        def work(conn: Connection) -> list[Hold]:
            rows = conn.execute(
                f"SELECT {HOLD_COLUMNS} FROM plangate.holds "
                "WHERE environment = %s AND state = 'active'",
                (self.environment,),
            ).fetchall()
            return [hold_from(r, utc) for r in rows]

        return self._read(work)

    def get_hold(self, hold_id: str) -> Hold | None:
        def work(conn: Connection) -> Hold | None:
            row = conn.execute(
                f"SELECT {HOLD_COLUMNS} FROM plangate.holds WHERE environment = %s AND id = %s",
                (self.environment, hold_id),
            ).fetchone()
            return hold_from(row, utc) if row is not None else None

        return self._read(work)

    def record_usage(self, writes: Sequence[UsageWrite]) -> list[UsageOutcome]:
        if not writes:
            return []
        outcomes, changed = self._transaction(lambda conn: self._apply(conn, writes))
        for key, _value, version in changed:
            self.versions.advance_counter(key, version)
        return outcomes

    def _apply(
        self, conn: Connection, writes: Sequence[UsageWrite]
    ) -> tuple[list[UsageOutcome], list[CounterChange]]:
        """One batch in the current transaction, in two round trips (pipelined): claim the keys,
        lock the counters and read what the batch depends on; `apply_batch`; write it back."""
        env = self.environment
        keys = sorted({w.report.idempotency_key for w in writes if w.report.idempotency_key})
        counters = sorted({(s, f, utc(p)) for w in writes for s, f, p in w.counters})
        quota_counters = sorted({(s, f, utc(p)) for w in writes for s, f, p in w.quota_counters})
        wanted = sorted({(*_counter(w), w.report.unique_key) for w in writes if w.counts_unique})
        with conn.pipeline():
            if keys:
                # A key another transaction holds makes the claim wait for it; the next
                # statement (a new snapshot) then reads its committed outcome. Ours read NULL.
                conn.execute(_CLAIM_KEYS, (env, keys))
                key_rows = conn.execute(_KEY_OUTCOMES, (env, keys))
            columns = _columns(counters, 3)
            conn.execute(_ENSURE_COUNTERS, (env, *columns))
            locked = conn.execute(_LOCK_COUNTERS, (env, *columns))
            # Taken while holding the counters' locks, so each counter's versions only grow.
            numbers = conn.execute(_NEXT_VERSIONS, (len(counters),))
            if wanted:
                unique_rows = conn.execute(_SEEN_UNIQUE, (env, *_columns(wanted, 4)))
            if quota_counters:  # read under the counters' locks: no one else fires them now
                mark_rows = conn.execute(_FIRED_MARKS, (env, *_columns(quota_counters, 3)))
            reads = BatchReads(
                outcomes={k: outcome_from(o) for k, o in key_rows.fetchall() if o is not None}
                if keys
                else {},
                values={(s, f, utc(p)): float(v) for s, f, p, v in locked.fetchall()},
                uniques={((s, f, utc(p)), u) for s, f, p, u in unique_rows.fetchall()}
                if wanted
                else set(),
                marks={((s, f, utc(p)), m) for s, f, p, m in mark_rows.fetchall()}
                if quota_counters
                else set(),
            )
            versions = [int(n) for (n,) in numbers.fetchall()]
        # Read after the counters' locks (a new snapshot): every hold another sidecar made or
        # ended on these counters has committed, so admissions count them all (design §17).
        reads = replace(reads, holds=_read_holds(conn, env, writes))
        if len(reads.values) != len(counters):  # rows deleted behind PlanGate's back: start over
            raise pg_errors.SerializationFailure("usage rows vanished during the transaction")

        done = apply_batch(writes, reads)

        changed = [
            (c, value, v) for (c, value), v in zip(done.values.items(), versions, strict=False)
        ]
        forgotten = [k for k in keys if k not in done.keys and k not in reads.outcomes]
        entries = [(e, f.at) for _c, f in done.marks for e in f.entries]
        with conn.pipeline():
            if done.uniques:
                uniques = [(*c, u) for c, u in done.uniques]
                conn.execute(_ADD_UNIQUE, (env, *_columns(uniques, 4)))
            if changed:
                counter_rows = [(*c, value, version) for c, value, version in changed]
                conn.execute(_SET_COUNTERS, (*_columns(counter_rows, 5), env))
            if done.keys:
                outcome_rows = [(k, outcome_text(o)) for k, o in done.keys.items()]
                conn.execute(_SET_OUTCOMES, (*_columns(outcome_rows, 2), env))
            if forgotten:  # claimed for a write the rule rejected: the key stays unused
                conn.execute(_UNCLAIM_KEYS, (env, forgotten))
            if done.marks:
                marks = [(*c, f.mark, f.at) for c, f in done.marks]
                conn.execute(_ADD_MARKS, (env, *_columns(marks, 5)))
            if entries:
                outbox = [
                    (e.id, e.kind, e.account, e.target, json.dumps(e.payload, sort_keys=True), at)
                    for e, at in entries
                ]
                conn.execute(_ADD_OUTBOX, (env, *_columns(outbox, 6)))
            _add_buckets(conn, env, hour_buckets(writes, reads.values, done.outcomes))
            _write_holds(conn, env, done.holds, done.ended)
            self._notify(conn, counters=changed)
        return done.outcomes, changed

    def reset_usage(
        self,
        scope_key: str,
        feature: str,
        period_start: datetime,
        *,
        burns: Sequence[str] = (),
        audit: AuditEntry | None = None,
    ) -> float:
        where = "environment = %s AND scope = %s AND feature = %s AND period_start = %s"
        keys: list[CounterKey] = [
            (scope_key, name, utc(period_start)) for name in (feature, *burns)
        ]

        def work(conn: Connection) -> tuple[float, list[tuple[CounterKey, int]]]:
            previous, zeroed = 0.0, []
            for key in keys:
                params = (self.environment, *key)
                row = conn.execute(
                    f"SELECT value FROM plangate.usage WHERE {where} FOR UPDATE", params
                ).fetchone()
                conn.execute(f"DELETE FROM plangate.usage_unique WHERE {where}", params)
                conn.execute(f"DELETE FROM plangate.quota_fired WHERE {where}", params)
                conn.execute(f"DELETE FROM plangate.usage_hourly WHERE {where}", params)
                if row is None:
                    continue
                if key is keys[0]:
                    previous = float(row[0])
                updated = conn.execute(
                    "UPDATE plangate.usage SET value = 0, version = nextval('plangate.change_seq') "
                    f"WHERE {where} RETURNING version",
                    params,
                ).fetchone()
                assert updated is not None
                zeroed.append((key, int(updated[0])))
            if audit is not None:
                self._audit(conn, replace(audit, before={"usage": previous}, after={"usage": 0.0}))
            self._notify(conn, counters=[(key, 0.0, version) for key, version in zeroed])
            return previous, zeroed

        previous, zeroed = self._transaction(work)
        for key, version in zeroed:
            self.versions.advance_counter(key, version)
        return previous

    # -- usage history and export (design §6.2) ----------------------------------------------

    def usage_buckets(
        self, scope_key: str, feature: str, since: datetime, until: datetime
    ) -> list[Bucket]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT period_start, hour, added, last FROM plangate.usage_hourly "
                "WHERE environment = %s AND scope = %s AND feature = %s AND hour >= %s "
                "AND hour < %s ORDER BY hour",
                (self.environment, scope_key, feature, since, until),
            ).fetchall()
        )
        return [Bucket(utc(p), utc(h), float(a), float(v)) for p, h, a, v in rows]

    def counters_of(
        self, scope_keys: Sequence[str], until: datetime
    ) -> list[tuple[str, str, datetime, float]]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT scope, feature, period_start, value FROM plangate.usage "
                "WHERE environment = %s AND scope = ANY(%s::text[]) AND period_start < %s "
                'ORDER BY scope COLLATE "C", feature COLLATE "C", period_start',
                (self.environment, list(scope_keys), until),
            ).fetchall()
        )
        return [(s, f, utc(p), float(v)) for s, f, p, v in rows]

    # -- outbox (quota webhooks and actions; several sidecars may work through it) -------------

    _DELIVERY = DELIVERY_COLUMNS

    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        def work(conn: Connection) -> list[Delivery]:
            rows = conn.execute(
                f"UPDATE plangate.outbox SET next_attempt_at = %s WHERE seq IN ("
                "SELECT seq FROM plangate.outbox WHERE environment = %s AND status = 'pending' "
                "AND next_attempt_at <= %s ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {self._DELIVERY}",
                (lease_until, self.environment, now, limit),
            ).fetchall()
            return sorted((_delivery(row) for row in rows), key=lambda d: d.seq)

        return self._transaction(work)

    def finish_delivery(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str,
        at: datetime,
    ) -> None:
        def work(conn: Connection) -> None:
            conn.execute(
                "UPDATE plangate.outbox SET status = %s, attempts = %s, next_attempt_at = %s, "
                "last_error = CASE WHEN %s = '' THEN last_error ELSE %s END, updated_at = %s "
                "WHERE environment = %s AND id = %s",
                (
                    status.value,
                    attempts,
                    next_attempt_at,
                    error,
                    error,
                    at,
                    self.environment,
                    delivery_id,
                ),
            )

        self._transaction(work)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        def work(conn: Connection) -> Delivery | None:
            row = conn.execute(
                f"SELECT {self._DELIVERY} FROM plangate.outbox WHERE environment = %s AND id = %s",
                (self.environment, delivery_id),
            ).fetchone()
            return _delivery(row) if row else None

        return self._read(work)

    def list_deliveries(
        self, status: DeliveryStatus | None, limit: int, before_seq: int | None = None
    ) -> list[Delivery]:
        query = f"SELECT {self._DELIVERY} FROM plangate.outbox WHERE environment = %s"
        args: list[Any] = [self.environment]
        if status is not None:
            query += " AND status = %s"
            args.append(status.value)
        if before_seq is not None:
            query += " AND seq < %s"
            args.append(before_seq)
        query += " ORDER BY seq DESC LIMIT %s"
        args.append(limit)
        return self._read(lambda conn: [_delivery(r) for r in conn.execute(query, args)])

    def retry_deliveries(
        self, ids: Sequence[str] | None, now: datetime, *, audit: AuditEntry | None = None
    ) -> list[str]:
        def work(conn: Connection) -> list[str]:
            if ids is None:
                cur = conn.execute(
                    "UPDATE plangate.outbox SET status = 'pending', attempts = 0, "
                    "next_attempt_at = %s, updated_at = %s "
                    "WHERE environment = %s AND status = 'failed' RETURNING seq, id",
                    (now, now, self.environment),
                )
            else:
                cur = conn.execute(
                    "UPDATE plangate.outbox SET status = 'pending', attempts = 0, "
                    "next_attempt_at = %s, updated_at = %s WHERE environment = %s "
                    "AND status <> 'delivered' AND id = ANY(%s::text[]) RETURNING seq, id",
                    (now, now, self.environment, list(ids)),
                )
            changed = [delivery_id for _seq, delivery_id in sorted(cur.fetchall())]
            if changed and audit is not None:
                self._audit(conn, replace(audit, after=retried(changed)))
            return changed

        return self._transaction(work)

    # -- audit log ---------------------------------------------------------------------------

    def list_audit(
        self, account: str, since: datetime | None, limit: int, before_seq: int | None = None
    ) -> list[AuditEntry]:
        query = f"SELECT {AUDIT_COLUMNS} FROM plangate.audit WHERE environment = %s"
        args: list[Any] = [self.environment]
        if account:
            query += " AND account = %s"
            args.append(account)
        if since is not None:
            query += " AND at >= %s"
            args.append(since)
        if before_seq is not None:
            query += " AND seq < %s"
            args.append(before_seq)
        query += " ORDER BY seq DESC LIMIT %s"
        args.append(limit)
        return self._read(
            lambda conn: [audit_from(r, lambda v: v, utc) for r in conn.execute(query, args)]
        )

    def count_deliveries(self) -> dict[DeliveryStatus, int]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT status, count(*) FROM plangate.outbox WHERE environment = %s "
                "GROUP BY status",
                (self.environment,),
            ).fetchall()
        )
        counts = dict.fromkeys(DeliveryStatus, 0)
        counts.update({DeliveryStatus(status): int(n) for status, n in rows})
        return counts

    def housekeep(self, plan: PrunePlan) -> dict[str, int] | None:
        """One transaction, by one sidecar at a time: whoever holds the advisory lock prunes,
        the others skip this pass (there is nothing left for them to do)."""
        env = self.environment

        def by_feature(
            conn: Connection, table: str, cutoffs: Mapping[str, datetime], default: datetime
        ) -> int:
            cur = conn.execute(
                f"DELETE FROM plangate.{table} AS t WHERE t.environment = %s AND t.period_start < "
                "coalesce((SELECT c.before FROM unnest(%s::text[], %s::timestamptz[]) "
                "AS c(feature, before) WHERE c.feature = t.feature), %s)",
                (env, list(cutoffs), list(cutoffs.values()), default),
            )
            return cur.rowcount

        def work(conn: Connection) -> dict[str, int] | None:
            row = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (HOUSEKEEPING_LOCK, env)
            ).fetchone()
            if row is None or not row[0]:
                return None
            return {
                "idempotency_keys": conn.execute(
                    "DELETE FROM plangate.idempotency WHERE environment = %s AND created_at < %s",
                    (env, plan.idempotency_before),
                ).rowcount,
                "tombstones": conn.execute(
                    "DELETE FROM plangate.accounts WHERE environment = %s AND record IS NULL "
                    "AND updated_at < %s",
                    (env, plan.tombstones_before),
                ).rowcount,
                "usage_rows": by_feature(conn, "usage", plan.usage_before, plan.usage_default),
                "unique_keys": by_feature(
                    conn, "usage_unique", plan.usage_before, plan.usage_default
                ),
                "quota_marks": by_feature(
                    conn, "quota_fired", plan.marks_before, plan.marks_default
                ),
                "deliveries": conn.execute(
                    "DELETE FROM plangate.outbox WHERE environment = %s AND status = 'delivered' "
                    "AND updated_at < %s",
                    (env, plan.deliveries_before),
                ).rowcount,
                "audit_entries": conn.execute(
                    "DELETE FROM plangate.audit WHERE environment = %s AND at < %s",
                    (env, plan.audit_before),
                ).rowcount,
                "history_buckets": conn.execute(
                    "DELETE FROM plangate.usage_hourly WHERE environment = %s AND hour < %s",
                    (env, plan.history_before),
                ).rowcount,
                "lifecycle_marks": conn.execute(
                    "DELETE FROM plangate.lifecycle_marks WHERE environment = %s AND fired_at < %s",
                    (env, plan.deliveries_before),
                ).rowcount,
                "stripe_events": conn.execute(
                    "DELETE FROM plangate.stripe_events WHERE environment = %s AND applied_at < %s",
                    (env, plan.deliveries_before),
                ).rowcount,
            }

        return self._transaction(work)

    # -- notifications -----------------------------------------------------------------------

    def _notify(
        self,
        conn: Connection,
        accounts: Iterable[AccountChange] = (),
        counters: Iterable[CounterChange] = (),
    ) -> None:
        """Tell every sidecar of this environment what this transaction changed (sent at commit)."""
        payloads = list(encode_changes(accounts, counters))
        if payloads:
            conn.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (self.channel, payloads)
            )

    def close(self) -> None:
        with self._lock:
            self._discard()


def _enqueue(conn: Connection, environment: str, entries: Sequence[OutboxEntry]) -> None:
    """Outbox rows due now (this sidecar's clock, as the worker's), in the caller's transaction."""
    if entries:
        at = datetime.now(UTC)
        rows = [
            (e.id, e.kind, e.account, e.target, json.dumps(e.payload, sort_keys=True), at)
            for e in entries
        ]
        conn.execute(_ADD_OUTBOX, (environment, *_columns(rows, 6)))


def _counter(w: UsageWrite) -> CounterKey:
    return (w.scope_key, w.feature.key, utc(w.period_start))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to column lists (for `unnest`), `width` columns even when `rows` is empty."""
    return [[row[i] for row in rows] for i in range(width)]


def _delivery(row: Sequence[Any]) -> Delivery:
    return delivery_from(row, lambda payload: payload, utc)


def _fault_of(exc: psycopg.Error) -> StoreUnavailable:
    """A fault of the database server in words an operator can act on."""
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return StoreUnavailable(
            f"PostgreSQL refuses writes ({_first_line(exc)}): --db points at a read-only server "
            "or a standby; point it at the primary. Writes resume by themselves once possible"
        )
    if isinstance(exc, pg_errors.DiskFull):
        return StoreFull(
            f"PostgreSQL's disk is full ({_first_line(exc)}); nothing was recorded. Free space "
            "on the database server: writes resume by themselves, and a retry is safe"
        )
    return StoreFull(
        f"PostgreSQL is out of resources ({_first_line(exc)}); nothing was recorded. "
        "Check the database server; writes resume by themselves, and a retry is safe"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
