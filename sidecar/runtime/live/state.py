"""The live sidecar: the in-memory snapshot evaluations read, and every change to it.

Evaluations read `self.snapshot` without locks (dict reads are atomic in CPython and
every value in them is immutable). Writers (catalog sync, admin, usage) take `_write`,
write the store first and only then change memory, so memory never holds anything the
store has not made durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ...catalog.model import (
    Account,
    Catalog,
    Feature,
    Subscription,
)
from ...catalog.source import collector_paused
from ...engine import (
    StateView,
    UsageRejected,
    UsageReport,
    check_report,
    memberships_of,
    reindex_members,
    slot_for,
)
from ...engine.balances import burn_feature
from ...engine.holds import HoldView
from ...engine.lifecycle_events import admin_events
from ...engine.sums import overflows
from ...engine.usage import check_instant
from ...store.base import (
    AuditEntry,
    CounterKey,
    Firing,
    LoadedAccount,
    OutboxEntry,
    PackedRecords,
    PrunePlan,
    Record,
    Status,
    Store,
    StripeMark,
    UsageOutcome,
    UsageWrite,
)
from ...store.errors import StoreConflict, StoreUnavailable
from ..edits import records as rec
from ..edits.audit import record_entry
from ..writes.group_commit import GroupCommit
from ..writes.usage_write import Memo, usage_write
from ..writes.webhooks import entries_for
from .declared import apply_layer, split_layer
from .events import AccountChanged, CatalogChanged, EventHub
from .rates import RateWindows
from .working_set import WorkingSet

log = logging.getLogger("plangate.state")

Clock = Callable[[], datetime]

EDIT_ATTEMPTS = 50
"""How often `LiveState.edit` rebuilds an edit that another sidecar's change got ahead of
before it gives up: each conflict means another edit of that account was stored, so the
account moves on; only a sustained race of sidecars on one account gets this far."""

QuotaListener = Callable[[str, str, Sequence[Firing]], None]
"""Told (account, feature, firings) after a usage write crossed quota thresholds."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Counters:
    """Usage counters in memory, mirrored from the store (the engine's `UsageView`)."""

    def __init__(self, values: dict[CounterKey, float]) -> None:
        self.values = values

    def used(self, scope_key: str, feature: str, period_start: datetime) -> float:
        return self.values.get((scope_key, feature, period_start), 0.0)


