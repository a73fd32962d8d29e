"""When time alone changes an account's decisions (design §8 "Time"), per account and globally.

`Decision.valid_until` answers this for one (account, feature) at evaluation time; the sidecar's
timekeeper needs it per account, ahead of time, to tell Watch streams at the instant. Both read
the same timed things: overrides expiring, grants and subscriptions starting or ending, usage
periods ending. Conservative on purpose: an instant that turns out to change nothing only
costs caches a refill, a missed one would serve a stale answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..catalog.model import Account, Anchor, Feature, Reset, Subscription
from .periods import period_containing


def subscription_resets(features: Iterable[Feature]) -> tuple[Reset, ...]:
    """The resets of metered features whose periods follow each subscription's start."""
    return tuple(
        sorted(
            {
                f.reset
                for f in features
                if f.counted and f.anchor is Anchor.SUBSCRIPTION and f.reset is not Reset.NEVER
            }
        )
    )


def calendar_change(features: Iterable[Feature], after: datetime) -> datetime | None:
    """The next calendar period end after `after` of any metered feature: an instant that
    changes every account at once. Subscription-anchored features count too: an account
    without a subscription counts their usage in calendar periods (design §5)."""
    soonest: datetime | None = None
    for f in features:
        if not f.counted or f.reset is Reset.NEVER:
            continue
        end = period_containing(f.reset, Anchor.CALENDAR, after, None).end
        if end is not None and (soonest is None or end < soonest):
            soonest = end
    return soonest


def account_change(account: Account, resets: tuple[Reset, ...], after: datetime) -> datetime | None:
    """The first instant after `after` at which one of `account`'s own timed things changes:
    an override expiring, a grant or subscription starting or ending, a subscription's phase
    starting or trial ending (design §6.1), or a period of a
    subscription-anchored feature (`resets`, from `subscription_resets`) ending. Members of
    the account's subscriptions change at the subscription's instants too."""
    times: list[datetime | None] = [o.expires_at for o in account.overrides.values()]
    for grant in account.grants:
        times += (grant.starts_at, grant.ends_at)
    for topup in account.topups:  # a balance becoming effective, expiring or voided (§5.1)
        times += (topup.effective_at, topup.ends_at)
    for sub in account.subscriptions:
        times += (sub.starts_at, sub.ends_at, sub.trial_ends_at)
        times += (phase.starts_at for phase in sub.phases)
        if sub.starts_at is not None and sub.active_at(after):
            times += (
                period_containing(r, Anchor.SUBSCRIPTION, after, sub.starts_at).end for r in resets
            )
    return min((t for t in times if t is not None and t > after), default=None)


@dataclass(frozen=True, slots=True)
class Coming:
    """One instant at which time alone changes an account, and what it changes (in words)."""

    at: datetime
    what: str


def _addons_text(addons: Mapping[str, int]) -> str:
    return " + " + ", ".join(f"{k} ×{q}" for k, q in addons.items()) if addons else ""


def coming_changes(
    account: Account, features: Iterable[Feature], after: datetime, limit: int = 50
) -> list[Coming]:
    """Every coming instant of `account`'s own timed things, in time order (design §12.1: the
    console's "what changes next"): the same things `account_change` reads, each with what
    it changes, plus the next usage period end of every metered feature (subscription-
    anchored ones from the active subscription's start, the rest on the calendar)."""
    out: list[Coming] = []

    def add(at: datetime | None, what: str) -> None:
        if at is not None and at > after:
            out.append(Coming(at, what))

    for o in account.overrides.values():
        add(o.expires_at, f"the override of {o.feature} expires: the plan's value applies again")
    for g in account.grants:
        add(g.starts_at, f"grant {g.id} of {g.feature} starts")
        add(g.ends_at, f"grant {g.id} of {g.feature} ends")
    for t in account.topups:
        add(t.effective_at, f"top-up {t.id} of {t.feature} ({t.amount:g}) becomes usable")
        add(t.ends_at, f"top-up {t.id} of {t.feature} ends: what is left of it is gone")
    active = None
    for sub in account.subscriptions:
        if active is None and sub.active_at(after):
            active = sub
        add(sub.starts_at, f"subscription {sub.id} starts on plan {sub.plan}")
        add(sub.trial_ends_at, f"the trial of subscription {sub.id} ends")
        for phase in sub.phases:
            add(
                phase.starts_at,
                f"subscription {sub.id} moves to plan {phase.plan}{_addons_text(phase.addons)}",
            )
        add(sub.ends_at, f"subscription {sub.id} ends: its plan's entitlements stop")
    for at, keys in _period_ends(features, active, after).items():
        add(at, f"usage of {', '.join(sorted(keys))} starts again from 0 (period reset)")
    out.sort(key=lambda c: c.at)
    return out[:limit]


def _period_ends(
    features: Iterable[Feature], active: Subscription | None, after: datetime
) -> dict[datetime, list[str]]:
    """The next usage period end after `after` of every metered feature, with the features
    that reset then (subscription-anchored ones from `active`'s start, the rest on the
    calendar)."""
    resets: dict[datetime, list[str]] = {}
    for f in features:
        if not f.counted or f.reset is Reset.NEVER:
            continue
        subscription_anchored = f.anchor is Anchor.SUBSCRIPTION and active is not None
        start = active.starts_at if subscription_anchored and active is not None else None
        anchor = Anchor.SUBSCRIPTION if start is not None else Anchor.CALENDAR
        end = period_containing(f.reset, anchor, after, start).end
        if end is not None and end > after:
            resets.setdefault(end, []).append(f.key)
    return resets
