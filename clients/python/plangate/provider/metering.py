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
from plangate.protocol.metering import (
    FIXED_DENIALS,
    MeteredAnswer,
    PoolCover,
    Terms,
    metered_answer,
)
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
    shared between callers and never mutated). The answer is `metered_answer`, the engine's
    own; usage the sidecar has not counted yet burns top-ups as its write will (`burned_at`).
    What is not re-derived: each top-up's own entry in the object detail.
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
    terms = _terms(m)
    if used is None:
        used = m.used
    elif used != m.used:
        terms = terms.burned_at(used)
    out = pb.Resolution()
    out.CopyFrom(res)
    detail = out.as_object.struct_value if out.as_object.HasField("struct_value") else None
    structs = (out.metadata,) if detail is None else (out.metadata, detail)
    out.metering.used = used
    for struct in structs:
        _set(struct, "used", used)
    if (m.unlimited or not m.HasField("limit")) and not m.pool:
        return out  # unlimited: access and remaining do not depend on usage
    cover = _pool(out, structs, pool_used, requested) if m.pool else None
    answer = metered_answer(terms, used, requested, held=m.held, pool=cover)
    _answer(out, structs, terms, answer)
    return out


def _terms(m: pb.Metering) -> Terms:
    """The limit side of a wire `Metering` (its allowance is only sent with balances)."""
    limit = m.limit if m.HasField("limit") else None
    return Terms(
        m.allowance if m.HasField("allowance") else limit,
        m.soft_limit,
        m.overage_cap if m.HasField("overage_cap") else None,
        m.topup_burned,
        m.topup_remaining,
    )


def _pool(
    out: pb.Resolution,
    structs: tuple[struct_pb2.Struct, ...],
    pool_used: float | None,
    requested: float,
) -> PoolCover:
    """The credit pool's answer for `requested x per_unit` credits at `pool_used`, written
    into `out` (design §5.1: the pool's balance must cover the request too)."""
    m = out.metering
    pool_at = m.pool_used if pool_used is None else pool_used
    terms = Terms(
        m.pool_limit if m.HasField("pool_limit") else None,
        m.pool_soft_limit,
        m.pool_overage_cap if m.HasField("pool_overage_cap") else None,
    )
    answer = metered_answer(terms, pool_at, requested * m.per_unit)
    m.pool_used = pool_at
    _set(out.metadata, "pool_used", pool_at)
    if answer.remaining is not None and "pool_remaining" in out.metadata.fields:
        _set(out.metadata, "pool_remaining", answer.remaining)
    if len(structs) > 1 and "pool" in structs[1].fields:
        pool = structs[1].fields["pool"].struct_value
        _set(pool, "used", pool_at)
        if answer.remaining is not None:
            _set(pool, "remaining", answer.remaining)
        _set(pool, "has_access", answer.has_access)
    return PoolCover(m.per_unit, answer.has_access, answer.remaining)


def _answer(
    out: pb.Resolution,
    structs: tuple[struct_pb2.Struct, ...],
    terms: Terms,
    answer: MeteredAnswer,
) -> None:
    """Write `answer` (and the top-ups' burn under `terms`) over every place `out` shows it."""
    access, remaining = answer.has_access, answer.remaining
    denial = answer.denial.value if answer.denial is not None else ""
    m = out.metering
    m.overage = answer.overage
    m.topup_burned, m.topup_remaining = terms.topup_burned, terms.topup_remaining
    out.has_access = access
    out.denial = denial
    if remaining is not None:
        m.remaining = remaining
        out.as_integer = math.floor(remaining)
        out.as_float = remaining
    out.as_boolean = access
    for struct in structs:
        _set(struct, "has_access", access)
        if remaining is not None:
            _set(struct, "remaining", remaining)
        if denial:
            struct.fields["denial"].string_value = denial
        elif "denial" in struct.fields:
            del struct.fields["denial"]
        for key in ("topup_burned", "topup_remaining"):
            if key in struct.fields:
                _set(struct, key, getattr(terms, key))
    if len(structs) > 1:
        _set(structs[1], "overage", answer.overage)


def _set(struct: struct_pb2.Struct, key: str, value: bool | float) -> None:
    if isinstance(value, bool):
        struct.fields[key].bool_value = value
    else:
        struct.fields[key].number_value = value
