"""Routing an event to the usage reports it makes (design §16): pure, no I/O, no clock.

An event counts toward every feature whose meter reads its type and whose `where` matches.
Each becomes an ordinary `UsageReport` of that feature, so every rule of a report (periods,
scope, top-ups, credit pools, quotas, history) applies unchanged through the one usage write
path. The checks run in the design's order, and an event is refused as a whole before any
report is made: an event is counted everywhere or nowhere.

Idempotency is CloudEvents' `(source, id)`: each report carries an idempotency key derived
from that pair and its feature, so the store's own key table (kept 7 days, written in the
usage transaction) remembers an applied event and answers a resend with each feature's first
outcome; a rejected event leaves no key, so a corrected resend counts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..catalog.meters import dimension_text, path_text
from ..catalog.model import Aggregation, Catalog, Feature, JsonPath, Meter
from ..catalog.values import parse_time
from .usage import UsageReport

MAX_AHEAD = timedelta(minutes=5)
"""How far past the sidecar's clock an event's `time` may lie (design §16 exact rules)."""
KEY_RETENTION = timedelta(days=7)
"""How long applied events' keys are kept; an older event is refused, so no replay counts
twice (design §16). The housekeeping job prunes keys with the same age."""


class EventStatus(StrEnum):
    APPLIED = "APPLIED"
    DUPLICATE = "DUPLICATE"
    UNMATCHED = "UNMATCHED"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvent as PlanGate reads it. `problem` is set by a reader that met something
    the event cannot carry (a `time` that does not parse, `data_base64`, non-object `data`)."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str = ""
    time: datetime | None = None
    data: Mapping[str, Any] | None = None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Routed:
    """The event's reports, one per feature it counts toward, in catalog order."""

    reports: tuple[UsageReport, ...]


@dataclass(frozen=True, slots=True)
class Settled:
    """The event's answer without any write: UNMATCHED or REJECTED with why."""

    status: EventStatus
    message: str = ""


def route(
    catalog: Catalog, event: Event, now: datetime, known: Callable[[str], bool]
) -> Routed | Settled:
    """What `event` does, checked in the design's order. `known(account)`: whether the
    account exists (an event for an unknown account is refused, as a report is)."""
    problem = _envelope_problem(event, now)
    if problem:
        return Settled(EventStatus.REJECTED, problem)
    data = event.data or {}
    matches = list(_matching(catalog, event.type, data))
    if not matches:
        return Settled(EventStatus.UNMATCHED, f"no meter's `where` matches type {event.type!r}")
    if not event.subject:
        return Settled(EventStatus.REJECTED, "subject is required: the account id")
    if not known(event.subject):
        return Settled(
            EventStatus.REJECTED,
            f"unknown account {event.subject!r} (subject); create it first (Admin.UpsertAccount)",
        )
    key = hashlib.sha256(f"{event.source}\x00{event.id}".encode("utf-8", "replace")).hexdigest()
    reports: list[UsageReport] = []
    for feature, meter in matches:
        report = _report(feature, meter, data, event, key)
        if isinstance(report, str):
            return Settled(EventStatus.REJECTED, f"{feature.key}: {report}")
        reports.append(report)
    return Routed(tuple(reports))


def _envelope_problem(event: Event, now: datetime) -> str:
    if event.problem:
        return event.problem
    for name in ("specversion", "id", "source", "type"):
        if not getattr(event, name):
            return f"{name} is required (a CloudEvents 1.0 attribute)"
    if event.specversion != "1.0":
        return f'specversion must be "1.0", got {event.specversion!r}'
    if event.time is not None:
        if event.time - now > MAX_AHEAD:
            return (
                f"time {event.time.isoformat()} lies {event.time - now} ahead of the sidecar's "
                f"clock; at most {MAX_AHEAD} ahead is accepted"
            )
        if now - event.time > KEY_RETENTION:
            return (
                f"time {event.time.isoformat()} is older than {KEY_RETENTION.days} days, the "
                "time events are remembered for; it could not be told from a replay"
            )
    return ""


def _matching(
    catalog: Catalog, event_type: str, data: Mapping[str, Any]
) -> list[tuple[Feature, Meter]]:
    meters = {k: m for k, m in catalog.meters.items() if m.event_type == event_type}
    if not meters:
        return []
    out: list[tuple[Feature, Meter]] = []
    for feature in catalog.features.values():
        use = feature.meter
        meter = None if use is None else meters.get(use.key)
        if use is None or meter is None:
            continue
        if all(
            dimension_text(lookup(data, meter.dimensions[name])) in accepted
            for name, accepted in use.where.items()
        ):
            out.append((feature, meter))
    return out


def _report(
    feature: Feature, meter: Meter, data: Mapping[str, Any], event: Event, key: str
) -> UsageReport | str:
    """The report of `event` on `feature`, or why the event cannot count there."""
    amount = 1.0
    unique = ""
    if feature.aggregation is Aggregation.UNIQUE:
        assert meter.unique is not None  # the catalog requires it
        found = dimension_text(lookup(data, meter.unique))
        if found is None:
            return f"the unique key path {path_text(meter.unique)} is missing from data"
        unique = found
    elif meter.value is not None:
        value = lookup(data, meter.value)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return (
                f"the value path {path_text(meter.value)} must hold a JSON number, got "
                f"{'nothing' if value is _MISSING else repr(value)}"
            )
        amount = float(value)
    dimensions = {
        name: text
        for name, path in meter.dimensions.items()
        if (text := dimension_text(lookup(data, path))) is not None
    }
    return UsageReport(
        dimensions=dimensions,
        account=event.subject,
        feature=feature.key,
        amount=amount,
        unique_key=unique,
        idempotency_key=f"event:{key}:{feature.key}",
        timestamp=event.time,
    )


_MISSING: Any = object()


def lookup(data: Any, path: JsonPath) -> Any:
    """The value at `path` in `data`, or a sentinel no check accepts when a step is absent."""
    for step in path:
        if isinstance(step, int):
            found = data[step] if isinstance(data, list | tuple) and step < len(data) else _MISSING
        else:
            found = data.get(step, _MISSING) if isinstance(data, Mapping) else _MISSING
        if found is _MISSING:
            return _MISSING
        data = found
    return data


def event_from_json(raw: Any) -> Event:
    """A CloudEvent in structured JSON (what `POST /v1/events` carries); what it cannot carry
    becomes `problem`, so that event alone is REJECTED."""
    if not isinstance(raw, Mapping):
        return Event("", "", "", "", problem=f"an event is a JSON object, got {_kind(raw)}")
    texts: dict[str, str] = {}
    for name in ("specversion", "id", "source", "type", "subject"):
        value = raw.get(name, "")
        if not isinstance(value, str):
            return Event("", "", "", "", problem=f"{name} must be a string, got {_kind(value)}")
        texts[name] = value
    problem, at, data = "", None, raw.get("data")
    if "data_base64" in raw:
        problem = "data_base64 is not accepted: send `data` as a JSON object"
    elif data is not None and not isinstance(data, Mapping):
        problem = f"data must be a JSON object, got {_kind(data)}"
    elif raw.get("time") is not None:
        at = parse_time(raw["time"]) if isinstance(raw["time"], str) else None
        if at is None:
            problem = f"time must be an RFC 3339 timestamp, got {raw['time']!r}"[:200]
    return Event(**texts, time=at, data=data, problem=problem)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
