"""Translation between engine/catalog objects and `plangate.v1` messages. No logic of its own."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import message, struct_pb2, timestamp_pb2

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
    EMPTY,
    Account,
    Feature,
    Grant,
    Subscription,
    TopUp,
    thaw,
)
from ..engine import (
    CALLER_DEFAULT,
    Decision,
    EvaluationError,
    Kind,
    UsageReport,
    kinds_of,
    metadata,
    resolve_as,
)
from ..engine.balances import TopUpState
from ..engine.decision import Metering
from ..engine.events import Event
from ..engine.holds import Hold, HoldState
from ..engine.request import check_context
from ..engine.typed import int64
from ..engine.usage import Mode
from ..runtime.live.events import AccountChanged
from ..runtime.serve.events import IngestResult
from .errors import BadRequest, bounded

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times a request may carry: period arithmetic and stored keys need a few years of headroom."""

_KIND_FIELD = {
    Kind.BOOLEAN: "as_boolean",
    Kind.INTEGER: "as_integer",
    Kind.FLOAT: "as_float",
    Kind.STRING: "as_string",
}


def resolution(decision: Decision, feature: Feature, kind: Kind | None = None) -> pb.Resolution:
    """A decision with its typed values filled in: every kind that fits the feature, or only
    `kind` when the caller asked for one (and has checked that it fits).

    `Evaluate` names the type it wants, so computing and encoding the others (the object
    detail above all) would be wasted work on the hottest RPC; `EvaluateAll` is cached by the
    provider for any type, so it passes no `kind` and gets them all.
    """
    out = pb.Resolution(
        feature=decision.feature,
        feature_type=decision.type.value,
        value=None if decision.caller_default else plain_value(decision.value),
        variant=decision.variant,
        reason=decision.reason.value,
        has_access=decision.has_access,
        denial=decision.denial.value if decision.denial else "",
        unlimited=decision.unlimited,
        metadata=scalar_struct(metadata(decision)),
    )
    out.volatile = feature.volatile  # design §4.1: never cached
    targeting = feature.targeting
    if targeting is not None:
        out.context_dependent = targeting.reads_context  # design §21
    if feature.credits is not None and feature.credits.by is not None:
        out.context_dependent = True  # design §16: priced at the context's `by` rate
    if decision.valid_until is not None:
        out.valid_until.seconds, out.valid_until.nanos = _timestamp(decision.valid_until)
    m = decision.metering
    if m is not None:
        metering = out.metering
        metering.SetInParent()
        if m.limit is not None:
            metering.limit = m.limit
        metering.used = m.used
        if m.remaining is not None:
            metering.remaining = m.remaining
        metering.unlimited = m.unlimited
        metering.soft_limit = m.soft_limit
        if m.overage_cap is not None:
            metering.overage_cap = m.overage_cap
        metering.overage = m.overage
        metering.held = m.held
        metering.period_start.seconds, metering.period_start.nanos = _timestamp(m.period_start)
        if m.period_end is not None:
            metering.period_end.seconds, metering.period_end.nanos = _timestamp(m.period_end)
        if m.topups or m.pool is not None:
            _balances(metering, m)
    if kind is not None:
        _set_typed(out, kind, resolve_as(decision, feature, kind))
        return out
    for each in kinds_of(feature.type):
        _set_typed(out, each, resolve_as(decision, feature, each))
    return out


def _set_typed(out: pb.Resolution, kind: Kind, value: Any) -> None:
    if value is CALLER_DEFAULT:
        return  # decision 2000: no value; the provider answers the caller's default
    if kind is Kind.OBJECT:
        out.as_object.CopyFrom(plain_value(value))
    elif kind is Kind.INTEGER:
        out.as_integer = int64(value)  # an integer feature's value may be beyond int64 too
    else:
        setattr(out, _KIND_FIELD[kind], value)


def plain_value(value: Any) -> struct_pb2.Value:
    """`to_value` without `json_format` or `Struct.update`, which walk descriptors in Python
    per item and were a visible share of an `Evaluate` call."""
    out = struct_pb2.Value()
    _fill(out, value)
    return out


def _fill(target: struct_pb2.Value, value: Any) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif value is True or value is False:
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        struct = target.struct_value
        struct.SetInParent()  # an empty {} must still be a struct, not "no value"
        fields = struct.fields
        for key, item in value.items():
            _fill(fields[key], item)
    elif isinstance(value, list | tuple):
        items = target.list_value
        items.SetInParent()
        for item in value:
            _fill(items.values.add(), item)
    else:  # not JSON-shaped: let `to_value` report it as it always has
        target.CopyFrom(to_value(value))


def scalar_struct(data: Mapping[str, bool | int | float | str]) -> struct_pb2.Struct:
    """A Struct of scalars (flag metadata), set field by field instead of `Struct.update`."""
    out = struct_pb2.Struct()
    fields = out.fields
    for key, value in data.items():
        if value is True or value is False:
            fields[key].bool_value = value
        elif isinstance(value, str):
            fields[key].string_value = value
        else:
            fields[key].number_value = value
    return out


def timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    """`to_timestamp` through a cache of (seconds, nanos): `Timestamp.FromDatetime` is
    pure-Python arithmetic, and period boundaries repeat across calls (every account on a
    monthly reset shares them)."""
    seconds, nanos = _timestamp(at)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@functools.lru_cache(maxsize=4096)
