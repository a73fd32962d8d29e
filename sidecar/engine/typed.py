"""Typed resolution (design §4 table): what a decision means as boolean, integer, float,
string or object, plus the JSON "detail" and the OpenFeature flag metadata.

Every front end (native API, flagd protocol, OFREP, provider) goes through here, so the
table is implemented exactly once.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from ...protocol.kinds import KINDS_OF
from ..catalog.model import Feature, FeatureType
from .decision import Decision, ErrorCode, EvaluationError, Metering


class Kind(StrEnum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    OBJECT = "object"


_EXACT = 2.0**53
"""Integral floats up to this are written as integers; beyond, a float's digits are not the
integer's (1.8e308 would print as 309 digits that no client's number type holds)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Every face carries the integer resolution as int64 (flagd, the native API)."""


def number(value: float | None) -> int | float | None:
    """JSON-friendly number: 100.0 -> 100."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() and abs(value) <= _EXACT else value


def int64(value: int) -> int:
    """`value` within int64: a limit beyond it (a saturated sum, a catalog's 1e300) is as
    good as the largest."""
    return max(INT64_MIN, min(INT64_MAX, value))


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def detail(decision: Decision) -> dict[str, Any]:
    """The whole decision as a JSON object (the "detail" cells of the table)."""
    out: dict[str, Any] = {
        "feature": decision.feature,
        "type": decision.type.value,
        "value": number(decision.value) if isinstance(decision.value, float) else decision.value,
        "has_access": decision.has_access,
        "source": decision.variant,
        "unlimited": decision.unlimited,
    }
    m = decision.metering
    if m is not None:
        out.update(
            limit=number(m.limit),
            used=number(m.used),
            remaining=number(m.remaining),
            soft_limit=m.soft_limit,
            overage=number(m.overage),
            period_start=iso(m.period_start),
            period_end=iso(m.period_end),
        )
        if m.overage_cap is not None:
            out["overage_cap"] = number(m.overage_cap)
        if m.held:  # design §17: what active holds reserve
            out["held"] = number(m.held)
        if m.topups or m.pool is not None:
            out.update(_balance_detail(m))
    if decision.denial is not None:
        out["denial"] = decision.denial.value
    if decision.targeted:
        out["source"] = "targeting"
    if decision.valid_until is not None:  # design §8 "Time": when a cache must drop it
        out["valid_until"] = iso(decision.valid_until) or ""
    if decision.trial_ends_at is not None:  # design §6.1: while the trial runs
        out["trial"] = True
        out["trial_ends_at"] = iso(decision.trial_ends_at) or ""
    return out


def _balance_detail(m: Metering) -> dict[str, Any]:
    """Design §5.1 in the detail: allowance vs top-ups, the top-ups in burn order, the pool."""
    out: dict[str, Any] = {
        "allowance": number(m.allowance),
        "topup_burned": number(m.topup_burned),
        "topup_remaining": number(m.topup_remaining),
        "topups": [
            {
                "id": s.topup.id,
                "amount": number(s.topup.amount),
                "priority": s.topup.priority,
                "burned": number(s.burned),
                "burned_this_period": number(s.burned_now),
                "remaining": number(s.remaining),
                "active": s.active,
                "effective_at": iso(s.topup.effective_at),
                "expires_at": iso(s.topup.ends_at),
            }
            for s in m.topups
        ],
    }
    share = m.pool
    if share is not None:
        pooled = detail(share.decision)
        out["pool"] = {
            "feature": share.feature,
            "per_unit": number(share.per_unit),
            **{k: pooled[k] for k in ("has_access", "limit", "used", "remaining") if k in pooled},
        }
    return out


def metadata(decision: Decision) -> dict[str, bool | int | float | str]:
    """OpenFeature flag metadata: scalars only, absent rather than null."""
    out: dict[str, bool | int | float | str] = {"has_access": decision.has_access}
    m = decision.metering
    if m is not None:
        _metering_metadata(m, out)
    elif decision.type is FeatureType.INTEGER:
        out["unlimited"] = decision.unlimited

    if decision.denial is not None:
        out["denial"] = decision.denial.value
    if decision.targeted:
        out["source"] = "targeting"
    if decision.valid_until is not None:  # design §8 "Time": when a cache must drop it
        out["valid_until"] = iso(decision.valid_until) or ""
    if decision.trial_ends_at is not None:  # design §6.1: while the trial runs
        out["trial"] = True
        out["trial_ends_at"] = iso(decision.trial_ends_at) or ""
    if decision.flag_set:  # decision 2000: OpenTelemetry's feature_flag.set.id and version
        out["flagSetId"] = decision.flag_set
        out["flagSetVersion"] = decision.flag_set_version
    for key, value in decision.extra_metadata.items():  # the catalog's own; PlanGate's win
        out.setdefault(key, value)
    return out


