"""Shared mode's change feed: keeping this sidecar's memory in step with the PostgreSQL store.

Every write to the shared store sends `NOTIFY` on the environment's channel naming what
changed (account ids; counters with their new value) and the change's version
(`store.postgres`). This thread `LISTEN`s on that channel and applies each change to the live
state, which tells the providers and `Watch` streams; so a change made through any sidecar
shows in every other one's evaluations within milliseconds.

Why it is built this way:

- **Counters travel in the payload**, so the hot path (usage reports) costs no extra query;
  accounts are re-read by id (a record may be larger than a payload).
- **Versions decide, not arrival order.** Notifications, this process's own writes and the
  periodic reconciliation can overlap; a change is applied only if its version is newer than
  what memory holds, checked and applied under the live state's write lock
  (`LiveState.write_lock`), so memory only ever moves forward.
- **Reconciliation** re-reads every account and counter every `reconcile_seconds` and on
  every (re)connect, after `LISTEN`, so nothing committed while the feed was not listening is
  missed: a lost notification (payload dropped, connection cut) is repaired within one period.
- **Outages.** If the connection drops, the sidecar keeps answering from memory, reports
  not-ready on `/readyz` with the reason, retries with backoff, and on reconnect reconciles
  fully before it reports ready again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ..runtime.live.state import LiveState
from ..store.base import CounterKey, Record
from ..store.errors import StoreUnavailable
from ..store.postgres import PostgresStore, decode_changes, read_accounts, read_counters

log = logging.getLogger("plangate.sync.pg")

AccountRows = dict[str, tuple[Record | None, int]]
CounterRows = dict[CounterKey, tuple[float, int]]


class ChangeFeed:
    """One thread per sidecar: LISTEN, apply, reconcile, reconnect. `readiness()` for /readyz."""

    def __init__(
        self,
        store: PostgresStore,
        state: LiveState,
        reconcile_seconds: float = 30.0,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 5.0,
        ping_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.state = state
        self.reconcile_seconds = reconcile_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.ping_seconds = ping_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-change-feed", daemon=True)
        self._status_lock = threading.Lock()
        self.connected = False
        self.backend_pid: int | None = None  # the listening connection's server process
        self._since = datetime.now(UTC)
        self._error = "not connected yet"
        self.last_reconcile: datetime | None = None
        self.applied = 0  # changes applied to memory (accounts + counters)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ChangeFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._status_lock:
            detail: dict[str, Any] = {
                "backend": "postgresql",
                "channel": self.store.channel,
                "reconcile_seconds": self.reconcile_seconds,
                "last_reconcile": self.last_reconcile.isoformat() if self.last_reconcile else None,
            }
            if self.connected:
                detail["feed"] = "listening"
                return True, detail
            detail["feed"] = "disconnected"
            detail["since"] = self._since.isoformat()
            detail["error"] = self._error
            detail["serving"] = "the last snapshot from memory; reconnecting"
            return False, detail

    def _set_connected(self, pid: int) -> None:
        with self._status_lock:
            if not self.connected:
                log.info("change feed listening on %s (caught up)", self.store.channel)
            self.connected, self.backend_pid = True, pid

    def _set_lost(self, error: BaseException) -> None:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        with self._status_lock:
            if self.connected or self._error != message:
                log.warning(
                    "change feed: database unavailable (%s); serving from memory, retrying",
                    message,
                )
            if self.connected:
                self._since = datetime.now(UTC)
            self.connected, self.backend_pid, self._error = False, None, message

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.retry_seconds
        while not self._stop.is_set():
            try:
                conn = self.store.connect("feed", autocommit=True)
            except StoreUnavailable as exc:
                self._set_lost(exc)
            else:
                try:
                    with conn:
                        conn.execute(
                            sql.SQL("LISTEN {}").format(sql.Identifier(self.store.channel))
                        )
                        # After LISTEN: every commit from here on is either notified or read now.
                        self.reconcile(conn)
                        self._set_connected(conn.info.backend_pid)
                        delay = self.retry_seconds
                        self._listen(conn)
                except psycopg.Error as exc:
                    self._set_lost(exc)
                except Exception as exc:  # a bug must not end the feed: log it and start over
                    log.exception("change feed failed")
                    self._set_lost(exc)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.max_retry_seconds)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        next_reconcile, next_ping = now + self.reconcile_seconds, now + self.ping_seconds
        while not self._stop.is_set():
            notes = list(conn.notifies(timeout=0.25, stop_after=1))
            if notes:
                notes += conn.notifies(timeout=0)  # whatever else has arrived already
                self._apply_notes(conn, notes)
            now = time.monotonic()
            if now >= next_reconcile:
                self.reconcile(conn)
                next_reconcile, next_ping = now + self.reconcile_seconds, now + self.ping_seconds
            elif now >= next_ping:
                conn.execute("SELECT 1")  # a quiet connection must still prove it is alive
                next_ping = now + self.ping_seconds
            if notes:
                next_ping = now + self.ping_seconds

    # -- applying ----------------------------------------------------------------------------

    def _apply_notes(self, conn: psycopg.Connection[Any], notes: Iterable[psycopg.Notify]) -> None:
        accounts: dict[str, int] = {}
        counters: CounterRows = {}
        for note in notes:
            try:
                changed_accounts, changed_counters, reload_all = decode_changes(note.payload)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("unreadable change notification (%s); reconciling", exc)
                reload_all = True
                changed_accounts, changed_counters = {}, {}
            if reload_all:
                self.reconcile(conn)
                return
            for account_id, version in changed_accounts.items():
                accounts[account_id] = max(version, accounts.get(account_id, -1))
            for key, (value, version) in changed_counters.items():
                if version > counters.get(key, (0.0, -1))[1]:
                    counters[key] = (value, version)
        # Re-read the accounts memory does not have yet (this sidecar's own changes come back
        # too): the newest committed row, whatever version was notified.
        known = self.store.versions.account
        stale = sorted(i for i, v in accounts.items() if v > (known(i) or 0))  # versions >= 1
        rows = read_accounts(conn, self.store.environment, stale) if stale else {}
        self._apply(rows, counters)

    def reconcile(self, conn: psycopg.Connection[Any]) -> None:
        """Read every account and counter of the environment and apply whatever is newer."""
        accounts = read_accounts(conn, self.store.environment)
        counters = read_counters(conn, self.store.environment)
        applied = self._apply(accounts, counters)
        with self._status_lock:
            self.last_reconcile = datetime.now(UTC)
        if applied:
            log.info("reconciled: %d changes were not in memory", applied)

    def _apply(self, accounts: AccountRows, counters: CounterRows) -> int:
        versions = self.store.versions
        with self.state.write_lock:
            records = {
                account_id: record
                for account_id, (record, version) in accounts.items()
                if versions.advance_account(account_id, version)
            }
            values = {
                key: value
                for key, (value, version) in counters.items()
                if versions.advance_counter(key, version)
            }
            if records or values:
                self.state.apply_remote(records, values)
        self.applied += len(records) + len(values)
        return len(records) + len(values)


def attach_feed(store: Any, state: LiveState, reconcile_seconds: float) -> ChangeFeed | None:
    """The change feed for a shared (PostgreSQL) store; None for a store that is not shared."""
    if not isinstance(store, PostgresStore):
        return None
    return ChangeFeed(store, state, reconcile_seconds=reconcile_seconds)
