"""One request check (design §15, decision 1330): the same bad evaluation input gets the same
OpenFeature error code on the native API, flagd v2 and OFREP, because one engine function
(`engine/request.py`) decides and the faces only translate.

Each face says the code its own way: the native `Resolution.error_code` (or, for a request
protobuf cannot decode, the status message's `CODE: ` prefix), the flagd status message's
prefix, OFREP's `errorCode`."""

from __future__ import annotations

import json
import math
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from support.sidecar import Stubs, copy_catalog, in_process

FEATURE = "api-calls"  # metered: a boolean (has_access) on every face, and reads `requested`


def nested(depth: int) -> dict[str, Any]:
    """A context attribute `depth` levels deep (the context itself is level 1)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return {"deep": value}


# (name, targeting key, other attributes, the OpenFeature error code or None for an answer)
CASES: list[tuple[str, Any, dict[str, Any], str | None]] = [
    ("NaN", "acct_acme", {"region": math.nan}, "INVALID_CONTEXT"),
    ("Infinity as requested", "acct_acme", {"requested": math.inf}, "INVALID_CONTEXT"),
    ("-Infinity nested", "acct_acme", {"where": {"ratio": [1, -math.inf]}}, "INVALID_CONTEXT"),
    (
        "reserved keys are replaced, not obeyed",
        "acct_initech",
        {"plans": ["enterprise"], "account": {"id": "acct_globex"}, "$flagd": {"flagKey": "x"}},
        None,
    ),
    ("a 1 MB attribute", "acct_acme", {"blob": "x" * 1_000_000}, "INVALID_CONTEXT"),
    ("17 levels deep", "acct_acme", nested(17), "INVALID_CONTEXT"),
    ("200 levels deep", "acct_acme", nested(200), "INVALID_CONTEXT"),
    ("16 levels deep is fine", "acct_acme", nested(16), None),
    ("an empty targeting key", "", {}, "TARGETING_KEY_MISSING"),
    ("a number as targeting key", 42, {}, "TARGETING_KEY_MISSING"),
    ("null as targeting key", None, {}, "TARGETING_KEY_MISSING"),
    ("an object as targeting key", {"id": "acct_acme"}, {}, "TARGETING_KEY_MISSING"),
]


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stubs, int]]:
    tmp = tmp_path_factory.mktemp("request-check")
    with (
        in_process(copy_catalog(tmp), tmp / "s.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
    ):
        yield stubs, sidecar.ofrep_port


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value(value: Any) -> bytes:
    """`google.protobuf.Value` encoded by hand: `Struct.update` itself refuses to build a
    context deeper than protobuf decodes, and the point is to send one."""
    if value is None:
        return _varint(1 << 3) + b"\0"
    if isinstance(value, bool):
        return _varint(4 << 3) + _varint(int(value))
    if isinstance(value, int | float):
        return _varint(2 << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, str):
        return _field(3, value.encode())
    if isinstance(value, dict):
        return _field(5, _struct(value))
    return _field(6, b"".join(_field(1, _value(v)) for v in value))


def _struct(data: dict[str, Any]) -> bytes:
    return b"".join(
        _field(1, _field(1, k.encode()) + _field(2, _value(v))) for k, v in data.items()
    )


def _prefix(exc: grpc.RpcError) -> str:
    assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc
    return (exc.details() or "").split(":", 1)[0]


def _native(stubs: Stubs, key: Any, attrs: dict[str, Any]) -> tuple[str | None, Any]:
    account = key if isinstance(key, str) else ""
    context = attrs if isinstance(key, str) else {**attrs, "targetingKey": key}
    request = pb.EvaluateRequest(account_id=account, feature=FEATURE, type=pb.VALUE_TYPE_BOOLEAN)
    evaluate = stubs.channel.unary_unary(
        "/plangate.v1.Evaluation/Evaluate",
        request_serializer=None,  # the bytes are encoded by hand
        response_deserializer=pb.Resolution.FromString,
    )
    try:
        res = evaluate(request.SerializeToString() + _field(3, _struct(context)), timeout=10)
    except grpc.RpcError as exc:
        return _prefix(exc), None
    if res.error_code:
        return res.error_code, None
    return None, res.as_boolean


def _flagd(channel: grpc.Channel, key: Any, attrs: dict[str, Any]) -> tuple[str | None, Any]:
    request = v2_pb.ResolveBooleanRequest(flag_key=FEATURE).SerializeToString()
    context = _field(2, _struct({"targetingKey": key, **attrs}))
    resolve = channel.unary_unary(
        "/flagd.evaluation.v2.Service/ResolveBoolean",
        request_serializer=None,
        response_deserializer=v2_pb.ResolveBooleanResponse.FromString,
    )
    try:
        res = resolve(request + context, timeout=10)
    except grpc.RpcError as exc:
        return _prefix(exc), None
    return None, res.value


def _ofrep(port: int, key: Any, attrs: dict[str, Any]) -> tuple[str | None, Any]:
    body = json.dumps({"context": {"targetingKey": key, **attrs}}).encode()  # NaN as `NaN`
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags/{FEATURE}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return None, json.loads(resp.read())["value"]
    except urllib.error.HTTPError as exc:
        assert exc.code == 400, exc.code
        code: str = json.loads(exc.read())["errorCode"]
        return code, None


@pytest.mark.parametrize(("name", "key", "attrs", "code"), CASES, ids=[c[0] for c in CASES])
def test_every_face_gives_the_same_answer(
    faces: tuple[Stubs, int], name: str, key: Any, attrs: dict[str, Any], code: str | None
) -> None:
    stubs, ofrep_port = faces
    answers = {
        "native": _native(stubs, key, attrs),
        "flagd": _flagd(stubs.channel, key, attrs),
        "ofrep": _ofrep(ofrep_port, key, attrs),
    }
    assert {face: got[0] for face, got in answers.items()} == dict.fromkeys(answers, code)
    assert len({got[1] for got in answers.values()}) == 1, answers


def test_ofrep_json_a_thousand_levels_deep_is_invalid_context_not_500(
    faces: tuple[Stubs, int],
) -> None:
    body = b'{"context": {"targetingKey": "acct_acme", "deep": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    code, _ = _ofrep_raw(faces[1], body)
    assert code == "INVALID_CONTEXT"


def _ofrep_raw(port: int, body: bytes) -> tuple[str | None, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags/{FEATURE}", data=body
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return None, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        assert exc.code == 400, exc.code
        code: str = json.loads(exc.read())["errorCode"]
        return code, None
