"""Quota actions on accounts (design §7), applied after commit by the outbox worker.

`override` and `change_plan` rows, enqueued with the usage write that crossed a threshold
(`runtime.quota_events`), become account edits through `LiveState.commit` (cause "quota").
Each is idempotent, so a row replayed after a crash changes nothing twice. On an account
declared in the file an action writes the runtime layer (`runtime.declared`) instead of
the account; an Admin call that only removes that layer (clearing a quota override,
changing a plan back to the file's) agrees with the file and is allowed here too.

Every read-modify-write of a record holds `LiveState.write_lock`, so an admin edit in
between is not lost.
"""

from __future__ import annotations

from typing import Any

from ...catalog.model import Account
from ...store.base import Delivery, Record
from ..edits import records as rec
from ..live.declared import LAYER
from ..live.state import LiveState


class ActionFailed(Exception):
    """A quota action that cannot be applied and will not succeed by retrying as it is
    (the account or subscription is gone, the new plan refuses its add-ons, ...)."""


def apply_action(state: LiveState, delivery: Delivery) -> bool:
    """Apply an `override` or `change_plan` row; True if it changed the account, False if it
    was already in effect (a replay after a crash). Raises `ActionFailed` when it cannot apply."""
    p = delivery.payload
    with state.write_lock:
        if delivery.kind == "override":
            return _apply_override(state, delivery.account, str(p["feature"]), p["value"])
        if delivery.kind == "change_plan":
            return _apply_plan(
                state, str(p["owner"]), str(p["subscription"]), str(p["from"]), str(p["plan"])
            )
    raise ActionFailed(f"unknown action kind {delivery.kind!r}")


def _declared_record(state: LiveState, account_id: str) -> Record:
    current = state.records.get(account_id)
    record: Record = rec.edited(current) if current else {"id": account_id, "grants": []}
    record.setdefault(LAYER, {})
    return record


QUOTA = "quota"
"""The actor of a quota action in the audit log (design §12)."""


def _commit(state: LiveState, record: Record, action: str, target: str) -> None:
    try:
        state.commit(record, cause="quota", actor=QUOTA, action=action, target=target)
    except rec.AdminError as exc:
        raise ActionFailed(str(exc)) from exc


def _apply_override(state: LiveState, account_id: str, feature: str, value: Any) -> bool:
    spec = {"value": value, "expires_at": None}
    if account_id in state.catalog.accounts:
        record = _declared_record(state, account_id)
        overrides = record[LAYER].setdefault("overrides", {})
        if overrides.get(feature) == spec:
            return False
        overrides[feature] = spec
    else:
        current = state.records.get(account_id)
        if current is None:
            if account_id not in state.snapshot.memberships:
                raise ActionFailed(f"account {account_id!r} no longer exists")
            current = rec.new_record(account_id)  # a member known only through a subscription
        if current.get("overrides", {}).get(feature) == spec:
            return False
        record = rec.set_override(current, feature, value, None)
    _commit(state, record, "override", feature)
    return True


def _apply_plan(state: LiveState, owner: str, sub_id: str, source: str, target: str) -> bool:
    account, now = state.snapshot.accounts.get(owner), state.clock()
    found = next((s for s in account.subscriptions if s.id == sub_id), None) if account else None
    if found is None:
        raise ActionFailed(f"account {owner!r} has no subscription {sub_id!r} any more")
    live = found.at(now)  # the phase in force (design §6.1)
    if live.plan == target:
        return False
    if live.plan != source:
        raise ActionFailed(
            f"subscription {sub_id!r} is now on plan {live.plan!r}, not {source!r}; "
            f"the move to {target!r} was not applied"
        )
    declared = state.catalog.accounts.get(owner)
    if declared is not None:
        in_file = next((s for s in declared.subscriptions if s.id == sub_id), None)
        if in_file is None:
            raise ActionFailed(f"subscription {sub_id!r} is no longer in {state.catalog.source}")
        record = _declared_record(state, owner)
        record[LAYER].setdefault("plans", {})[sub_id] = {"from": in_file.plan, "to": target}
    else:
        current = state.records.get(owner)
        if current is None:
            raise ActionFailed(f"account {owner!r} no longer exists")
        record = rec.schedule_change(current, sub_id, now, now, plan=target)
    _commit(state, record, "change_plan", sub_id)
    return True


# -- Admin calls that remove the layer -------------------------------------------------------


def clear_layer_override(
    state: LiveState, account_id: str, feature: str, *, actor: str, action: str
) -> Account | None:
    """ClearOverride on a declared account: drop the override a quota action layered on it (the
    file's own override, if any, serves again). None when there is none to drop."""

    def build() -> Record | None:
        record = state.records.get(account_id)
        if account_id not in state.catalog.accounts or record is None:
            return None
        if feature not in (record.get(LAYER) or {}).get("overrides", {}):
            return None
        record = rec.edited(record)
        del record[LAYER]["overrides"][feature]
        return record

    return state.edit(account_id, build, actor=actor, action=action, target=feature)


def revert_layer_plan(
    state: LiveState, account_id: str, subscription_id: str, plan: str, *, actor: str, action: str
) -> Account | None:
    """ChangePlan on a declared account back to the plan its file gives: drop the quota plan
    change of that subscription. None when the request is not such a revert."""

    def build() -> Record | None:
        declared = state.catalog.accounts.get(account_id)
        record = state.records.get(account_id)
        if declared is None or record is None:
            return None
        in_file = next((s for s in declared.subscriptions if s.id == subscription_id), None)
        plans = (record.get(LAYER) or {}).get("plans", {})
        if in_file is None or subscription_id not in plans or plan != in_file.plan:
            return None
        record = rec.edited(record)
        del record[LAYER]["plans"][subscription_id]
        return record

    return state.edit(account_id, build, actor=actor, action=action, target=subscription_id)
