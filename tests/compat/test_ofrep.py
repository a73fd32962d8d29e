"""OFREP on the sidecar's HTTP port (design §9): the protocol's shapes, status codes and ETag
handling over real HTTP, then the unmodified `openfeature-provider-ofrep` through the
OpenFeature API. The OFREP provider has no generated stubs, so it can share this process with
an in-process sidecar.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.provider.no_op_provider import NoOpProvider
from plangate.protocol.plangate.v1 import plangate_pb2 as pg
from support.sidecar import Stubs, copy_catalog, in_process

FLAGS = "/ofrep/v1/evaluate/flags"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("ofrep")
    with in_process(copy_catalog(tmp / "catalog"), tmp / "state.db") as running:
        yield running


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def post(
    sidecar: Any,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Response:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.ofrep_port}{path}",
        data=data if method == "POST" else None,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers, exc.read())


def ctx(account: str | None, **attrs: Any) -> dict[str, Any]:
    context: dict[str, Any] = dict(attrs)
    if account is not None:
        context["targetingKey"] = account
    return {"context": context}


def test_sidecar_binds_the_ofrep_port(sidecar: Any) -> None:
    assert sidecar.ofrep_port > 0
    assert sidecar.ofrep_port not in (sidecar.port, sidecar.management_port)


@pytest.mark.parametrize(
    ("key", "account", "value", "reason", "variant"),
    [
        ("sso", "acct_acme", True, "TARGETING_MATCH", "pro"),
        ("sso", "acct_initech", False, "DEFAULT", "default"),
        ("beta-dashboard", "acct_globex", True, "TARGETING_MATCH", "enterprise"),
        ("execution-concurrency", "acct_acme", 25, "TARGETING_MATCH", "override"),
        ("execution-concurrency", "acct_globex", -1, "TARGETING_MATCH", "enterprise"),
        ("support-tier", "acct_globex", "priority", "TARGETING_MATCH", "enterprise"),
        (
            "integrations",
            "acct_acme",
            ["slack", "github", "salesforce"],
            "TARGETING_MATCH",
            "pro+salesforce",
        ),
        ("integrations", "acct_initech", [], "DEFAULT", "default"),
        (
            "theme",
            "acct_globex",
            {"accent": "custom", "logo": True},
            "TARGETING_MATCH",
            "enterprise",
        ),
        ("api-calls", "acct_initech", True, "TARGETING_MATCH", "free"),
        ("sso", "acct_nobody", False, "DEFAULT", "default"),
    ],
)
def test_single_evaluation_shape(
    sidecar: Any, key: str, account: str, value: Any, reason: str, variant: str
) -> None:
    resp = post(sidecar, f"{FLAGS}/{key}", ctx(account))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json
    assert set(body) == {"key", "value", "reason", "variant", "metadata"}
    got = (body["key"], body["value"], body["reason"], body["variant"])
    assert got == (key, value, reason, variant)
    assert type(body["value"]) is type(value)  # 25 stays an integer, not 25.0
    assert all(isinstance(v, bool | int | float | str) for v in body["metadata"].values())


def test_a_disabled_feature_answers_without_a_value(sidecar: Any) -> None:
    """Decision 2002 (ADR-0006): no `value` means the provider's code default; the variant is
    empty (the Python OFREP provider reads it unconditionally)."""
    body = post(sidecar, f"{FLAGS}/legacy-reports", ctx("acct_acme")).json
    assert "value" not in body
    assert (body["key"], body["reason"], body["variant"]) == ("legacy-reports", "DISABLED", "")
    assert body["metadata"]["denial"] == "feature_disabled"


def test_metered_value_is_access_with_the_numbers_in_metadata(sidecar: Any) -> None:
    body = post(sidecar, f"{FLAGS}/api-calls", ctx("acct_initech")).json
    assert body["value"] is True
    assert body["metadata"]["limit"] == 1000 and body["metadata"]["remaining"] == 1000
    denied = post(sidecar, f"{FLAGS}/api-calls", ctx("acct_initech", requested=5000)).json
    assert denied["value"] is False
    assert denied["metadata"]["denial"] == "requested_exceeds_limit"
    unlimited = post(sidecar, f"{FLAGS}/api-calls", ctx("acct_globex")).json
    assert unlimited["value"] is True and unlimited["metadata"]["unlimited"] is True


@pytest.mark.parametrize(
    ("path", "payload", "raw", "status", "code"),
    [
        (f"{FLAGS}/no-such-feature", ctx("acct_acme"), None, 404, "FLAG_NOT_FOUND"),
        (f"{FLAGS}/sso", ctx(None), None, 400, "TARGETING_KEY_MISSING"),
        (f"{FLAGS}/sso", None, b"", 400, "TARGETING_KEY_MISSING"),
        (f"{FLAGS}/sso", None, b"{not json", 400, "PARSE_ERROR"),
        (f"{FLAGS}/sso", [1, 2], None, 400, "PARSE_ERROR"),
        (f"{FLAGS}/sso", {"context": "acct_acme"}, None, 400, "INVALID_CONTEXT"),
        # a targetingKey that is not a string counts as none, as in flagd (decision 2000)
        (f"{FLAGS}/sso", {"context": {"targetingKey": 7}}, None, 400, "TARGETING_KEY_MISSING"),
        (f"{FLAGS}/api-calls", ctx("acct_acme", requested=-3), None, 400, "INVALID_CONTEXT"),
    ],
)
def test_single_evaluation_errors(
    sidecar: Any, path: str, payload: Any, raw: bytes | None, status: int, code: str
) -> None:
    resp = post(sidecar, path, payload, raw=raw)
    assert resp.status == status
    body = resp.json
    assert body["key"] == path.rsplit("/", 1)[1]
    assert body["errorCode"] == code
    assert isinstance(body["errorDetails"], str) and body["errorDetails"]


def test_wrong_method_and_unknown_path(sidecar: Any) -> None:
    resp = post(sidecar, f"{FLAGS}/sso", method="GET")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert post(sidecar, "/ofrep/v2/whatever", ctx("acct_acme")).status == 404


def test_bulk_evaluation_shape(sidecar: Any) -> None:
    resp = post(sidecar, FLAGS, ctx("acct_acme"))
    assert resp.status == 200
    assert resp.headers["ETag"].startswith('"')
    flags = {f["key"]: f for f in resp.json["flags"]}
    assert set(flags) == set(sidecar.state.catalog.features)
    for key, flag in flags.items():
        # the disabled feature answers without a value: the caller's default (decision 2002)
        shape = {"key", "reason", "variant", "metadata"}
        assert set(flag) == (shape if key == "legacy-reports" else shape | {"value"})
        assert flag["reason"] != "STATIC"
    assert flags["sso"]["value"] is True
    assert flags["execution-concurrency"]["value"] == 25
    assert flags["integrations"]["value"] == ["slack", "github", "salesforce"]
    assert flags["api-calls"]["value"] is True
    # the same request answers the same as single evaluation
    assert flags["theme"] == post(sidecar, f"{FLAGS}/theme", ctx("acct_acme")).json


def test_bulk_errors(sidecar: Any) -> None:
    # without a targeting key, features with variants answer and the others say why not
    # (decision 2000)
    resp = post(sidecar, FLAGS, ctx(None))
    assert resp.status == 200
    flags = {f["key"]: f for f in resp.json["flags"]}
    assert flags["sso"]["errorCode"] == "TARGETING_KEY_MISSING"
    assert "errorCode" not in flags["pipeline-editor-v2"]
    resp = post(sidecar, FLAGS, raw=b"[")
    assert (resp.status, resp.json["errorCode"]) == (400, "PARSE_ERROR")


def test_bulk_etag_and_if_none_match(sidecar: Any) -> None:
    # acct_globex (unlimited api-calls), so the usage reported here changes no other test
    first = post(sidecar, FLAGS, ctx("acct_globex"))
    etag = first.headers["ETag"]
    again = post(sidecar, FLAGS, ctx("acct_globex"), headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.headers["ETag"] == etag
    listed = post(sidecar, FLAGS, ctx("acct_globex"), headers={"If-None-Match": f'"x", W/{etag}'})
    assert listed.status == 304
    # another account's flags are another entity
    other = post(sidecar, FLAGS, ctx("acct_initech"), headers={"If-None-Match": etag})
    assert other.status == 200 and other.headers["ETag"] != etag
    # usage changes what the account sees, so the tag moves
    with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
        report = pg.UsageReport(account_id="acct_globex", feature="api-calls", amount=10)
        stubs.usage.Report(pg.ReportRequest(reports=[report]), timeout=5)
    changed = post(sidecar, FLAGS, ctx("acct_globex"), headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag
    used = {f["key"]: f for f in changed.json["flags"]}["api-calls"]["metadata"]["used"]
    assert used == 10


def test_keep_alive_connection_survives_304_and_errors(sidecar: Any) -> None:
    # Providers use one HTTP/1.1 session; a response without a body must not desync it.
    base = f"http://127.0.0.1:{sidecar.ofrep_port}{FLAGS}"
    acme = ctx("acct_acme")
    with requests.Session() as session:
        etag = session.post(base, json=acme, timeout=5).headers["ETag"]
        for _ in range(3):
            unchanged = session.post(base, json=acme, headers={"If-None-Match": etag}, timeout=5)
            assert unchanged.status_code == 304
            assert session.post(f"{base}/nope", json=acme, timeout=5).status_code == 404
            assert session.post(f"{base}/sso", data=b"{bad", timeout=5).status_code == 400
            assert session.post(f"{base}/sso", json=acme, timeout=5).json()["value"] is True


def test_keys_are_url_decoded(sidecar: Any) -> None:
    assert post(sidecar, f"{FLAGS}/support%2Dtier", ctx("acct_acme")).json["value"] == "email"


# -- the unmodified OFREP provider ------------------------------------------------------------


@pytest.fixture
def client(sidecar: Any) -> Iterator[Any]:
    domain = "plangate-ofrep-test"
    api.set_provider_and_wait(OFREPProvider(f"http://127.0.0.1:{sidecar.ofrep_port}"), domain)
    yield api.get_client(domain)
    api.set_provider(NoOpProvider(), domain)


def test_ofrep_provider_evaluates_every_feature_type(client: Any) -> None:
    acme, initech = EvaluationContext("acct_acme"), EvaluationContext("acct_initech")
    assert client.get_boolean_value("sso", False, acme) is True
    assert client.get_boolean_value("sso", True, initech) is False
    assert client.get_boolean_value("beta-dashboard", False, acme) is True
    assert client.get_integer_value("execution-concurrency", 0, acme) == 25
    assert client.get_integer_value("execution-concurrency", 0, initech) == 1
    assert client.get_string_value("support-tier", "", acme) == "email"
    assert client.get_object_value("integrations", [], acme) == ["slack", "github", "salesforce"]
    assert client.get_object_value("theme", {}, initech) == {"accent": "blue", "logo": False}
    details = client.get_boolean_details("api-calls", False, initech)
    assert details.value is True and details.reason == "TARGETING_MATCH"
    assert details.variant == "free" and details.error_code is None
    assert details.flag_metadata["limit"] == 1000
    denied = client.get_boolean_details(
        "api-calls", True, EvaluationContext("acct_initech", {"requested": 5000})
    )
    assert denied.value is False and denied.flag_metadata["denial"] == "requested_exceeds_limit"


def test_ofrep_provider_errors(client: Any) -> None:
    acme = EvaluationContext("acct_acme")
    unknown = client.get_boolean_details("no-such-feature", True, acme)
    assert (unknown.value, unknown.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    missing = client.get_boolean_details("sso", True, EvaluationContext())
    assert (missing.value, missing.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    disabled = client.get_boolean_details("legacy-reports", True, acme)  # decision 2002
    assert (disabled.value, disabled.reason, disabled.error_code) == (True, "DISABLED", None)
    mismatch = client.get_string_details("sso", "fallback", acme)
    assert (mismatch.value, mismatch.error_code) == ("fallback", ErrorCode.TYPE_MISMATCH)
    bad = client.get_boolean_details(
        "api-calls", True, EvaluationContext("acct_acme", {"requested": -1})
    )
    assert (bad.value, bad.error_code) == (True, ErrorCode.INVALID_CONTEXT)
