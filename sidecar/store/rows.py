"""Row formats every backend shares: an idempotency key's stored outcome, an outbox row, an
audit row and a hold.

Kept once so that a key written by one backend's release reads back the same in the other,
and a column added to the outbox is mapped in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote  # json.dumps' own (C) quoting
from typing import Any

from ..engine.holds import Hold, HoldState
from .base import AuditEntry, Delivery, DeliveryStatus, Status, UsageOutcome
from .timefmt import parse_ts, ts


def outcome_text(outcome: UsageOutcome) -> str:
    """The JSON object stored as a key's first outcome.

    Written by hand rather than by `json.dumps` (same text, same key order): one of these is
    written per idempotency key, so it is on the Report hot path. The rule never lets a
    counter leave the finite numbers, so `usage` is always valid JSON (PostgreSQL's jsonb
    refuses `Infinity`).
    """
    usage = outcome.usage
    # json.dumps writes a finite float as its repr; anything else (an int from a caller) it decides
    number = repr(usage) if type(usage) is float and math.isfinite(usage) else json.dumps(usage)
    start = _quote(ts(outcome.period_start)) if outcome.period_start is not None else "null"
    hold = f', "hold": {_quote(outcome.hold)}' if outcome.hold else ""
    return (
        f'{{"status": {_quote(outcome.status.value)}, "usage": {number}, '
        f'"period_start": {start}, "message": {_quote(outcome.message)}{hold}}}'
    )


def outcome_from(data: Any) -> UsageOutcome:
    """A stored first outcome (the decoded JSON object) as the outcome it was."""
    if not isinstance(data, dict):  # never committed without an outcome; be explicit if it was
        raise RuntimeError(f"idempotency record without an outcome: {data!r}")
    start = data.get("period_start")
    return UsageOutcome(
        Status(data["status"]),
        float(data["usage"]),
        parse_ts(start) if start else None,
        str(data.get("message", "")),
        hold=str(data.get("hold", "")),
    )


DELIVERY_COLUMNS = (
    "seq, id, kind, account, target, payload, status, attempts, last_error, "
    "created_at, updated_at, next_attempt_at"
)
"""The outbox columns `delivery_from` reads, in its order."""


def delivery_from(
    row: Sequence[Any],
    payload_of: Callable[[Any], Any],
    time_of: Callable[[Any], datetime],
) -> Delivery:
    """One outbox row (`DELIVERY_COLUMNS`) as a `Delivery`; the backend says how its payload
    (JSON text or decoded jsonb) and its times (text or timestamptz) read back."""
    seq, id_, kind, account, target, payload, status, attempts, error, created, updated, due = row
    return Delivery(
        seq=int(seq),
        id=id_,
        kind=kind,
        account=account,
        target=target,
        payload=payload_of(payload),
        status=DeliveryStatus(status),
        attempts=int(attempts),
        last_error=error,
        created_at=time_of(created),
        updated_at=time_of(updated),
        next_attempt_at=time_of(due) if due else None,
    )


AUDIT_COLUMNS = "seq, at, actor, action, account, target, before, after"
"""The audit columns `audit_from` reads, in its order."""

MAX_RETRIED_IDS = 100
"""Delivery ids an audit entry of a retry lists (the count is always there)."""


def retried(ids: Sequence[str]) -> dict[str, Any]:
    """The `after` of a retry's audit entry: how many were made due, and (bounded) which."""
    return {"retried": len(ids), "ids": list(ids[:MAX_RETRIED_IDS])}


def audit_columns(entry: AuditEntry) -> tuple[str, str, str, str, str | None, str | None]:
    """`actor, action, account, target, before, after` of an audit row as both stores write
    them (after their own environment and `at` columns)."""

    def text(part: Any) -> str | None:
        return None if part is None else json.dumps(part, sort_keys=True)

    return (
        entry.actor,
        entry.action,
        entry.account,
        entry.target,
        text(entry.before),
        text(entry.after),
    )


def audit_from(
    row: Sequence[Any],
    json_of: Callable[[Any], Any],
    time_of: Callable[[Any], datetime],
) -> AuditEntry:
    """One audit row (`AUDIT_COLUMNS`) as an `AuditEntry`; the backend says how its JSON
    (text or decoded jsonb) and its times read back."""
    seq, at, actor, action, account, target, before, after = row
    return AuditEntry(
        at=time_of(at),
        actor=actor,
        action=action,
        account=account,
        target=target,
        before=json_of(before),
        after=json_of(after),
        seq=int(seq),
    )


HOLD_COLUMNS = (
    "id, account, feature, scope, amount, pool, pool_scope, per_unit, created_at, expires_at, "
    "state, ended_at, settled"
)
"""The hold columns `hold_from` reads (and the stores insert), in its order."""


def hold_from(row: Sequence[Any], time_of: Callable[[Any], datetime]) -> Hold:
    """One hold row (`HOLD_COLUMNS`) as a `Hold`; the backend says how its times read back."""
    id_, account, feature, scope, amount, pool, pool_scope, per_unit, created, expires = row[:10]
    state, ended, settled = row[10:]
    return Hold(
        id_,
        account,
        feature,
        scope,
        float(amount),
        time_of(created),
        time_of(expires),
        pool,
        pool_scope,
        float(per_unit),
        HoldState(state),
        time_of(ended) if ended else None,
        None if settled is None else float(settled),
    )
