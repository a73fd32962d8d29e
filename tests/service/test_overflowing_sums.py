"""Finite amounts whose sum overflows (decision 1301).

An admin edit that would make an account's balance, limit or any sum the evaluation makes
go past the largest float is refused with INVALID_ARGUMENT, naming the sum, and changes
nothing. An account stored with such a sum before this check existed is still answered on
every face — Evaluate, EvaluateAll, Consume, OFREP (one flag and bulk), flagd ResolveAll
(v1 and v2) and the console — with the ceiling saturated at the largest float.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from plangate.sidecar.store.sqlite import SqliteStore
from support.sidecar import Stubs, copy_catalog, in_process

HUGE = 1e308
LARGEST = sys.float_info.max
OLD = "acct_stored_overflow"
REPAIRED = "acct_stored_overflow_repaired"


def _old_record(account: str = OLD) -> dict[str, Any]:
    """What an older version let two AddTopUp calls of 1e308 store, on a plain metered
    feature and on the credit pool that two features draw from."""
    topups = [
        {"id": f"{feature}-{n}", "feature": feature, "amount": HUGE, "priority": 10}
        for feature in ("api-calls", "ai-credits")
        for n in (1, 2)
    ]
    return {
        "id": account,
        "name": "stored by an older version",
        "attributes": {},
        "subscriptions": [
            {
                "id": f"sub-{account}",
                "plan": "free",
                "addons": {},
                "starts_at": "2026-01-01T00:00:00Z",
            }
        ],
        "overrides": {},
        "grants": [],
        "topups": topups,
    }


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("overflow")
    store = SqliteStore(d / "state.db")
    store.save_record(_old_record())
    store.save_record(_old_record(REPAIRED))
    store.close()
    with in_process(copy_catalog(d), d / "state.db") as sc:
        yield sc


@pytest.fixture(scope="module")
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s


def _account(stubs: Stubs, account: str) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
    request = pb.CreateSubscriptionRequest(account_id=account, plan="free")
    stubs.admin.CreateSubscription(request, timeout=5)


def _refused(call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return str(caught.value.details())


def _audit_count(stubs: Stubs, account: str) -> int:
    request = pb.ListAuditLogRequest(account_id=account, page_size=1000)
    return len(stubs.admin.ListAuditLog(request, timeout=5).entries)


def test_a_top_up_whose_sum_overflows_is_refused_and_changes_nothing(stubs: Stubs) -> None:
    _account(stubs, "acct_sum")
    add = pb.AddTopUpRequest(account_id="acct_sum", feature="api-calls", amount=HUGE)
    stubs.admin.AddTopUp(add, timeout=5)  # one is fine: 1000 + 1e308 is a number
    before = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_sum"), timeout=5)
    entries = _audit_count(stubs, "acct_sum")
    message = _refused(stubs.admin.AddTopUp, add)
    assert "api-calls" in message and "add up to more than" in message, message
    assert stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_sum"), timeout=5) == before
    assert _audit_count(stubs, "acct_sum") == entries
    reply = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_sum", feature="api-calls"), timeout=5
    )
    assert reply.metering.limit == 1000 + HUGE


def test_an_allowance_that_overflows_with_the_top_ups_is_refused(stubs: Stubs) -> None:
    _account(stubs, "acct_limit")
    add = pb.AddTopUpRequest(account_id="acct_limit", feature="api-calls", amount=HUGE)
    stubs.admin.AddTopUp(add, timeout=5)
    entries = _audit_count(stubs, "acct_limit")
    value = struct_pb2.Value(number_value=HUGE)
    override = pb.SetOverrideRequest(account_id="acct_limit", feature="api-calls", value=value)
    assert "add up to more than" in _refused(stubs.admin.SetOverride, override)
    grant = pb.CreateGrantRequest(account_id="acct_limit", feature="api-calls", value=value)
    assert "add up to more than" in _refused(stubs.admin.CreateGrant, grant)
    account = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_limit"), timeout=5)
    assert not account.overrides and not account.grants
    assert _audit_count(stubs, "acct_limit") == entries


# -- an overflowing sum stored by an older version -------------------------------------------


def test_native_evaluations_saturate_a_stored_overflowing_sum(stubs: Stubs) -> None:
    for feature in ("api-calls", "ai-credits", "ai-completions"):
        for kind in ("integer", "float", "boolean", "object"):
            request = pb.EvaluateRequest(
                account_id=OLD, feature=feature, type=getattr(pb, f"VALUE_TYPE_{kind.upper()}")
            )
            reply = stubs.evaluation.Evaluate(request, timeout=5)
            assert reply.has_access, (feature, kind)
    reply = stubs.evaluation.Evaluate(pb.EvaluateRequest(account_id=OLD, feature="api-calls"))
    assert reply.metering.limit == LARGEST
    assert reply.metering.remaining == LARGEST
    every = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=OLD), timeout=5)
    assert {"api-calls", "ai-credits", "ai-completions"} <= set(every.resolutions)
    consume = pb.ConsumeRequest(account_id=OLD, feature="ai-completions", amount=5)
    assert stubs.usage.Consume(consume, timeout=5).granted


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_ofrep_answers_a_stored_overflowing_sum(sidecar: Any) -> None:
    base = f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags"
    context = {"context": {"targetingKey": OLD}}
    status, one = _post(f"{base}/api-calls", context)
    assert status == 200 and one["value"] is True, one
    status, bulk = _post(base, context)
    assert status == 200
    assert {f["key"] for f in bulk["flags"]} >= {"api-calls", "ai-credits", "ai-completions"}


def test_the_console_page_of_a_stored_overflowing_sum_renders(sidecar: Any) -> None:
    url = f"http://127.0.0.1:{sidecar.management_port}/console/accounts/{OLD}"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert OLD in response.read().decode()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_flagd_resolve_all_answers_a_stored_overflowing_sum(sidecar: Any, version: str) -> None:
    pb_mod, grpc_mod = {"v1": (v1_pb, v1_grpc), "v2": (v2_pb, v2_grpc)}[version]
    context = struct_pb2.Struct()
    context.update({"targetingKey": OLD})
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        stub: Any = grpc_mod.ServiceStub(channel)
        reply = stub.ResolveAll(pb_mod.ResolveAllRequest(context=context), timeout=5)
        assert {"api-calls", "ai-credits"} <= set(reply.flags)
        one = stub.ResolveInt(pb_mod.ResolveIntRequest(flag_key="api-calls", context=context))
        assert one.value == 2**63 - 1  # the largest int64: as good as the saturated ceiling


def test_an_account_stored_with_an_overflowing_sum_can_be_edited_and_repaired(
    stubs: Stubs,
) -> None:
    rename = pb.UpsertAccountRequest(id=REPAIRED, name="still editable")
    assert stubs.admin.UpsertAccount(rename, timeout=5).name == "still editable"
    void = pb.VoidTopUpRequest(account_id=REPAIRED, topup_id="api-calls-2")
    stubs.admin.VoidTopUp(void, timeout=5)
    request = pb.EvaluateRequest(account_id=REPAIRED, feature="api-calls")
    assert stubs.evaluation.Evaluate(request, timeout=5).metering.limit == 1000 + HUGE
    again = pb.AddTopUpRequest(account_id=REPAIRED, feature="api-calls", amount=HUGE)
    assert "add up to more than" in _refused(stubs.admin.AddTopUp, again)


def test_a_restarted_sidecar_still_answers_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.save_record(_old_record())
    store.close()
    catalog = copy_catalog(tmp_path)
    for _ in range(2):
        with in_process(catalog, tmp_path / "state.db") as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
            reply = s.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=OLD), timeout=5)
            assert reply.resolutions
