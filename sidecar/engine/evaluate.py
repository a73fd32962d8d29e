"""Evaluation: (snapshot, account, feature, context, now) -> Decision. Pure: no I/O, no clock.

The order of sources is design §4: override, then the feature's targeting rule (§4.1, only
for features that have one), then subscriptions (plan + add-ons) and grants combined by
"most generous wins", then the feature default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ...protocol.metering import Denial, PoolCover, Terms, metered_answer
from ..catalog.meters import dimension_text
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
from . import rates
from .balances import Balance, burn_order, headroom, states
from .combine import most_generous
from .decision import Decision, ErrorCode, EvaluationError, Metering, PoolShare, Reason
from .periods import Period, period_containing
from .snapshot import StateView
from .sums import saturated
from .targeting import rule_data, run_rule
from .text import shown
from .typed import number


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


def find_feature(snapshot: StateView, key: str) -> Feature:
    feature = snapshot.catalog.features.get(key)
    if feature is None:
        raise EvaluationError(
            ErrorCode.FLAG_NOT_FOUND,
            f"no feature {shown(key)} in catalog {snapshot.catalog.version}",
        )
    return feature


def active_subscriptions(snapshot: StateView, account_id: str, now: datetime) -> list[Subscription]:
    """The account's own subscriptions, then those it is a member of, active at `now`."""
    account = snapshot.accounts.get(account_id)
    own = account.subscriptions if account is not None else ()
    shared = snapshot.memberships.get(account_id, ())
    return [s.at(now) for s in (*own, *shared) if s.active_at(now)]


@dataclass(frozen=True, slots=True)
class AccountAt:
    """What every feature's evaluation of one account at one instant reads first: the
    account, the shared subscriptions it is a member of, the active subscriptions (each in
    its phase in force) and when one of them next changes. `EvaluateAll` makes it once for
    its fifty evaluations instead of once each."""

    account: Account | None
    shared: Sequence[Subscription]
    subscriptions: list[Subscription]
    until: datetime | None


def account_at(snapshot: StateView, account_id: str, now: datetime) -> AccountAt:
    account = snapshot.accounts.get(account_id)
    shared = snapshot.memberships.get(account_id, ())
    return AccountAt(account, shared, *_subscriptions_at(account, shared, now))


def evaluate(
    snapshot: StateView,
    account_id: str | None,
    key: str,
    context: Mapping[str, Any],
    now: datetime,
    at: AccountAt | None = None,
) -> Decision:
    """Decide what `account_id` gets for feature `key` at `now`; `at`, when given, is
    `account_at(snapshot, account_id, now)` made once for several features.

    Raises `EvaluationError` for an unknown feature, a bad context or a missing targeting key
    where the answer needs an account; an unknown account is not an error (default value,
    denial account_not_found).
    """
    feature = priced(find_feature(snapshot, key), context)
    if not account_id:
        return _keyless(snapshot, feature, context, now)
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
    if at is None:
        at = account_at(snapshot, account_id, now)
    account, shared = at.account, at.shared
    if feature.targeting is not None:
        targeted = _targeted(snapshot, feature, account_id, account, shared, context, now)
        if targeted is not None:
            return targeted
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
    subscriptions, until = at.subscriptions, at.until
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


def _keyless(
    snapshot: StateView, feature: Feature, context: Mapping[str, Any], now: datetime
) -> Decision:
    """Decision 2000: a feature with variants answers without a targeting key, as flagd does —
    its rule runs with `targetingKey` absent and no account, else its default. Any other
    feature's answer is an account's, so it needs the key."""
    targeting = feature.targeting
    if targeting is None:
        raise EvaluationError(
            ErrorCode.TARGETING_KEY_MISSING,
            f"{feature.key} is answered per account: set the context's targetingKey (the "
            "OpenFeature targeting key) to the account id",
        )
    requested = requested_amount(context)
    if feature.archived:
        return _default(
            snapshot, feature, "", None, now, requested, Reason.DISABLED, Denial.FEATURE_DISABLED
        )
    name = run_rule(targeting, feature.key, rule_data(feature, "", None, (), context, now))
    if name is None:
        return _default(snapshot, feature, "", None, now, requested, Reason.DEFAULT, None)
    value = targeting.variants[name]
    decision = _decision(
        snapshot, feature, "", None, now, requested, value, name, Reason.TARGETING_MATCH, None
    )
    return replace(decision, targeted=True)


