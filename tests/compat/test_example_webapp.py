"""The example web app (examples/webapp) over real HTTP, against a real sidecar: boolean gates,
a metered endpoint that runs into its limit, and usage that reaches the sidecar via `track`.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import requests
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.provider import native_used, new_account, provider
from support.sidecar import ROOT, Stubs, copy_catalog, in_process, wait_for
from werkzeug.serving import make_server


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pipewise_webapp", ROOT / "examples/webapp/app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Sidecar + provider + the app served by werkzeug on a free port, in this process."""
    d = tmp_path_factory.mktemp("webapp")
    with (
        in_process(copy_catalog(d), d / "state.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
        provider(f"127.0.0.1:{sidecar.port}") as p,
    ):
        app = _load_example().create_app()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {"url": f"http://127.0.0.1:{server.server_port}", "stubs": stubs, "provider": p}
        finally:
            server.shutdown()
            thread.join(5)


def _get(stack: dict[str, Any], path: str, account: str | None, method: str = "GET") -> Any:
    headers = {"X-Account-Id": account} if account else {}
    return requests.request(method, stack["url"] + path, headers=headers, timeout=5)


def test_boolean_gates(stack: dict[str, Any]) -> None:
    assert _get(stack, "/reports", "acct_acme").status_code == 200
    assert _get(stack, "/sso", "acct_globex").status_code == 200
    denied = _get(stack, "/reports", "acct_initech")
    assert denied.status_code == 403 and denied.json()["denial"] == "no_entitlement"
    stranger = _get(stack, "/sso", "acct_stranger")
    assert stranger.status_code == 403 and stranger.json()["denial"] == "account_not_found"
    assert _get(stack, "/reports", None).status_code == 401


def test_entitlements_read_every_type(stack: dict[str, Any]) -> None:
    body = _get(stack, "/entitlements", "acct_acme").json()
    assert body == {
        "support_tier": "email",
        "concurrency": 25,
        "integrations": ["slack", "github", "salesforce"],
        "theme": {"accent": "blue", "logo": False},
    }
    assert _get(stack, "/entitlements", "acct_initech").json()["integrations"] == []


def test_metered_endpoint_counts_and_stops_at_the_limit(stack: dict[str, Any]) -> None:
    stubs: Stubs = stack["stubs"]
    new_account(stubs, "acct_web", plan="free")  # api-calls: hard limit 1000
    stubs.usage.Report(
        pb.ReportRequest(
            reports=[pb.UsageReport(account_id="acct_web", feature="api-calls", amount=997)]
        ),
        timeout=5,
    )
    wait_for(lambda: _get(stack, "/entitlements", "acct_web").status_code == 200)
    codes = [_get(stack, "/api/pipelines", "acct_web").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # the 998th..1000th call, then the limit
    refused = _get(stack, "/api/pipelines", "acct_web").json()
    assert refused["denial"] == "usage_limit_reached"
    wait_for(lambda: stack["provider"].pending_reports == 0, timeout=5)
    assert native_used(stubs, "acct_web", "api-calls") == 1000


def test_metered_endpoint_with_an_amount(stack: dict[str, Any]) -> None:
    stubs: Stubs = stack["stubs"]
    new_account(stubs, "acct_exporter", plan="free")  # exports: 5 a day
    ok = _get(stack, "/api/exports?count=3", "acct_exporter", method="POST")
    assert ok.status_code == 200 and ok.headers["X-Usage-Used"] == "3"
    assert ok.headers["X-Usage-Limit"] == "5"
    too_many = _get(stack, "/api/exports?count=3", "acct_exporter", method="POST")
    assert too_many.status_code == 429
    assert _get(stack, "/api/exports?count=2", "acct_exporter", method="POST").status_code == 200
    assert _get(stack, "/api/exports?count=x", "acct_exporter", method="POST").status_code == 400
    wait_for(lambda: stack["provider"].pending_reports == 0, timeout=5)
    assert native_used(stubs, "acct_exporter", "exports") == 5
