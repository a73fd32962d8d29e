"""Translation between engine/catalog objects and `plangate.v1` messages. No logic of its own."""

from __future__ import annotations

from typing import Any

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.values import from_timestamp, to_struct, to_timestamp, to_value
from ..catalog.model import (
    UNLIMITED,
    Account,
    Entitlement,
    Feature,
    MeteredLimit,
    Subscription,
    thaw,
)
from ..engine import Decision, EvaluationError, Kind, UsageReport, metadata, resolve_as
from ..engine.typed import number
from ..engine.usage import Mode

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


def usage_report(msg: pb.UsageReport | pb.ConsumeRequest) -> UsageReport:
    mode = MODE_OF.get(msg.mode, Mode.DEFAULT) if isinstance(msg, pb.UsageReport) else Mode.ADD
    timestamp = (
        from_timestamp(msg.timestamp)
        if isinstance(msg, pb.UsageReport) and msg.HasField("timestamp")
        else None
    )
    return UsageReport(
        account=msg.account_id,
        feature=msg.feature,
        amount=msg.amount if msg.HasField("amount") else 1.0,
        mode=mode,
        unique_key=msg.unique_key,
        idempotency_key=msg.idempotency_key,
        timestamp=timestamp,
    )


def entitlement_json(value: Entitlement) -> Any:
    """An entitlement in catalog notation (what admin requests send back and forth)."""
    if value is UNLIMITED:
        return "unlimited"
    if isinstance(value, MeteredLimit):
        if value.limit is None:
            return "unlimited"
        if not value.soft:
            return number(value.limit)
        out: dict[str, Any] = {"limit": number(value.limit), "soft": True}
        if value.overage_cap is not None:
            out["overage_cap"] = number(value.overage_cap)
        return out
    return thaw(value)


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
                value=to_value(entitlement_json(o.value)),
                expires_at=to_timestamp(o.expires_at),
            )
            for o in account.overrides.values()
        ],
        grants=[
            pb.Grant(
                id=g.id,
                feature=g.feature,
                value=to_value(entitlement_json(g.value)),
                starts_at=to_timestamp(g.starts_at),
                ends_at=to_timestamp(g.ends_at),
            )
            for g in account.grants
        ],
        declared=account.declared,
    )