class LiveState:
    def __init__(
        self, catalog: Catalog, store: Store, clock: Clock = utcnow, max_accounts: int = 0
    ) -> None:
        self.store = store
        self.clock = clock
        self.events = EventHub()
        self._write = threading.RLock()
        # design §19: with --max-accounts, stored accounts are read on first use, not here
        self.working = WorkingSet(max_accounts) if max_accounts else None
        if self.working is None:
            self.records = PackedRecords(store.load_records())
            self.counters = Counters(store.load_counters())
        else:
            self.records, self.counters = PackedRecords(), Counters({})
            for account_id in catalog.accounts:  # declared accounts are always held
                self._take(catalog, self.store.load_account(account_id))
        self.holds = HoldView(store.load_holds())  # design §17: a restart keeps active holds
        self.rates = RateWindows()  # design §17: in memory only, this sidecar's own traffic
        self.snapshot = self._build(catalog, self.records)
        self._subscriptions = subscription_index(self.snapshot.accounts.values())
        self.catalog_error: str | None = None  # the last rejected catalog change, if any
        # how far past now a report may be dated: `serve` sets --max-report-ahead-seconds
        self.report_ahead = timedelta.max
        # working set: told after a load on another thread, so the loop evicts (`serve` sets it)
        self.loaded_off_loop: Callable[[], None] = lambda: None
        self.quota_listeners: list[QuotaListener] = []  # metrics, the outbox worker's wake-up
        self.enqueued_listeners: list[Callable[[], None]] = []  # told of new outbox rows
        # concurrent Report/Consume calls share a store transaction (one commit, one lock per counter)
        self._usage_writes = GroupCommit[UsageWrite, UsageOutcome](
            self._record, shared_errors=(StoreUnavailable, StoreConflict)
        )

    @property
    def _accounts(self) -> dict[str, Account]:
        return self.snapshot.accounts  # type: ignore[return-value]  # built as a dict by _build

    @property
    def _memberships(self) -> dict[str, list[Subscription]]:
        return self.snapshot.memberships  # type: ignore[return-value]

    # -- working set (design §19) ------------------------------------------------------------

    def _take(self, catalog: Catalog, loaded: LoadedAccount) -> None:
        """Start-up: hold what the store has of a declared account (its stored layer, the
        owners of pools it is in — pinned, so a declared member never loses its pool)."""
        ws = self.working
        assert ws is not None
        for account_id, record in loaded.records.items():
            self.records[account_id] = record
            if account_id not in catalog.accounts:
                ws.add(account_id)
                ws.pin((account_id,))
        self.counters.values.update(loaded.counters)
        ws.note_counters(loaded.counters)

    def needs_load(self, account_id: str) -> bool:
        """Whether `account_id` must be read from the store before it is used; a hit moves
        it to the most recently used end. Always False without `--max-accounts`."""
        ws = self.working
        if ws is None or account_id in self.catalog.accounts:
            return False
        if ws.has(account_id):
            ws.stats.hits += 1
            return False
        return True

    def ensure(self, account_id: str) -> None:
        """`load` if the account is not held: for callers off the loop (admin edits)."""
        if self.needs_load(account_id):
            assert self.working is not None
            self.working.stats.misses += 1
            self.load(account_id)
            self.loaded_off_loop()

    def load(self, account_id: str) -> None:
        """Read a stored account (with the owners of the pools it is in, and their counters)
        into memory: a working-set miss. Blocks on the store, so it runs off the loop; a
        store that cannot answer raises `StoreUnavailable` and nothing is held."""
        ws = self.working
        assert ws is not None
        with self._write:
            if account_id in self.catalog.accounts or ws.has(account_id):
                return  # another caller loaded it while this one waited for the lock
            started = time.perf_counter()
            loaded = self.store.load_account(account_id)
            self._hold(account_id, loaded)
            ws.stats.loaded(time.perf_counter() - started)

    def _hold(self, account_id: str, loaded: LoadedAccount) -> None:
        ws = self.working
        assert ws is not None
        catalog, fresh = self.catalog, []
        for rid, record in loaded.records.items():
            if rid in catalog.accounts or ws.holds(rid):
                continue  # held: memory is kept current, the read may be older
            try:
                fresh.append((self._merge(catalog, record), record))
            except rec.AdminError as exc:
                raise StoreUnavailable(
                    f"stored account {rid!r} does not fit catalog {catalog.version}: {exc}"
                ) from exc
        scopes = {f"acct:{account_id}"}
        for account, record in sorted(fresh, key=lambda f: f[0].id == account_id):
            self.records[account.id] = record
            self._serve(account)
            ws.add(account.id)
            scopes.add(f"acct:{account.id}")
            scopes.update(f"sub:{sub.id}" for sub in account.subscriptions)
        values = {k: v for k, v in loaded.counters.items() if k[0] in scopes}
        self.counters.values.update(values)
        ws.note_counters(values)
        ws.add(account_id, self._known(account_id))

    def evict_due(self) -> None:
        """Drop the least recently used accounts beyond `--max-accounts` (on the loop, so no
        evaluation is ever in the middle of reading one); skipped while a writer holds the
        write lock — the next request evicts instead, the loop never waits for it."""
        ws = self.working
        if ws is None or len(ws) <= ws.capacity or not self._write.acquire(blocking=False):
            return
        try:
            for account_id in ws.victims():
                old = self._accounts.get(account_id)
                members = [m for m in self._members_of(old) if m != account_id] if old else []
                if any(ws.pinned(m) for m in members):
                    ws.add(account_id)  # a request is using a member of its pool: keep it
                    continue
                self._drop(account_id)
        finally:
            self._write.release()

    def _drop(self, account_id: str) -> None:
        """Forget a stored account (and, for an owner, the members held through its pools)."""
        ws = self.working
        assert ws is not None
        ws.forget(account_id)
        if account_id in self.catalog.accounts:
            return  # declared since it was loaded (a catalog change): always held now
        ws.stats.evictions += 1
        for key in ws.drop_scope(f"acct:{account_id}"):
            self.counters.values.pop(key, None)
        self.records.pop(account_id, None)
        old = self._accounts.pop(account_id, None)
        if old is None:
            return
        self._reindex(old, None)
        for sub in old.subscriptions:
            for key in ws.drop_scope(f"sub:{sub.id}"):
                self.counters.values.pop(key, None)
        for member in self._members_of(old):
            if member != account_id and ws.holds(member):
                self._drop(member)

    def account_ids(self, after: str, limit: int) -> list[str]:
        """Ids of every account (declared or stored) after `after`, in order, at most `limit`:
        from the store with a working set (memory holds only some), else from memory."""
        if self.working is None:
            return sorted(i for i in self.snapshot.accounts if i > after)[:limit]
        declared = [i for i in self.catalog.accounts if i > after]
        return sorted({*self.store.account_ids(after, limit), *declared})[:limit]

    def account_count(self) -> int:
        """How many accounts there are (declared or stored), wherever they are held."""
        if self.working is None:
            return len(self.snapshot.accounts)
        declared = sum(1 for i in self.catalog.accounts if i not in self.records)
        return self.store.count_accounts() + declared

    def _scope_held(self, scope: str) -> bool:
        kind, _, ident = scope.partition(":")
        if kind == "acct":
            return self._known(ident)
        return ident in self._subscriptions

    # -- snapshot ----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self.snapshot.catalog

    def _build(self, catalog: Catalog, records: PackedRecords) -> StateView:
        """Declared accounts merged with stored ones; raises ValueError naming a stored account
        the catalog can no longer serve (so such a catalog change is rejected)."""
        accounts: dict[str, Account] = dict(catalog.accounts)
        with collector_paused():
            for account_id, record in records.decoded():
                try:
                    accounts[account_id] = self._merge(catalog, record)
                except rec.AdminError as exc:
                    raise ValueError(
                        f"stored account {account_id!r} does not fit this catalog: {exc}"
                    ) from exc
        return StateView(
            catalog,
            accounts,
            memberships_of(accounts.values()),
            self.counters,
            self.holds,
            self.rates,
        )

    @staticmethod
    def _merge(catalog: Catalog, record: Record) -> Account:
        record, layer = split_layer(record)
        stored = rec.validate_stored(record, catalog)
        declared = catalog.accounts.get(record["id"])
        if declared is None:
            return stored
        # The file owns a declared account; the store adds grants, top-ups and quota actions.
        merged = replace(
            declared,
            grants=declared.grants + stored.grants,
            topups=declared.topups + stored.topups,
        )
        return apply_layer(merged, layer, catalog) if layer else merged

    def replace_catalog(self, catalog: Catalog) -> tuple[str, ...]:
        """Swap in a new catalog; returns the changed feature keys. Raises ValueError if the
        stored accounts do not fit it (the old catalog keeps serving)."""
        with self._write:
            old = self.catalog
            snapshot = self._build(catalog, self.records)
            self._subscriptions = subscription_index(snapshot.accounts.values())
            self.snapshot = snapshot
            self.catalog_error = None
        changed = changed_features(old, catalog)
        self.events.publish(CatalogChanged(catalog.version, changed, tuple(catalog.features)))
        moved = [
            i
            for i in {*old.accounts, *catalog.accounts}
            if old.accounts.get(i) != catalog.accounts.get(i)
        ]
        if moved:
            self.events.publish(AccountChanged(tuple(sorted(moved)), "sync"))
        log.info(
            "catalog %s loaded from %s (%d features changed)",
            catalog.version,
            catalog.source,
            len(changed),
        )
        return changed

    # -- usage -------------------------------------------------------------------------------

    def _known(self, account_id: str) -> bool:
        return account_id in self.snapshot.accounts or account_id in self.snapshot.memberships

    def _write_for(
        self,
        report: UsageReport,
        now: datetime,
        snap: StateView | None = None,
        memo: Memo | None = None,
    ) -> UsageWrite:
        """`report` resolved to its write against `snap` (default: the current snapshot).
        `memo` shares that resolution within one batch: it depends only on (account, feature,
        instant), and a batch repeats those a lot (reports carry no timestamp, so they share
        `now`), while `slot_for` and `quota_check` re-run the evaluation's source selection
        every time."""
        snap = self.snapshot if snap is None else snap
        feature = countable(snap, report, now, self.report_ahead)
        return usage_write(
            snap,
            report,
            feature,
            at=report.timestamp or now,
            now=now,
            environment=self.store.environment,
            memo=memo,
        )

    def report(self, reports: Sequence[UsageReport]) -> list[UsageOutcome]:
        """Record a batch; one outcome per report, in order. Returns only once durable.

        The whole batch is resolved against one snapshot at one `now`, as if it arrived at once.
        """
        now, snap = self.clock(), self.snapshot
        memo: Memo = {}
        outcomes: list[UsageOutcome | None] = [None] * len(reports)
        writes: list[tuple[int, UsageWrite]] = []
        for i, report in enumerate(reports):
            try:
                writes.append((i, self._write_for(report, now, snap, memo)))
            except UsageRejected as exc:
                outcomes[i] = UsageOutcome(Status.REJECTED, 0.0, None, str(exc))
        if writes:
            stored = self.write_usage([w for _, w in writes])
            for (i, _w), outcome in zip(writes, stored, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def write_usage(self, writes: list[UsageWrite]) -> list[UsageOutcome]:
        """Store resolved writes (grouped with concurrent callers'), then tell watchers and
        quota listeners. Blocks until durable: call it off the event loop."""
        return self.usage_written(writes, self._usage_writes.submit(writes))

    def write_usage_later(
        self, writes: list[UsageWrite], executor: Executor
    ) -> Future[list[UsageOutcome]]:
        """`write_usage` for a caller on the event loop: the writes are grouped and stored on
        `executor` and the future gets their outcomes once durable; pass them to
        `usage_written` then (watchers are told only after that)."""
        return self._usage_writes.submit_later(writes, executor)

    def usage_written(
        self, writes: list[UsageWrite], stored: list[UsageOutcome]
    ) -> list[UsageOutcome]:
        """Tell watchers and quota listeners what durable writes changed; returns `stored`."""
        applied = [
            (w, o) for w, o in zip(writes, stored, strict=True) if o.status is Status.APPLIED
        ]
        if applied:
            scopes = dict.fromkeys(w.scope_key for w, _ in applied)
            scopes.update(dict.fromkeys(w.pool.scope_key for w, _ in applied if w.pool))
            # a hold made or ended also moves the accounts' next instant (its expiry): cause
            # "hold", which the timekeeper indexes (it skips "usage")
            held = any(w.hold is not None or w.ends is not None for w, _ in applied)
            self._usage_changed(scopes, "hold" if held else "usage")
        self._quota_fired(zip(writes, stored, strict=True))
        if any(w.on_exhausted is not None for w in writes):
            self._enqueued()  # a `topup.exhausted` row may be waiting
        return stored

    def _record(self, writes: list[UsageWrite]) -> list[UsageOutcome]:
        """Store the writes of concurrent Report and Consume calls as one group (one transaction,
        see `group_commit`) and serve them."""
        with self._write:
            stored = self.store.record_usage(writes)
            for w, outcome in zip(writes, stored, strict=True):
                if outcome.status is Status.APPLIED:
                    self.counters.values[(w.scope_key, w.feature.key, w.period_start)] = (
                        outcome.usage
                    )
                    self.counters.values.update(outcome.changes)
                    if w.hold is not None:
                        self.holds.add(w.hold)
                    elif w.ends is not None:
                        self.holds.end(w.ends.hold_id)
            if self.working is not None:
                self._keep_held(writes, stored)
        return stored

    def _keep_held(self, writes: list[UsageWrite], stored: list[UsageOutcome]) -> None:
        """Working set: index the counters a write moved, and forget those of accounts no
        longer held (evicted between the request's load and its write): the store has them."""
        ws = self.working
        assert ws is not None
        values = self.counters.values
        for w, outcome in zip(writes, stored, strict=True):
            if outcome.status is Status.APPLIED:
                for key in (
                    (w.scope_key, w.feature.key, w.period_start),
                    *(k for k, _ in outcome.changes),
                ):
                    if self._scope_held(key[0]):
                        ws.note_counters((key,))
                    else:
                        values.pop(key, None)

    def reset_usage(
        self, account_id: str, key: str, *, actor: str = "system", action: str = "ResetUsage"
    ) -> float:
        """Zero the account's counter of `key` in the current period, with its top-ups' burn
        rows (a fresh period covers nothing by them yet; what they burned stays burned), in
        one transaction with the audit entry; returns the previous usage."""
        feature = self.catalog.features.get(key)
        if feature is None or not feature.counted:
            raise rec.AdminError(
                f"{key!r} is not a metered feature of catalog {self.catalog.version}"
            )
        self.ensure(account_id)
        if not self._known(account_id):
            raise rec.NotFound(f"unknown account {account_id!r}")
        with self._write:
            slot = slot_for(self.snapshot, account_id, feature, self.clock())
            start = slot.period.start
            account = self.snapshot.accounts.get(account_id)
            burns = [
                burn_feature(key, t.id)
                for t in (account.topups if account is not None else ())
                if t.feature == key
            ]
            audit = AuditEntry(self.clock(), actor, action, account_id, key)
            previous = self.store.reset_usage(slot.scope_key, key, start, burns=burns, audit=audit)
            for name in (key, *burns):
                self.counters.values.pop((slot.scope_key, name, start), None)
        self._usage_changed([slot.scope_key])
        return previous

    def _usage_changed(self, scope_keys: Iterable[str], cause: str = "usage") -> None:
        """Tell watchers whose cached usage moved: the account, or a shared subscription's people."""
        ids: dict[str, None] = {}
        for scope in scope_keys:
            kind, _, ident = scope.partition(":")
            if kind == "acct":
                ids[ident] = None
            else:
                sub = self._subscriptions.get(ident)
                if sub is not None:
                    ids.update(dict.fromkeys((sub.owner, *sub.members)))
        if ids:
            self.events.publish(AccountChanged(tuple(ids), cause))

    def _quota_fired(self, results: Iterable[tuple[UsageWrite, UsageOutcome]]) -> None:
        """Design §7 "always an account-changed event": tell watchers (cause "quota") and the
        listeners about thresholds a committed write crossed. Actions follow from the outbox."""
        hits = [
            (w.report.account, feature, fired)
            for w, o in results
            for feature, fired in (
                (w.feature.key, o.fired),
                (w.pool.feature.key if w.pool else "", o.pool_fired),
            )
            if fired
        ]
        if not hits:
            return
        ids: dict[str, None] = {}
        for account, _feature, fired in hits:
            ids[account] = None
            ids.update({e.account: None for f in fired for e in f.entries})
        self.events.publish(AccountChanged(tuple(ids), "quota"))
        for account, feature, fired in hits:
            for listener in self.quota_listeners:
                try:
                    listener(account, feature, fired)
                except Exception:  # the write is committed; a listener must not fail the call
                    log.exception("quota listener failed")

    # -- admin -------------------------------------------------------------------------------

    def record_of(self, account_id: str) -> Record:
        self.ensure(account_id)
        record = self.records.get(account_id)
        if record is not None:
            return record
        if account_id in self.catalog.accounts:
            return {"id": account_id, "grants": []}
        raise rec.NotFound(f"unknown account {account_id!r}")

    def account(self, account_id: str) -> Account:
        self.ensure(account_id)
        account = self.snapshot.accounts.get(account_id)
        if account is None:
            raise rec.NotFound(f"unknown account {account_id!r}")
        return account

    def refuse_declared(self, account_id: str) -> None:
        if account_id in self.catalog.accounts:
            raise rec.Declared(
                f"account {account_id!r} is declared in {self.catalog.source}; change it there "
                "(the file is the source of truth for what it declares; grants and usage may be changed here)"
            )

    def commit(
        self,
        record: Record,
        cause: str = "admin",
        *,
        actor: str = "system",
        action: str = "commit",
        target: str = "",
    ) -> Account:
        """Validate, store and serve a new version of one account record; the audit entry
        (`actor` did `action` to `target`, design §12) is stored in the same transaction.
        `record` must be built from the current one under `write_lock` (else prefer `edit`)."""
        with self._write:
            self.ensure(record["id"])
            saved = self._save(record, actor=actor, action=action, target=target)
        self._announce(saved, cause)
        return saved[0]

    def edit(
        self,
        account_id: str,
        build: Callable[[], Record | None],
        cause: str = "admin",
        *,
        actor: str = "system",
        action: str = "commit",
        target: str = "",
        stripe: StripeMark | None = None,
    ) -> Account | None:
        """Apply one edit to the account's current record, atomically; None if `build` found
        nothing to change. `stripe` (the Stripe event applied, design §18) is stored with it.

        `build` reads the record (`records`, `record_of`, the snapshot) and returns the new
        one, or None. It runs under the write lock, which is held until the result is stored
        and served, so no other edit can land in between and be undone (decision 1300).
        When another sidecar changed the account first (`StoreConflict`, shared mode), the
        newer record is read and served, and `build` runs again on it: an edit is refused only
        if its own request no longer fits the current account, or after `EDIT_ATTEMPTS`
        conflicts in a row (then `StoreConflict`: nothing changed, retry).
        """
        for attempt in range(1, EDIT_ATTEMPTS + 1):
            with self._write:
                self.ensure(account_id)
                record = build()
                if record is None:
                    return None
                try:
                    saved = self._save(
                        record, actor=actor, action=action, target=target, stripe=stripe
                    )
                except StoreConflict:
                    if attempt == EDIT_ATTEMPTS:
                        raise
                    self.apply_remote(self.store.refresh_records([account_id]), {})
                    continue
            self._announce(saved, cause)
            return saved[0]
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _save(
        self,
        record: Record,
        *,
        actor: str,
        action: str,
        target: str,
        stripe: StripeMark | None = None,
    ) -> tuple[Account, Account | None, bool]:
        """Validate, store and serve `record` (the caller holds the write lock); the account,
        what it replaced, and whether outbox rows were written."""
        rec.check_text(record)
        account = self._merge(self.catalog, record)
        for sub in account.subscriptions:
            holder = self._subscriptions.get(sub.id)
            if holder is not None and holder.owner != account.id:
                raise rec.AdminError(
                    f"subscription id {sub.id!r} is already used by account {holder.owner!r}; "
                    "choose another id, or leave it empty to have one generated"
                )
        previous = self.snapshot.accounts.get(account.id)
        self._refuse_overflow(account, previous)
        audit = record_entry(
            self.clock(), actor, action, self.records.get(account.id), record, target
        )
        outbox = self._lifecycle(previous, account)
        self.store.save_record(record, audit=audit, outbox=outbox, stripe=stripe)
        self.records[record["id"]] = record
        self._serve(account)
        if self.working is not None and account.id not in self.catalog.accounts:
            self.working.add(account.id)  # created, or edited: used (an unknown id is now known)
        return account, previous, bool(outbox)

    def _refuse_overflow(self, account: Account, previous: Account | None) -> None:
        """`AdminError` if the edit makes a sum the evaluation needs overflow (decision 1301).
        An account stored with one before is still served (saturated) and may be edited, to
        void the top-up or rename it, as long as the edit makes no overflowing sum of its own."""
        plans, shared = self.snapshot.plans, self._memberships.get(account.id, ())
        found = overflows(account, plans, shared)
        if found and previous is not None:
            known = overflows(previous, plans, shared)
            found = {what: problem for what, problem in found.items() if what not in known}
        if found:
            raise rec.AdminError(next(iter(found.values())))

    def _announce(self, saved: tuple[Account, Account | None, bool], cause: str) -> None:
        """Tell watchers (and the outbox worker) about a stored edit; callers do it once they
        released the write lock, so nothing waits on it for the telling."""
        account, previous, enqueued = saved
        # members who just left are told too: what they had cached came from this account
        members = (*self._members_of(account), *(self._members_of(previous) if previous else ()))
        self.events.publish(AccountChanged(tuple(dict.fromkeys((account.id, *members))), cause))
        if enqueued:
            self._enqueued()

    def _lifecycle(self, old: Account | None, new: Account | None) -> list[OutboxEntry]:
        """The lifecycle webhook rows (design §7.1) of an edit from `old` to `new`, to write
        in the edit's own transaction; none without a `webhooks:` endpoint."""
        catalog = self.catalog
        if not catalog.webhooks:
            return []
        events = admin_events(old, new, self.clock())
        return entries_for(catalog, self.store.environment, events)

    def delete(
        self, account_id: str, *, actor: str = "system", action: str = "DeleteAccount"
    ) -> bool:
        """Delete a stored account (with its audit entry and lifecycle rows, in one
        transaction)."""
        self.refuse_declared(account_id)
        with self._write:
            self.ensure(account_id)
            if account_id not in self.records:
                return False
            old = self.snapshot.accounts.get(account_id)
            audit = record_entry(self.clock(), actor, action, self.records[account_id], None)
            outbox = self._lifecycle(old, None)
            self.store.delete_record(account_id, audit=audit, outbox=outbox)
            del self.records[account_id]
            self._accounts.pop(account_id, None)
            self._reindex(old, None)
            if self.working is not None:
                self.working.add(account_id, self._known(account_id))
        self.events.publish(
            AccountChanged((account_id, *(self._members_of(old) if old else ())), "admin")
        )
        if outbox:
            self._enqueued()
        return True

    def _enqueued(self) -> None:
        """Committed outbox rows are waiting: wake whoever delivers them."""
        for wake in self.enqueued_listeners:
            wake()

    def _serve(self, account: Account) -> None:
        old = self._accounts.get(account.id)
        self._accounts[account.id] = account
        self._reindex(old, account)

    def _reindex(self, old: Account | None, new: Account | None) -> None:
        """Keep the member and subscription indexes in step with one account's change."""
        reindex_members(self._memberships, old, new)
        for sub in old.subscriptions if old is not None else ():
            self._subscriptions.pop(sub.id, None)
        for sub in new.subscriptions if new is not None else ():
            self._subscriptions[sub.id] = sub

    @staticmethod
    def _members_of(account: Account) -> tuple[str, ...]:
        return tuple(m for s in account.subscriptions for m in s.members)

    def prune(self, plan: PrunePlan) -> dict[str, int] | None:
        """One housekeeping pass (design §14, `runtime.housekeeping`): the store removes what
        `plan` names, then memory forgets the counters it removed. None: another sidecar is
        pruning the shared database right now."""
        with self._write:
            removed = self.store.housekeep(plan)
            if removed is not None:
                values = self.counters.values
                for key in [k for k in values if plan.prunes_counter(k[1], k[2])]:
                    del values[key]
        return removed

    # -- shared mode (design §10) ------------------------------------------------------------

    @property
    def write_lock(self) -> threading.RLock:
        """Held by every local writer from its store write until memory shows it. The change
        feed holds it while it decides whether a remote change is newer than memory and
        applies it, so no local write can land in between."""
        return self._write

    def apply_remote(
        self, records: Mapping[str, Record | None], counters: Mapping[CounterKey, float]
    ) -> None:
        """Serve changes other sidecars made to the shared store.

        `records` maps account ids to their stored record (None: deleted), `counters` usage
        counters to their value. Memory changes as for a local write, and watchers are told
        (cause "sync" for accounts, "usage" for counters) so providers drop what they cached.
        A record this catalog cannot serve (written by a sidecar with another catalog) is
        logged and skipped: the last version that fits keeps serving.
        """
        changed: dict[str, None] = {}
        with self._write:
            for account_id, record in records.items():
                if self.working is not None and not self._remote_held(account_id, changed):
                    continue
                old = self.snapshot.accounts.get(account_id)
                if record is None:
                    if self.records.pop(account_id, None) is None:
                        continue
                    declared = self.catalog.accounts.get(account_id)
                    if declared is None:
                        self._accounts.pop(account_id, None)
                    else:
                        self._accounts[account_id] = declared
                    new = declared
                else:
                    try:
                        new = self._merge(self.catalog, record)
                    except rec.AdminError as exc:
                        log.error("not serving account %r from the store: %s", account_id, exc)
                        continue
                    self.records[account_id] = record
                    self._accounts[account_id] = new
                self._reindex(old, new)
                for account in (old, new):
                    if account is not None:
                        changed.update(dict.fromkeys((account.id, *self._members_of(account))))
            if self.working is None:
                self.counters.values.update(counters)
            else:
                held = {k: v for k, v in counters.items() if self._scope_held(k[0])}
                self.counters.values.update(held)
                self.working.note_counters(held)
        if changed:
            self.events.publish(AccountChanged(tuple(changed), "sync"))
        if counters:
            self._usage_changed(scope for scope, _feature, _start in counters)

    def _remote_held(self, account_id: str, changed: dict[str, None]) -> bool:
        """Working set: whether a remote change of `account_id` is served from memory; one
        not held is only named to watchers (design §19), and an "unknown" entry for it
        forgotten (the change may have created it)."""
        ws = self.working
        assert ws is not None
        if ws.holds(account_id) or account_id in self.catalog.accounts:
            return True
        ws.forget(account_id)
        changed[account_id] = None
        return False


def countable(snap: StateView, report: UsageReport, now: datetime, ahead: timedelta) -> Feature:
    """The feature `report` counts on, checked (`check_report`, `check_instant`) for an
    account `snap` knows; raises `UsageRejected` saying what to fix. Report and Consume both
    start here."""
    feature = check_report(snap.catalog.features.get(report.feature), report)
    check_instant(report, now, ahead)
    if report.account not in snap.accounts and report.account not in snap.memberships:
        raise UsageRejected(
            f"unknown account {report.account!r}; create it first (Admin.UpsertAccount)"
        )
    return feature


def subscription_index(accounts: Iterable[Account]) -> dict[str, Subscription]:
    """subscription id -> subscription: pooled usage counters are keyed by the id alone.

    Raises ValueError when two accounts use one id (a catalog declaring an id that a stored
    account already uses is rejected like any catalog the stored accounts do not fit)."""
    index: dict[str, Subscription] = {}
    for account in accounts:
        for sub in account.subscriptions:
            holder = index.setdefault(sub.id, sub)
            if holder is not sub:
                raise ValueError(
                    f"subscription id {sub.id!r} is used by accounts {holder.owner!r} and "
                    f"{account.id!r}; subscription ids are unique across accounts"
                )
    return index


def changed_features(old: Catalog, new: Catalog) -> tuple[str, ...]:
    """Feature keys whose definition or any plan/add-on entitlement differs."""
    keys = set(old.features) | set(new.features)

    def view(c: Catalog, key: str) -> tuple[Feature | None, list[Any]]:
        ents: list[Any] = [(p.key, p.entitlements.get(key)) for p in c.plans.values()]
        ents += [(a.key, a.entitlements.get(key)) for a in c.addons.values()]
        ents += [
            (a.id, a.overrides.get(key), [g for g in a.grants if g.feature == key])
            for a in c.accounts.values()
        ]
        return c.features.get(key), ents

    return tuple(sorted(k for k in keys if view(old, k) != view(new, k)))
