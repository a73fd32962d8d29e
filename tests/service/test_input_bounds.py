"""Inputs with a cost bound (docs/operating.md "Input bounds"): names, attributes, members and
ids larger than the bound are refused with INVALID_ARGUMENT before anything is stored, and
error messages never echo a whole input back (a 20 kB id used to come back as
RESOURCE_EXHAUSTED: the message outgrew the client's metadata limit)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import Stubs, copy_catalog, in_process

BIG = "x" * 3_000_000
LONG = "y" * 20_000


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stubs, Any]]:
    tmp = tmp_path_factory.mktemp("bounds")
    with (
        in_process(copy_catalog(tmp), tmp / "s.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_b"), timeout=10)
        yield s, sidecar


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


CALLS: dict[str, Callable[[Stubs], Any]] = {
    "a 3 MB name": lambda s: s.admin.UpsertAccount(
        pb.UpsertAccountRequest(id="acct_b", name=BIG), timeout=30
    ),
    "a 3 MB attribute value": lambda s: s.admin.UpsertAccount(
        pb.UpsertAccountRequest(id="acct_b", attributes=_struct({"notes": BIG})), timeout=30
    ),
    "a 3 MB grant id": lambda s: s.admin.CreateGrant(
        pb.CreateGrantRequest(
            account_id="acct_b", feature="sso", value=struct_pb2.Value(bool_value=True), id=BIG
        ),
        timeout=30,
    ),
    "10,000 members": lambda s: s.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id="acct_b", plan="pro", members=[f"m{i}" for i in range(10_000)]
        ),
        timeout=30,
    ),
}


@pytest.mark.parametrize("what", list(CALLS))
def test_oversized_admin_input_is_refused_and_changes_nothing(
    stubs: tuple[Stubs, Any], what: str
) -> None:
    s, _ = stubs
    with pytest.raises(grpc.RpcError) as info:
        CALLS[what](s)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "at most" in (info.value.details() or "")
    account = s.admin.GetAccount(pb.GetAccountRequest(id="acct_b"), timeout=10)
    assert account.name == "" and not account.attributes.fields
    assert not account.subscriptions and not account.grants


def test_a_long_id_is_not_echoed_back_whole(stubs: tuple[Stubs, Any]) -> None:
    s, sidecar = stubs
    with pytest.raises(grpc.RpcError) as info:
        s.admin.GetAccount(pb.GetAccountRequest(id=LONG), timeout=10)
    assert info.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(info.value.details() or "") < 1200
    flagd = v2_grpc.ServiceStub(s.channel)
    with pytest.raises(grpc.RpcError) as info:
        flagd.ResolveBoolean(
            v2_pb.ResolveBooleanRequest(flag_key=LONG, context=_struct({"targetingKey": "a"})),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(info.value.details() or "") < 1200
    native = s.evaluation.Evaluate(pb.EvaluateRequest(account_id="a", feature=LONG), timeout=10)
    assert native.error_code == "FLAG_NOT_FOUND" and len(native.error_message) < 1200
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags/{LONG[:6000]}",
        data=json.dumps({"context": {"targetingKey": "a"}}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(request, timeout=10)
    assert http.value.code == 404
    assert len(json.loads(http.value.read())["errorDetails"]) < 1200
