"""When time alone changes an account's decisions (design §8 "Time"), per account and globally.

`Decision.valid_until` answers this for one (account, feature) at evaluation time; the sidecar's
timekeeper needs it per account, ahead of time, to tell Watch streams at the instant. Both read
the same timed things: overrides expiring, grants and subscriptions starting or ending, usage
periods ending. Conservative on purpose: an instant that turns out to change nothing only
costs caches a refill, a missed one would serve a stale answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..catalog.model import Account, Anchor, Feature, Reset
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
