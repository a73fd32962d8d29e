"""Targeting (design §4.1) through every surface of a real sidecar: the native API, flagd v1
and v2, OFREP and the provider (cached and uncached) give the same answers; a volatile
feature is marked and never cached; a targeting change reaches cached clients as a
configuration change for that key only; `Evaluate` with `explain` returns the trail.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.provider import EventLog, provider, rpc_count
from support.sidecar import Stubs, in_process

CATALOG = """\
evaluators:
  beta-pro:
    and:
      - in: [pro, {var: plans}]
      - "==": [{var: cohort}, beta]
products:
  - name: App
    features:
      - name: Editor
        type: string
        values: [classic, new]
        default: classic
        variants: {classic: classic, new: new}
        targeting: {if: [{$ref: beta-pro}, new, null]}
      - name: Rollout
        type: boolean
        variants: {"on": true, "off": false}
        targeting: {fractional: [["on", 50], ["off", 50]]}
      - name: Night mode
        type: boolean
        variants: {"on": true, "off": false}
        targeting: {if: [{">": [{var: $flagd.timestamp}, 0]}, "on", "off"]}
      - name: Seats
        type: integer
        default: 1
    plans:
      - name: Pro
        entitlements: {editor: classic, seats: 5}
accounts:
  - id: acct_pro
    subscriptions: [{plan: pro}]
  - id: acct_free