def _metering_metadata(m: Metering, out: dict[str, bool | int | float | str]) -> None:
    """A metered answer's keys: its usage and limit, top-ups, and the credit pool it draws on."""
    out["unlimited"] = m.unlimited
    out["used"] = number(m.used) or 0
    if m.limit is not None:
        out["limit"] = number(m.limit) or 0
    if m.remaining is not None:
        out["remaining"] = number(m.remaining) or 0
    if m.period_end is not None:
        out["period_end"] = iso(m.period_end) or ""
    if m.held:  # design §17: a client applying the §4 rule adds it to `used`
        out["held"] = number(m.held) or 0
    if m.topups:
        if m.allowance is not None:
            out["allowance"] = number(m.allowance) or 0
        out["topup_remaining"] = number(m.topup_remaining) or 0
    pm = m.pool.decision.metering if m.pool is not None else None
    if m.pool is not None and pm is not None:
        out["pool"] = m.pool.feature
        out["per_unit"] = number(m.pool.per_unit) or 0
        out["pool_used"] = number(pm.used) or 0
        if pm.remaining is not None:
            out["pool_remaining"] = number(pm.remaining) or 0


def _mismatch(feature: Feature, kind: Kind) -> EvaluationError:
    allowed = _ALLOWED[feature.type]
    return EvaluationError(
        ErrorCode.TYPE_MISMATCH,
        f"{feature.key} is a {feature.type.value} feature; resolve it as {allowed}, not {kind.value}",
    )


_FITS: dict[FeatureType, set[Kind]] = {
    ftype: {Kind(k) for k in KINDS_OF[ftype.value]} for ftype in FeatureType
}


# Front ends resolve a decision as every kind to fill typed fields, so mismatches are routine:
# their "resolve it as ..." lists are built once here, not per evaluation.
_ALLOWED: dict[FeatureType, str] = {
    ftype: ", ".join(k.value for k in Kind if k in kinds) for ftype, kinds in _FITS.items()
}


def _fits(ftype: FeatureType, kind: Kind) -> bool:
    return kind in _FITS[ftype]


# Kinds in `Kind` order: front ends filling every typed field walk this instead of trying
# each kind and catching the TYPE_MISMATCH (an exception and a message per miss).
_KINDS_OF: dict[FeatureType, tuple[Kind, ...]] = {
    ftype: tuple(k for k in Kind if k in kinds) for ftype, kinds in _FITS.items()
}


def kinds_of(ftype: FeatureType) -> tuple[Kind, ...]:
    """The kinds a feature of type `ftype` resolves as (design §4 table)."""
    return _KINDS_OF[ftype]


class _CallerDefault:
    """The value of a decision that means "the caller's default" (decision 2000: disabled, or no
    default variant): each surface sends no value, and the provider returns its default."""

    def __repr__(self) -> str:
        return "CALLER_DEFAULT"


CALLER_DEFAULT: Any = _CallerDefault()


def resolve_as(decision: Decision, feature: Feature, kind: Kind) -> Any:
    """The decision's value as `kind`, `CALLER_DEFAULT`, or `EvaluationError(TYPE_MISMATCH)`."""
    if not _fits(feature.type, kind):
        raise _mismatch(feature, kind)
    if decision.caller_default:
        return CALLER_DEFAULT
    ftype = feature.type
    if feature.counted or ftype is FeatureType.RATE:  # design §17: a rate resolves as metered
        m = decision.metering
        if kind is Kind.BOOLEAN:
            return decision.has_access
        if kind is Kind.OBJECT:
            return detail(decision)
        remaining = feature.infinite if m is None or m.remaining is None else m.remaining
        return int64(math.floor(remaining)) if kind is Kind.INTEGER else float(remaining)
    if kind is Kind.OBJECT:
        if ftype is FeatureType.LIST:
            return list(decision.value)
        if ftype is FeatureType.OBJECT:
            return decision.value
        return detail(decision)
    if kind is Kind.FLOAT:
        return float(decision.value)
    return decision.value
