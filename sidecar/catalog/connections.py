"""Reading the catalog's `connections: stripe:` (design §18): what Stripe's objects mean here.

Every price must sell something this catalog knows (a plan, an add-on, or a top-up of a
feature that takes top-ups) and every exported meter a `sum` feature: a typo would otherwise
silently grant nothing when the customer pays, so it is a catalog error naming the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .accounts import topup_problem
from .model import (
    AddOn,
    Aggregation,
    Feature,
    FeatureType,
    Plan,
    StripeConnection,
    StripePrice,
    StripeTopUp,
)
from .source import Document, Path
from .values import check_keys, is_number, read_mapping, read_str

_CONNECTIONS = {"stripe"}
_STRIPE = {
    "webhook_secret_env",
    "webhook_secret_file",
    "account_id",
    "attributes",
    "prices",
    "past_due",
    "usage_export",
}
_PRICE = {"plan", "addon", "topup"}
_TOPUP = {"feature", "amount", "expires_days"}
_EXPORT = {"api_key_env", "meters"}
_PAST_DUE = ("keep", "end")


def read_connections(
    doc: Document,
    raw: Any,
    plans: Mapping[str, Plan],
    addons: Mapping[str, AddOn],
    features: Mapping[str, Feature],
) -> StripeConnection | None:
    """The Stripe connection, or None when the catalog has no `connections: stripe:`."""
    data = read_mapping(doc, ("connections",), raw)
    check_keys(doc, ("connections",), data, _CONNECTIONS)
    if data.get("stripe") is None:
        return None
    path: Path = ("connections", "stripe")
    stripe = read_mapping(doc, path, data["stripe"])
    check_keys(doc, path, stripe, _STRIPE)
    secret_env = _optional(doc, (*path, "webhook_secret_env"), stripe.get("webhook_secret_env"))
    secret_file = _optional(doc, (*path, "webhook_secret_file"), stripe.get("webhook_secret_file"))
    if secret_env and secret_file:
        doc.error(path, "give the webhook secret once: webhook_secret_env or webhook_secret_file")
    past_due = stripe.get("past_due", "keep")
    if past_due not in _PAST_DUE:
        doc.error((*path, "past_due"), f"must be keep or end, got {past_due!r}")
        past_due = "keep"
    api_key_env, meters = _export(doc, (*path, "usage_export"), stripe, features)
    return StripeConnection(
        webhook_secret_env=secret_env,
        webhook_secret_file=secret_file,
        account_id=_optional(doc, (*path, "account_id"), stripe.get("account_id")),
        attributes=_attributes(doc, (*path, "attributes"), stripe.get("attributes")),
        prices=_prices(doc, (*path, "prices"), stripe.get("prices"), plans, addons, features),
        past_due=str(past_due),
        export_api_key_env=api_key_env,
        export_meters=meters,
    )


def _optional(doc: Document, path: Path, value: Any) -> str:
    if value is None:
        return ""
    return read_str(doc, path, value) or ""


def _attributes(doc: Document, path: Path, raw: Any) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for name, field in read_mapping(doc, path, raw).items():
        text = read_str(doc, (*path, name), field)
        if text is not None:
            out[str(name)] = text
    return MappingProxyType(out)


def _prices(
    doc: Document,
    path: Path,
    raw: Any,
    plans: Mapping[str, Plan],
    addons: Mapping[str, AddOn],
    features: Mapping[str, Feature],
) -> Mapping[str, StripePrice]:
    out: dict[str, StripePrice] = {}
    for price_id, item in read_mapping(doc, path, raw).items():
        where: Path = (*path, price_id)
        data = read_mapping(doc, where, item)
        check_keys(doc, where, data, _PRICE)
        given = [k for k in ("plan", "addon", "topup") if k in data]
        if len(given) != 1:
            doc.error(where, "needs exactly one of plan, addon or topup")
            continue
        kind = given[0]
        if kind == "plan":
            plan = _ref(data["plan"], plans)
            if plan is None:
                doc.error(
                    (*where, "plan"), f"unknown plan {data['plan']!r} (plans: {_list(plans)})"
                )
                continue
            out[str(price_id)] = StripePrice(plan=plan)
        elif kind == "addon":
            addon = _ref(data["addon"], addons)
            if addon is None:
                doc.error(
                    (*where, "addon"),
                    f"unknown add-on {data['addon']!r} (add-ons: {_list(addons)})",
                )
                continue
            out[str(price_id)] = StripePrice(addon=addon)
        else:
            topup = _topup(doc, (*where, "topup"), data["topup"], features)
            if topup is not None:
                out[str(price_id)] = StripePrice(topup=topup)
    return MappingProxyType(out)


def _topup(
    doc: Document, path: Path, raw: Any, features: Mapping[str, Feature]
) -> StripeTopUp | None:
    data = read_mapping(doc, path, raw)
    check_keys(doc, path, data, _TOPUP)
    feature = _ref(data.get("feature"), features)
    if feature is None:
        doc.error(
            (*path, "feature"),
            f"unknown feature {data.get('feature')!r} (features: {_list(features)})",
        )
        return None
    problem = topup_problem(features[feature])
    if problem is not None:
        doc.error((*path, "feature"), problem)
        return None
    amount: Any = data.get("amount")
    if not (is_number(amount) and amount > 0):
        doc.error((*path, "amount"), f"must be a positive number, got {amount!r}")
        return None
    days = data.get("expires_days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        doc.error((*path, "expires_days"), f"must be a positive integer, got {days!r}")
        return None
    return StripeTopUp(feature, float(amount), days)


def _export(
    doc: Document, path: Path, stripe: dict[str, Any], features: Mapping[str, Feature]
) -> tuple[str, Mapping[str, str]]:
    """`usage_export`: the API key's variable (required) and feature → meter event name;
    only account-level `sum` features can be exported as a per-minute net."""
    if stripe.get("usage_export") is None:
        return "", MappingProxyType({})
    data = read_mapping(doc, path, stripe["usage_export"])
    check_keys(doc, path, data, _EXPORT)
    api_key_env = _optional(doc, (*path, "api_key_env"), data.get("api_key_env"))
    if not api_key_env:
        doc.error(path, "needs api_key_env: the variable holding the Stripe API key")
    meters: dict[str, str] = {}
    for ref, event in read_mapping(doc, (*path, "meters"), data.get("meters")).items():
        where: Path = (*path, "meters", ref)
        key = _ref(ref, features)
        if key is None:
            doc.error(where, f"unknown feature {ref!r} (features: {_list(features)})")
            continue
        feature = features[key]
        if feature.type is not FeatureType.METERED or feature.aggregation is not Aggregation.SUM:
            doc.error(where, f"feature {key!r} is not a metered `sum` feature; only sums export")
            continue
        name = read_str(doc, where, event)
        if name is not None:
            meters[key] = name
    return api_key_env, MappingProxyType(meters)


def _ref(ref: Any, known: Mapping[str, Any]) -> str | None:
    """A catalog key by key or by its unique slug (a plan `pro` of product `acme/pro`)."""
    if not isinstance(ref, str):
        return None
    if ref in known:
        return ref
    matches = [key for key in known if key.rsplit("/", 1)[-1] == ref]
    return matches[0] if len(matches) == 1 else None


def _list(known: Mapping[str, Any]) -> str:
    return ", ".join(sorted(known)) or "none"
