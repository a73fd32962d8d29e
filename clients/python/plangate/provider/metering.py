"""Re-deriving a metered resolution for another usage level or requested amount.

A cached `EvaluateAll` answer was computed for `requested = 1` and the usage the sidecar knew
at that moment. Two things move under it without a round trip: the caller's `requested`
context attribute, and usage `track` has queued but not yet delivered. The access rule is
the sidecar's own (`plangate.protocol.metering`, design §15); applying it here keeps cached
answers exact instead of forcing a sidecar call per check.
"""

from __future__ import annotations

import math

from google.protobuf import struct_pb2
from plangate.protocol.metering import FIXED_DENIALS, Denial, metered_access
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

COUNTED = frozenset({"metered", "credits"})
"""Feature types with usage counters (a credit pool too): their answers move with usage."""


def adjusted(
    res: pb.Resolution,
    *,
    used: float | None,
    requested: float,
    computed_for: float,
    pool_used: float | None = None,
) -> pb.Resolution:
    """`res` as it would read with usage `used` (None = unchanged) and amount `requested`;
    for a credit-priced feature, with its pool at `pool_used` (None = unchanged) too.

    Returns `res` itself when nothing changes, else a modified copy (cached messages are
    shared between callers and never mutated).
    """
    if (
        res.error_code
        or res.feature_type not in COUNTED
        or not res.HasField("metering")
        or res.denial in FIXED_DENIALS
        or (used is None and pool_used is None and requested == computed_for)
    ):
        return res
    m = res.metering
    if used is None:
        used = m.used
    out = pb.Resolution()
    out.CopyFrom(res)
    out.metering.used = used
    _set(out.metadata, "used", used)
    detail = out.as_object.struct_value if out.as_object.HasField("struct_value") else None
    if detail is not None:
        _set(detail, "used", used)
    pooled = bool(m.pool)
    if (m.unlimited or not m.HasField("limit")) and not pooled:
        return out  # unlimited: access and remaining do not depend on usage

    remaining: float | None = None
    access, denied = True, None
    if m.HasField("limit"):
        limit = m.limit
        cap = m.overage_cap if m.HasField("overage_cap") else None
        access, denied = metered_access(limit, used, requested, soft=m.soft_limit, overage_cap=cap)
        remaining = max(0.0, limit - used)
        allowance = m.allowance if m.HasField("allowance") else limit
        out.metering.overage = max(0.0, used - allowance - m.topup_burned)
    if pooled:  # design §5.1: the pool's balance must cover `requested × per_unit` too
        pool_at = m.pool_used if pool_used is None else pool_used
        pool_limit = m.pool_limit if m.HasField("pool_limit") else None
        pool_cap = m.pool_overage_cap if m.HasField("pool_overage_cap") else None
        covered, _ = metered_access(
            pool_limit,
            pool_at,
            requested * m.per_unit,
            soft=m.pool_soft_limit,
            overage_cap=pool_cap,
        )
        if access and not covered:
            access, denied = False, Denial.CREDITS_EXHAUSTED
        if pool_limit is not None:
            units = float(math.floor(max(0.0, pool_limit - pool_at) / m.per_unit + 1e-9))
            remaining = units if remaining is None else min(remaining, units)
        out.metering.pool_used = pool_at
        _set(out.metadata, "pool_used", pool_at)
    denial = denied.value if denied is not None else ""

    out.has_access = access
    out.denial = denial
    if remaining is not None:
        out.metering.remaining = remaining
        out.as_integer = math.floor(remaining)
        out.as_float = remaining
    out.as_boolean = access
    for struct in (out.metadata, detail):
        if struct is None:
            continue
        _set(struct, "has_access", access)
        if remaining is not None:
            _set(struct, "remaining", remaining)
        if denial:
            struct.fields["denial"].string_value = denial
        elif "denial" in struct.fields:
            del struct.fields["denial"]
    if detail is not None:
        _set(detail, "overage", out.metering.overage)
    return out


def _set(struct: struct_pb2.Struct, key: str, value: bool | float) -> None:
    if isinstance(value, bool):
        struct.fields[key].bool_value = value
    else:
        struct.fields[key].number_value = value
