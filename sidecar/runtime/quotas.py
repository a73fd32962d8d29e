"""Quotas and automations (design §7): which thresholds a usage write crosses, and what follows.

Three moments, kept apart so each can be reasoned about alone:

1. **Before a write** (`quota_check`): from the live snapshot, work out whose quotas apply
   (the plan of the subscription that supplies the account's limit), the effective limit and
   each threshold's value. The result is a pure callback carried by the `UsageWrite`.
2. **Inside the write's transaction** (the store calls the callback with the counter before and
   after): thresholds moved from below to at-or-above fire. The store records each firing's
   mark once per counter (scope, feature, period) and enqueues its outbox rows in that same
   transaction, so usage, "fired" and the deliveries commit together or not at all.
3. **After commit** (`apply_action`, run by the outbox worker): `override` and `change_plan`
   rows become account edits through `LiveState.commit` (cause "quota"); webhooks are POSTed by
   `runtime.outbox`. Both are idempotent, so a row replayed after a crash changes nothing twice.

Accounts declared in the catalog file are the file's; quota actions still apply to them
(design §3: "usage, grants and quota actions apply to every account") as a runtime layer kept
in the account's store record under `"quota"` and merged over the file's account when it is
served (`apply_layer`). An Admin call that only removes that layer (clearing a quota override,
changing a plan back to the file's) agrees with the file and is allowed (`clear_layer_override`,
`revert_layer_plan`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..catalog.accounts import subscription_problems
from ..catalog.features import notation
from ..catalog.model import (
    Account,
    Catalog,
    Feature,
    Quota,
    QuotaAction,
    Subscription,
    Threshold,
)
from ..engine import EvaluationError, Snapshot, active_subscriptions, evaluate
from ..engine.typed import iso, number
from ..store.base import Delivery, Firing, OutboxEntry, Record
from . import records as rec

if TYPE_CHECKING:
    from .state import LiveState

EVENT_TYPE = "quota.threshold_crossed"
LAYER = "quota"
"""Key of the runtime layer in a declared account's store record: {"overrides", "plans"}."""


class ActionFailed(Exception):
    """A quota action that cannot be applied and will not succeed by retrying as it is
    (the account or subscription is gone, the new plan refuses its add-ons, ...)."""


# -- thresholds --------------------------------------------------------------------------------


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def threshold_label(threshold: Threshold) -> str:
    """The threshold as written in the catalog: "80%" or "5000". It names the threshold in
    marks, payloads and listings, so it must not depend on the limit."""
    if threshold.percent is not None:
        return f"{_num(threshold.percent)}%"
    return _num(threshold.amount or 0.0)


def plan_quotas(catalog: Catalog, plan_key: str, feature: str) -> tuple[Quota, ...]:
    """A plan's quotas on `feature`: its own, else the nearest ancestor's through `extends`.

    Quotas inherit like entitlements do ("its own win"), per feature: Enterprise extending Pro
    keeps Pro's api-calls quotas unless it declares its own for api-calls.
    """
    seen: set[str] = set()
    key: str | None = plan_key
    while key is not None and key not in seen:
        seen.add(key)
        plan = catalog.plans.get(key)
        if plan is None:
            return ()
        own = tuple(q for q in plan.quotas if q.feature == feature)
        if own:
            return own
        key = plan.extends
    return ()


def _any_quota_on(catalog: Catalog, feature: str) -> bool:
    # Plans are few; this keeps the report path free of evaluation work for unquoted features.
    return any(q.feature == feature for p in catalog.plans.values() for q in p.quotas)


