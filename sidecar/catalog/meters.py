"""The catalog's `meters:` and each metered feature's `meter:` (design §16).

A meter names the CloudEvents `type` it reads and where in an event's `data` its amount, its
distinct key and its dimensions are (JSONPath, the dot/bracket subset below). A feature's
`meter:` picks a meter and, with `where`, only the events whose dimensions match. Everything
is checked here with `file:line path`, so routing an event (`engine/events.py`) meets no
dangling name and no path it cannot follow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .model import EMPTY, JsonPath, Meter, MeterUse
from .source import Document, Path
from .values import check_keys, read_list, read_mapping, read_str, slugify

_METER = {"key", "event_type", "value", "unique", "dimensions"}
_STEP = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^'\\]+)'\]""")
RESERVED_DIMENSIONS = frozenset({"requested", "account", "plans", "addons", "targetingKey"})
"""Context keys a dimension may not be named after (design §16 exact rules): a `per`
dimension is read from the evaluation context, where these already mean something."""


def parse_path(text: str) -> JsonPath | None:
    """`$.a.b`, `$.a[0]`, `$['a-b']` (and mixes) as steps below `$`; None for anything else."""
    if not text.startswith("$"):
        return None
    steps: list[str | int] = []
    at = 1
    while at < len(text):
        m = _STEP.match(text, at)
        if m is None:
            return None
        name, index, quoted = m.groups()
        steps.append(int(index) if index is not None else (name or quoted))
        at = m.end()
    return tuple(steps) if steps else None


def path_text(path: JsonPath) -> str:
    """A parsed path written back (`$.a[0]`, `$['a-b']`), for messages and listings."""
    return "$" + "".join(
        f"[{s}]" if isinstance(s, int) else (f".{s}" if _STEP.fullmatch(f".{s}") else f"['{s}']")
        for s in path
    )


def dimension_text(value: Any) -> str | None:
    """A dimension value as the string `where` and `per` compare: strings as they are, JSON
    numbers in their shortest form (`1`, `2.5`), booleans as JSON writes them; None for
    anything else (null, objects, arrays, non-finite numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def read_meters(doc: Document, raw: Any) -> Mapping[str, Meter]:
    """The top-level `meters:` list, by key."""
    out: dict[str, Meter] = {}
    for i, item in enumerate(read_list(doc, ("meters",), raw)):
        path: Path = ("meters", i)
        data = read_mapping(doc, path, item)
        check_keys(doc, path, data, _METER)
        key = read_str(doc, (*path, "key"), data.get("key"))
        event_type = read_str(doc, (*path, "event_type"), data.get("event_type"))
        if key is None or event_type is None:
            continue
        if slugify(key) != key:
            doc.error((*path, "key"), f"must be a slug (lowercase, digits, '-'), got {key!r}")
            continue
        if key in out:
            doc.error((*path, "key"), f"meter key {key!r} is already used by another meter")
            continue
        dimensions: dict[str, JsonPath] = {}
        for name, where in read_mapping(doc, (*path, "dimensions"), data.get("dimensions")).items():
            if str(name) in RESERVED_DIMENSIONS:
                doc.error(
                    (*path, "dimensions", name),
                    f"{name!r} is a reserved context key ({', '.join(sorted(RESERVED_DIMENSIONS))}); "
                    "name the dimension otherwise",
                )
                continue
            steps = _path(doc, (*path, "dimensions", name), where)
            if steps is not None:
                dimensions[str(name)] = steps
        out[key] = Meter(
            key=key,
            event_type=event_type,
            value=_path(doc, (*path, "value"), data.get("value"), optional=True),
            unique=_path(doc, (*path, "unique"), data.get("unique"), optional=True),
            dimensions=MappingProxyType(dimensions) if dimensions else EMPTY,
        )
    return MappingProxyType(out) if out else EMPTY


def _path(doc: Document, path: Path, raw: Any, *, optional: bool = False) -> JsonPath | None:
    if raw is None and optional:
        return None
    steps = parse_path(raw) if isinstance(raw, str) else None
    if steps is None:
        doc.error(
            path,
            f"must be a JSONPath into the event's data such as $.tokens, $.usage[0] or "
            f"$['model-name'], got {raw!r}",
        )
    return steps


def read_meter_use(doc: Document, path: Path, raw: Any) -> MeterUse | None:
    """A feature's `meter:` as written — a meter key, or `{key, where}`; the key and the
    dimensions `where` names are checked against the meters by `check_meter_use`."""
    if isinstance(raw, str):
        return MeterUse(raw)
    if not isinstance(raw, dict):
        doc.error(path, f"must be a meter key or {{key, where}}, got {raw!r}")
        return None
    check_keys(doc, path, raw, {"key", "where"})
    key = read_str(doc, (*path, "key"), raw.get("key"))
    where: dict[str, tuple[str, ...]] = {}
    for name, accepted in read_mapping(doc, (*path, "where"), raw.get("where")).items():
        values = accepted if isinstance(accepted, list) else [accepted]
        texts = [dimension_text(v) for v in values]
        if not texts or any(t is None for t in texts):
            doc.error(
                (*path, "where", name),
                f"must be a value or a list of values (strings or numbers), got {accepted!r}",
            )
            continue
        where[str(name)] = tuple(t for t in texts if t is not None)
    if key is None:
        return None
    return MeterUse(key, MappingProxyType(where) if where else EMPTY)


def check_meter_use(
    doc: Document, path: Path, use: MeterUse, meters: Mapping[str, Meter], unique: bool
) -> bool:
    """Whether `use` names a declared meter and only dimensions it declares; a `unique`
    feature also needs the meter's `unique` path. Problems are reported at `path`."""
    meter = meters.get(use.key)
    if meter is None:
        known = ", ".join(sorted(meters)) or "none"
        doc.error(
            (*path, "key") if use.where else path, f"unknown meter {use.key!r} (meters: {known})"
        )
        return False
    ok = True
    for name in use.where:
        if name not in meter.dimensions:
            declared = ", ".join(sorted(meter.dimensions)) or "none"
            doc.error(
                (*path, "where", name),
                f"meter {meter.key!r} declares no dimension {name!r} (its dimensions: {declared})",
            )
            ok = False
    if unique and meter.unique is None:
        doc.error(
            path,
            f"the feature counts unique keys, but meter {meter.key!r} has no `unique:` path "
            "(add e.g. `unique: $.user` to the meter)",
        )
        ok = False
    return ok


def by_problem(by: str, meter: Meter | None) -> str:
    """Why `credits.by` cannot name `by` on a feature counting `meter` (None: a feature
    without a meter, priced from reports' `dimensions`); "" when it can."""
    if by in RESERVED_DIMENSIONS:
        return f"{by!r} is a reserved context key; a dimension cannot be named so"
    if meter is not None and by not in meter.dimensions:
        declared = ", ".join(sorted(meter.dimensions)) or "none"
        return f"meter {meter.key!r} declares no dimension {by!r} (its dimensions: {declared})"
    return ""
