"""Usage history and export (design §6.2): what faces call to read usage over time.

`usage_history` answers one account's feature as a series of windows; `export_usage` streams
every stored counter overlapping a range, one row per account, feature and period — what a
billing system imports. Both read the counters' stored buckets and rows; the arithmetic over
buckets is `engine.history`.

Choices (docs/decisions/1100-usage-history.md):

- A window's counter, period and `limit` come from the decision in force at the window's
  "current" instant: now for the window holding now, the window's last instant for a past
  one, its first for a future one. So a member of a pooled subscription sees the pool's
  counter, and a window after a plan change shows the new plan's limit.
- `limit` is the plan's period allowance (None when unlimited); top-ups are reported apart
  (`topups_burned` in the export), and `overage = usage - limit - topups_burned` (at least 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ....protocol.metering import Terms, metered_answer
from ...catalog.model import Feature
from ...engine import StateView, evaluate, slot_for
from ...engine.balances import FOREVER
from ...engine.history import Series, Window, hour_of, window_count, windows
from ...engine.periods import period_containing
from ..edits.records import AdminError, NotFound, Refused

if TYPE_CHECKING:
    from ..live.state import LiveState

MAX_POINTS = 10_000
"""Windows per History call: 400 days of hours fit; a longer range wants a wider window."""

EXPORT_PAGE = 200
"""Accounts read per store query of an export: bounds its memory whatever the total."""

_TICK = timedelta(microseconds=1)


class HistoryQueryError(AdminError):
    """A history or export request that cannot be answered as asked (INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    window_start: datetime
    window_end: datetime
    usage: float
    limit: float | None  # None: unlimited


@dataclass(frozen=True, slots=True)
class ExportRow:
    account_id: str
    feature: str
    period_start: datetime
    period_end: datetime | None  # None: a `reset: never` feature's one period
    usage: float
    limit: float | None  # None: unlimited
    overage: float
    topups_burned: float


@dataclass(frozen=True, slots=True)
class _Span:
    """A window with what is in force in it: its counter's scope and period, and the limit."""

    start: datetime
    end: datetime
    scope_key: str
    period_start: datetime
    limit: float | None


def parse_window(window: str) -> Window:
    try:
        return Window(window or Window.HOUR)
    except ValueError:
        known = ", ".join(w.value for w in Window)
        raise HistoryQueryError(f"unknown window {window!r}; use one of: {known}") from None


def check_range(start: datetime, end: datetime) -> None:
    if start > end:
        raise HistoryQueryError(
            f"from ({start.isoformat()}) is after to ({end.isoformat()}); swap them"
        )


def metered_feature(snap: StateView, key: str) -> Feature:
    feature = snap.catalog.features.get(key)
    if feature is None:
        raise HistoryQueryError(f"unknown feature {key!r} in catalog {snap.catalog.version}")
    if not feature.counted:
        raise HistoryQueryError(
            f"{key} is a {feature.type.value} feature; only metered ones have usage"
        )
    return feature


def usage_history(
    state: LiveState,
    account_id: str,
    feature: str,
    start: datetime,
    end: datetime,
    window: Window | str,
) -> list[HistoryPoint]:
    """The account's usage of `feature` in each `window` overlapping [start, end)."""
    kind = parse_window(str(window))
    state.ensure(account_id)  # design §19: called off the loop
    snap = state.snapshot
    f = metered_feature(snap, feature)
    check_range(start, end)
    if account_id not in snap.accounts and account_id not in snap.memberships:
        raise NotFound(f"account {account_id!r} not found")
    now = state.clock()
    if kind is Window.PERIOD:
        bounds = _periods(snap, account_id, f, start, end)
        count = len(bounds)
    else:  # counted before a window is built: 1,000 years of hours would take gigabytes
        count = window_count(start, end, kind)
        bounds = [] if count > MAX_POINTS else windows(start, end, kind)
    if count > MAX_POINTS:
        held = f"more than {MAX_POINTS}" if kind is Window.PERIOD else str(count)
        raise HistoryQueryError(
            f"the range holds {held} {kind.value} windows; at most {MAX_POINTS} are answered "
            "per call: narrow the range or use a wider window"
        )
    spans = [_span(snap, account_id, f, ws, we, now) for ws, we in bounds]
    series: dict[str, Series] = {}
    for scope in dict.fromkeys(s.scope_key for s in spans):
        mine = [s for s in spans if s.scope_key == scope]
        since = hour_of(min(min(s.period_start, s.start) for s in mine))
        until = max(s.end for s in mine)
        series[scope] = Series(state.store.usage_buckets(scope, f.key, since, until))
    return [
        HistoryPoint(
            s.start,
            s.end,
            series[s.scope_key].usage(f.aggregation, s.start, s.end, s.period_start),
            s.limit,
        )
        for s in spans
    ]


def _periods(
    snap: StateView, account_id: str, f: Feature, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The account's periods of `f` overlapping [start, end) (at least the one holding
    `start`); a `reset: never` feature's single period is cut at `end`."""
    out: list[tuple[datetime, datetime]] = []
    at = start
    while True:
        period = slot_for(snap, account_id, f, at).period
        out.append((period.start, period.end or max(end, period.start + _TICK)))
        if period.end is None or period.end >= end or len(out) > MAX_POINTS:
            return out
        at = period.end


def _instant(start: datetime, end: datetime, now: datetime) -> datetime:
    """The instant whose decision is "in force" for a window (see the module docstring)."""
    return min(end - _TICK, max(start, now))


def _span(
    snap: StateView, account_id: str, f: Feature, start: datetime, end: datetime, now: datetime
) -> _Span:
    at = _instant(start, end, now)
    m = evaluate(snap, account_id, f.key, {}, at).metering
    if m is None:  # no entitlement then: the counter a report would use, and nothing allowed
        slot = slot_for(snap, account_id, f, at)
        return _Span(start, end, slot.scope_key, slot.period.start, 0.0)
    return _Span(start, end, m.scope_key, m.period_start, m.allowance)


# -- export ---------------------------------------------------------------------------------


def export_usage(state: LiveState, start: datetime, end: datetime) -> Iterator[ExportRow]:
    """Every stored counter whose period overlaps [start, end), one row per account, feature
    and period, sorted by them; pooled counters under their subscription's owner."""
    for page in export_pages(state, start, end):
        yield from page


def export_pages(state: LiveState, start: datetime, end: datetime) -> Iterator[list[ExportRow]]:
    """`export_usage` in pages of `EXPORT_PAGE` accounts: each page is one store query, so a
    face can fetch pages off its event loop and memory holds one page at a time."""
    check_range(start, end)
    if state.working is not None:  # an export of the held accounts only would bill short
        raise Refused(
            "Export does not run on a sidecar with --max-accounts yet (it would see only the "
            "accounts held in memory); export from a sidecar started without it"
        )
    snap, now = state.snapshot, state.clock()
    ids = sorted(set(snap.accounts) | set(snap.memberships))  # members need no record
    for i in range(0, len(ids), EXPORT_PAGE):
        owner_of: dict[str, str] = {}
        for account_id in ids[i : i + EXPORT_PAGE]:
            owner_of[f"acct:{account_id}"] = account_id
            account = snap.accounts.get(account_id)
            for sub in account.subscriptions if account is not None else ():
                owner_of.setdefault(f"sub:{sub.id}", sub.owner or account_id)
        counters = state.store.counters_of(list(owner_of), end)
        burned: dict[tuple[str, str, datetime], float] = {}
        for scope, key, period_start, value in counters:
            base, sep, _topup = key.partition("#topup:")
            if sep and period_start != FOREVER:
                k = (scope, base, period_start)
                burned[k] = burned.get(k, 0.0) + value
        page: list[ExportRow] = []
        for scope, key, period_start, value in counters:
            f = snap.catalog.features.get(key)
            if f is None or not f.counted:  # burn counters, features the catalog dropped
                continue
            owner = owner_of[scope]
            period_end, limit = _period_and_limit(snap, owner, f, period_start, now)
            if period_end is not None and period_end <= start:
                continue
            topups = burned.get((scope, key, period_start), 0.0)
            overage = metered_answer(Terms(limit, topup_burned=topups), value, 0.0).overage
            page.append(
                ExportRow(owner, key, period_start, period_end, value, limit, overage, topups)
            )
        page.sort(key=lambda r: (r.account_id, r.feature, r.period_start))
        if page:
            yield page


def _period_and_limit(
    snap: StateView, owner: str, f: Feature, period_start: datetime, now: datetime
) -> tuple[datetime | None, float | None]:
    """The end of the counter's period and the allowance in force in it (as for history:
    at now in the current period, at the period's last instant in a past one)."""
    if now >= period_start:  # most rows of an export are of the current period: one evaluation
        current = evaluate(snap, owner, f.key, {}, now).metering
        if current is not None and current.period_start == period_start:
            return current.period_end, current.allowance
    first = evaluate(snap, owner, f.key, {}, period_start).metering
    if first is not None and first.period_start == period_start:
        end = first.period_end
    else:  # the subscription that anchored it is gone: count the period from its own start
        end = period_containing(f.reset, f.anchor, period_start, period_start).end
    if end is None:
        return None, first.allowance if first is not None else 0.0
    at = _instant(period_start, end, now)
    m = first if at == period_start else evaluate(snap, owner, f.key, {}, at).metering
    if m is None or m.period_start != period_start:
        m = first
    return end, (m.allowance if m is not None else 0.0)