@dataclass(frozen=True, slots=True)
class _Point:
    label: str
    value: float
    actions: tuple[QuotaAction, ...]


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """A write's `Fire` callback: everything resolved from the snapshot before the write, so
    that inside the transaction only (old, new) decide what fires."""

    environment: str
    account: str  # whose quota it is: the reporter, or the owner for a subscription-scoped feature
    reported_by: str
    feature: str
    plan: str
    subscription: Subscription
    scope_key: str
    limit: float | None  # None: unlimited
    soft_limit: bool
    period_start: datetime
    period_end: datetime | None
    points: tuple[_Point, ...]
    now: datetime

    def __call__(self, old: float, new: float) -> list[Firing]:
        return [
            Firing(
                f"{self.plan}:{p.label}",
                self.now,
                tuple(self._entry(p, a, old, new) for a in p.actions),
            )
            for p in self.points
            if old < p.value <= new
        ]

    def event(self, point: _Point, old: float, new: float, delivery_id: str) -> dict[str, Any]:
        """The quota event: the webhook body, and the context kept with every action row."""
        return {
            "type": EVENT_TYPE,
            "delivery_id": delivery_id,
            "environment": self.environment,
            "account": self.account,
            "reported_by": self.reported_by,
            "feature": self.feature,
            "threshold": {"at": point.label, "value": number(point.value)},
            "usage": number(new),
            "previous_usage": number(old),
            "limit": number(self.limit),
            "unlimited": self.limit is None,
            "soft_limit": self.soft_limit,
            "period": {"start": iso(self.period_start), "end": iso(self.period_end)},
            "plan": self.plan,
            "subscription": self.subscription.id,
            "scope": self.scope_key,
            "fired_at": iso(self.now),
        }

    def _entry(self, point: _Point, action: QuotaAction, old: float, new: float) -> OutboxEntry:
        delivery_id = uuid.uuid4().hex
        event = self.event(point, old, new, delivery_id)
        payload: dict[str, Any]
        if action.kind == "webhook":
            target = action.target
            payload = {"secret_env": action.secret_env, "secret_file": action.secret_file}
        elif action.kind == "override":
            target = action.feature
            payload = {"feature": action.feature, "value": notation(action.value)}
        else:
            target = action.target
            payload = {
                "owner": self.subscription.owner,
                "subscription": self.subscription.id,
                "from": self.plan,
                "plan": action.target,
            }
        return OutboxEntry(
            delivery_id, action.kind, self.account, target, {"event": event, **payload}
        )


def quota_check(
    snapshot: Snapshot,
    account_id: str,
    feature: Feature,
    at: datetime,
    now: datetime,
    environment: str,
) -> QuotaCheck | None:
    """The quota check for a write of `account_id`'s `feature` usage counted at `at`.

    Whose quotas: the plan of the subscription that supplies the account's limit (the winning
    source). When an override or a grant wins, no plan supplies the limit; the quotas are then
    those of the subscription the usage is counted under (the account's first active one, as
    for periods and scope), measured against the effective limit: "80%" means 80% of what the
    account may actually use. Percentages never fire on an unlimited limit; amounts still do.
    """
    if not _any_quota_on(snapshot.catalog, feature.key):
        return None
    try:
        decision = evaluate(snapshot, account_id, feature.key, {}, at)
    except EvaluationError:
        return None
    m = decision.metering
    if m is None or decision.variant == "default":
        return None
    subs = active_subscriptions(snapshot, account_id, at)
    sub = next(
        (s for s in subs if _source(snapshot, s, feature.key) == decision.variant),
        subs[0] if subs else None,
    )
    if sub is None:
        return None
    points: dict[str, _Point] = {}
    for quota in plan_quotas(snapshot.catalog, sub.plan, feature.key):
        for t in quota.thresholds:
            if t.percent is not None and m.limit is None:
                continue
            label = threshold_label(t)
            value = t.value_for(m.limit) if m.limit is not None else float(t.amount or 0.0)
            before = points.get(label)
            points[label] = _Point(label, value, (before.actions if before else ()) + quota.actions)
    if not points:
        return None
    return QuotaCheck(
        environment=environment,
        account=sub.owner if m.scope_key.startswith("sub:") else account_id,
        reported_by=account_id,
        feature=feature.key,
        plan=sub.plan,
        subscription=sub,
        scope_key=m.scope_key,
        limit=m.limit,
        soft_limit=m.soft_limit,
        period_start=m.period_start,
        period_end=m.period_end,
        points=tuple(points.values()),
        now=now,
    )


