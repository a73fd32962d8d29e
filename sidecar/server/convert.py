"""Translation between engine/catalog objects and `plangate.v1` messages. No logic of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import message, struct_pb2

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.values import (
    from_struct,
    from_timestamp,
    from_value,
    to_struct,
    to_timestamp,
    to_value,
)
from ..catalog.features import notation
from ..catalog.model import (
    Account,
    Feature,
    Subscription,
    thaw,
)
from ..engine import (
    Decision,
    ErrorCode,
    EvaluationError,
    Kind,
    UsageReport,
    metadata,
    resolve_as,
)
from ..engine.usage import Mode
from .errors import BadRequest

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times a request may carry: period arithmetic and stored keys need a few years of headroom."""

_KIND_FIELD = {
    Kind.BOOLEAN: "as_boolean",
    Kind.INTEGER: "as_integer",
    Kind.FLOAT: "as_float",
    Kind.STRING: "as_string",
}


def resolution(decision: Decision, feature: Feature) -> pb.Resolution:
    """A decision with every typed value that fits the feature filled in."""
    out = pb.Resolution(
        feature=decision.feature,
        feature_type=decision.type.value,
        value=to_value(decision.value),
        variant=decision.variant,
        reason=decision.reason.value,
        has_access=decision.has_access,
        denial=decision.denial.value if decision.denial else "",
        unlimited=decision.unlimited,
        metadata=to_struct(metadata(decision)),
    )
    m = decision.metering
    if m is not None:
        out.metering.CopyFrom(
            pb.Metering(
                limit=m.limit,
                used=m.used,
                remaining=m.remaining,
                unlimited=m.unlimited,
                soft_limit=m.soft_limit,
                overage_cap=m.overage_cap,
                overage=m.overage,
                period_start=to_timestamp(m.period_start),
                period_end=to_timestamp(m.period_end),
            )
        )
    for kind in Kind:
        try:
            value = resolve_as(decision, feature, kind)
        except EvaluationError:
            continue
        if kind is Kind.OBJECT:
            out.as_object.CopyFrom(to_value(value))
        elif kind is Kind.INTEGER:
            # a limit beyond int64 (a catalog or grant may say 1e300) is as good as the maximum
            out.as_integer = max(INT64_MIN, min(INT64_MAX, value))
        else:
            setattr(out, _KIND_FIELD[kind], value)
    return out


def error_resolution(key: str, error: EvaluationError) -> pb.Resolution:
    return pb.Resolution(
        feature=key, reason="ERROR", error_code=error.code.value, error_message=error.message
    )


KIND_OF = {
    pb.VALUE_TYPE_BOOLEAN: Kind.BOOLEAN,
    pb.VALUE_TYPE_INTEGER: Kind.INTEGER,
    pb.VALUE_TYPE_FLOAT: Kind.FLOAT,
    pb.VALUE_TYPE_STRING: Kind.STRING,
    pb.VALUE_TYPE_OBJECT: Kind.OBJECT,
}

MODE_OF = {
    pb.USAGE_MODE_UNSPECIFIED: Mode.DEFAULT,
    pb.USAGE_MODE_ADD: Mode.ADD,
    pb.USAGE_MODE_SET: Mode.SET,
}


# Request fields that protobuf accepts but Python values cannot hold: refused as bad input.


def struct_arg(data: struct_pb2.Struct, field: str) -> dict[str, Any]:
    try:
        return from_struct(data)
    except ValueError as exc:  # NaN or an infinity: JSON has no such number
        raise BadRequest(f"{field}: numbers must be finite ({exc})") from exc


def context_arg(data: struct_pb2.Struct) -> dict[str, Any]:
    """An evaluation context; one JSON cannot hold is OpenFeature's INVALID_CONTEXT."""
    try:
        return from_struct(data)
    except ValueError as exc:
        raise EvaluationError(
            ErrorCode.INVALID_CONTEXT, f"context: numbers must be finite ({exc})"
        ) from exc


def value_arg(data: struct_pb2.Value, field: str) -> Any:
    try:
        return from_value(data)
    except ValueError as exc:
        raise BadRequest(f"{field}: numbers must be finite ({exc})") from exc


def time_arg(msg: message.Message, field: str, where: str = "") -> datetime | None:
    """The timestamp `field` of `msg`, None when unset; `where` prefixes the field in errors."""
    if not msg.HasField(field):
        return None
    try:
        at = from_timestamp(getattr(msg, field))
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{where}{field} is not a valid time: {exc}") from exc
    if not EARLIEST <= at < LATEST:
        raise BadRequest(f"{where}{field} must be between 1900 and 9000, got {at.isoformat()}")
    return at


def usage_report(msg: pb.UsageReport | pb.ConsumeRequest, where: str = "") -> UsageReport:
    mode = MODE_OF.get(msg.mode, Mode.DEFAULT) if isinstance(msg, pb.UsageReport) else Mode.ADD
    timestamp = time_arg(msg, "timestamp", where) if isinstance(msg, pb.UsageReport) else None
    return UsageReport(
        account=msg.account_id,
        feature=msg.feature,
        amount=msg.amount if msg.HasField("amount") else 1.0,
        mode=mode,
        unique_key=msg.unique_key,
        idempotency_key=msg.idempotency_key,
        timestamp=timestamp,
    )


def subscription_pb(sub: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=sub.id,
        owner=sub.owner,
        plan=sub.plan,
        addons=dict(sub.addons),
        starts_at=to_timestamp(sub.starts_at),
        ends_at=to_timestamp(sub.ends_at),
        trial_ends_at=to_timestamp(sub.trial_ends_at),
        members=list(sub.members),
    )


def account_pb(account: Account) -> pb.Account:
    return pb.Account(
        id=account.id,
        name=account.name,
        attributes=to_struct(thaw(account.attributes)),
        subscriptions=[subscription_pb(s) for s in account.subscriptions],
        overrides=[
            pb.Override(
                feature=o.feature,
                value=to_value(notation(o.value)),
                expires_at=to_timestamp(o.expires_at),
            )
            for o in account.overrides.values()
        ],
        grants=[
            pb.Grant(
                id=g.id,
                feature=g.feature,
                value=to_value(notation(g.value)),
                starts_at=to_timestamp(g.starts_at),
                ends_at=to_timestamp(g.ends_at),
            )
            for g in account.grants
        ],
        declared=account.declared,
    )
