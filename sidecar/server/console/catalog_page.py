"""The catalog as pricing tables: each product's plans × features, add-ons, quotas, targeting."""

from __future__ import annotations

import json

from ...catalog.features import notation
from ...catalog.model import Catalog, Feature, Plan, Quota, Threshold, thaw
from .format import entitlement, number, plain
from .html import Html, el
from .layout import Viewer, page


def rejected_banner(catalog_error: str | None, version: str) -> Html | None:
    """The last rejected catalog change, in full: the console is for the people who run the
    sidecar (unlike /readyz, which answers anyone and names only where the problem is)."""
    if catalog_error is None:
        return None
    return el(
        "div",
        el("b", "The last catalog change was rejected; "),
        f"the sidecar serves the previous version ({version}).",
        el("pre", catalog_error, class_="catalog-error"),
        class_="banner bad",
        role="alert",
    )


def _feature_head(f: Feature) -> Html:
    detail = [f.type.value]
    if f.counted:
        detail.append(f"{f.aggregation.value} per {f.unit or 'unit'}, reset {f.reset.value}")
        if f.scope.value != "account":
            detail.append(f"per {f.scope.value}")
    if f.credits is not None:
        detail.append(f"{number(f.credits.per_unit)} {f.credits.pool} each")
    return el(
        "th",
        f.name,
        " ",
        el("span", "archived", class_="badge warn") if f.archived else None,
        el("br"),
        el("code", f.key, class_="muted"),
        " ",
        el("span", " · ".join(detail), class_="muted"),
        scope="row",
    )


def _cell(plan: Plan, f: Feature) -> Html:
    if f.key not in plan.entitlements:
        return el("td", f"default: {plain(thaw(f.default))}", class_="muted")
    own = f.key in plan.own
    return el(
        "td",
        entitlement(plan.entitlements[f.key]),
        None if own else el("span", " (inherited)", class_="muted"),
    )


def _plan_head(plan: Plan) -> Html:
    price = (
        f"{number(plan.price.amount)} {plan.price.currency} / {plan.price.interval}"
        if plan.price
        else "no price"
    )
    notes = [
        el("div", price, class_="muted"),
        el("div", f"extends {plan.extends}", class_="muted") if plan.extends else None,
        el("div", f"trial {plan.trial.days} days, then {plan.trial.then}", class_="muted")
        if plan.trial
        else None,
        el("div", el("span", f"superseded by {plan.superseded_by}", class_="badge warn"))
        if plan.superseded_by
        else None,
    ]
    return el("th", plan.name, el("br"), el("code", plan.key, class_="muted"), notes, scope="col")


def _threshold(t: Threshold) -> str:
    return f"{number(t.percent)}%" if t.percent is not None else number(t.amount)


def _quota_rows(plan: Plan, quota: Quota) -> Html:
    actions = []
    for a in quota.actions:
        if a.kind == "webhook":
            actions.append(f"webhook {a.target}")
        elif a.kind == "override":
            actions.append(f"override {a.feature} = {plain(thaw(a.value))}")
        else:
            actions.append(f"change plan to {a.target}")
    return el(
        "tr",
        el("td", plan.name),
        el("td", el("code", quota.feature)),
        el("td", ", ".join(_threshold(t) for t in quota.thresholds)),
        el("td", "; ".join(actions)),
    )


def product_section(catalog: Catalog, product: str) -> Html:
    features = [f for f in catalog.features.values() if f.product == product]
    plans = [p for p in catalog.plans.values() if p.product == product]
    addons = [a for a in catalog.addons.values() if a.product == product]
    name = catalog.products[product].name
    table = el(
        "table",
        el("caption", f"{name}: plans × features", class_="muted"),
        el("thead", el("tr", el("th", "feature"), [_plan_head(p) for p in plans])),
        el("tbody", [el("tr", _feature_head(f), [_cell(p, f) for p in plans]) for f in features]),
        class_="pricing",
    )
    parts: list[Html] = [el("h2", name, id=f"product-{product}"), table]
    if addons:
        parts += [
            el("h3", "Add-ons"),
            el(
                "table",
                el(
                    "tr",
                    el("th", "add-on"),
                    el("th", "for plans"),
                    el("th", "max"),
                    el("th", "adds"),
                ),
                [
                    el(
                        "tr",
                        el("td", a.name, el("br"), el("code", a.key, class_="muted")),
                        el("td", ", ".join(sorted(a.requires)) or "any plan"),
                        el("td", number(a.max_quantity), class_="num"),
                        el(
                            "td",
                            "; ".join(f"{k}: {entitlement(v)}" for k, v in a.entitlements.items()),
                        ),
                    )
                    for a in addons
                ],
                class_="addons",
            ),
        ]
    quotas = [(p, q) for p in plans for q in p.quotas]
    if quotas:
        parts += [
            el("h3", "Quotas"),
            el(
                "table",
                el("tr", el("th", "plan"), el("th", "feature"), el("th", "at"), el("th", "then")),
                [_quota_rows(p, q) for p, q in quotas],
                class_="quotas",
            ),
        ]
    targeted = [f for f in features if f.targeting is not None]
    if targeted:
        parts.append(el("h3", "Targeting"))
        for f in targeted:
            assert f.targeting is not None
            variants = ", ".join(
                f"{k} = {plain(notation(v))}" for k, v in f.targeting.variants.items()
            )
            parts.append(
                el(
                    "div",
                    el("b", f.name),
                    " ",
                    el("code", f.key, class_="muted"),
                    el("span", " (reads the clock)", class_="muted")
                    if f.targeting.volatile
                    else None,
                    el("div", "variants: ", variants),
                    el("pre", json.dumps(f.targeting.rule, indent=2, default=str)),
                    class_="targeting",
                )
            )
    return el("section", parts)


def catalog_page(
    viewer: Viewer, catalog: Catalog, catalog_error: str | None, notice: str = ""
) -> Html:
    return page(
        "Catalog",
        viewer,
        rejected_banner(catalog_error, catalog.version),
        el(
            "p",
            "Serving ",
            el("code", catalog.source),
            " version ",
            el("code", catalog.version),
            f" — {len(catalog.products)} products, {len(catalog.plans)} plans, "
            f"{len(catalog.features)} features.",
        ),
        [product_section(catalog, p) for p in catalog.products],
        notice=notice,
    )
