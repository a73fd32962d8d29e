"""The account search and one account's page: subscriptions, decisions with meters, overrides,
grants, top-ups, usage charts, the explain trail of one feature and (signed in) the actions.

Everything shown comes from the runtime: the decisions from the `Decisions` facade, the
trail from its `explain`, top-up balances from `runtime.balances`; nothing is decided here.
This module turns it into what `templates/account.html` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...catalog.accounts import topup_problem
from ...catalog.model import Account, Catalog, Feature, FeatureType, Subscription, thaw
from ...engine import Decision, EvaluationError
from ...engine.balances import TopUpState
from ...engine.boundaries import Coming
from ...engine.holds import Hold
from ...engine.lifecycle import billing_period_end
from ...runtime.serve.decisions import Evaluated, EvaluatedAll
from ...runtime.serve.history import HistoryPoint
from .format import entitlement, number, plain, relative
from .layout import Viewer, account_path
from .render import render
from .search import Found
from .svg import Meter, Picture, chart, meter


def _plans_now(account: Account, now: datetime) -> str:
    plans = [s.at(now).plan for s in account.subscriptions if s.active_at(now)]
    return ", ".join(plans) or "no active subscription"


def search_page(viewer: Viewer, query: str, after: str, found: Found, now: datetime) -> str:
    shown = f"{len(found.accounts)} of {number(found.total)} accounts"
    if query:
        shown += f" matching “{query}”"
    rows = [
        {
            "id": a.id,
            "name": a.name,
            "plans": _plans_now(a, now),
            "attributes": "; ".join(f"{k}={plain(thaw(v))}" for k, v in a.attributes.items()),
        }
        for a in found.accounts
    ]
    return render(
        "accounts.html",
        title="Accounts",
        viewer=viewer,
        query=query,
        after=after,
        next_after=found.next_after or "",
        shown=shown,
        rows=rows,
    )


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the account page shows, gathered from the runtime in one go."""

    account: Account
    memberships: Sequence[Subscription]  # other accounts' subscriptions it is a member of
    decisions: EvaluatedAll
    topups: Sequence[TopUpState]
    now: datetime
    explain_feature: str = ""
    trail: Mapping[str, Any] | None = None
    charts: Mapping[str, Sequence[HistoryPoint]] | None = None  # usage per day (design §6.2)
    coming: Sequence[Coming] = ()  # what changes next, in time order (design §12.1)
    holds: Sequence[Hold] = ()  # active holds, earliest expiry first (design §17)


def _subscriptions(
    catalog: Catalog, subs: Sequence[Subscription], now: datetime
) -> list[dict[str, Any]]:
    rows = []
    for sub in subs:
        current = sub.at(now)
        status = []
        if not sub.active_at(now):
            ended = sub.ends_at is not None and sub.ends_at <= now
            status.append({"text": "ended" if ended else "not started", "css": ""})
        if sub.trial_ends_at is not None and now < sub.trial_ends_at:
            status.append({"text": "trial", "css": "warn"})
        pending: list[dict[str, Any]] = [
            {"what": "from", "at": p.starts_at, "then": f": plan {p.plan}{_addons(p.addons)}"}
            for p in sub.phases
            if p.starts_at > now
        ]
        if sub.ends_at is not None and sub.ends_at > now:
            pending.append({"what": "ends", "at": sub.ends_at, "then": ""})
        rows.append(
            {
                "id": sub.id,
                "owner": sub.owner or "",
                "plan": current.plan,
                "addons": _addons(current.addons),
                "status": status,
                "starts_at": sub.starts_at,
                "trial_ends_at": sub.trial_ends_at,
                "period_end": billing_period_end(catalog, sub, now) if sub.active_at(now) else None,
                "pending": pending,
                "members": ", ".join(sub.members),
            }
        )
    return rows


def _addons(addons: Mapping[str, int]) -> str:
    return " + " + ", ".join(f"{k} ×{q}" for k, q in addons.items()) if addons else ""


def pool_allows(d: Decision) -> float | None:
    """What a credit-priced feature may still use when only its pool caps it (its own limit
    unlimited): the engine's `remaining`, the pool's credits ÷ the rate; None otherwise."""
    m = d.metering
    if m is None or m.pool is None or m.limit is not None:
        return None
    return m.remaining


def meter_of(d: Decision) -> Picture | None:
    """The meter of a metered decision; its label says the numbers as text. A credit-priced
    feature that only its pool caps is drawn against what the pool allows (design §12.1)."""
    m = d.metering
    if m is None:
        return None
    allows = pool_allows(d)
    bar = Meter(
        used=m.used,
        allowance=m.used + allows if allows is not None else m.allowance,
        topups=m.topup_burned + m.topup_remaining,
        overage_cap=m.overage_cap,
        soft=m.soft_limit,
    )
    if allows is not None and m.pool is not None:
        figures = [
            f"used {number(m.used)}; the {m.pool.feature} pool allows {number(allows)} more "
            f"at {number(m.pool.per_unit)} credits each"
        ]
    else:
        figures = [f"used {number(m.used)} of {number(m.limit)}"]
    if m.allowance is not None and (m.topup_burned or m.topup_remaining):
        figures.append(
            f"allowance {number(m.allowance)}, top-ups {number(m.topup_burned)} burned, "
            f"{number(m.topup_remaining)} left"
        )
    if m.soft_limit:
        cap = number(m.overage_cap) if m.overage_cap is not None else "unlimited"
        figures.append(f"soft limit: overage {number(m.overage)} (cap {cap})")
    figures.append(
        "period ends never"
        if m.period_end is None
        else f"period ends {m.period_end:%Y-%m-%d %H:%M} UTC"
    )
    return meter(bar, "; ".join(figures))


