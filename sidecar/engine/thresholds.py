"""Which quota thresholds a usage write crosses (design §7). Pure: snapshot in, values out.

Before a write, `thresholds_for` works out from the snapshot whose quotas apply (the plan of
the subscription that supplies the account's limit), the effective limit and each
threshold's value. Inside the write's transaction only the counter's (old, new) then decide
what is crossed (`QuotaThresholds.crossed`), so the store needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..catalog.model import Catalog, Feature, Quota, QuotaAction, Subscription, Threshold
from .decision import EvaluationError
from .evaluate import active_subscriptions, evaluate
from .snapshot import StateView


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
class Point:
    """One threshold of the applying quotas: its label, its value now, what it sets off."""

    label: str
    value: float
    actions: tuple[QuotaAction, ...]


@dataclass(frozen=True, slots=True)
class QuotaThresholds:
    """The thresholds a write of one counter can cross, resolved before the write."""

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
    points: tuple[Point, ...]

    def crossed(self, old: float, new: float) -> tuple[Point, ...]:
        """The thresholds the counter moved from below to at-or-above."""
        return tuple(p for p in self.points if old < p.value <= new)


def thresholds_for(
    snapshot: StateView, account_id: str, feature: Feature, at: datetime
) -> QuotaThresholds | None:
    """The thresholds for a write of `account_id`'s `feature` usage counted at `at`.

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
    points: dict[str, Point] = {}
    limit = m.allowance if m.topups else m.limit  # percentages of the allowance (design §5.1)
    for quota in plan_quotas(snapshot.catalog, sub.plan, feature.key):
        for t in quota.thresholds:
            if t.percent is not None and limit is None:
                continue
            label = threshold_label(t)
            value = t.value_for(limit) if limit is not None else float(t.amount or 0.0)
            before = points.get(label)
            points[label] = Point(label, value, (before.actions if before else ()) + quota.actions)
    if not points:
        return None
    return QuotaThresholds(
        account=sub.owner if m.scope_key.startswith("sub:") else account_id,
        reported_by=account_id,
        feature=feature.key,
        plan=sub.plan,
        subscription=sub,
        scope_key=m.scope_key,
        limit=limit,
        soft_limit=m.soft_limit,
        period_start=m.period_start,
        period_end=m.period_end,
        points=tuple(points.values()),
    )


def _source(snapshot: StateView, sub: Subscription, feature: str) -> str | None:
    sourced = snapshot.plans.entitlements(sub).get(feature)
    return sourced[1] if sourced else None
