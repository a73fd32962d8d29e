"""Random and garbage requests against every Evaluation, Usage and Admin method (design §6).

Requests are generated from the message descriptors themselves, so every field of every
request is exercised: random and known ids, huge and non-finite numbers, negative
quantities, out-of-range timestamps, random Struct/Value payloads, unknown enum numbers, and
raw random bytes in place of a serialized message. Whatever comes in, the sidecar answers
with a status a client can act on (never UNKNOWN/INTERNAL from an unhandled exception,
apart from undecodable bytes), stays SERVING, and a refused call changes no state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_value
from support.admin import fingerprint
from support.sidecar import Stubs, copy_catalog, in_process

ACCOUNTS = ["acct_fz", "acct_acme", "acct_globex", "user_ann", "user_fz", "acct_missing"]
FEATURES = ["sso", "api-calls", "seats", "monthly-active-users", "exports", "support-tier",
            "integrations", "theme", "execution-concurrency", "legacy-reports", "nope"]  # fmt: skip
KNOWN_BY_FIELD = {
    "account_id": ACCOUNTS,
    "id": ACCOUNTS,
    "member_id": ACCOUNTS,
    "members": ACCOUNTS,
    "page_token": ACCOUNTS,
    "feature": FEATURES,
    "plan": ["free", "pro", "enterprise", "gold"],
    "subscription_id": ["sub_fz", "acct_acme/0", "sub_nope"],
    "grant_id": ["g_fz", "acct_acme/grant/0", "g_nope"],
    "unique_key": ["u1", "u2"],
    "idempotency_key": ["k1", "k2", "k3"],
    "addons": ["extra-seats", "salesforce", "turbo"],
}


def texts_for(name: str) -> st.SearchStrategy[str]:
    """Mostly names the sidecar knows for this field (so calls get past the first check),
    sometimes anything at all."""
    random = st.text(max_size=12) | st.just("x" * 300) | st.just("")
    known = KNOWN_BY_FIELD.get(name)
    return st.one_of(st.sampled_from(known), random) if known else random


texts = texts_for("")
numbers = st.one_of(
    st.integers(0, 20).map(float),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63).map(float),
    st.sampled_from([0.0, 1.0, -1.0, 1e308, 5e-324, 2.0**53 + 1]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
timestamps = st.one_of(
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-(2**63), 2**63 - 1),
        nanos=st.integers(-(2**31), 2**31 - 1),
    ),
    st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-62135596800, 253402300799),  # the valid range: year 1 to 9999
        nanos=st.integers(0, 999_999_999),
    ),
    st.builds(timestamp_pb2.Timestamp, seconds=st.integers(1_600_000_000, 2_000_000_000)),
)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    for key, v in data.items():
        out.fields[key].CopyFrom(_value(v))
    return out


def _value(v: Any) -> struct_pb2.Value:
    if isinstance(v, float) and not math.isfinite(v):
        return struct_pb2.Value(number_value=v)  # what json_format would refuse to build
    if isinstance(v, dict):
        return struct_pb2.Value(struct_value=_struct(v))
    if isinstance(v, list):
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[_value(x) for x in v]))
    out: struct_pb2.Value = to_value(v)
    return out


structs = st.dictionaries(texts, json_values, max_size=4).map(_struct)
value_messages = json_values.map(_value)


def scalar(field: FieldDescriptor, name: str = "") -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return texts_for(name or field.name)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return numbers
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):
        return st.integers(-2, 5) | st.integers(-(2**31), 2**31 - 1)
    if t == FieldDescriptor.TYPE_INT64:
        return st.integers(-(2**63), 2**63 - 1)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return message(field.message_type)
    raise AssertionError(f"no strategy for {field.full_name}")


def set_random(draw: st.DrawFn, msg: Message, field: FieldDescriptor) -> None:
    """Give `field` of `msg` a random value (replacing what it had)."""
    msg.ClearField(field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_f = field.message_type.fields_by_name["key"]
        val_f = field.message_type.fields_by_name["value"]
        entries = draw(st.dictionaries(scalar(key_f, field.name), scalar(val_f), max_size=3))
        getattr(msg, field.name).update(entries)
    elif field.is_repeated:
        items = draw(st.lists(scalar(field), max_size=4))
        target = getattr(msg, field.name)
        if field.message_type is not None:
            for item in items:
                target.add().CopyFrom(item)
        else:
            target.extend(items)
    elif field.message_type is not None:
        getattr(msg, field.name).CopyFrom(draw(scalar(field)))
    else:
        setattr(msg, field.name, draw(scalar(field)))


def message(descriptor: Descriptor) -> st.SearchStrategy[Any]:
    """Any message of this type, with a random subset of its fields set."""
    name = descriptor.full_name
    if name == "google.protobuf.Struct":
        return structs
    if name == "google.protobuf.Value":
        return value_messages
    if name == "google.protobuf.Timestamp":
        return timestamps
    cls = getattr(pb, descriptor.name)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg: Message = cls()
        for field in descriptor.fields:
            if draw(st.booleans()):
                set_random(draw, msg, field)
        return msg

    return build()


LATER = timestamp_pb2.Timestamp(seconds=2_100_000_000)
TEMPLATES: dict[str, Message] = {
    # a valid request per method; mutating one or two of its fields gets past the first checks
    "Evaluate": pb.EvaluateRequest(
        account_id="acct_fz", feature="api-calls", context=_struct({"requested": 2})
    ),
    "EvaluateAll": pb.EvaluateAllRequest(account_id="acct_fz"),
    "Report": pb.ReportRequest(
        reports=[pb.UsageReport(account_id="acct_fz", feature="api-calls", idempotency_key="k1")]
    ),
    "Consume": pb.ConsumeRequest(account_id="acct_fz", feature="api-calls", amount=1),
    "UpsertAccount": pb.UpsertAccountRequest(
        id="acct_fz2", name="Fuzz", attributes=_struct({"a": 1})
    ),
    "GetAccount": pb.GetAccountRequest(id="acct_fz"),
    "ListAccounts": pb.ListAccountsRequest(page_size=2),
    "DeleteAccount": pb.DeleteAccountRequest(id="acct_fz2"),
    "CreateSubscription": pb.CreateSubscriptionRequest(
        account_id="acct_fz", plan="pro", addons={"extra-seats": 1}, members=["user_fz2"]
    ),
    "ChangePlan": pb.ChangePlanRequest(
        account_id="acct_fz", subscription_id="sub_fz", plan="enterprise"
    ),
    "ChangeAddOns": pb.ChangeAddOnsRequest(
        account_id="acct_fz", subscription_id="sub_fz", addons={"extra-seats": 3}
    ),
    "CancelSubscription": pb.CancelSubscriptionRequest(
        account_id="acct_fz", subscription_id="sub_fz", at=LATER
    ),
    "AddMember": pb.MemberRequest(
        account_id="acct_fz", subscription_id="sub_fz", member_id="user_fz3"
    ),
    "RemoveMember": pb.MemberRequest(
        account_id="acct_fz", subscription_id="sub_fz", member_id="user_fz"
    ),
    "SetOverride": pb.SetOverrideRequest(
        account_id="acct_fz", feature="execution-concurrency", value=to_value(7)
    ),
    "ClearOverride": pb.ClearOverrideRequest(account_id="acct_fz", feature="sso"),
    "CreateGrant": pb.CreateGrantRequest(account_id="acct_fz", feature="seats", value=to_value(2)),
    "RevokeGrant": pb.RevokeGrantRequest(account_id="acct_fz", grant_id="g_fz"),
    "ResetUsage": pb.ResetUsageRequest(account_id="acct_fz", feature="api-calls"),
}


def mutated(method: str, descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """The method's valid template with up to two fields given random values."""
    template = TEMPLATES.get(method)
    if template is None:
        return message(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = type(template)()
        msg.CopyFrom(template)
        for field in draw(
            st.lists(st.sampled_from(list(descriptor.fields)), max_size=2, unique=True)
        ):
            set_random(draw, msg, field)
        return msg

    return build()


UNARY = {
    "plangate.v1.Evaluation": ["Evaluate", "EvaluateAll"],
    "plangate.v1.Usage": ["Report", "Consume"],
    "plangate.v1.Admin": [m.name for m in pb.DESCRIPTOR.services_by_name["Admin"].methods],
}
METHODS = [(service, method) for service, methods in UNARY.items() for method in methods]
ACCEPTABLE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def seed(s: Stubs) -> None:
    """An account with a subscription, a member, an add-on, a grant and usage to aim at."""
    s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_fz"))
    s.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id="acct_fz", plan="pro", id="sub_fz", members=["user_fz"],
            addons={"extra-seats": 2},
        )
    )  # fmt: skip
    s.admin.CreateGrant(
        pb.CreateGrantRequest(account_id="acct_fz", feature="seats", value=to_value(3), id="g_fz")
    )
    report = pb.UsageReport(account_id="acct_fz", feature="api-calls", amount=5)
    s.usage.Report(pb.ReportRequest(reports=[report]))


