"""When a scheduled subscription change takes effect (design §6.1).

`when: period_end` means the end of the billing period containing `now`, counted in the
plan's price interval from the subscription's start (its anchor), month steps clamped to
the month's length (Jan 31 → Feb 28/29) like usage periods — one calendar rule for both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..catalog.model import Anchor, Catalog, Plan, Reset, Subscription
from .periods import period_containing

_INTERVALS = {
    "day": Reset.DAILY,
    "daily": Reset.DAILY,
    "week": Reset.WEEKLY,
    "weekly": Reset.WEEKLY,
    "month": Reset.MONTHLY,
    "monthly": Reset.MONTHLY,
    "year": Reset.YEARLY,
    "yearly": Reset.YEARLY,
}


def billing_period_end(catalog: Catalog, sub: Subscription, now: datetime) -> datetime:
    """The end of `sub`'s billing period containing `now` (monthly without a price)."""
    plan = catalog.plans.get(sub.at(now).plan)
    interval = plan.price.interval if plan is not None and plan.price is not None else "month"
    reset = _INTERVALS.get(interval, Reset.MONTHLY)
    end = period_containing(reset, Anchor.SUBSCRIPTION, now, sub.starts_at).end
    assert end is not None  # only Reset.NEVER periods are open
    return end


WHEN = ("now", "period_end")


def effective_at(
    catalog: Catalog,
    sub: Subscription,
    now: datetime,
    at: datetime | None,
    when: str,
) -> datetime:
    """The instant a change asked for with `at` or `when` takes effect; `ValueError` with a
    message for the caller when the request is contradictory or in the past."""
    if when and when not in WHEN:
        raise ValueError(f"when must be one of {', '.join(WHEN)}, got {when!r}")
    if at is not None and when:
        raise ValueError("give either at or when, not both")
    if when == "period_end":
        return billing_period_end(catalog, sub, now)
    if at is None:
        return now
    if at < now:
        raise ValueError(f"at {at.isoformat()} is in the past; changes take effect now or later")
    return at


def trial_of(
    catalog: Catalog,
    plan: Plan,
    starts_at: datetime,
    trial_ends_at: datetime | None,
    trial_then: str,
    no_trial: bool = False,
) -> tuple[datetime, str] | None:
    """A new subscription's trial as (end, then): the request's end or the plan's `days`
    from the start, and the request's `then` or the plan's; None without either, or when
    the seller asks for none (`no_trial`: a plan with a trial sold straight away).
    `ValueError` for an end not after the start, a `then` that names no plan, or `no_trial`
    beside a trial's end or `then`."""
    if no_trial:
        if trial_ends_at is not None or trial_then:
            raise ValueError("no_trial cannot go with trial_ends_at or trial_then")
        return None
    if trial_ends_at is None and plan.trial is None:
        if trial_then:
            raise ValueError(f"trial_then needs a trial: plan {plan.key!r} has none")
        return None
    end = trial_ends_at or starts_at + timedelta(days=plan.trial.days if plan.trial else 0)
    if end <= starts_at:
        raise ValueError("trial_ends_at must be after starts_at")
    then = trial_then or (plan.trial.then if plan.trial else "continue")
    if then not in ("continue", "cancel") and then not in catalog.plans:
        raise ValueError(
            f"trial_then must be continue, cancel or a plan (plans: {', '.join(sorted(catalog.plans))})"
        )
    return end, then


def superseded(catalog: Catalog, plan_key: str) -> str | None:
    """Why `plan_key` takes no new subscriptions (design §6.1 grandfathering), naming the
    successor; None when it does."""
    plan = catalog.plans.get(plan_key)
    if plan is None or plan.superseded_by is None:
        return None
    return f"plan {plan_key!r} is superseded by {plan.superseded_by!r}; subscribe to that instead"
