"""Balances (design §5.1) through a real sidecar: Admin top-up RPCs and their errors, the CLI,
Consume on a credit pool, and the balance on every surface (native detail and metadata,
flagd, OFREP, the OpenFeature provider's cache and `track` overlay)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.provider import provider
from support.sidecar import Stubs, in_process

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: Credits, type: credits, reset: monthly, anchor: calendar}
      - {name: Chat, type: metered, credits: {pool: credits, per_unit: 2}}
      - {name: Images, type: metered, credits: {pool: credits, per_unit: 5}}
      - {name: Calls, type: metered, reset: monthly, anchor: calendar}
      - {name: Seats, type: metered, aggregation: gauge}
    plans:
      - name: Basic
        entitlements: {credits: 20, chat: unlimited, images: unlimited, calls: 10, seats: 3}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("balances")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield sc


@pytest.fixture(scope="module")
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s


def account(stubs: Stubs, account_id: str) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="basic"), timeout=5
    )
    return account_id


def consume(stubs: Stubs, account_id: str, feature: str, amount: float) -> pb.ConsumeResponse:
    return stubs.usage.Consume(  # type: ignore[no-any-return]
        pb.ConsumeRequest(account_id=account_id, feature=feature, amount=amount), timeout=5
    )


def resolve(stubs: Stubs, account_id: str, feature: str) -> pb.Resolution:
    return stubs.evaluation.Evaluate(  # type: ignore[no-any-return]
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )


def test_topups_add_list_void_over_grpc(stubs: Stubs) -> None:
    a = account(stubs, "acct_rpc")
    first = stubs.admin.AddTopUp(
        pb.AddTopUpRequest(account_id=a, feature="calls", amount=5, priority=1, id="p1"),
        timeout=5,
    )
    assert (first.id, first.amount, first.priority, first.remaining) == ("p1", 5, 1, 5)
    stubs.admin.AddTopUp(pb.AddTopUpRequest(account_id=a, feature="calls", amount=4), timeout=5)
    assert consume(stubs, a, "calls", 12).granted  # 10 allowance + 2 from p1
    listed = stubs.admin.ListTopUps(pb.ListTopUpsRequest(account_id=a), timeout=5).topups
    assert [(t.id == "p1", t.burned, t.remaining) for t in listed] == [
        (True, 2.0, 3.0),
        (False, 0.0, 4.0),
    ]
    voided = stubs.admin.VoidTopUp(pb.VoidTopUpRequest(account_id=a, topup_id="p1"), timeout=5)
    assert voided.HasField("voided_at") and voided.remaining == 0 and voided.burned == 2
    res = resolve(stubs, a, "calls")
    assert (res.metering.limit, res.metering.allowance, res.metering.topup_remaining) == (
        16.0,
        10.0,
        4.0,
    )
    account_pb = stubs.admin.GetAccount(pb.GetAccountRequest(id=a), timeout=5)
    assert [t.id for t in account_pb.topups] == ["p1", listed[1].id]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.AddTopUpRequest(feature="calls", amount=5), "account_id is required"),
        (pb.AddTopUpRequest(account_id="acct_bad", feature="calls", amount=0), "positive"),
        (pb.AddTopUpRequest(account_id="acct_bad", feature="seats", amount=5), "top-ups apply"),
        (pb.AddTopUpRequest(account_id="acct_bad", feature="nope", amount=5), "unknown feature"),
    ],
)
def test_a_bad_topup_is_invalid_argument_and_changes_nothing(
    stubs: Stubs, request_: pb.AddTopUpRequest, message: str
) -> None:
    account(stubs, "acct_bad")  # creating it again only adds a subscription
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.AddTopUp(request_, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    listed = stubs.admin.ListTopUps(pb.ListTopUpsRequest(account_id="acct_bad"), timeout=5)
    assert list(listed.topups) == []


def test_void_of_an_unknown_topup_is_not_found(stubs: Stubs) -> None:
    a = account(stubs, "acct_void")
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.VoidTopUp(pb.VoidTopUpRequest(account_id=a, topup_id="nope"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_consume_on_a_pool_and_every_surface_shows_it(sidecar: Any, stubs: Stubs) -> None:
    a = account(stubs, "acct_pool")
    stubs.admin.AddTopUp(
        pb.AddTopUpRequest(account_id=a, feature="credits", amount=10, id="pack"), timeout=5
    )
    assert consume(stubs, a, "images", 5).granted  # 25 credits: 20 allowance + 5 of the pack
    denied = consume(stubs, a, "chat", 3)  # 6 credits, 5 left
    assert (denied.granted, denied.denial) == (False, "credits_exhausted")
    assert consume(stubs, a, "chat", 2).granted

    res = resolve(stubs, a, "chat")
    assert res.as_integer == 0 and res.metering.pool == "credits"  # 1 credit ÷ 2
    assert (res.metering.pool_used, res.metering.pool_limit) == (29.0, 30.0)
    meta = from_struct(res.metadata)
    assert meta["pool"] == "credits" and meta["pool_remaining"] == 1 and meta["per_unit"] == 2
    assert meta["denial"] == "credits_exhausted"

    pool = resolve(stubs, a, "credits")
    detail = from_struct(pool.as_object.struct_value)
    assert (detail["allowance"], detail["topup_remaining"], detail["topup_burned"]) == (20, 1, 9)
    assert [(t["id"], t["burned"]) for t in detail["topups"]] == [("pack", 9)]
    chat_detail = from_struct(res.as_object.struct_value)
    assert chat_detail["pool"]["remaining"] == 1

    flagd = v2_grpc.ServiceStub(stubs.channel).ResolveInt(
        v2_pb.ResolveIntRequest(flag_key="chat", context=_ctx(a)), timeout=5
    )
    assert flagd.value == 0 and from_struct(flagd.metadata)["pool_remaining"] == 1
    body = json.dumps({"context": {"targetingKey": a}}).encode()
    http = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags/credits",
        body,
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(http, timeout=5) as reply:
        ofrep = json.load(reply)
    assert ofrep["metadata"]["allowance"] == 20 and ofrep["metadata"]["topup_remaining"] == 1


def _ctx(account_id: str) -> Any:
    from google.protobuf import struct_pb2

    ctx = struct_pb2.Struct()
    ctx.update({"targetingKey": account_id})
    return ctx


def test_track_on_one_priced_feature_lowers_the_others_at_once(sidecar: Any, stubs: Stubs) -> None:
    a = account(stubs, "acct_track")
    ctx = EvaluationContext(a)
    with provider(f"127.0.0.1:{sidecar.port}", cache=True):
        client = api.get_client()
        assert client.get_integer_value("images", -1, ctx) == 4  # 20 credits ÷ 5
        assert client.get_integer_value("chat", -1, ctx) == 10
        client.track("chat", ctx)  # 2 credits
        for _ in range(7):
            client.track("chat", ctx)
        # 16 credits in flight or counted: 4 left, so not one image fits anymore
        assert client.get_integer_value("images", -1, ctx) == 0
        assert client.get_boolean_value("images", True, ctx) is False
        assert client.get_integer_value("credits", -1, ctx) == 4
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if resolve(stubs, a, "credits").metering.used == 16:
                break
            time.sleep(0.05)
        assert resolve(stubs, a, "credits").metering.used == 16


def test_cli_topups_add_list_void(sidecar: Any, stubs: Stubs) -> None:
    a = account(stubs, "acct_cli")
    target = ["--target", f"127.0.0.1:{sidecar.port}"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "plangate.sidecar.cli.main", *args, *target],
            capture_output=True,
            text=True,
            timeout=30,
        )

    added = cli("topups", "add", a, "calls", "7", "--priority", "3", "--id", "c1", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["amount"] == 7
    listed = cli("topups", "list", a)
    assert listed.returncode == 0 and "c1" in listed.stdout and "calls" in listed.stdout
    assert cli("topups", "void", a, "c1").returncode == 0
    assert "voided" in cli("topups", "list", a).stdout
    bad = cli("topups", "add", a, "seats", "1")
    assert bad.returncode != 0 and "top-ups apply" in bad.stderr