class Target:
    """The sidecar under fire and the fingerprint of its state after the last call."""

    def __init__(self, sidecar: Any, stubs: Stubs) -> None:
        self.sidecar = sidecar
        self.stubs = stubs
        self.state = b""
        self.calls: dict[str, int] = {}

    def reseed(self) -> None:
        """Put the seeded account back if a random call (legitimately) deleted it."""
        if "acct_fz" not in self.sidecar.state.snapshot.accounts:
            seed(self.stubs)
            self.state = fingerprint(self.stubs)

    def call(self, service: str, method: str, request: bytes, typed: bool) -> None:
        self.reseed()
        path = f"/{service}/{method}"
        # raw bytes in, raw bytes out
        rpc = self.stubs.channel.unary_unary(
            path, request_serializer=None, response_deserializer=None
        )
        try:
            rpc(request, timeout=10)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            outcome = code.name
            if typed:
                assert code in ACCEPTABLE, f"{path}: {code.name}: {details}"
                assert details, path
            else:  # undecodable bytes are refused by gRPC itself before our code runs
                assert code in ACCEPTABLE | {grpc.StatusCode.INTERNAL}, f"{path}: {code}: {details}"
            assert fingerprint(self.stubs) == self.state, f"{path} failed but changed state"
        else:
            outcome = "OK"
            self.state = fingerprint(self.stubs)  # it may have changed something: fine
        key = f"{method}:{outcome}"
        self.calls[key] = self.calls.get(key, 0) + 1


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    d = tmp_path_factory.mktemp("fuzz")
    with (
        in_process(copy_catalog(d), d / "state.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        seed(s)
        t = Target(sidecar, s)
        t.state = fingerprint(s)
        yield t


def requests_for(service: str, method: str) -> st.SearchStrategy[Message]:
    descriptor = pb.DESCRIPTOR.services_by_name[service.split(".")[-1]].methods_by_name[method]
    return mutated(method, descriptor.input_type) | message(descriptor.input_type)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m for _, m in METHODS])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_requests_are_answered_and_refusals_change_nothing(
    target: Target, service: str, method: str, data: st.DataObject
) -> None:
    request = data.draw(requests_for(service, method), label="request")
    target.call(service, method, request.SerializeToString(), typed=True)


@settings(max_examples=60, deadline=None)
@given(method=st.sampled_from(METHODS), raw=st.binary(max_size=48))
def test_random_bytes_instead_of_a_message(
    target: Target, method: tuple[str, str], raw: bytes
) -> None:
    target.call(*method, raw, typed=False)


def test_after_the_fuzzing_the_sidecar_is_serving(target: Target) -> None:
    health = health_pb2_grpc.HealthStub(target.stubs.channel)
    for service in ("", "plangate.v1.Evaluation", "plangate.v1.Usage", "plangate.v1.Admin"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    res = target.stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
    )
    assert res.as_boolean is True
    # guard against strategies so random that every call fails the same early check
    table = "\n".join(f"{k} {v}" for k, v in sorted(target.calls.items()))
    succeeded = {key.split(":")[0] for key in target.calls if key.endswith(":OK")}
    assert len(succeeded) >= len(METHODS) * 2 // 3, table
    refused = {key.split(":")[1] for key in target.calls} - {"OK"}
    assert refused >= {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"}, table
