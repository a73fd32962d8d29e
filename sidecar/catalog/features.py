"""Reading feature definitions and entitlement values, which depend on the feature's type."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from .meters import dimension_text, read_meter_use
from .model import (
    EMPTY,
    UNLIMITED,
    Aggregation,
    Anchor,
    CreditPrice,
    Entitlement,
    Feature,
    FeatureType,
    MeteredLimit,
    RateWindow,
    Reset,
    Scope,
    freeze,
    thaw,
)
from .source import Document, Path
from .targeting import Evaluator, read_targeting
from .values import check_keys, is_number, oversized, read_list, read_mapping, read_str, slugify

_COMMON = {
    "name",
    "slug",
    "type",
    "description",
    "default",
    "default_variant",
    "archived",
    "disabled",
    "variants",
    "targeting",
    "metadata",
}
_BY_TYPE: dict[FeatureType, set[str]] = {
    FeatureType.BOOLEAN: set(),
    FeatureType.FLAG: set(),
    FeatureType.INTEGER: {"min", "max", "step", "infinite"},
    FeatureType.FLOAT: {"min", "max"},
    FeatureType.STRING: {"values"},
    FeatureType.LIST: {"values"},
    FeatureType.OBJECT: set(),
    FeatureType.METERED: {
        "unit",
        "aggregation",
        "reset",
        "anchor",
        "scope",
        "infinite",
        "credits",
        "meter",
    },
    FeatureType.CREDITS: {"unit", "reset", "anchor", "scope", "infinite"},
    FeatureType.RATE: {"window", "infinite"},
}
# Keys of metered features that a `rate` feature does not take (design §17: no reports, no
# periods, no credits), each refused with the reason rather than as an unknown key.
_NOT_FOR_RATES = ("unit", "aggregation", "reset", "anchor", "scope", "credits", "meter")


def _enum(doc: Document, path: Path, value: Any, enum: type[Any], default: Any) -> Any:
    if value is None:
        return default
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        doc.error(path, f"must be one of {choices}, got {value!r}")
        return default


_NO_EVALUATORS: Mapping[str, Evaluator] = MappingProxyType({})


# Flag-metadata keys PlanGate itself sends (engine/typed.py `metadata`): a catalog's own
# `metadata` may not replace them (decision 2000 "Metadata precedence").
RESERVED_METADATA = frozenset(
    {
        "has_access",
        "unlimited",
        "used",
        "limit",
        "remaining",
        "period_end",
        "allowance",
        "topup_remaining",
        "pool",
        "per_unit",
        "pool_used",
        "pool_remaining",
        "denial",
        "source",
        "valid_until",
        "trial",
        "trial_ends_at",
        "volatile",
        "flagSetId",
        "flagSetVersion",
    }
)
Metadata = Mapping[str, bool | int | float | str]
_NO_METADATA: Metadata = MappingProxyType({})


def read_metadata(doc: Document, path: Path, raw: Any) -> Metadata:
    """A feature's or product's `metadata:` (flagd's flag and flag-set metadata): scalar
    values only, as OpenFeature flag metadata holds; a PlanGate key is a warning, PlanGate's
    value wins."""
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        doc.error(path, "must be a mapping of name -> string, number or boolean")
        return MappingProxyType({})
    out: dict[str, bool | int | float | str] = {}
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            doc.error(
                (*path, key), f"metadata values are strings, numbers or booleans, got {value!r}"
            )
            continue
        if str(key) in RESERVED_METADATA:
            doc.warn(
                (*path, key), f"{key!r} is PlanGate's own flag metadata; PlanGate's value is sent"
            )
            continue
        out[str(key)] = value
    return MappingProxyType(out)


def read_feature(
    doc: Document,
    path: Path,
    data: dict[str, Any],
    product: str,
    evaluators: Mapping[str, Evaluator] = _NO_EVALUATORS,
    product_metadata: Metadata = _NO_METADATA,
) -> Feature | None:
    name = read_str(doc, (*path, "name"), data.get("name"))
    ftype = _enum(doc, (*path, "type"), data.get("type"), FeatureType, None)
    if data.get("type") is None:
        doc.error((*path, "type"), f"is required ({', '.join(t.value for t in FeatureType)})")
    if name is None or ftype is None:
        return None
    if ftype is FeatureType.CREDITS and "credits" in data:
        doc.error(
            (*path, "credits"),
            "a credits pool cannot draw from another pool; only metered features take `credits:`",
        )
        data = {k: v for k, v in data.items() if k != "credits"}
    if ftype is FeatureType.RATE:
        data = _rate_keys(doc, path, data)
    if ftype is not FeatureType.METERED and "meter" in data:
        doc.error(
            (*path, "meter"),
            f"a {ftype.value} feature counts no events; only `metered` features take `meter:`",
        )
        data = {k: v for k, v in data.items() if k != "meter"}
    check_keys(doc, path, data, _COMMON | _BY_TYPE[ftype])
    slug = _slug(doc, path, data, name)
    if not slug:
        return None
    archived = False
    for word in ("disabled", "archived"):  # decision 2000: `disabled` is flagd's DISABLED state
        flag = data.get(word, False)
        if not isinstance(flag, bool):
            doc.error((*path, word), "must be true or false")
        archived = archived or flag is True
    feature = Feature(
        key=slug,
        slug=slug,
        name=name,
        product=product,
        type=ftype,
        default=None,
        archived=archived,
        description=str(data.get("description") or ""),
        metadata=MappingProxyType(
            {**product_metadata, **read_metadata(doc, (*path, "metadata"), data.get("metadata"))}
        ),
    )
    if ftype is FeatureType.INTEGER:
        feature = _integer_options(doc, path, data, feature)
    elif ftype is FeatureType.FLOAT:
        feature = _float_options(doc, path, data, feature)
    elif ftype in (FeatureType.STRING, FeatureType.LIST) and "values" in data:
        values = read_list(doc, (*path, "values"), data["values"])
        if not all(isinstance(v, str) for v in values) or not values:
            doc.error((*path, "values"), "must be a non-empty list of strings")
        else:
            feature = _replace(feature, values=tuple(values))
    elif ftype is FeatureType.METERED or ftype is FeatureType.CREDITS:
        feature = _replace(
            feature,
            unit=str(data.get("unit") or ""),
            aggregation=_enum(
                doc, (*path, "aggregation"), data.get("aggregation"), Aggregation, Aggregation.SUM
            ),
            credits=_credits(doc, (*path, "credits"), data.get("credits")),
            meter=None
            if data.get("meter") is None
            else read_meter_use(doc, (*path, "meter"), data["meter"]),
            reset=_enum(doc, (*path, "reset"), data.get("reset"), Reset, Reset.MONTHLY),
            anchor=_enum(doc, (*path, "anchor"), data.get("anchor"), Anchor, Anchor.CALENDAR),
            scope=_enum(doc, (*path, "scope"), data.get("scope"), Scope, Scope.ACCOUNT),
            **_infinite(doc, path, data),
        )
    elif ftype is FeatureType.RATE:
        feature = _replace(feature, window=_window(doc, path, data), **_infinite(doc, path, data))
    feature = _replace(feature, default=_default(doc, (*path, "default"), data, feature))
    targeting = read_targeting(doc, path, data, feature, evaluators, read_entitlement)
    if targeting is None:
        if "default_variant" in data and "variants" not in data:
            doc.error(
                (*path, "default_variant"), "names a variant, so the feature needs `variants`"
            )
        return feature
    return _with_default_variant(doc, path, data, _replace(feature, targeting=targeting))


def _rate_keys(doc: Document, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """`data` less the metered-only keys a rate feature was given, each reported."""
    for key in _NOT_FOR_RATES:
        if key in data:
            doc.error(
                (*path, key),
                "a rate feature counts requests per `window` in the sidecar's memory; "
                f"`{key}` applies to metered features (rates take no reports, periods or credits)",
            )
    return {k: v for k, v in data.items() if k not in _NOT_FOR_RATES}


def _window(doc: Document, path: Path, data: dict[str, Any]) -> RateWindow:
    """A rate feature's `window:` (required: the limit means nothing without it)."""
    if data.get("window") is None:
        choices = ", ".join(w.value for w in RateWindow)
        doc.error((*path, "window"), f"is required for a rate feature ({choices})")
        return RateWindow.MINUTE
    return _enum(doc, (*path, "window"), data["window"], RateWindow, RateWindow.MINUTE)  # type: ignore[no-any-return]


def _slug(doc: Document, path: Path, data: dict[str, Any], name: str) -> str | None:
    """An explicit `slug:` exactly as written (decision 2000: flagd keys keep their capitals);
    otherwise the slug derived from the name."""
    explicit = data.get("slug")
    if explicit is None or explicit == "":
        slug = slugify(name)
        if not slug:
            doc.error((*path, "slug"), f"name {name!r} gives an empty slug; add `slug:`")
        return slug or None
    if not isinstance(explicit, str) or not explicit.strip() or explicit != explicit.strip():
        doc.error(
            (*path, "slug"),
            f"must be a non-empty string without surrounding spaces, got {explicit!r}",
        )
        return None
    if "/" in explicit:
        doc.error(
            (*path, "slug"),
            f"{explicit!r}: a slug cannot contain '/' (it separates product/feature keys)",
        )
        return None
    return explicit


def _with_default_variant(
    doc: Document, path: Path, data: dict[str, Any], feature: Feature
) -> Feature:
    """The default answer's variant name (decision 2000 exact rules): `default_variant:` names it
    (and so the default value); with `default:` it is the first variant of that value, else
    `default`; with neither (and not a `flag`), the caller's default answers."""
    targeting = feature.targeting
    assert targeting is not None
    variants = targeting.variants
    if "default_variant" in data:
        chosen = data["default_variant"]
        if "default" in data:
            doc.error((*path, "default_variant"), "give `default:` or `default_variant:`, not both")
            return feature
        if chosen is None:  # flagd's `"defaultVariant": null`: no default
            return _replace(feature, caller_default=True, default_variant="")
        if not isinstance(chosen, str) or chosen not in variants:
            doc.error(
                (*path, "default_variant"),
                f"{chosen!r} names no variant (variants: {', '.join(variants)})",
            )
            return feature
        return _replace(feature, default=variants[chosen], default_variant=chosen)
    if "default" not in data and feature.type is not FeatureType.FLAG:
        return _replace(feature, caller_default=True, default_variant="")
    for name, value in variants.items():
        if value == feature.default:
            return _replace(feature, default_variant=name)
    return feature


def _credits(doc: Document, path: Path, raw: Any) -> CreditPrice | None:
    """`credits: {pool, per_unit}` as written: the pool is a reference resolved (and checked to
    be a `credits` feature) by the catalog builder once every feature is known."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        doc.error(path, "must be a mapping {pool: <credits feature>, per_unit: <number>}")
        return None
    check_keys(doc, path, raw, {"pool", "per_unit", "by", "rates"})
    pool = read_str(doc, (*path, "pool"), raw.get("pool"))
    per_unit = raw.get("per_unit", 1)
    if not is_number(per_unit) or not math.isfinite(per_unit) or per_unit <= 0:
        doc.error((*path, "per_unit"), f"must be a positive number, got {per_unit!r}")
        return None
    by, rates = _rates(doc, path, raw)
    if pool is None or (by is None) != (not rates):
        return None
    return CreditPrice(pool, float(per_unit), by, MappingProxyType(rates) if rates else EMPTY)


def _rates(doc: Document, path: Path, raw: dict[str, Any]) -> tuple[str | None, dict[str, float]]:
    """`by: <dimension>` with `rates: {value: credits per unit}` (design §16); each needs the
    other (reported at `path`)."""
    by = raw.get("by")
    if by is not None and (not isinstance(by, str) or not by):
        doc.error((*path, "by"), f"must name a dimension, got {by!r}")
        return None, {}
    rates: dict[str, float] = {}
    for value, rate in read_mapping(doc, (*path, "rates"), raw.get("rates")).items():
        if not is_number(rate) or rate <= 0:
            doc.error((*path, "rates", value), f"must be a positive number, got {rate!r}")
            continue
        text = dimension_text(value)
        if text is not None:
            rates[text] = float(rate)
    if by is not None and not rates:
        doc.error(
            (*path, "by"),
            f"`by: {by}` needs `rates:` (credits per unit for each {by} value; `per_unit` "
            "prices the values not listed)",
        )
    elif by is None and "rates" in raw:
        doc.error((*path, "rates"), "`rates:` needs `by:` naming the dimension they price")
    return by, rates


def _replace(feature: Feature, **changes: Any) -> Feature:
    return replace(feature, **changes)


def _integer_options(doc: Document, path: Path, data: dict[str, Any], f: Feature) -> Feature:
    options: dict[str, Any] = {}
    for key in ("min", "max", "step"):
        if key in data:
            if not is_number(data[key]):
                doc.error((*path, key), f"must be a number, got {data[key]!r}")
            else:
                options[key] = data[key]
    if "step" in options and options["step"] <= 0:
        doc.error((*path, "step"), "must be greater than 0")
        del options["step"]
    if "min" in options and "max" in options and options["min"] > options["max"]:
        doc.error((*path, "max"), f"max {options['max']} is below min {options['min']}")
    return _replace(f, **options, **_infinite(doc, path, data))


def _float_options(doc: Document, path: Path, data: dict[str, Any], f: Feature) -> Feature:
    options: dict[str, Any] = {}
    for key in ("min", "max"):
        if key in data:
            if not is_number(data[key]):
                doc.error((*path, key), f"must be a number, got {data[key]!r}")
            else:
                options[key] = float(data[key])
    if "min" in options and "max" in options and options["min"] > options["max"]:
        doc.error((*path, "max"), f"max {options['max']:g} is below min {options['min']:g}")
    return _replace(f, **options)


def _infinite(doc: Document, path: Path, data: dict[str, Any]) -> dict[str, int]:
    """The integer that stands for "unlimited" (integer and metered features)."""
    if "infinite" not in data:
        return {}
    value = data["infinite"]
    if not isinstance(value, int) or isinstance(value, bool):
        doc.error((*path, "infinite"), f"must be an integer, got {value!r}")
        return {}
    return {"infinite": value}


def _default(doc: Document, path: Path, data: dict[str, Any], f: Feature) -> Any:
    """The feature's default, as an entitlement value of its own type."""
    fallback: dict[FeatureType, Any] = {
        FeatureType.BOOLEAN: False,
        FeatureType.FLAG: False,
        FeatureType.INTEGER: 0 if f.min is None else f.min,
        FeatureType.FLOAT: 0.0 if f.min is None else f.min,
        FeatureType.STRING: f.values[0] if f.values else "",
        FeatureType.LIST: (),
        FeatureType.OBJECT: freeze({}),
        FeatureType.METERED: MeteredLimit(0),
        FeatureType.CREDITS: MeteredLimit(0),
        FeatureType.RATE: MeteredLimit(0),
    }
    if "default" not in data:
        return fallback[f.type]
    if f.type is FeatureType.FLAG and data["default"] is not False:
        doc.error(
            path, "a flag feature is false wherever it is not granted; its default must be false"
        )
        return False
    value = read_entitlement(doc, path, data["default"], f)
    return fallback[f.type] if value is None else value


def read_entitlement(doc: Document, path: Path, value: Any, f: Feature) -> Entitlement | None:
    """Check an entitlement value against feature `f`; None (with a problem) when it does not fit."""
    if isinstance(value, dict | list) and (problem := oversized(value)) is not None:
        doc.error(path, problem)  # before anything quotes or copies it
        return None
    t = f.type
    if t in (FeatureType.BOOLEAN, FeatureType.FLAG):
        if isinstance(value, bool):
            return value
        doc.error(path, f"{f.key} is a {t.value} feature: expected true or false, got {value!r}")
    elif t is FeatureType.INTEGER:
        return _integer_value(doc, path, value, f)
    elif t is FeatureType.FLOAT:
        return _float_value(doc, path, value, f)
    elif t is FeatureType.STRING:
        if not isinstance(value, str):
            doc.error(path, f"{f.key} is a string feature: expected a string, got {value!r}")
        elif f.values is not None and value not in f.values:
            doc.error(path, f"{value!r} is not one of {f.key}'s values: {', '.join(f.values)}")
        else:
            return value
    elif t is FeatureType.LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            doc.error(path, f"{f.key} is a list feature: expected a list of strings, got {value!r}")
        else:
            unknown = [v for v in value if f.values is not None and v not in f.values]
            if unknown:
                doc.error(
                    path,
                    f"{', '.join(map(repr, unknown))} not among {f.key}'s values: "
                    f"{', '.join(f.values or ())}",
                )
            else:
                return tuple(dict.fromkeys(value))
    elif t is FeatureType.OBJECT:
        if isinstance(value, dict):
            return freeze(value)  # type: ignore[no-any-return]
        doc.error(path, f"{f.key} is an object feature: expected a mapping, got {value!r}")
    elif t is FeatureType.RATE:
        return _rate_value(doc, path, value, f)
    else:
        return _metered_value(doc, path, value)
    return None


def _rate_value(doc: Document, path: Path, value: Any, f: Feature) -> MeteredLimit | None:
    """A rate limit: requests per window, or "unlimited"; never soft (design §17)."""
    if isinstance(value, dict) and ("soft" in value or "overage_cap" in value):
        doc.error(
            path,
            f"{f.key} is a rate feature: a rate limit is hard (no soft limit, no overage cap); "
            "give a number of requests per window",
        )
        return None
    return _metered_value(doc, path, value)


def _integer_value(doc: Document, path: Path, value: Any, f: Feature) -> Entitlement | None:
    if value == "unlimited":
        return UNLIMITED
    if not isinstance(value, int) or isinstance(value, bool):
        doc.error(
            path,
            f'{f.key} is an integer feature: expected an integer or "unlimited", got {value!r}',
        )
        return None
    if (f.min is not None and value < f.min) or (f.max is not None and value > f.max):
        lo = "-inf" if f.min is None else f"{f.min:g}"
        hi = "inf" if f.max is None else f"{f.max:g}"
        doc.error(path, f"{value} is outside {f.key}'s range {lo}..{hi}")
        return None
    if f.step is not None:
        base = f.min if f.min is not None else 0
        steps = (value - base) / f.step
        if not math.isclose(steps, round(steps)):
            doc.error(path, f"{value} is not on {f.key}'s step of {f.step:g} (from {base:g})")
            return None
    return value


def _float_value(doc: Document, path: Path, value: Any, f: Feature) -> Entitlement | None:
    if not is_number(value):
        doc.error(path, f"{f.key} is a float feature: expected a number, got {value!r}")
        return None
    if (f.min is not None and value < f.min) or (f.max is not None and value > f.max):
        lo = "-inf" if f.min is None else f"{f.min:g}"
        hi = "inf" if f.max is None else f"{f.max:g}"
        doc.error(path, f"{value} is outside {f.key}'s range {lo}..{hi}")
        return None
    return float(value)


def _metered_value(doc: Document, path: Path, value: Any) -> MeteredLimit | None:
    bad = 'limit must be a non-negative number or "unlimited"'
    if value == "unlimited":
        return MeteredLimit(None)
    if is_number(value):
        if value < 0:
            doc.error(path, bad)
            return None
        return MeteredLimit(float(value))
    if not isinstance(value, dict):
        doc.error(path, bad)
        return None
    check_keys(doc, path, value, {"limit", "soft", "overage_cap"})
    limit: Any = value.get("limit")
    if limit != "unlimited" and not (is_number(limit) and limit >= 0):
        doc.error((*path, "limit"), bad)
        return None
    soft = value.get("soft", False)
    if not isinstance(soft, bool):
        doc.error((*path, "soft"), "must be true or false")
        return None
    cap: Any = value.get("overage_cap")
    if cap is not None and not (is_number(cap) and cap >= 0):
        doc.error((*path, "overage_cap"), "must be a non-negative number")
        return None
    if cap is not None and not soft:
        doc.error(
            (*path, "overage_cap"), "only a soft limit can have an overage cap; add `soft: true`"
        )
        return None
    return MeteredLimit(
        None if limit == "unlimited" else float(limit),
        soft,
        None if cap is None else float(cap),
    )


def notation(value: Entitlement) -> Any:
    """An entitlement back in catalog notation (the inverse of `read_entitlement`), as admin
    requests, stored records and quota actions carry it."""
    if value is UNLIMITED or (isinstance(value, MeteredLimit) and value.limit is None):
        return "unlimited"
    if isinstance(value, MeteredLimit):
        assert value.limit is not None
        if not value.soft:
            return _whole(value.limit)
        out: dict[str, Any] = {"limit": _whole(value.limit), "soft": True}
        if value.overage_cap is not None:
            out["overage_cap"] = _whole(value.overage_cap)
        return out
    return thaw(value)


def _whole(value: float) -> int | float:
    return int(value) if value.is_integer() else value
