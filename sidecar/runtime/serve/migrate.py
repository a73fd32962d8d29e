"""`plangate migrate`: move every subscription on one plan to another (design §6.1).

The moves are ordinary scheduled plan changes (`records.schedule_change`), each checked by
the catalog's rules like an admin call; a dry run checks them the same way and stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ...engine.lifecycle import effective_at, superseded
from ...store.base import Record
from ..edits import records as rec
from ..live.state import LiveState


@dataclass(frozen=True, slots=True)
class Move:
    account: str
    subscription: str
    from_plan: str
    to_plan: str
    at: datetime | None
    skipped: str = ""  # why this subscription is not moved


def migrate_plan(
    state: LiveState,
    from_plan: str,
    to_plan: str,
    at: datetime | None,
    when: str,
    dry_run: bool,
    *,
    actor: str,
) -> list[Move]:
    """Every subscription on `from_plan` now (and not ended) gets a change to `to_plan` at `at`
    / `when` (per subscription: `period_end` follows each one's anchor). Accounts declared in
    the catalog file are listed as skipped: the file is their source of truth."""
    catalog, now = state.catalog, state.clock()
    for key in (from_plan, to_plan):
        if key not in catalog.plans:
            raise rec.AdminError(
                f"unknown plan {key!r} (plans: {', '.join(sorted(catalog.plans))})"
            )
    if from_plan == to_plan:
        raise rec.AdminError("from and to are the same plan")
    problem = superseded(catalog, to_plan)
    if problem is not None:
        raise rec.Refused(problem)
    moves: list[Move] = []
    for account_id in sorted(state.snapshot.accounts):
        account = state.snapshot.accounts[account_id]
        for sub in account.subscriptions:
            if (sub.ends_at is not None and sub.ends_at <= now) or sub.at(now).plan != from_plan:
                continue
            try:
                when_at = effective_at(catalog, sub, now, at, when)
            except ValueError as e:
                raise rec.AdminError(str(e)) from None
            if account_id in catalog.accounts:
                skipped = f"declared in {catalog.source}; change it there"
                moves.append(Move(account_id, sub.id, from_plan, to_plan, when_at, skipped))
                continue

            def build(aid: str = account_id, sid: str = sub.id, at: datetime = when_at) -> Record:
                record = state.record_of(aid)  # read under the write lock (`edit`)
                return rec.schedule_change(record, sid, at, now, plan=to_plan)

            if dry_run:
                rec.validate(build(), catalog)
            else:
                state.edit(account_id, build, actor=actor, action="MigratePlan", target=sub.id)
            moves.append(Move(account_id, sub.id, from_plan, to_plan, when_at))
    return moves