def _targeted(
    snapshot: StateView,
    feature: Feature,
    account_id: str,
    account: Account | None,
    shared: Sequence[Subscription],
    context: Mapping[str, Any],
    now: datetime,
) -> Decision | None:
    """Step 1b: the variant the targeting rule names, unless an override stands above it;
    None falls through to the other sources. Unknown accounts are targeted too."""
    targeting = feature.targeting
    assert targeting is not None
    if account is not None and active_override(account, feature.key, now) is not None:
        return None
    subscriptions, until = _subscriptions_at(account, shared, now)
    if account is not None:
        until = _sources_change(account, feature.key, now, until)
    data = rule_data(feature, account_id, account, subscriptions, context, now)
    name = run_rule(targeting, feature.key, data)
    if name is None:
        return None
    sub = subscriptions[0] if subscriptions else None
    decision = _decision(
        snapshot,
        feature,
        account_id,
        sub,
        now,
        requested_amount(context),
        targeting.variants[name],
        name,
        Reason.TARGETING_MATCH,
        until,
    )
    return replace(decision, targeted=True)


def active_override(account: Account, key: str, now: datetime) -> Entitlement | None:
    """Source 1: the account's override for `key`, if it has not expired."""
    override = account.overrides.get(key)
    if override is not None and override.active_at(now):
        return override.value
    return None


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
    snapshot: StateView,
    account: Account | None,
    feature: Feature,
    subscriptions: list[Subscription],
    now: datetime,
) -> tuple[Entitlement, str, Subscription | None] | None:
    """The winning value, its source (the variant) and the subscription it came from."""
    key = feature.key
    first = subscriptions[0] if subscriptions else None
    if account is not None:
        override = active_override(account, key, now)
        if override is not None:
            return override, "override", first
    candidates, origin = candidates_for(snapshot, account, key, subscriptions, now)
    winner = most_generous(candidates)
    if winner is None:
        return None
    return winner[0], winner[1], origin.get(winner[1], first)


def candidates_for(
    snapshot: StateView,
    account: Account | None,
    key: str,
    subscriptions: list[Subscription],
    now: datetime,
) -> tuple[list[tuple[Entitlement, str]], dict[str, Subscription]]:
    """Sources 2 and 3: (value, variant) of each active subscription and grant, in the
    account's order, and the subscription each subscription variant came from."""
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
    return candidates, origin


def slot_for(snapshot: StateView, account_id: str, feature: Feature, now: datetime) -> Slot:
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
    snapshot: StateView,
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
        feature.default_variant,
        reason,
        until,
    )
    if reason is Reason.DISABLED or feature.caller_default:
        # decision 2000: the caller's default, no value, an empty variant
        return replace(
            decision,
            value=None,
            variant="",
            caller_default=True,
            has_access=False,
            denial=denial or Denial.NO_ENTITLEMENT,
        )
    if denial is None:
        if decision.has_access:
            return decision
        denial = Denial.NO_ENTITLEMENT
    return replace(decision, has_access=False, denial=denial)


def _decision(
    snapshot: StateView,
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
    if isinstance(value, MeteredLimit) and feature.type is FeatureType.RATE:
        return _rate(snapshot, feature, account_id, sub, now, requested, value, variant, reason)
    if isinstance(value, MeteredLimit):
        return _metered(
            snapshot, feature, account_id, sub, now, requested, value, variant, reason, until
        )
    unlimited = value is UNLIMITED
    plain: Any = feature.infinite if unlimited else thaw(value)
    if feature.type in (FeatureType.BOOLEAN, FeatureType.FLAG):
        access = bool(plain)
    elif feature.type is FeatureType.INTEGER or feature.type is FeatureType.FLOAT:
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
        extra_metadata=feature.metadata,
        flag_set=feature.product,
        flag_set_version=snapshot.catalog.version,
    )


def _trial_end(sub: Subscription | None, now: datetime) -> datetime | None:
    """The end of `sub`'s trial while it runs (design §6.1)."""
    end = sub.trial_ends_at if sub is not None else None
    return end if end is not None and now < end else None


def priced(feature: Feature, context: Mapping[str, Any]) -> Feature:
    """`feature` with its credit price at the rate of the context's `by` dimension (design
    §16: `per_unit` when the context lacks it or the value is not listed), so every step
    after — the pool's admission, `remaining`, the metadata's `per_unit`, a write's pool move
    — uses that one rate."""
    price = feature.credits
    if price is None or price.by is None:
        return feature
    rate = price.rate(dimension_text(context.get(price.by)))
    return (
        feature
        if rate == price.per_unit
        else replace(feature, credits=replace(price, per_unit=rate))
    )