def _timestamp(at: datetime) -> tuple[int, int]:
    ts = to_timestamp(at)
    assert ts is not None
    return ts.seconds, ts.nanos


def account_changed(event: AccountChanged) -> pb.AccountChanged:
    """The Watch message of an account change; `all_accounts` (a calendar period ended) stands
    for every account, so a million ids are never listed."""
    return pb.AccountChanged(
        account_ids=list(event.account_ids), cause=event.cause, all_accounts=event.all_accounts
    )


def error_resolution(key: str, error: EvaluationError) -> pb.Resolution:
    return pb.Resolution(
        feature=key,
        reason="ERROR",
        error_code=error.code.value,
        error_message=bounded(error.message),
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
    """An evaluation context, checked by the engine's one request rule (`check_context`)."""
    if not data.fields:
        return {}  # most calls send none; `MessageToDict` costs microseconds even then
    context = plain_struct(data)
    check_context(context)
    return context


def plain_struct(data: struct_pb2.Struct) -> dict[str, Any]:
    """A request's Struct as Python values, NaN and infinities included: whether they are
    acceptable is the engine's rule (`engine/request.py`), not the decoder's."""
    return {key: _plain(value) for key, value in data.fields.items()}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "struct_value":
        return plain_struct(value.struct_value)
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


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


def usage_report(msg: pb.UsageReport | pb.ConsumeRequest, index: int | None = None) -> UsageReport:
    """The engine's report; `index` is the report's place in a batch, named in errors."""
    mode, at = Mode.ADD, None
    if isinstance(msg, pb.UsageReport):
        mode = MODE_OF.get(msg.mode, Mode.DEFAULT)
        if msg.HasField("timestamp"):
            at = time_arg(msg, "timestamp", "" if index is None else f"reports[{index}].")
    return UsageReport(
        account=msg.account_id,
        feature=msg.feature,
        amount=msg.amount if msg.HasField("amount") else 1.0,
        mode=mode,
        unique_key=msg.unique_key,
        idempotency_key=msg.idempotency_key,
        timestamp=at,
        dimensions=dict(msg.dimensions) if msg.dimensions else EMPTY,
    )


def event_of(msg: pb.Event) -> Event:
    """The engine's event; a `time` or `data` it cannot carry becomes the event's `problem`
    (that event is REJECTED, the others of its batch are counted)."""
    problem, at, data = "", None, None
    try:
        at = time_arg(msg, "time")
        data = value_arg(struct_pb2.Value(struct_value=msg.data), "data")
    except BadRequest as exc:
        problem = str(exc)
    return Event(
        specversion=msg.specversion,
        id=msg.id,
        source=msg.source,
        type=msg.type,
        subject=msg.subject,
        time=at,
        data=data,
        problem=problem,
    )


def ingest_result(result: IngestResult) -> pb.IngestResult:
    return pb.IngestResult(
        status=result.status.value,
        features=[pb.IngestFeature(feature=f, usage=u) for f, u in result.features],
        message=result.message,
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
        phases=[
            pb.Phase(starts_at=to_timestamp(p.starts_at), plan=p.plan, addons=dict(p.addons))
            for p in sub.phases
        ],
    )


def grant_pb(grant: Grant) -> pb.Grant:
    return pb.Grant(
        id=grant.id,
        feature=grant.feature,
        value=to_value(notation(grant.value)),
        starts_at=to_timestamp(grant.starts_at),
        ends_at=to_timestamp(grant.ends_at),
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
        grants=[grant_pb(g) for g in account.grants],
        declared=account.declared,
        topups=[topup_pb(t) for t in account.topups],
    )


def _balances(out: pb.Metering, m: Metering) -> None:
    """The design §5.1 fields: top-ups and the credit pool (the provider re-derives from them)."""
    if m.allowance is not None:
        out.allowance = m.allowance
    out.topup_burned = m.topup_burned
    out.topup_remaining = m.topup_remaining
    share = m.pool
    pm = share.decision.metering if share is not None else None
    if share is not None and pm is not None:
        out.pool = share.feature
        out.per_unit = share.per_unit
        if pm.limit is not None:
            out.pool_limit = pm.limit
        out.pool_used = pm.used
        out.pool_soft_limit = pm.soft_limit
        if pm.overage_cap is not None:
            out.pool_overage_cap = pm.overage_cap


def topup_pb(topup: TopUp, state: TopUpState | None = None) -> pb.TopUp:
    """A top-up as recorded, with its balance when `state` (an evaluation's view) is given."""
    out = pb.TopUp(
        id=topup.id,
        feature=topup.feature,
        amount=topup.amount,
        priority=topup.priority,
        effective_at=to_timestamp(topup.effective_at),
        expires_at=to_timestamp(topup.expires_at),
        voided_at=to_timestamp(topup.voided_at),
    )
    if state is not None:
        out.burned = state.burned
        out.remaining = state.remaining
        out.active = state.active
        out.burned_this_period = state.burned_now
    return out


def hold_pb(h: Hold) -> pb.Hold:
    out = pb.Hold(
        hold_id=h.id,
        account_id=h.account,
        feature=h.feature,
        amount=h.amount,
        created_at=timestamp(h.created_at),
        expires_at=timestamp(h.expires_at),
        state=h.state.value,
    )
    if h.ended_at is not None:
        out.ended_at.CopyFrom(timestamp(h.ended_at))
    if h.state is HoldState.SETTLED and h.settled is not None:
        out.settled_amount = h.settled
    return out