def _chart(feature: Feature, points: Sequence[HistoryPoint]) -> Picture:
    unit = feature.unit or "units"
    label = (
        f"{feature.name}: usage per day, last {len(points)} days; "
        f"today {number(points[-1].usage)} {unit}; period limit {number(points[-1].limit)}"
    )
    return chart(points, label, unit)


def _value(feature: Feature, d: Decision) -> str:
    if d.caller_default:  # decision 2002: disabled, or no default variant
        return "(the caller's default)"
    if feature.type in (FeatureType.METERED, FeatureType.CREDITS):
        allows = pool_allows(d)
        if allows is not None:
            return f"{number(allows)} more (what the pool allows)"
        return "unlimited" if d.unlimited else number(d.value)
    return plain(d.value)


def _off(feature: Feature, d: Decision) -> bool:
    """A boolean that is simply off: its value, not a refusal (design §12.1)."""
    return feature.type in (FeatureType.BOOLEAN, FeatureType.FLAG) and d.value is False


def _access(feature: Feature, d: Decision) -> tuple[str, str]:
    """The access badge: its text and its colour."""
    if d.has_access:
        return "granted", "ok"
    if _off(feature, d):
        return "off", "off"
    return f"denied: {d.denial.value if d.denial else d.reason.value}", "bad"


def _chart_or_none(feature: Feature, points: Sequence[HistoryPoint] | None) -> Picture | None:
    """A chart only where there is usage to draw: an empty chart says less than words."""
    if not points or not any(p.usage for p in points):
        return None
    return _chart(feature, points)


def _trail(trail: Mapping[str, Any]) -> dict[str, Any]:
    """The explain trail (design §4.1) as a list a person reads top to bottom."""
    override = trail.get("override")
    targeting = trail.get("targeting")
    winner = trail.get("winner")
    error = trail.get("error")
    return {
        "account_known": bool(trail.get("account_known")),
        "archived": bool(trail.get("archived")),
        "override": plain(override["value"]) if override else "none",
        "targeting": plain(targeting) if targeting is not None else "none",
        "candidates": [
            {
                "source": c["source"],
                "value": plain(c["value"]),
                "won": c["won"],
                "why": c["why"] or "",
            }
            for c in trail.get("candidates") or []
        ],
        "winner": (
            f"{plain(winner['value'])} from {winner['source']} ({winner['reason']}, "
            f"access {'granted' if winner['has_access'] else 'denied'})"
        )
        if winner
        else "",
        "error": f"{error['code']} — {error['message']}" if error else "",
    }


def _decisions(view: AccountView) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, result in view.decisions.results.items():
        if isinstance(result, EvaluationError):
            rows.append({"key": key, "error": f"error {result.code.value}: {result.message}"})
            continue
        feature, d = result.feature, result.decision
        opened = view.explain_feature == key and view.trail is not None
        points = (view.charts or {}).get(key)
        rows.append(
            {
                "key": key,
                "error": "",
                "name": feature.name,
                "value": _value(feature, d),
                "meter": meter_of(d),
                "chart": _chart_or_none(feature, points),
                "unused": points is not None and not any(p.usage for p in points),
                "access": _access(feature, d)[0],
                "access_css": _access(feature, d)[1],
                "trial": d.trial_ends_at is not None,
                "source": f"{'targeting' if d.targeted else d.variant} ({d.reason.value})",
                "explain_href": account_path(view.account.id, explain=key) + f"#f-{key}",
                "trail": _trail(view.trail) if opened and view.trail is not None else None,
            }
        )
    return rows


def account_page(viewer: Viewer, catalog: Catalog, view: AccountView) -> str:
    a, now = view.account, view.now
    features = [r.feature for r in view.decisions.results.values() if isinstance(r, Evaluated)]
    return render(
        "account.html",
        title=f"Account {a.id}",
        viewer=viewer,
        account=a,
        attributes=[(k, plain(thaw(v))) for k, v in a.attributes.items()],
        subs=_subscriptions(catalog, a.subscriptions, now),
        members=_subscriptions(catalog, view.memberships, now),
        decisions=_decisions(view),
        overrides=[
            {
                "feature": o.feature,
                "value": entitlement(o.value),
                "expires_at": o.expires_at,
                "active": o.active_at(now),
            }
            for o in a.overrides.values()
        ],
        grants=[
            {
                "id": g.id,
                "feature": g.feature,
                "value": entitlement(g.value),
                "starts_at": g.starts_at,
                "ends_at": g.ends_at,
                "active": g.active_at(now),
            }
            for g in a.grants
        ],
        topups=view.topups,
        holds=view.holds,
        coming=[(c.at, relative(c.at, now), c.what) for c in view.coming],
        features=[f.key for f in features],
        plans=sorted(p.key for p in catalog.plans.values() if not p.superseded_by),
        own_subscriptions=[
            {
                "id": sub.id,
                "plan": sub.at(now).plan,
                "ends": sub.ends_at is not None and sub.ends_at > now,
                "trial": sub.trial_ends_at is not None and sub.trial_ends_at > now,
                "scheduled": any(p.starts_at > now for p in sub.phases),
            }
            for sub in a.subscriptions
            if sub.ends_at is None or sub.ends_at > now
        ],
        topup_features=[f.key for f in features if topup_problem(f) is None],  # the catalog's rule
    )
