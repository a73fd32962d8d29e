"""Evaluation: (snapshot, account, feature, context, now) -> Decision. Pure: no I/O, no clock.

The order of sources is design §4: override, then subscriptions (plan + add-ons) and
grants combined by "most generous wins", then the feature default. Rules and rollouts
(planned) will slot in before the override as one more step in `_decide`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ...protocol.metering import Denial, metered_access
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
from .decision import Decision, ErrorCode, EvaluationError, Metering, Reason
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
    return [s.at(now) for s in (*own, *shared) if s.active_at(now)]


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
    shared = snapshot.memberships.get(account_id, ())
    if account is None and not shared:
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
    subscriptions, until = _subscriptions_at(account, shared, now)
    if account is not None:
        until = _sources_change(account, key, now, until)
    found = _decide(snapshot, account, feature, subscriptions, now)
    if found is None:
        sub = subscriptions[0] if subscriptions else None
        return _default(
            snapshot, feature, account_id, sub, now, requested, Reason.DEFAULT, None, until
        )
    value, variant, sub = found
    return _decision(
        snapshot,
        feature,
        account_id,
        sub,
        now,
        requested,
        value,
        variant,
        Reason.TARGETING_MATCH,
        until,
    )


def _subscriptions_at(
    account: Account | None, shared: Sequence[Subscription], now: datetime
) -> tuple[list[Subscription], datetime | None]:
    """`active_subscriptions`, plus the first instant after `now` at which one of the
    account's subscriptions (own or shared) starts, changes phase, ends its trial or ends:
    one pass over what the evaluation reads anyway, so `valid_until` costs a few comparisons
    (design §8 "Time"). Each active subscription comes as its phase in force at `now`
    (design §6.1)."""
    active: list[Subscription] = []
    soonest: datetime | None = None
    for sub in (*account.subscriptions, *shared) if account is not None else shared:
        start, end = sub.starts_at, sub.ends_at
        if start is not None and start > now:
            if soonest is None or start < soonest:
                soonest = start
        elif end is None or now < end:
            active.append(sub.at(now))
            for at in (end, sub.next_phase_start(now), sub.trial_ends_at):
                if at is not None and at > now and (soonest is None or at < soonest):
                    soonest = at
    return active, soonest


def _sources_change(
    account: Account, key: str, now: datetime, soonest: datetime | None
) -> datetime | None:
    """`soonest`, or earlier if the account's override or a grant for `key` expires or starts
    before it. Conservative by design: a boundary that turns out not to change the answer
    only costs a cache refill."""
    override = account.overrides.get(key)
    if override is not None:
        at = override.expires_at
        if at is not None and at > now and (soonest is None or at < soonest):
            soonest = at
    for grant in account.grants:
        if grant.feature != key:
            continue
        for at in (grant.starts_at, grant.ends_at):
            if at is not None and at > now and (soonest is None or at < soonest):
                soonest = at
    return soonest


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
    until: datetime | None = None,
) -> Decision:
    decision = _decision(
        snapshot,
        feature,
        account_id,
        sub,
        now,
        requested,
        feature.default,
        "default",
        reason,
        until,
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
    until: datetime | None,
) -> Decision:
    if isinstance(value, MeteredLimit):
        return _metered(
            snapshot, feature, account_id, sub, now, requested, value, variant, reason, until
        )
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
        until,
        _trial_end(sub, now),
    )


def _trial_end(sub: Subscription | None, now: datetime) -> datetime | None:
    """The end of `sub`'s trial while it runs (design §6.1)."""
    end = sub.trial_ends_at if sub is not None else None
    return end if end is not None and now < end else None


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
    until: datetime | None,
) -> Decision:
    slot = _slot(feature, account_id, sub, now)
    period = slot.period
    used = snapshot.usage.used(slot.scope_key, feature.key, period.start)
    access, denial = metered_access(
        limit.limit, used, requested, soft=limit.soft, overage_cap=limit.overage_cap
    )
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
    end = period.end
    if end is not None and (until is None or end < until):
        until = end  # usage starts again from zero
    return Decision(
        feature.key,
        feature.type,
        value,
        variant,
        reason,
        access,
        denial,
        metering,
        cap is None,
        until,
        _trial_end(sub, now),
    )
