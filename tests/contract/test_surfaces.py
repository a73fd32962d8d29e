"""One core, thin faces (design §15): the same (account, feature, context) gets the same
decision — value, reason, variant and metadata — through the native API, flagd v2 (our own
stubs) and OFREP, for every feature type of the example catalog and several accounts."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_value
from plangate.sidecar.catalog import load_catalog
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import EXAMPLE_CATALOG, Stubs, copy_catalog, in_process

CATALOG = load_catalog(EXAMPLE_CATALOG)
FEATURES = sorted(CATALOG.features)
ACCOUNTS = ["acct_acme", "acct_globex", "acct_initech", "user_ann", "acct_nobody"]
CONTEXTS: list[dict[str, Any]] = [{}, {"requested": 5}]

# the natural type of each feature type: what OFREP reports and what we ask the others for
NATURAL = {
    "boolean": "Boolean",
    "flag": "Boolean",
    "metered": "Boolean",
    "credits": "Boolean",
    "integer": "Int",
    "string": "String",
    "list": "Object",
    "object": "Object",
}
NATIVE_TYPE = {
    "Boolean": (pb.VALUE_TYPE_BOOLEAN, "as_boolean"),
    "Int": (pb.VALUE_TYPE_INTEGER, "as_integer"),
    "String": (pb.VALUE_TYPE_STRING, "as_string"),
    "Object": (pb.VALUE_TYPE_OBJECT, "as_object"),
}


def test_the_catalog_has_every_feature_type() -> None:
    assert {f.type.value for f in CATALOG.features.values()} == set(NATURAL)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stubs, Any, int]]:
    tmp = tmp_path_factory.mktemp("surfaces")
    with (
        in_process(copy_catalog(tmp), tmp / "s.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
    ):
        report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=7)
        stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
        yield stubs, v2_grpc.ServiceStub(stubs.channel), sidecar.ofrep_port


def _plain(value: Any) -> Any:
    """Numbers compared as numbers: JSON and Struct carry every number as a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value]


def _native(stubs: Stubs, account: str, key: str, context: dict[str, Any]) -> dict[str, Any]:
    kind, field = NATIVE_TYPE[NATURAL[CATALOG.features[key].type.value]]
    ctx = struct_pb2.Struct()
    ctx.update(context)
    res = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account, feature=key, context=ctx, type=kind), timeout=5
    )
    assert not res.error_code, res.error_message
    value = from_value(res.as_object) if field == "as_object" else getattr(res, field)
    if not res.HasField(field):
        value = None  # the caller's default (decision 2002): no value
    return {
        "value": _plain(value),
        "reason": res.reason,
        "variant": res.variant,
        "metadata": _plain(json_format.MessageToDict(res.metadata)),
    }


def _flagd(stub: Any, account: str, key: str, context: dict[str, Any]) -> dict[str, Any]:
    feature = CATALOG.features[key]
    method = NATURAL[feature.type.value]
    ctx = struct_pb2.Struct()
    ctx.update({"targetingKey": account, **context})
    request = getattr(v2_pb, f"Resolve{method}Request")(flag_key=key, context=ctx)
    res = getattr(stub, f"Resolve{method}")(request, timeout=5)
    value: Any = res.value
    if not res.HasField("value"):
        value = None  # the caller's default (decision 2002): no value
    elif method == "Object":
        value = json_format.MessageToDict(res.value)
        if feature.type.value == "list":  # a Struct cannot be a list: it comes as its detail
            value = value["value"]
    return {
        "value": _plain(value),
        "reason": res.reason,
        "variant": res.variant,
        "metadata": _plain(json_format.MessageToDict(res.metadata)),
    }


def _ofrep(port: int, account: str, key: str, context: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"context": {"targetingKey": account, **context}}).encode()
    url = f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags/{key}"
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        data = json.loads(response.read())
    # no `value`: the caller's default (decision 2002)
    return {k: _plain(data.get(k)) for k in ("value", "reason", "variant", "metadata")}


@pytest.mark.parametrize("context", CONTEXTS, ids=["no-context", "requested-5"])
@pytest.mark.parametrize("account", ACCOUNTS)
@pytest.mark.parametrize("key", FEATURES)
def test_native_flagd_and_ofrep_give_one_decision(
    faces: tuple[Stubs, Any, int], key: str, account: str, context: dict[str, Any]
) -> None:
    stubs, flagd, ofrep_port = faces
    try:
        native = _native(stubs, account, key, context)
        via_flagd = _flagd(flagd, account, key, context)
    except grpc.RpcError as exc:
        raise AssertionError(f"{exc.code()}: {exc.details()}") from exc
    via_ofrep = _ofrep(ofrep_port, account, key, context)
    assert native == via_flagd == via_ofrep