def _metered(
    snapshot: StateView,
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
    usage = snapshot.usage
    used = saturated(usage.used(slot.scope_key, feature.key, period.start))
    allowance = limit.limit
    balance = balance_for(snapshot, account_id, feature.key, allowance, now)
    burned = remaining_topups = 0.0
    topups: tuple[Any, ...] = ()
    if balance is not None:
        topups = tuple(
            states(balance, slot.scope_key, feature.key, period.start, lambda k: usage.used(*k))
        )
        burned, remaining_topups = headroom(topups)
        until = _topups_change(balance, now, until)
    terms = _terms(Terms, (allowance, limit.soft, limit.overage_cap, burned, remaining_topups))
    pool: PoolShare | None = None
    cover: PoolCover | None = None
    if feature.credits is not None:
        price = feature.credits
        pooled = evaluate(
            snapshot, account_id, price.pool, {"requested": requested * price.per_unit}, now
        )
        pool = PoolShare(price.pool, price.per_unit, pooled)
        cover = _pool_cover(pooled, price.per_unit)
        at = pooled.valid_until
        if at is not None and (until is None or at < until):
            until = at
    held, expiry = snapshot.holds.held(slot.scope_key, feature.key, now)
    if expiry is not None and (until is None or expiry < until):
        until = expiry  # design §17: a hold's expiry is a time boundary
    answer = metered_answer(terms, used, requested, held=held, pool=cover)
    cap = answer.limit
    metering = Metering(
        limit=cap,
        used=used,
        remaining=answer.remaining,
        soft_limit=limit.soft,
        overage_cap=limit.overage_cap,
        overage=answer.overage,
        period_start=period.start,
        period_end=period.end,
        scope_key=slot.scope_key,
        allowance=allowance,
        topup_burned=burned,
        topup_remaining=remaining_topups,
        topups=topups,
        pool=pool,
        held=held,
    )
    value = number(cap)
    end = period.end
    if end is not None and (until is None or end < until):
        until = end  # usage starts again from zero
    return Decision(
        feature.key,
        feature.type,
        value,
        variant,
        reason,
        answer.has_access,
        answer.denial,
        metering,
        cap is None,
        until,
        _trial_end(sub, now),
        extra_metadata=feature.metadata,
        flag_set=feature.product,
        flag_set_version=snapshot.catalog.version,
    )


def _rate(
    snapshot: StateView,
    feature: Feature,
    account_id: str,
    sub: Subscription | None,
    now: datetime,
    requested: float,
    limit: MeteredLimit,
    variant: str,
    reason: Reason,
) -> Decision:
    """Design §17: a rate feature's answer for the sliding window ending `now`. `used` is the
    window's count, `period_start` the window's start; no period end and no `valid_until`
    (the answer is volatile: nothing caches it)."""
    width = feature.window.seconds
    used = snapshot.rates.count(account_id, feature.key, width, now.timestamp())
    cap = limit.limit
    access = rates.admits(used, requested, cap)
    metering = Metering(
        limit=cap,
        used=used,
        remaining=rates.remaining(used, cap),
        soft_limit=False,
        overage_cap=None,
        overage=0.0,
        period_start=now - timedelta(seconds=width),
        period_end=None,
        scope_key=f"acct:{account_id}",
        allowance=cap,
    )
    return Decision(
        feature.key,
        feature.type,
        number(cap),
        variant,
        reason,
        access,
        None if access else (Denial.NO_ENTITLEMENT if cap == 0 else Denial.RATE_LIMITED),
        metering,
        cap is None,
        None,
        _trial_end(sub, now),
        extra_metadata=feature.metadata,
        flag_set=feature.product,
        flag_set_version=snapshot.catalog.version,
    )


def balance_for(
    snapshot: StateView, account_id: str, feature: str, allowance: float | None, at: datetime
) -> Balance | None:
    """The account's top-ups of `feature` in burn order (design §5.1), or None without any."""
    account = snapshot.accounts.get(account_id)
    if account is None or not account.topups:
        return None
    topups = burn_order(t for t in account.topups if t.feature == feature)
    return Balance(allowance, topups, at) if topups else None


def _topups_change(balance: Balance, now: datetime, soonest: datetime | None) -> datetime | None:
    """`soonest`, or earlier if a top-up becomes effective or ends before it (design §8)."""
    for t in balance.topups:
        for at in (t.effective_at, t.ends_at):
            if at is not None and at > now and (soonest is None or at < soonest):
                soonest = at
    return soonest


_terms = tuple.__new__
"""`Terms(...)` without the NamedTuple's Python-level `__new__`: one per metered evaluation."""


def _pool_cover(pooled: Decision, per_unit: float) -> PoolCover:
    """What the pool's own decision says to `metered_answer`: a pool with no metered answer
    (e.g. disabled) covers nothing."""
    m = pooled.metering
    return PoolCover(per_unit, pooled.has_access, 0.0 if m is None else m.remaining)