def _source(snapshot: Snapshot, sub: Subscription, feature: str) -> str | None:
    sourced = snapshot.plans.entitlements(sub).get(feature)
    return sourced[1] if sourced else None


# -- actions (run by the outbox worker) --------------------------------------------------------


def apply_action(state: LiveState, delivery: Delivery) -> bool:
    """Apply an `override` or `change_plan` row; True if it changed the account, False if it
    was already in effect (a replay after a crash). Raises `ActionFailed` when it cannot apply."""
    p = delivery.payload
    # One read-modify-write of a record at a time, so an admin edit in between is not lost.
    with state._write:
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


def _commit(state: LiveState, record: Record) -> None:
    try:
        state.commit(record, cause="quota")
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
    _commit(state, record)
    return True


def _apply_plan(state: LiveState, owner: str, sub_id: str, source: str, target: str) -> bool:
    account = state.snapshot.accounts.get(owner)
    live = next((s for s in account.subscriptions if s.id == sub_id), None) if account else None
    if live is None:
        raise ActionFailed(f"account {owner!r} has no subscription {sub_id!r} any more")
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
        record = rec.change_subscription(current, sub_id, plan=target)
    _commit(state, record)
    return True


# -- the runtime layer on declared accounts ----------------------------------------------------


def split_layer(record: Record) -> tuple[Record, Mapping[str, Any]]:
    """A store record without its quota layer (what the account validator reads), and the layer."""
    if LAYER not in record:
        return record, {}
    return {k: v for k, v in record.items() if k != LAYER}, record[LAYER] or {}


def apply_layer(account: Account, layer: Mapping[str, Any], catalog: Catalog) -> Account:
    """A declared account with the quota actions applied to it.

    Overrides replace the file's for their features. A plan change holds while the file still
    gives the subscription the plan it was made from: once the file changes that plan, the file
    wins again. Raises `AdminError` when the layer does not fit the catalog.
    """
    overrides = layer.get("overrides") or {}
    if overrides:
        parsed = rec.validate({"id": account.id, "overrides": overrides}, catalog).overrides
        account = replace(account, overrides=MappingProxyType({**account.overrides, **parsed}))
    plans: Mapping[str, Any] = layer.get("plans") or {}
    if plans:
        subs: list[Subscription] = []
        for sub in account.subscriptions:
            entry = plans.get(sub.id)
            if entry and entry.get("from") == sub.plan:
                plan = catalog.plans.get(str(entry.get("to")))
                if plan is None:
                    raise rec.AdminError(
                        f"quota plan change of subscription {sub.id!r}: unknown plan {entry.get('to')!r}"
                    )
                problems = subscription_problems(plan, sub.addons, catalog.addons)
                if problems:
                    raise rec.AdminError(
                        f"quota plan change of subscription {sub.id!r} to {plan.key!r}: "
                        + "; ".join(message for _, message in problems)
                    )
                sub = replace(sub, plan=plan.key)
            subs.append(sub)
        account = replace(account, subscriptions=tuple(subs))
    return account


def clear_layer_override(state: LiveState, account_id: str, feature: str) -> Account | None:
    """ClearOverride on a declared account: drop the override a quota action layered on it (the
    file's own override, if any, serves again). None when there is none to drop."""
    with state._write:
        record = state.records.get(account_id)
        if account_id not in state.catalog.accounts or record is None:
            return None
        if feature not in (record.get(LAYER) or {}).get("overrides", {}):
            return None
        record = rec.edited(record)
        del record[LAYER]["overrides"][feature]
        return state.commit(record)


def revert_layer_plan(
    state: LiveState, account_id: str, subscription_id: str, plan: str
) -> Account | None:
    """ChangePlan on a declared account back to the plan its file gives: drop the quota plan
    change of that subscription. None when the request is not such a revert."""
    with state._write:
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
        return state.commit(record)
