"""The account search and one account's page: subscriptions, decisions with meters, overrides,
grants, top-ups, usage charts, the explain trail of one feature and (signed in) the actions.

Everything shown comes from the runtime: the decisions from the `Decisions` facade, the
trail from its `explain`, top-up balances from `runtime.balances`; nothing is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from ...catalog.accounts import topup_problem
from ...catalog.model import Account, Catalog, Feature, FeatureType, Subscription, thaw
from ...engine import Decision, EvaluationError
from ...engine.balances import TopUpState
from ...engine.lifecycle import billing_period_end
from ...runtime.decisions import Evaluated, EvaluatedAll
from ...runtime.history import HistoryPoint
from .format import entitlement, number, plain, when
from .html import Child, Html, el
from .layout import Viewer, csrf_field, link, page
from .search import Found
from .svg import Meter, chart, meter


def account_path(account_id: str, **query: str) -> str:
    path = f"/accounts/{quote(account_id, safe='')}"
    return f"{path}?{urlencode(query)}" if query else path


def _plans_now(account: Account, now: datetime) -> str:
    plans = [s.at(now).plan for s in account.subscriptions if s.active_at(now)]
    return ", ".join(plans) or "no active subscription"


def search_page(viewer: Viewer, query: str, after: str, found: Found, now: datetime) -> Html:
    form = el(
        "form",
        el("label", "Search by id, name or attribute value ", for_="q"),
        el("input", type="search", name="q", id="q", value=query, autofocus=True),
        " ",
        el("button", "Search", type="submit"),
        method="get",
        action="/console/accounts",
    )
    rows = [
        el(
            "tr",
            el("td", link(account_path(a.id), a.id)),
            el("td", a.name),
            el("td", _plans_now(a, now)),
            el("td", "; ".join(f"{k}={plain(thaw(v))}" for k, v in a.attributes.items())),
        )
        for a in found.accounts
    ]
    shown = f"{len(found.accounts)} of {number(found.total)} accounts"
    if query:
        shown += f" matching “{query}”"
    pager = [
        link("/accounts?" + urlencode({"q": query}), "first page") if after else None,
        " ",
        link("/accounts?" + urlencode({"q": query, "after": found.next_after}), "next page →")
        if found.next_after
        else None,
    ]
    return page(
        "Accounts",
        viewer,
        form,
        el("p", shown, class_="muted", id="found"),
        el(
            "table",
            el(
                "tr",
                el("th", "id"),
                el("th", "name"),
                el("th", "plans now"),
                el("th", "attributes"),
            ),
            rows,
            class_="accounts",
        ),
        el("nav", pager, class_="pages"),
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


def _subscription_rows(catalog: Catalog, subs: Sequence[Subscription], now: datetime) -> Html:
    rows = []
    for sub in subs:
        current = sub.at(now)
        status = []
        if not sub.active_at(now):
            status.append(
                el(
                    "span",
                    "ended" if sub.ends_at and sub.ends_at <= now else "not started",
                    class_="badge",
                )
            )
        if sub.trial_ends_at is not None and now < sub.trial_ends_at:
            status.append(el("span", "trial", class_="badge warn"))
        pending: list[Child] = [
            el("li", "from ", when(p.starts_at), f": plan {p.plan}", _addons(p.addons))
            for p in sub.phases
            if p.starts_at > now
        ]
        if sub.ends_at is not None and sub.ends_at > now:
            pending.append(el("li", "ends ", when(sub.ends_at)))
        period_end = billing_period_end(catalog, sub, now) if sub.active_at(now) else None
        rows.append(
            el(
                "tr",
                el("td", el("code", sub.id), el("br"), f"owner {sub.owner}" if sub.owner else None),
                el("td", el("b", current.plan), _addons(current.addons), " ", status),
                el("td", when(sub.starts_at)),
                el("td", when(sub.trial_ends_at)),
                el("td", when(period_end)),
                el("td", el("ul", pending) if pending else el("span", "none", class_="muted")),
                el("td", ", ".join(sub.members) or "—"),
                class_="subscription",
            )
        )
    return el(
        "table",
        el(
            "tr",
            el("th", "subscription"),
            el("th", "plan now"),
            el("th", "started"),
            el("th", "trial ends"),
            el("th", "billing period ends"),
            el("th", "pending changes"),
            el("th", "members"),
        ),
        rows,
        class_="subscriptions",
    )


def _addons(addons: Mapping[str, int]) -> str:
    return " + " + ", ".join(f"{k} ×{q}" for k, q in addons.items()) if addons else ""


def meter_of(d: Decision) -> Html | None:
    """The meter of a metered decision, with its numbers as text."""
    m = d.metering
    if m is None:
        return None
    bar = Meter(
        used=m.used,
        allowance=m.allowance,
        topups=m.topup_burned + m.topup_remaining,
        overage_cap=m.overage_cap,
        soft=m.soft_limit,
    )
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
    label = "; ".join(figures)
    return el("div", meter(bar, label), el("div", label, class_="muted meter-text"))


def _chart(feature: Feature, points: Sequence[HistoryPoint]) -> Html:
    unit = feature.unit or "units"
    limit = points[-1].limit
    label = (
        f"{feature.name}: usage per day, last {len(points)} days; "
        f"today {number(points[-1].usage)} {unit}; period limit {number(limit)}"
    )
    return el(
        "details",
        el("summary", "usage per day"),
        chart(points, label, unit),
        el("div", label, class_="muted chart-text"),
        class_="usage-chart",
        open=True,
    )


def _value(feature: Feature, d: Decision) -> str:
    if d.caller_default:  # decision 2002: disabled, or no default variant
        return "(the caller's default)"
    if feature.type in (FeatureType.METERED, FeatureType.CREDITS):
        return "unlimited" if d.unlimited else number(d.value)
    return plain(d.value)


def _trail(trail: Mapping[str, Any]) -> Html:
    """The explain trail (design §4.1) as a list a person reads top to bottom."""
    override = trail.get("override")
    targeting = trail.get("targeting")
    steps: list[Child] = [
        el("li", "account ", "known" if trail.get("account_known") else "unknown"),
        el("li", "feature archived: every account gets the default")
        if trail.get("archived")
        else None,
        el("li", "override: ", plain(override["value"]) if override else "none"),
        el("li", "targeting: ", plain(targeting) if targeting is not None else "none"),
    ]
    candidates = trail.get("candidates") or []
    steps.append(
        el(
            "li",
            "candidates:",
            el(
                "table",
                el(
                    "tr",
                    el("th", "source"),
                    el("th", "value"),
                    el("th", "won"),
                    el("th", "why not"),
                ),
                [
                    el(
                        "tr",
                        el("td", c["source"]),
                        el("td", plain(c["value"])),
                        el("td", "yes" if c["won"] else "no"),
                        el("td", c["why"] or ""),
                    )
                    for c in candidates
                ],
            )
            if candidates
            else " none",
        )
    )
    winner = trail.get("winner")
    if winner:
        steps.append(
            el(
                "li",
                el("b", "answer: "),
                f"{plain(winner['value'])} from {winner['source']} ({winner['reason']}, "
                f"access {'granted' if winner['has_access'] else 'denied'})",
            )
        )
    if trail.get("error"):
        steps.append(el("li", "error: ", trail["error"]["code"], " — ", trail["error"]["message"]))
    return el("ol", steps, class_="trail")


def _decision_rows(view: AccountView) -> Html:
    rows = []
    catalog_features = view.decisions.results
    for key, result in catalog_features.items():
        explain_href = account_path(view.account.id, explain=key) + f"#f-{key}"
        if isinstance(result, EvaluationError):
            rows.append(
                el(
                    "tr",
                    el("td", el("code", key)),
                    el("td", f"error {result.code.value}: {result.message}", colspan=3),
                    id=f"f-{key}",
                )
            )
            continue
        feature, d = result.feature, result.decision
        opened = view.explain_feature == key and view.trail is not None
        explain = el(
            "details",
            el("summary", link(explain_href, "why?") if not opened else "why?"),
            _trail(view.trail) if opened and view.trail is not None else None,
            open=opened,
        )
        source = "targeting" if d.targeted else d.variant
        access = el(
            "span",
            "granted"
            if d.has_access
            else f"denied: {d.denial.value if d.denial else d.reason.value}",
            class_="badge " + ("ok" if d.has_access else "bad"),
        )
        trial = el("span", " trial", class_="badge warn") if d.trial_ends_at else None
        points = (view.charts or {}).get(key)
        rows.append(
            el(
                "tr",
                el("td", feature.name, el("br"), el("code", key, class_="muted")),
                el(
                    "td",
                    _value(feature, d),
                    el("div", meter_of(d)) if d.metering else None,
                    _chart(feature, points) if points else None,
                ),
                el(
                    "td",
                    access,
                    trial,
                    el("br"),
                    el("span", f"from {source} ({d.reason.value})", class_="muted"),
                ),
                el("td", explain),
                id=f"f-{key}",
                class_="decision",
            )
        )
    return el(
        "table",
        el(
            "tr",
            el("th", "feature"),
            el("th", "value and usage"),
            el("th", "access"),
            el("th", "explain"),
        ),
        rows,
        class_="decisions",
    )


def _override_rows(account: Account, now: datetime) -> Html:
    if not account.overrides:
        return el("p", "No overrides.", class_="muted")
    return el(
        "table",
        el("tr", el("th", "feature"), el("th", "value"), el("th", "expires"), el("th", "")),
        [
            el(
                "tr",
                el("td", el("code", o.feature)),
                el("td", entitlement(o.value)),
                el("td", when(o.expires_at)),
                el("td", "" if o.active_at(now) else el("span", "expired", class_="badge")),
            )
            for o in account.overrides.values()
        ],
        class_="overrides",
    )


def _grant_rows(account: Account, now: datetime) -> Html:
    if not account.grants:
        return el("p", "No grants.", class_="muted")
    return el(
        "table",
        el(
            "tr",
            el("th", "grant"),
            el("th", "feature"),
            el("th", "value"),
            el("th", "from"),
            el("th", "until"),
        ),
        [
            el(
                "tr",
                el("td", el("code", g.id)),
                el("td", el("code", g.feature)),
                el(
                    "td",
                    entitlement(g.value),
                    "" if g.active_at(now) else el("span", " inactive", class_="badge"),
                ),
                el("td", when(g.starts_at)),
                el("td", when(g.ends_at)),
            )
            for g in account.grants
        ],
        class_="grants",
    )


def _topup_rows(topups: Sequence[TopUpState]) -> Html:
    if not topups:
        return el("p", "No top-ups.", class_="muted")
    return el(
        "table",
        el(
            "tr",
            el("th", "top-up"),
            el("th", "feature"),
            el("th", "amount"),
            el("th", "burned"),
            el("th", "left"),
            el("th", "priority"),
            el("th", "effective"),
            el("th", "expires"),
        ),
        [
            el(
                "tr",
                el(
                    "td",
                    el("code", s.topup.id),
                    "" if s.active else el("span", " inactive", class_="badge"),
                ),
                el("td", el("code", s.topup.feature)),
                el("td", number(s.topup.amount), class_="num"),
                el("td", number(s.burned), class_="num"),
                el("td", number(s.remaining), class_="num"),
                el("td", number(s.topup.priority), class_="num"),
                el("td", when(s.topup.effective_at)),
                el(
                    "td", when(s.topup.voided_at) if s.topup.voided_at else when(s.topup.expires_at)
                ),
            )
            for s in topups
        ],
        class_="topups",
    )


def _actions(view: AccountView, viewer: Viewer) -> Html | None:
    """The admin forms, only for a signed-in person (read-only otherwise: no forms at all)."""
    if not viewer.can_act:
        return None
    features = [r.feature for r in view.decisions.results.values() if isinstance(r, Evaluated)]
    topup_features = [f for f in features if topup_problem(f) is None]  # the catalog's rule
    account_id = view.account.id
    override = el(
        "form",
        el(
            "fieldset",
            el("legend", "Set an override"),
            csrf_field(viewer),
            el(
                "label",
                "feature ",
                el("select", [el("option", f.key, value=f.key) for f in features], name="feature"),
            ),
            " ",
            el(
                "label",
                "value ",
                el(
                    "input", name="value", required=True, placeholder="true, 25, unlimited, [slack]"
                ),
            ),
            " ",
            el(
                "label",
                "expires (optional) ",
                el("input", name="expires_at", placeholder="2026-12-31T00:00:00Z"),
            ),
            " ",
            el("button", "Set override", type="submit"),
        ),
        method="post",
        action=f"/console{account_path(account_id)}/override",
        class_="action",
    )
    topup = el(
        "form",
        el(
            "fieldset",
            el("legend", "Add a top-up"),
            csrf_field(viewer),
            el(
                "label",
                "feature ",
                el(
                    "select",
                    [el("option", f.key, value=f.key) for f in topup_features],
                    name="feature",
                ),
            ),
            " ",
            el("label", "amount ", el("input", name="amount", required=True, inputmode="decimal")),
            " ",
            el(
                "label",
                "expires (optional) ",
                el("input", name="expires_at", placeholder="2027-01-01T00:00:00Z"),
            ),
            " ",
            el("button", "Add top-up", type="submit"),
        ),
        method="post",
        action=f"/console{account_path(account_id)}/topup",
        class_="action",
    )
    if view.account.declared:  # the file is the source of truth for its overrides
        override = el(
            "p",
            "Overrides of this account are declared in the catalog file: change them there.",
            class_="muted",
        )
    return el("section", el("h2", "Actions"), override, topup if topup_features else None)


def account_page(
    viewer: Viewer, catalog: Catalog, view: AccountView, notice: str = "", error: str = ""
) -> Html:
    a = view.account
    attributes = (
        el(
            "table",
            [
                el("tr", el("th", k, scope="row"), el("td", plain(thaw(v))))
                for k, v in a.attributes.items()
            ],
            class_="attributes",
        )
        if a.attributes
        else el("p", "No attributes.", class_="muted")
    )
    return page(
        f"Account {a.id}",
        viewer,
        el(
            "p",
            el("b", a.name or "(no name)", class_="account-name"),
            " ",
            el("span", "declared in the catalog file (read-only here)", class_="badge")
            if a.declared
            else None,
            " · ",
            link(f"/audit?account={quote(a.id, safe='')}", "audit log"),
        ),
        attributes,
        el("h2", "Subscriptions"),
        _subscription_rows(catalog, a.subscriptions, view.now)
        if a.subscriptions
        else el("p", "No subscriptions of its own.", class_="muted"),
        [el("h3", "Member of"), _subscription_rows(catalog, view.memberships, view.now)]
        if view.memberships
        else None,
        el("h2", "Features"),
        el(
            "p",
            "Every feature's decision now, as the evaluation API answers it (no context).",
            class_="muted",
        ),
        _decision_rows(view),
        el("h2", "Overrides"),
        _override_rows(a, view.now),
        el("h2", "Grants"),
        _grant_rows(a, view.now),
        el("h2", "Top-ups"),
        _topup_rows(view.topups),
        _actions(view, viewer),
        notice=notice,
        error=error,
    )
