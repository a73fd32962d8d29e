"""Each request works from one snapshot (design §15): a catalog reload in the middle of an
EvaluateAll / ResolveAll / OFREP bulk request can never pair a decision with a feature of the
other catalog (it used to fail with an unmapped KeyError, issue 11.8)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.catalog import load_catalog
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import EXAMPLE_CATALOG, Stubs, copy_catalog, in_process

ROUNDS = 400
EXTRA = """      - name: Coming soon
        type: boolean
        default: true
"""


def _catalogs(tmp_path: Path) -> tuple[Any, Any]:
    """The example catalog, and the same with one more feature (which comes and goes)."""
    text = EXAMPLE_CATALOG.read_text()
    marker = "      - name: Beta dashboard\n"
    more = tmp_path / "more.yaml"
    more.write_text(text.replace(marker, EXTRA + marker, 1))
    return load_catalog(EXAMPLE_CATALOG), load_catalog(more)


def test_every_bulk_evaluation_sees_one_catalog_while_it_reloads(tmp_path: Path) -> None:
    plain, more = _catalogs(tmp_path)
    assert set(more.features) - set(plain.features) == {"coming-soon"}
    keys = {plain.version: set(plain.features), more.version: set(more.features)}
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "s.db", poll_seconds=60) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        flagd = v2_grpc.ServiceStub(s.channel)
        context = struct_pb2.Struct()
        context.update({"targetingKey": "acct_acme"})
        stop = threading.Event()

        def reload() -> None:
            while not stop.is_set():
                for catalog in (more, plain):
                    sidecar.state.replace_catalog(catalog)

        reloader = threading.Thread(target=reload, daemon=True)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often: reloads land inside requests
        reloader.start()
        seen: set[str] = set()
        url = f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags"
        body = json.dumps({"context": {"targetingKey": "acct_acme"}}).encode()
        try:
            for _ in range(ROUNDS):
                native = s.evaluation.EvaluateAll(
                    pb.EvaluateAllRequest(account_id="acct_acme"), timeout=5
                )
                assert set(native.resolutions) == keys[native.catalog_version]
                assert not native.error_code
                seen.add(native.catalog_version)
                resolved = flagd.ResolveAll(v2_pb.ResolveAllRequest(context=context), timeout=5)
                version = resolved.metadata.fields["catalog_version"].string_value
                assert set(resolved.flags) == keys[version]
                request = urllib.request.Request(url, data=body, method="POST")
                with urllib.request.urlopen(request, timeout=5) as response:
                    flags = json.loads(response.read())["flags"]
                assert {f["key"] for f in flags} in keys.values()
                assert not any("errorCode" in f for f in flags)
        except grpc.RpcError as exc:
            raise AssertionError(f"{exc.code()}: {exc.details()}") from exc
        finally:
            stop.set()
            reloader.join()
            sys.setswitchinterval(interval)
        assert seen == set(keys)  # both catalogs were served while the test ran
