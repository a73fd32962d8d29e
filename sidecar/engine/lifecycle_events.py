"""Which lifecycle events (design §7.1) a change or the passing of time makes: pure functions.

Two sources, one vocabulary:

- `admin_events(old, new)`: what an edit of one account says (a subscription created,
  updated, canceled; a top-up added), computed from the account before and after, so every
  path that commits a record (Admin, CLI, quota actions, migrations) reports the same way.
- `timed_events(account, start, end, lead)`: what happens to an account by time alone inside
  `(start, end]` — a trial ending soon or ended, a scheduled phase taking effect, an end, a
  top-up expiring. Each carries a `mark`, the key the scheduler records once in the store so
  that a restart, a catch-up after downtime or a second sidecar never sends it twice.

Everything is read from the record as written ahead of time (design §6.1), so the same
inputs always give the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from ..catalog.model import Account, Subscription, TopUp
from .typed import iso, number

_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One event before it is addressed to endpoints: its type, the account, when it
    happened and its own fields (`data`, merged into the webhook body)."""

    type: str
    account: str
    at: datetime
    data: Mapping[str, Any]
    mark: str = ""  # time-driven events: the once-only key (empty for admin-driven ones)


def subscription_view(sub: Subscription, at: datetime) -> dict[str, Any]:
    """A subscription as an event shows it at `at`: the phase in force and what is pending."""
    now = sub.at(at)
    return {
        "id": sub.id,
        "plan": now.plan,
        "addons": dict(now.addons),
        "starts_at": iso(sub.starts_at),
        "ends_at": iso(sub.ends_at),
        "trial_ends_at": iso(sub.trial_ends_at),
        "trial": sub.trial_ends_at is not None and at < sub.trial_ends_at,
        "members": list(sub.members),
        "pending": [
            {"starts_at": iso(p.starts_at), "plan": p.plan, "addons": dict(p.addons)}
            for p in sub.phases
            if p.starts_at > at
        ],
    }


def topup_view(topup: TopUp) -> dict[str, Any]:
    return {
        "id": topup.id,
        "amount": number(topup.amount),
        "priority": topup.priority,
        "effective_at": iso(topup.effective_at),
        "expires_at": iso(topup.expires_at),
    }


def topup_data(topup: TopUp) -> dict[str, Any]:
    """The fields of every top-up event."""
    return {"feature": topup.feature, "topup": topup_view(topup)}


def trial_then(sub: Subscription) -> str:
    """What follows `sub`'s trial: `cancel` (it ends then), a plan (a phase starts then) or
    `continue` — read back from what `add_subscription` wrote ahead of time."""
    end = sub.trial_ends_at
    if end is not None and sub.ends_at == end:
        return "cancel"
    phase = next((p for p in sub.phases if p.starts_at == end), None)
    return phase.plan if phase is not None else "continue"


# -- admin-driven --------------------------------------------------------------------------


def admin_events(old: Account | None, new: Account | None, now: datetime) -> list[LifecycleEvent]:
    """The events of one account edit from `old` to `new` (None: absent / deleted).

    Per subscription at most one: `created` (new id), `canceled` (an end set or moved — its
    `ended` follows at the end's instant, from the scheduler), or `updated` (anything else:
    plan, add-ons, members, a phase scheduled or removed, an end removed). Deleting an
    account ends its subscriptions that had not ended. Per new top-up id: `topup.added`.
    """
    events: list[LifecycleEvent] = []
    either = new or old
    if either is None:
        return events
    account = either.id
    before = {s.id: s for s in old.subscriptions} if old is not None else {}
    after = {s.id: s for s in new.subscriptions} if new is not None else {}
    for sub_id, sub in after.items():
        was = before.get(sub_id)
        view = {"subscription": subscription_view(sub, now)}
        if was is None:
            events.append(LifecycleEvent("subscription.created", account, now, view))
        elif was != sub:
            previous = {"previous": subscription_view(was, now)}
            if sub.ends_at is not None and sub.ends_at != was.ends_at:
                kind = "subscription.canceled"
            else:
                kind = "subscription.updated"
            events.append(LifecycleEvent(kind, account, now, {**view, **previous}))
    if new is None:
        for sub in before.values():
            if sub.ends_at is None or sub.ends_at > now:
                data = {"subscription": subscription_view(sub, now), "reason": "account_deleted"}
                events.append(LifecycleEvent("subscription.ended", account, now, data))
    known = {t.id for t in old.topups} if old is not None else set()
    for topup in new.topups if new is not None else ():
        if topup.id not in known:
            events.append(LifecycleEvent("topup.added", account, now, topup_data(topup)))
    return events


# -- time-driven ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Due:
    """A time-driven event before its fields are built (most are only asked for their time)."""

    type: str
    at: datetime
    mark: str
    data: Callable[[], dict[str, Any]]

    def event(self, account: str) -> LifecycleEvent:
        return LifecycleEvent(self.type, account, self.at, self.data(), self.mark)


def _timed(account: Account, lead: timedelta) -> Iterator[_Due]:
    """Every time-driven event the account's record holds, at any instant."""
    aid = account.id
    for sub in account.subscriptions:
        end, trial = sub.ends_at, sub.trial_ends_at

        def due(
            kind: str, at: datetime, sub: Subscription = sub, previous: bool = False, **extra: Any
        ) -> _Due:
            def data() -> dict[str, Any]:
                out: dict[str, Any] = {"subscription": subscription_view(sub, at)}
                if previous:  # a phase taking effect: what was in force just before
                    out["previous"] = subscription_view(sub, at - _US)
                return {**out, **extra}

            return _Due(kind, at, f"{kind}:{aid}:{sub.id}:{iso(at)}", data)

        if trial is not None and (end is None or trial <= end):
            # A trial shorter than the lead warns at its start (at once, for a new one).
            warn = max(trial - lead, sub.starts_at) if sub.starts_at else trial - lead
            if warn < trial:
                yield due("trial.ending", warn, trial_ends_at=iso(trial), then=trial_then(sub))
            yield due("trial.ended", trial, then=trial_then(sub))
        for phase in sub.phases:
            if end is None or phase.starts_at < end:
                yield due("subscription.updated", phase.starts_at, previous=True)
        if end is not None:
            yield due("subscription.ended", end, reason="ended")
    for topup in account.topups:
        expires = topup.expires_at
        if expires is not None and (topup.voided_at is None or topup.voided_at > expires):
            mark = f"topup.expired:{aid}:{topup.id}:{iso(expires)}"
            yield _Due("topup.expired", expires, mark, partial(topup_data, topup))


def timed_events(
    account: Account, start: datetime, end: datetime, lead: timedelta
) -> list[LifecycleEvent]:
    """The account's time-driven events with an instant in `(start, end]`, in time order;
    `lead` is how long before a trial's end `trial.ending` comes."""
    found = sorted((d for d in _timed(account, lead) if start < d.at <= end), key=lambda d: d.at)
    return [d.event(account.id) for d in found]


def next_instant(account: Account, after: datetime, lead: timedelta) -> datetime | None:
    """The first instant after `after` at which the account has a time-driven event."""
    return min((e.at for e in _timed(account, lead) if e.at > after), default=None)
