"""The catalog as pricing tables: each product's plans × features, add-ons, quotas, targeting."""

from __future__ import annotations

import json
from typing import Any

from ...catalog.features import notation
from ...catalog.model import Catalog, Feature, Plan, Quota, Threshold, thaw
from .format import entitlement, number, plain
from .layout import Viewer
from .render import render
from .rules import sentences


def _feature_detail(f: Feature) -> str:
    detail = [f.type.value]
    if f.counted:
        detail.append(f"{f.aggregation.value} per {f.unit or 'unit'}, reset {f.reset.value}")
        if f.scope.value != "account":
            detail.append(f"per {f.scope.value}")
    if f.credits is not None:
        detail.append(f"{number(f.credits.per_unit)} {f.credits.pool} each")
    return " · ".join(detail)


def _cell(plan: Plan, f: Feature) -> dict[str, Any]:
    if f.key not in plan.entitlements:
        return {"default": True, "value": plain(thaw(f.default))}
    return {
        "default": False,
        "value": entitlement(plan.entitlements[f.key]),
        "inherited": f.key not in plan.own,
    }


def _plan_head(plan: Plan) -> dict[str, Any]:
    price = (
        f"{number(plan.price.amount)} {plan.price.currency} / {plan.price.interval}"
        if plan.price
        else "no price"
    )
    trial = f"{plan.trial.days} days, then {plan.trial.then}" if plan.trial else ""
    return {
        "name": plan.name,
        "key": plan.key,
        "price": price,
        "extends": plan.extends or "",
        "trial": trial,
        "superseded_by": plan.superseded_by or "",
    }


def _threshold(t: Threshold) -> str:
    return f"{number(t.percent)}%" if t.percent is not None else number(t.amount)


def _quota(plan: Plan, quota: Quota) -> dict[str, str]:
    actions = []
    for a in quota.actions:
        if a.kind == "webhook":
            actions.append(f"webhook {a.target}")
        elif a.kind == "override":
            actions.append(f"override {a.feature} = {plain(thaw(a.value))}")
        else:
            actions.append(f"change plan to {a.target}")
    return {
        "plan": plan.name,
        "feature": quota.feature,
        "at": ", ".join(_threshold(t) for t in quota.thresholds),
        "then": "; ".join(actions),
    }


def _targeting(f: Feature) -> dict[str, Any]:
    assert f.targeting is not None
    return {
        "name": f.name,
        "key": f.key,
        "volatile": f.targeting.volatile,
        "variants": ", ".join(
            f"{k} = {plain(notation(v))}" for k, v in f.targeting.variants.items()
        ),
        "sentences": sentences(f.targeting.rule),
        "rule": json.dumps(f.targeting.rule, indent=2, default=str),
    }


def product_view(catalog: Catalog, product: str) -> dict[str, Any]:
    """One product's pricing table, add-ons, quotas and targeting, as the template shows them."""
    features = [f for f in catalog.features.values() if f.product == product]
    plans = [p for p in catalog.plans.values() if p.product == product]
    return {
        "key": product,
        "name": catalog.products[product].name,
        "plans": [_plan_head(p) for p in plans],
        "features": [
            {
                "name": f.name,
                "key": f.key,
                "archived": f.archived,
                "detail": _feature_detail(f),
                "cells": [_cell(p, f) for p in plans],
            }
            for f in features
        ],
        "addons": [
            {
                "name": a.name,
                "key": a.key,
                "requires": ", ".join(sorted(a.requires)) or "any plan",
                "max": a.max_quantity,
                "adds": "; ".join(f"{k}: {entitlement(v)}" for k, v in a.entitlements.items()),
            }
            for a in catalog.addons.values()
            if a.product == product
        ],
        "quotas": [_quota(p, q) for p in plans for q in p.quotas],
        "targeting": [_targeting(f) for f in features if f.targeting is not None],
    }


def catalog_page(viewer: Viewer, catalog: Catalog, catalog_error: str | None) -> str:
    return render(
        "catalog.html",
        title="Catalog",
        viewer=viewer,
        catalog=catalog,
        catalog_error=catalog_error,
        products=[product_view(catalog, p) for p in catalog.products],
    )
