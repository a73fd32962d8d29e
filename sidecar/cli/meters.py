"""`plangate meters CATALOG`: what each meter of a catalog feeds (design §16), read offline.

The answer to "where will this event count?" before any event is sent: each meter's event
type, value and dimensions, and the features it counts toward with their `where` filters and
credit rates. It reads the file as `serve` would, so a catalog error stops it like `validate`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from .. import settings
from . import output

if TYPE_CHECKING:
    from ..catalog.model import Catalog, Feature


def add_meters(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "meters",
        help="list a catalog's meters and the features each feeds",
        description="List a catalog's meters: event type, value, dimensions and the features "
        "each counts toward (with `where` filters and credit rates).",
    )
    p.add_argument("catalog", help="a catalog YAML/JSON file")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--max-catalog-bytes",
        type=int,
        default=settings.value_of("max_catalog_bytes", os.environ),
        help="refuse larger files, as `serve` does (default: %(default)s)",
    )
    p.set_defaults(func=meters)


def meters(args: argparse.Namespace) -> int:
    from ..catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(args.catalog, args.max_catalog_bytes)
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 1
    found = listing(catalog)
    if args.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print(f"{args.catalog} declares no meters")
    else:
        print("\n".join(_text(m) for m in found))
    return 0


def listing(catalog: Catalog) -> list[dict[str, Any]]:
    """Each meter as JSON data, with the features it feeds."""
    from ..catalog.meters import path_text

    out: list[dict[str, Any]] = []
    for meter in catalog.meters.values():
        fed = [
            _fed(feature)
            for feature in catalog.features.values()
            if feature.meter is not None and feature.meter.key == meter.key
        ]
        out.append(
            {
                "meter": meter.key,
                "event_type": meter.event_type,
                "value": path_text(meter.value) if meter.value else None,
                "unique": path_text(meter.unique) if meter.unique else None,
                "dimensions": {k: path_text(p) for k, p in meter.dimensions.items()},
                "features": fed,
            }
        )
    return out


def _fed(feature: Feature) -> dict[str, Any]:
    assert feature.meter is not None
    entry: dict[str, Any] = {"feature": feature.key, "aggregation": feature.aggregation.value}
    if feature.meter.where:
        entry["where"] = {k: list(v) for k, v in feature.meter.where.items()}
    price = feature.credits
    if price is not None:
        entry["credits"] = {"pool": price.pool, "per_unit": price.per_unit}
        if price.by is not None:
            entry["credits"].update(by=price.by, rates=dict(price.rates))
    return entry


def _text(m: dict[str, Any]) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in m["dimensions"].items()) or "none"
    lines = [
        f"{m['meter']}  type {m['event_type']}  value {m['value'] or '1 per event'}  "
        f"dimensions {dims}"
    ]
    for f in m["features"] or [{"feature": "(no feature counts it)"}]:
        extra = ""
        if "where" in f:
            extra += "  where " + ", ".join(f"{k} in {v}" for k, v in f["where"].items())
        if "credits" in f:
            c = f["credits"]
            extra += f"  {output.number(c['per_unit'])} {c['pool']} per unit"
            if "by" in c:
                rates = ", ".join(f"{k}: {output.number(v)}" for k, v in c["rates"].items())
                extra += f" (by {c['by']}: {rates})"
        lines.append(f"  -> {f['feature']}{extra}")
    return "\n".join(lines)
