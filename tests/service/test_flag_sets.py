"""flagd flag sets are PlanGate products (decision 2007): the `Flagd-Selector` header
(`flagSetId=<product slug>`) limits flagd's `ResolveAll` and `EventStream` and OFREP's bulk
evaluation to one product, whose features are named by their own slugs; single resolves are
not filtered. An in-process sidecar on real sockets, spoken to with PlanGate's own flagd stubs
(this module must not import the flagd provider) and plain HTTP.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as rpc
from support.sidecar import in_process

CATALOG = """\
products:
  - name: Web
    metadata: {team: web}
    features:
      - {name: Search, type: boolean, default: true}
      - {name: Theme, type: string, default: light}
  - name: Mobile
    features:
      - {name: Search, type: boolean, default: false}
      - {name: Offline, type: boolean, default: true, variants: {"on": true, "off": false}}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("flag-sets")
    (tmp / "catalog").mkdir()
    catalog = tmp / "catalog" / "catalog.yaml"
    catalog.write_text(CATALOG)
    with in_process(catalog, tmp / "state.db") as running:
        running.catalog_file = catalog
        yield running


@pytest.fixture
def stub(sidecar: Any) -> Iterator[rpc.ServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{sidecar.port}")
    yield rpc.ServiceStub(channel)
    channel.close()


def _context(account: str) -> struct_pb2.Struct:
    context = struct_pb2.Struct()
    context.update({"targetingKey": account})
    return context


def resolve_all(stub: rpc.ServiceStub, selector: str | None) -> dict[str, Any]:
    metadata = [("flagd-selector", selector)] if selector is not None else None
    response = stub.ResolveAll(
        pb.ResolveAllRequest(context=_context("acct")), timeout=5, metadata=metadata
    )
    return {key: json_format.MessageToDict(flag) for key, flag in response.flags.items()}


def test_resolve_all_without_a_selector_names_shared_slugs_by_product(
    stub: rpc.ServiceStub,
) -> None:
    assert set(resolve_all(stub, None)) == {"web/search", "theme", "mobile/search", "offline"}


def test_resolve_all_with_a_selector_answers_one_product_by_its_slugs(
    stub: rpc.ServiceStub,
) -> None:
    web = resolve_all(stub, "flagSetId=web")
    assert set(web) == {"search", "theme"}
    assert web["search"]["boolValue"] is True  # web's search, not mobile's
    assert web["search"]["metadata"]["flagSetId"] == "web"
    assert web["search"]["metadata"]["team"] == "web"  # the product's metadata
    mobile = resolve_all(stub, "flagSetId=mobile")
    assert set(mobile) == {"search", "offline"}
    assert mobile["search"].get("boolValue", False) is False
    assert resolve_all(stub, "flagSetId=nothing") == {}


def test_a_selector_that_is_not_a_flag_set_id_is_refused(stub: rpc.ServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        resolve_all(stub, "source=web")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "flagSetId=<product slug>" in (info.value.details() or "")


def test_single_resolves_are_not_filtered(stub: rpc.ServiceStub) -> None:
    response = stub.ResolveBoolean(
        pb.ResolveBooleanRequest(flag_key="offline", context=_context("acct")),
        timeout=5,
        metadata=[("flagd-selector", "flagSetId=web")],
    )
    assert response.value is True


def _bulk(sidecar: Any, selector: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags",
        data=json.dumps({"context": {"targetingKey": "acct"}}).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Flagd-Selector": selector} if selector else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ofrep_bulk_honours_the_selector(sidecar: Any) -> None:
    status, body = _bulk(sidecar, "flagSetId=mobile")
    assert status == 200
    flags = {f["key"]: f for f in body["flags"]}
    assert set(flags) == {"search", "offline"}
    assert (
        flags["search"]["value"] is False and flags["search"]["metadata"]["flagSetId"] == "mobile"
    )
    status, body = _bulk(sidecar, None)
    assert {f["key"] for f in body["flags"]} == {"web/search", "theme", "mobile/search", "offline"}
    status, body = _bulk(sidecar, "web")
    assert (status, body["errorCode"]) == (400, "INVALID_CONTEXT")


def test_event_stream_under_a_selector_names_only_that_products_flags(
    sidecar: Any, stub: rpc.ServiceStub
) -> None:
    seen: queue.Queue[Any] = queue.Queue()
    call = stub.EventStream(
        pb.EventStreamRequest(), metadata=[("flagd-selector", "flagSetId=mobile")]
    )

    def read() -> None:
        try:
            for message in call:
                seen.put(message)
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()
    assert seen.get(timeout=10).type == "provider_ready"
    catalog: Path = sidecar.catalog_file
    text = catalog.read_text()
    catalog.write_text(
        text.replace(
            "{name: Search, type: boolean, default: false}",
            "{name: Search, type: boolean, default: true}",
        ).replace(
            "{name: Theme, type: string, default: light}",
            "{name: Theme, type: string, default: dark}",
        )
    )
    try:
        while True:
            message = seen.get(timeout=15)
            if message.type == "configuration_change":
                break
        flags = json_format.MessageToDict(message.data)["flags"]
        assert set(flags) == {"search"}  # mobile's search by its slug; web's theme not sent
    finally:
        call.cancel()
        catalog.write_text(text)