"""
ACCOUNTS = ["acct_pro", "acct_free", "acct_unknown"] + [f"acct_{i}" for i in range(8)]
CONTEXTS: list[dict[str, Any]] = [{}, {"cohort": "beta"}]
# feature -> (OpenFeature type, default)
FEATURES: dict[str, tuple[str, Any]] = {
    "editor": ("string", ""),
    "rollout": ("boolean", False),
    "night-mode": ("boolean", False),
    "seats": ("integer", 0),
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("targeting") / "catalog"
    folder.mkdir()
    path = folder / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sidecar(catalog: Path) -> Iterator[Any]:
    with in_process(catalog, catalog.parent.parent / "state.db") as running:
        yield running


def native_all(stubs: Stubs) -> dict[tuple[str, str, str], tuple[Any, str, str]]:
    out = {}
    for account in ACCOUNTS:
        for i, ctx in enumerate(CONTEXTS):
            request = pb.EvaluateAllRequest(account_id=account)
            request.context.update(ctx)
            reply = stubs.evaluation.EvaluateAll(request, timeout=5)
            for key in FEATURES:
                res = reply.resolutions[key]
                value = json_format.MessageToDict(res.value)
                out[(account, str(i), key)] = (value, res.variant, res.reason)
    return out


def test_native_flagd_and_ofrep_agree(sidecar: Any, stubs: Stubs) -> None:
    expected = native_all(stubs)
    reasons = {r for _, _, r in expected.values()}
    assert "TARGETING_MATCH" in reasons and "DEFAULT" in reasons
    assert expected[("acct_pro", "1", "editor")] == ("new", "new", "TARGETING_MATCH")
    assert expected[("acct_pro", "0", "editor")] == ("classic", "pro", "TARGETING_MATCH")
    rollouts = {expected[(a, "0", "rollout")][1] for a in ACCOUNTS}
    assert rollouts == {"on", "off"}
    channel = grpc.insecure_channel(f"127.0.0.1:{sidecar.port}")
    methods = {"string": "ResolveString", "boolean": "ResolveBoolean", "integer": "ResolveInt"}
    for version, (mod, grpc_mod) in {"v1": (v1_pb, v1_grpc), "v2": (v2_pb, v2_grpc)}.items():
        stub = grpc_mod.ServiceStub(channel)
        for (account, i, key), (value, variant, reason) in expected.items():
            context = struct_pb2.Struct()
            context.update({"targetingKey": account, **CONTEXTS[int(i)]})
            method = methods[FEATURES[key][0]]
            r = getattr(stub, method)(
                getattr(mod, f"{method}Request")(flag_key=key, context=context), timeout=5
            )
            assert (r.value, r.variant, r.reason) == (value, variant, reason), (version, key)
    channel.close()
    url = f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags/"
    for (account, i, key), (value, variant, reason) in expected.items():
        body = json.dumps({"context": {"targetingKey": account, **CONTEXTS[int(i)]}}).encode()
        request = urllib.request.Request(
            url + key, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            got = json.loads(response.read())
        assert (got["value"], got["variant"], got["reason"]) == (value, variant, reason)
        if reason == "TARGETING_MATCH" and variant in ("new", "on", "off"):
            assert got["metadata"]["source"] == "targeting"


@pytest.mark.parametrize("cache", ["on", "off"])
def test_provider_agrees_cached_and_uncached(sidecar: Any, stubs: Stubs, cache: str) -> None:
    expected = native_all(stubs)
    with provider(f"127.0.0.1:{sidecar.port}", env={"PLANGATE_CACHE": cache}):
        client = api.get_client()
        for _ in range(2):  # the second round is answered from the cache where it may be
            for (account, i, key), (value, variant, reason) in expected.items():
                kind, default = FEATURES[key]
                ctx = EvaluationContext(account, CONTEXTS[int(i)])
                got = getattr(client, f"get_{kind}_details")(key, default, ctx)
                assert (got.value, got.variant, str(got.reason)) == (value, variant, reason)


def test_volatile_feature_is_marked_and_never_cached(sidecar: Any, stubs: Stubs) -> None:
    reply = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id="acct_pro"), timeout=5)
    assert reply.resolutions["night-mode"].volatile
    assert not reply.resolutions["editor"].volatile and not reply.resolutions["seats"].volatile
    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        ctx = EvaluationContext("acct_pro")
        assert client.get_boolean_value("night-mode", False, ctx) is True
        assert client.get_string_value("editor", "", ctx) == "classic"
        before = rpc_count(sidecar.management_port, "Evaluate")
        for _ in range(10):
            assert client.get_boolean_value("night-mode", False, ctx) is True
            assert client.get_string_value("editor", "", ctx) == "classic"
        assert rpc_count(sidecar.management_port, "Evaluate") - before == 10


def test_explain_shows_override_targeting_candidates_and_winner(stubs: Stubs) -> None:
    request = pb.EvaluateRequest(account_id="acct_pro", feature="editor", explain=True)
    request.context.update({"cohort": "beta"})
    trail = json.loads(stubs.evaluation.Evaluate(request, timeout=5).explain)
    assert trail["override"] is None
    assert trail["targeting"] == {"volatile": False, "variant": "new"}
    assert trail["candidates"] == [
        {"source": "pro", "value": "classic", "won": False, "why": "targeting chose variant 'new'"}
    ]
    assert trail["winner"]["source"] == "targeting" and trail["winner"]["value"] == "new"
    plain = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_pro", feature="seats", explain=True), timeout=5
    )
    trail = json.loads(plain.explain)
    assert trail["targeting"] is None and trail["winner"]["source"] == "pro"
    assert not stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_pro", feature="seats"), timeout=5
    ).explain


def test_targeting_change_reaches_cached_clients_for_that_key_only(
    sidecar: Any, catalog: Path
) -> None:
    with EventLog() as events, provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        ctx = EvaluationContext("acct_pro", {"cohort": "beta"})
        assert client.get_string_value("editor", "", ctx) == "new"
        since = events.mark()
        catalog.write_text(CATALOG.replace("[{$ref: beta-pro}, new, null]", "[false, new, null]"))
        changed = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, since, timeout=10)
        assert changed.details.flags_changed == ["editor"]
        deadline = time.monotonic() + 5
        while client.get_string_value("editor", "", ctx) != "classic":
            assert time.monotonic() < deadline, "the cached answer did not change"
            time.sleep(0.05)
