"""Dry runs of admin changes: what an account's decisions would become (design §12.1, the
console's confirmation step — `plangate diff`'s before → after, for one account and one
change instead of a whole catalog).

The change runs through the real `Admin` operation — its own checks, its own record edit —
over a stand-in for the live state whose `commit` validates the record exactly as the store
path does and hands back the account it would serve, storing, auditing and publishing
nothing. The stand-in lends only the live state's reading side; anything else an operation
might reach for is refused, so a dry run can never write.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from ...catalog.model import Account
from ...engine.boundaries import coming_changes
from ...engine.holds import HoldView
from ...engine.snapshot import StateView
from ...store.base import Record
from ..edits import records as rec
from ..live.declared import split_layer
from ..live.state import LiveState
from .admin import Admin
from .impact import Change, account_impact

_READS = frozenset(
    {
        "catalog",
        "clock",
        "record_of",
        "account",
        "refuse_declared",
        "snapshot",
        "records",
        "write_lock",
    }
)


class _DryState:
    """The live state's reading side, and a `commit` that stores nothing."""

    def __init__(self, live: LiveState) -> None:
        self._live = live
        self.after: Account | None = None

    def __getattr__(self, name: str) -> Any:
        if name not in _READS:
            raise AttributeError(f"a dry run may not use the live state's {name!r}")
        return getattr(self._live, name)

    def edit(
        self, account_id: str, build: Callable[[], Record | None], *args: Any, **kwargs: Any
    ) -> Account | None:
        """As `LiveState.edit` (decision 1300): `build` reads the live record; the result is
        validated as `commit` does, and stored nowhere."""
        record = build()
        return None if record is None else self.commit(record)

    def commit(self, record: Record, *args: Any, **kwargs: Any) -> Account:
        """Validate as `LiveState.commit` does (an undeclared account: the record alone)."""
        rec.check_text(record)
        stored, _ = split_layer(record)
        self.after = rec.validate_stored(stored, self._live.catalog)
        return self.after


@dataclass(frozen=True, slots=True)
class Effect:
    """What a change would do to one account: its decisions before → after at `at` (now, or
    the first instant the change moves when it is scheduled), and the account after it."""

    at: datetime
    changes: list[Change]
    after: Account


def preview(state: LiveState, account_id: str, operation: Callable[[Admin], object]) -> Effect:
    """Run `operation` on a dry `Admin` and compare the account's decisions before and after.
    Refusals are the operation's own (`records.AdminError`), as if it had been applied."""
    state.refuse_declared(account_id)  # the console acts on stored accounts only
    dry = _DryState(state)
    operation(Admin(cast(LiveState, dry)))
    if dry.after is None:
        raise rec.AdminError("this change would change nothing")
    snap, now = state.snapshot, state.clock()
    accounts = ChainMap({account_id: dry.after}, cast(dict[str, Account], snap.accounts))
    after_view = StateView(snap.catalog, accounts, snap.memberships, snap.usage)
    changes = account_impact(snap, after_view, account_id, now)
    at = now
    if not changes:  # a scheduled change: compare at the first instant it moves
        before = state.account(account_id)
        features = snap.catalog.features.values()
        moved = set(coming_changes(before, features, now)) ^ set(
            coming_changes(dry.after, features, now)
        )
        if moved:
            at = min(c.at for c in moved)
            changes = account_impact(snap, after_view, account_id, at)
    return Effect(at, changes, dry.after)


def preview_release(state: LiveState, account_id: str, hold_id: str) -> Effect:
    """What releasing one of the account's active holds would do to its decisions now: the
    same comparison over the live state without that hold (nothing is ended or written).
    `records.NotFound` when the account has no such active hold."""
    snap, now = state.snapshot, state.clock()
    mine = snap.holds.of_account(account_id, now)
    if not any(h.id == hold_id for h in mine):
        raise rec.NotFound(f"account {account_id!r} has no active hold {hold_id!r}")
    others = HoldView(h for hs in snap.holds.by_account.values() for h in hs.values())
    others.end(hold_id)
    after_view = StateView(snap.catalog, snap.accounts, snap.memberships, snap.usage, others)
    return Effect(now, account_impact(snap, after_view, account_id, now), state.account(account_id))
