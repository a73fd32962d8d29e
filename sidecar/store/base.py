"""The durable-state interface every backend implements (SQLite now, PostgreSQL in shared mode).

Account records are stored in the catalog file's own account format (a JSON object like
one entry of `accounts:`), so one validator (`catalog.accounts.read_accounts`) checks the
file, admin input and what comes back from the store. Usage is kept as counters keyed by
(scope, feature, period start); what a usage write does is the engine's rule (`engine.write_rule`),
which every backend calls between its reads and its writes (design §15).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import orjson

from ..engine.history import Bucket
from ..engine.holds import Hold
from ..engine.write_rule import Admit as Admit
from ..engine.write_rule import CounterKey as CounterKey
from ..engine.write_rule import Fire as Fire
from ..engine.write_rule import Firing as Firing
from ..engine.write_rule import OutboxEntry as OutboxEntry
from ..engine.write_rule import Status as Status
from ..engine.write_rule import UsageOutcome as UsageOutcome
from ..engine.write_rule import UsageWrite as UsageWrite

Record = dict[str, Any]
"""An account in catalog format: {"id", "name", "attributes", "subscriptions", "overrides", "grants"}."""


def _decode(text: str) -> Record:
    """A stored record's JSON text as a dict: orjson (a third of `json.loads`' time, which
    is a tenth of a start-up with a million accounts); what orjson refuses and `json.dumps`
    can write (NaN, integers beyond 64 bits) goes to `json.loads`, which also says what is
    wrong with text that is not JSON at all."""
    try:
        record: Record = orjson.loads(text)
    except orjson.JSONDecodeError:
        record = json.loads(text)
    return record


class PackedRecords(MutableMapping[str, Record]):
    """The stored account records, each held as its compact JSON text.

    Evaluations read `Account`s; a record is read back only to apply an admin edit or to
    re-validate the accounts against a new catalog. Held as dicts, the records would be
    most of the sidecar's memory (~1.5 KB per account, next to ~0.5 KB for the `Account`
    it serves); as text they take ~0.2 KB. Every read decodes a fresh dict to edit freely.
    """

    __slots__ = ("_texts",)

    def __init__(self, records: Mapping[str, Record] | None = None) -> None:
        self._texts: dict[str, str] = {}
        if isinstance(records, PackedRecords):
            self._texts = records._texts  # handed over by a store: adopt, never re-encode
            return
        for account_id, record in (records or {}).items():
            self[account_id] = record

    @classmethod
    def of_texts(cls, rows: Iterable[tuple[str, str]]) -> PackedRecords:
        """Records as the JSON texts a store keeps, adopted without decoding: loading a
        million accounts then never holds a million record dicts at once."""
        packed = cls()
        packed._texts = dict(rows)
        return packed

    def __getitem__(self, account_id: str) -> Record:
        record = _decode(self._texts[account_id])
        if record.get("id") == account_id:
            record["id"] = account_id  # one id string per account: key, Account.id, snapshot key
        return record

    def decoded(self) -> Iterator[tuple[str, Record]]:
        """Every (id, record), each decoded as it is reached: what building a snapshot reads,
        without the mapping protocol's lookup per record."""
        for account_id, text in self._texts.items():
            record = _decode(text)
            if record.get("id") == account_id:
                record["id"] = account_id
            yield account_id, record

    def __setitem__(self, account_id: str, record: Record) -> None:
        self._texts[account_id] = json.dumps(record, separators=(",", ":"))

    def __delitem__(self, account_id: str) -> None:
        del self._texts[account_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._texts


@dataclass(frozen=True, slots=True)
class LoadedAccount:
    """What the working set (design §19) reads to hold one account: its stored record (if
    any), the records of the accounts owning subscriptions it is a member of, and the usage
    counters of every scope those records use (`acct:ID`, `sub:ID`)."""

    records: dict[str, Record]
    counters: dict[CounterKey, float]


def scopes_of(records: Iterable[Record]) -> list[str]:
    """The usage counter scopes the accounts of `records` read: `acct:ID` and `sub:ID` of
    each of their subscriptions (ids the record leaves empty are generated on save)."""
    out: dict[str, None] = {}
    for record in records:
        out[f"acct:{record.get('id', '')}"] = None
        for sub in record.get("subscriptions") or ():
            if isinstance(sub, dict) and sub.get("id"):
                out[f"sub:{sub['id']}"] = None
    return list(out)


class StoreError(OSError):
    """The database cannot be used: not a database, unreadable, or from a newer release."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row as stored. `seq` orders rows (insertion order) and pages listings."""

    seq: int
    id: str
    kind: str
    account: str
    target: str
    payload: Mapping[str, Any]
    status: DeliveryStatus
    attempts: int
    last_error: str
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None  # pending rows only


_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit log row (design §12): who changed what, when, and the changed part before and
    after (JSON values, bounded by `runtime.audit`). `seq` orders rows and pages listings; it is
    0 until the store assigns it."""

    at: datetime
    actor: str
    action: str
    account: str
    target: str
    before: Any = None
    after: Any = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What one housekeeping pass removes (design §14); cut-offs are computed by
    `runtime.housekeeping`, which knows the retention settings and the catalog's periods.

    A usage counter (with its unique keys) goes when its period started before its feature's
    cut-off in `usage_before` (`usage_default` for features the catalog no longer has); a
    fired quota mark likewise with `marks_before` / `marks_default`. A lifecycle mark (design
    §7.1) goes with the delivered rows, when its instant is before `deliveries_before`: the
    scheduler never looks back that far while it runs.
    """

    idempotency_before: datetime
    tombstones_before: datetime
    deliveries_before: datetime
    usage_before: Mapping[str, datetime]
    usage_default: datetime
    marks_before: Mapping[str, datetime]
    marks_default: datetime
    audit_before: datetime
    history_before: datetime = _EARLIEST
    """Hourly usage-history buckets of hours before it go (design §6.2 `--history-days`)."""

    def prunes_counter(self, feature: str, period_start: datetime) -> bool:
        return period_start < self.usage_before.get(feature, self.usage_default)


PRUNED_KINDS = (
    "idempotency_keys",
    "tombstones",
    "usage_rows",
    "unique_keys",
    "quota_marks",
    "deliveries",
    "audit_entries",
    "history_buckets",
    "lifecycle_marks",
    "stripe_events",
)
"""What `Store.housekeep` counts, in the words of `plangate_pruned_total{kind=...}`."""


@dataclass(frozen=True, slots=True)
class StripeMark:
    """An applied Stripe event (design §18), written in the transaction of its change: its id
    (a repeat changes nothing) and its `created` as the object's last applied (an older
    event is stale). `account` links the object to an account; None keeps the link, "" unlinks."""

    event_id: str
    event_type: str
    object_id: str
    created: int
    account: str | None = None


@dataclass(frozen=True, slots=True)
class StripeObject:
    """What the store knows of one Stripe object: the account it belongs to ("" none) and
    the last event applied to it."""

    object_id: str
    account: str
    last_created: int
    last_event_id: str
    last_type: str


class Store(Protocol):
    """Durable state of one environment. Every method is atomic; a return means durable."""

    environment: str

    def load_records(self) -> Mapping[str, Record]: ...

    def load_counters(self) -> dict[CounterKey, float]: ...

    def load_account(self, account_id: str) -> LoadedAccount:
        """One account for the working set (design §19), read in one transaction: its record,
        its owners' records (of the subscriptions naming it a member) and their counters."""
        ...

    def account_ids(self, after: str, limit: int) -> list[str]:
        """Ids of stored accounts greater than `after`, in order, at most `limit`: what lists
        read with a working set (design §19), which holds only some accounts in memory."""
        ...

    def count_accounts(self) -> int:
        """How many accounts are stored (deleted ones not counted)."""
        ...

    def save_record(
        self,
        record: Record,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
        stripe: StripeMark | None = None,
    ) -> None:
        """Store `record`, and `audit` (if given) and the `outbox` rows (its lifecycle
        webhooks, design §7.1, due at once) and the Stripe event it applies (`mark_stripe`)
        in the same transaction. A store other processes
        write too (PostgreSQL) stores it only over the version of the account this process
        last read or wrote, else raises `StoreConflict` and changes nothing: the caller built
        `record` from that version, holding the live state's write lock from reading to here."""
        ...

    def refresh_records(self, ids: Sequence[str]) -> dict[str, Record | None]:
        """The stored records of these accounts that are newer than the versions this process
        last read or wrote (None: deleted), now counted as read; what an edit refused with
        `StoreConflict` is rebuilt from. Empty for a store no other process writes (SQLite).
        Call it holding the live state's write lock, and serve what it returns."""
        ...

    def delete_record(
        self,
        account_id: str,
        *,
        audit: AuditEntry | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Delete a stored record; `audit` and `outbox` are written with it, only if there
        was one (False: none, and nothing is written)."""
        ...

    def fire_lifecycle(self, firings: Sequence[Firing], upto: datetime) -> list[str]:
        """Record each firing's mark unless recorded before — then, in the same transaction,
        enqueue its entries — and move the scheduler's watermark (`lifecycle_upto`) forward to
        `upto` (never back). Returns the marks newly recorded: two sidecars firing the same
        time-driven event both call this, and exactly one of them sees its mark returned."""
        ...

    def lifecycle_upto(self) -> datetime | None:
        """How far the lifecycle scheduler has fired time-driven events (None: never ran)."""
        ...

    def load_holds(self) -> list[Hold]:
        """The holds stored as active (some may have expired since)."""
        ...

    def get_hold(self, hold_id: str) -> Hold | None:
        """One hold in any state (None: never made here)."""
        ...

    def mark_stripe(self, mark: StripeMark) -> None:
        """Record an applied Stripe event that changed no account (design §18)."""
        ...

    def stripe_seen(self, event_id: str) -> bool:
        """Whether a Stripe event with this id was applied before."""
        ...

    def stripe_object(self, object_id: str) -> StripeObject | None:
        """The Stripe object's account link and last applied event, or None if never seen."""
        ...

    def stripe_objects_of(self, account_id: str) -> list[StripeObject]:
        """Every Stripe object linked to the account, by object id."""
        ...

    def record_usage(self, writes: Sequence[UsageWrite]) -> list[UsageOutcome]:
        """Apply a batch in one transaction; idempotency keys seen before return the first outcome."""
        ...

    def reset_usage(
        self,
        scope_key: str,
        feature: str,
        period_start: datetime,
        *,
        burns: Sequence[str] = (),
        audit: AuditEntry | None = None,
    ) -> float:
        """Zero a counter and the counters `burns` names (its top-up burn rows) in one
        transaction, forgetting their unique keys and `Firing` marks so thresholds fire again
        in the fresh period, and their history buckets, so the history keeps adding up to
        the counter; returns the counter's previous value. `audit` is written with
        them, its `before` set to that value."""
        ...

    # -- usage history and export (design §6.2) ----------------------------------------------

    def usage_buckets(
        self, scope_key: str, feature: str, since: datetime, until: datetime
    ) -> list[Bucket]:
        """The hourly buckets of one scope's feature with `since <= hour < until`, by hour."""
        ...

    def counters_of(
        self, scope_keys: Sequence[str], until: datetime
    ) -> list[tuple[str, str, datetime, float]]:
        """(scope, feature, period start, value) of every stored counter of `scope_keys`
        whose period started before `until`, sorted by scope, feature and period start: one
        page of an export (the caller bounds `scope_keys`)."""
        ...

    # -- outbox (quota webhooks and actions, design §7) ----------------------------------------
    # Rows are written by `record_usage` (from `Firing.entries`), `save_record` /
    # `delete_record` (`outbox`) and `fire_lifecycle`, and move
    # pending -> delivered | failed; `retry_deliveries` moves failed (or pending) back to due.

    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        """Pending rows due at `now` (next_attempt_at <= now), oldest first, at most `limit`.

        Atomically moves each claimed row's next_attempt_at to `lease_until`, so a second
        worker (another sidecar sharing the database) skips it, and a worker that dies
        mid-delivery leaves it due again once the lease ends (PostgreSQL: FOR UPDATE SKIP LOCKED).
        """
        ...

    def finish_delivery(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str,
        at: datetime,
    ) -> None:
        """Record an attempt's result: the new status, attempt count, next due time (pending
        only), last error ("" keeps the previous one) and `at` as updated_at."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    def list_deliveries(
        self, status: DeliveryStatus | None, limit: int, before_seq: int | None = None
    ) -> list[Delivery]:
        """Newest first; `before_seq` pages (rows with a smaller seq)."""
        ...

    def retry_deliveries(
        self, ids: Sequence[str] | None, now: datetime, *, audit: AuditEntry | None = None
    ) -> list[str]:
        """Make rows due again with a fresh attempt budget: the given ids that are not
        delivered, or (ids=None) every failed row. Returns the ids changed; `audit`, with
        those ids as its `after`, is written with them when there are any."""
        ...

    # -- audit log (design §12) ----------------------------------------------------------------

    def list_audit(
        self, account: str, since: datetime | None, limit: int, before_seq: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; of one account unless `account` is ""; at or after `since`;
        `before_seq` pages (rows with a smaller seq)."""
        ...

    def count_deliveries(self) -> dict[DeliveryStatus, int]: ...

    def housekeep(self, plan: PrunePlan) -> dict[str, int] | None:
        """Remove what `plan` names, in one transaction; rows removed per kind (`PRUNED_KINDS`).
        None when another sidecar sharing the database is doing it right now."""
        ...

    def health(self) -> str | None:
        """What keeps the store from accepting writes now (the database file deleted, the
        disk full, read-only), as a message for an operator, or None. Cheap enough for every
        readiness check; after a fault it retries a tiny write, so it clears on its own."""
        ...

    def close(self) -> None: ...
