"""Evaluation: (snapshot, account, feature, context, now) -> Decision. Pure: no I/O, no clock.

The order of sources is design §4: override, then subscriptions (plan + add-ons) and
grants combined by "most generous wins", then the feature default. Rules and rollouts
(planned) will slot in before the override as one more step in `_decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..catalog.model import (
    UNLIMITED,
    Account,
    Entitlement,
    Feature,
    FeatureType,
    MeteredLimit,
    Scope,
    Subscription,
    thaw,
)
from .combine import most_generous
from .decision import Decision, Denial, ErrorCode, EvaluationError, Metering, Reason
from .periods import Period, period_containing
from .snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a metered feature's usage is counted for an account at an instant."""

    scope_key: str
    period: Period


def requested_amount(context: Mapping[str, Any]) -> float:
    """The `requested` context attribute (default 1), validated."""
    value = context.get("requested", 1)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise EvaluationError(
            ErrorCode.INVALID_CONTEXT,
            f"context attribute 'requested' must be a non-negative number, got {value!r}",
        )
    return float(value)


def find_feature(snapshot: Snapshot, key: str) -> Feature:
    feature = snapshot.catalog.features.get(key)
    if feature is None:
        raise EvaluationError(
            ErrorCode.FLAG_NOT_FOUND, f"no feature {key!r} in catalog {snapshot.catalog.version}"
        )
    return feature


def active_subscriptions(snapshot: Snapshot, account_id: str, now: datetime) -> list[Subscription]:
    """The account's own subscriptions, then those it is a member of, active at `now`."""
    account = snapshot.accounts.get(account_id)
    own = account.subscriptions if account is not None else ()
    shared = snapshot.memberships.get(account_id, ())
    return [s for s in (*own, *shared) if s.active_at(now)]


def evaluate(
    snapshot: Snapshot,
    account_id: str | None,
    key: str,
    context: Mapping[str, Any],
    now: datetime,
) -> Decision:
    """Decide what `account_id` gets for feature `key` at `now`.

    Raises `EvaluationError` for a missing targeting key, an unknown feature or a bad
    context; an unknown account is not an error (default value, denial account_not_found).
    """
    if not account_id:
        raise EvaluationError(
            ErrorCode.TARGETING_KEY_MISSING, "an account id (the targeting key) is required"
        )
    feature = find_feature(snapshot, key)
    requested = requested_amount(context)
    if feature.archived:
        return _default(
            snapshot,
            feature,
            account_id,
            None,
            now,
            requested,
            Reason.DISABLED,
            Denial.FEATURE_DISABLED,
        )
    account = snapshot.accounts.get(account_id)
    subscriptions = active_subscriptions(snapshot, account_id, now)
    if account is None and not snapshot.memberships.get(account_id):
        return _default(
            snapshot,
            feature,
            account_id,
            None,
            now,
            requested,
            Reason.DEFAULT,
            Denial.ACCOUNT_NOT_FOUND,
        )
    found = _decide(snapshot, account, feature, subscriptions, now)
    if found is None:
        sub = subscriptions[0] if subscriptions else None
        return _default(snapshot, feature, account_id, sub, now, requested, Reason.DEFAULT, None)
    value, variant, sub = found
    return _decision(
        snapshot, feature, account_id, sub, now, requested, value, variant, Reason.TARGETING_MATCH
    )


def _decide(
    snapshot: Snapshot,
    account: Account | None,
    feature: Feature,
    subscriptions: list[Subscription],
    now: datetime,
) -> tuple[Entitlement, str, Subscription | None] | None:
    """The winning value, its source (the variant) and the subscription it came from."""
    key = feature.key
    first = subscriptions[0] if subscriptions else None
    if account is not None:
        override = account.overrides.get(key)
        if override is not None and override.active_at(now):
            return override.value, "override", first
    candidates: list[tuple[Entitlement, str]] = []
    origin: dict[str, Subscription] = {}
    for sub in subscriptions:
        sourced = snapshot.plans.entitlements(sub).get(key)
        if sourced is not None:
            candidates.append(sourced)
            origin.setdefault(sourced[1], sub)
    if account is not None:
        candidates.extend(
            (g.value, "grant") for g in account.grants if g.feature == key and g.active_at(now)
        )
    winner = most_generous(candidates)
    if winner is None:
        return None
    return winner[0], winner[1], origin.get(winner[1], first)


def slot_for(snapshot: Snapshot, account_id: str, feature: Feature, now: datetime) -> Slot:
    """The usage counter a report for (account, feature) at `now` goes to.

    Evaluations read the same slot, so a report and the next check always agree.
    """
    subscriptions = active_subscriptions(snapshot, account_id, now)
    found = _decide(snapshot, snapshot.accounts.get(account_id), feature, subscriptions, now)
    sub = found[2] if found else (subscriptions[0] if subscriptions else None)
    return _slot(feature, account_id, sub, now)


def _slot(feature: Feature, account_id: str, sub: Subscription | None, now: datetime) -> Slot:
    scope = (
        f"sub:{sub.id}"
        if feature.scope is Scope.SUBSCRIPTION and sub is not None
        else f"acct:{account_id}"
    )
    period = period_containing(feature.reset, feature.anchor, now, sub.starts_at if sub else None)
    return Slot(scope, period)


def _default(
    snapshot: Snapshot,
    feature: Feature,
    account_id: str,
    sub: Subscription | None,
    now: datetime,
    requested: float,
    reason: Reason,
    denial: Denial | None,
) -> Decision:
    decision = _decision(
        snapshot, feature, account_id, sub, now, requested, feature.default, "default", reason
    )
    if denial is None:
        if decision.has_access:
            return decision
        denial = Denial.NO_ENTITLEMENT
    return replace(decision, has_access=False, denial=denial)


def _decision(
    snapshot: Snapshot,
    feature: Feature,
    account_id: str,
    sub: Subscription | None,
    now: datetime,
    requested: float,
    value: Entitlement,
    variant: str,
    reason: Reason,
) -> Decision:
    if isinstance(value, MeteredLimit):
        return _metered(snapshot, feature, account_id, sub, now, requested, value, variant, reason)
    unlimited = value is UNLIMITED
    plain: Any = feature.infinite if unlimited else thaw(value)
    if feature.type in (FeatureType.BOOLEAN, FeatureType.FLAG):
        access = bool(plain)
    elif feature.type is FeatureType.INTEGER:
        access = unlimited or plain > 0
    elif feature.type in (FeatureType.STRING, FeatureType.LIST):
        access = len(plain) > 0
    else:
        access = True
    return Decision(
        feature.key,
        feature.type,
        plain,
        variant,
        reason,
        access,
        None if access else Denial.NO_ENTITLEMENT,
        None,
        unlimited,
    )


def _metered(
    snapshot: Snapshot,
    feature: Feature,
    account_id: str,
    sub: Subscription | None,
    now: datetime,
    requested: float,
    limit: MeteredLimit,
    variant: str,
    reason: Reason,
) -> Decision:
    slot = _slot(feature, account_id, sub, now)
    period = slot.period
    used = snapshot.usage.used(slot.scope_key, feature.key, period.start)
    access, denial = metered_access(limit, used, requested)
    cap = limit.limit
    metering = Metering(
        limit=cap,
        used=used,
        remaining=None if cap is None else max(0.0, cap - used),
        soft_limit=limit.soft,
        overage_cap=limit.overage_cap,
        overage=0.0 if cap is None else max(0.0, used - cap),
        period_start=period.start,
        period_end=period.end,
        scope_key=slot.scope_key,
    )
    value = None if cap is None else (int(cap) if cap.is_integer() else cap)
    return Decision(
        feature.key, feature.type, value, variant, reason, access, denial, metering, cap is None
    )


def metered_access(
    limit: MeteredLimit, used: float, requested: float
) -> tuple[bool, Denial | None]:
    """Design §4: unlimited, or U + R <= L, or a soft limit within its overage cap."""
    if limit.limit is None:
        return True, None
    total = used + requested
    if total <= limit.limit:
        return True, None
    if limit.soft and (limit.overage_cap is None or total - limit.limit <= limit.overage_cap):
        return True, None
    ceiling = limit.limit + ((limit.overage_cap or 0.0) if limit.soft else 0.0)
    if requested > ceiling:
        return False, Denial.REQUESTED_EXCEEDS_LIMIT
    return False, Denial.USAGE_LIMIT_REACHED
