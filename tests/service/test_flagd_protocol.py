"""The flagd evaluation protocol, v2 and v1, spoken directly with PlanGate's own stubs.

An in-process sidecar on real sockets. This module loads PlanGate's `flagd.evaluation.*`
stubs, so it must never import `openfeature.contrib.provider.flagd` (which registers the same
proto symbols): the unmodified provider runs in a subprocess (`test_flagd_provider.py`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pg
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2 as v1_pb
from plangate.sidecar.protocol.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as v2_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from support.sidecar import Stubs, copy_catalog, in_process

VERSIONS = {"v2": (v2_pb, v2_grpc), "v1": (v1_pb, v1_grpc)}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("flagd-protocol")
    with in_process(copy_catalog(tmp / "catalog"), tmp / "state.db") as running:
        yield running


class Flagd:
    """One protocol version's stub plus helpers to build requests."""

    def __init__(self, target: str, version: str) -> None:
        self.pb, grpc_mod = VERSIONS[version]
        self.channel = grpc.insecure_channel(target)
        self.stub = grpc_mod.ServiceStub(self.channel)

    def call(self, method: str, key: str, account: str | None, **attrs: Any) -> Any:
        context = struct_pb2.Struct()
        if account is not None:
            context.update({"targetingKey": account})
        context.update(attrs)
        request = getattr(self.pb, f"{method}Request")(flag_key=key, context=context)
        return getattr(self.stub, method)(request, timeout=5)

    def all(self, account: str | None, **attrs: Any) -> Any:
        context = struct_pb2.Struct()
        if account is not None:
            context.update({"targetingKey": account})
        context.update(attrs)
        return self.stub.ResolveAll(self.pb.ResolveAllRequest(context=context), timeout=5)


@pytest.fixture(params=sorted(VERSIONS))
def flagd(request: pytest.FixtureRequest, sidecar: Any) -> Iterator[Flagd]:
    client = Flagd(f"127.0.0.1:{sidecar.port}", request.param)
    yield client
    client.channel.close()


def meta(response: Any) -> dict[str, Any]:
    """A response's flag metadata without the flag-set keys every answer carries (decision
    2006), which are checked here once."""
    found: dict[str, Any] = json_format.MessageToDict(response.metadata)
    assert found.pop("flagSetId") == "pipewise" and found.pop("flagSetVersion")
    return found


def test_typed_resolutions_follow_the_design_table(flagd: Flagd) -> None:
    r = flagd.call("ResolveBoolean", "sso", "acct_acme")
    assert (r.value, r.reason, r.variant) == (True, "TARGETING_MATCH", "pro")
    r = flagd.call("ResolveBoolean", "sso", "acct_initech")
    assert (r.value, r.reason, r.variant) == (False, "DEFAULT", "default")
    r = flagd.call("ResolveInt", "execution-concurrency", "acct_acme")
    assert (r.value, r.variant) == (25, "override")
    assert flagd.call("ResolveInt", "execution-concurrency", "acct_globex").value == -1
    assert flagd.call("ResolveFloat", "execution-concurrency", "acct_initech").value == 1.0
    assert flagd.call("ResolveString", "support-tier", "acct_globex").value == "priority"
    theme = flagd.call("ResolveObject", "theme", "acct_globex")
    assert json_format.MessageToDict(theme.value) == {"accent": "custom", "logo": True}
    # a list cannot be a Struct: it comes as its detail, the list under "value"
    integrations = json_format.MessageToDict(
        flagd.call("ResolveObject", "integrations", "acct_acme").value
    )
    assert integrations["value"] == ["slack", "github", "salesforce"]
    assert integrations["type"] == "list" and integrations["has_access"] is True
    # boolean as object: the detail
    sso = json_format.MessageToDict(flagd.call("ResolveObject", "sso", "acct_acme").value)
    assert sso["value"] is True and sso["source"] == "pro"
    archived = flagd.call("ResolveBoolean", "legacy-reports", "acct_acme")
    # decision 2002: no value and an empty variant, which flagd providers read as "the
    # caller's default"
    assert (archived.HasField("value") if flagd.pb is v2_pb else False) is False
    assert (archived.reason, archived.variant) == ("DISABLED", "")
    assert meta(archived)["denial"] == "feature_disabled"


def test_metered_features_resolve_as_access_remaining_and_detail(flagd: Flagd) -> None:
    assert flagd.call("ResolveBoolean", "api-calls", "acct_initech").value is True
    remaining = flagd.call("ResolveInt", "api-calls", "acct_initech")
    assert (remaining.value, remaining.variant) == (1000, "free")
    assert meta(remaining) == {
        "has_access": True,
        "limit": 1000,
        "used": 0,
        "remaining": 1000,
        "unlimited": False,
        "period_end": meta(remaining)["period_end"],
        "valid_until": meta(remaining)["period_end"],
    }
    assert flagd.call("ResolveInt", "api-calls", "acct_globex").value == -1  # unlimited
    # the `requested` context attribute: 2000 calls do not fit a 1000 limit
    denied = flagd.call("ResolveBoolean", "api-calls", "acct_initech", requested=2000)
    assert (denied.value, denied.reason) == (False, "TARGETING_MATCH")
    assert meta(denied)["denial"] == "requested_exceeds_limit"
    detail = json_format.MessageToDict(flagd.call("ResolveObject", "api-calls", "acct_acme").value)
    assert detail["limit"] == 500000 and detail["source"] == "grant"


def test_unknown_account_gets_defaults_not_an_error(flagd: Flagd) -> None:
    r = flagd.call("ResolveInt", "execution-concurrency", "acct_nobody")
    assert (r.value, r.reason, r.variant) == (1, "DEFAULT", "default")
    assert meta(r)["denial"] == "account_not_found"


@pytest.mark.parametrize(
    ("method", "key", "account", "attrs", "status", "code"),
    [
        ("ResolveBoolean", "no-such-feature", "acct_acme", {}, "NOT_FOUND", "FLAG_NOT_FOUND"),
        ("ResolveString", "sso", "acct_acme", {}, "INVALID_ARGUMENT", "TYPE_MISMATCH"),
        ("ResolveInt", "support-tier", "acct_acme", {}, "INVALID_ARGUMENT", "TYPE_MISMATCH"),
        ("ResolveBoolean", "integrations", "acct_acme", {}, "INVALID_ARGUMENT", "TYPE_MISMATCH"),
        ("ResolveString", "api-calls", "acct_acme", {}, "INVALID_ARGUMENT", "TYPE_MISMATCH"),
        ("ResolveBoolean", "sso", None, {}, "INVALID_ARGUMENT", "TARGETING_KEY_MISSING"),
        ("ResolveBoolean", "sso", "", {}, "INVALID_ARGUMENT", "TARGETING_KEY_MISSING"),
        (
            "ResolveBoolean",
            "api-calls",
            "acct_acme",
            {"requested": -1},
            "INVALID_ARGUMENT",
            "INVALID_CONTEXT",
        ),
    ],
)
def test_errors_are_grpc_statuses_naming_the_openfeature_code(
    flagd: Flagd,
    method: str,
    key: str,
    account: str | None,
    attrs: dict[str, Any],
    status: str,
    code: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        flagd.call(method, key, account, **attrs)
    assert info.value.code() == getattr(grpc.StatusCode, status)
    assert info.value.details().startswith(code + ": ")


def test_missing_targeting_key_message_says_what_to_do(flagd: Flagd) -> None:
    with pytest.raises(grpc.RpcError) as info:
        flagd.call("ResolveBoolean", "sso", None)
    details = info.value.details() or ""
    assert "targetingKey" in details and "account id" in details


def test_numeric_targeting_key_counts_as_none(flagd: Flagd) -> None:
    """As in flagd, a targetingKey that is not a string is no key (decision 2000): a feature
    answered per account says TARGETING_KEY_MISSING."""
    context = struct_pb2.Struct()
    context.update({"targetingKey": 42})
    with pytest.raises(grpc.RpcError) as info:
        flagd.stub.ResolveBoolean(flagd.pb.ResolveBooleanRequest(flag_key="sso", context=context))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("TARGETING_KEY_MISSING: ")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("method", ["ResolveBoolean", "ResolveInt", "ResolveAll"])
def test_nan_or_infinity_in_the_context_is_invalid_argument(
    flagd: Flagd, method: str, bad: float, nested: bool
) -> None:
    context = struct_pb2.Struct()
    context.update({"targetingKey": "acct_acme"})
    context.update({"requested": bad} if not nested else {"where": {"ratio": [1, bad]}})
    with pytest.raises(grpc.RpcError) as info:
        if method == "ResolveAll":
            flagd.stub.ResolveAll(flagd.pb.ResolveAllRequest(context=context), timeout=5)
        else:
            request = getattr(flagd.pb, f"{method}Request")(flag_key="api-calls", context=context)
            getattr(flagd.stub, method)(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("INVALID_CONTEXT: ")


def test_resolve_all_reports_natural_values_and_never_static(flagd: Flagd, sidecar: Any) -> None:
    for account in ("acct_acme", "acct_initech", "acct_globex", "acct_nobody"):
        flags = flagd.all(account).flags
        assert set(flags) == set(sidecar.state.catalog.features)
        assert all(f.reason in ("TARGETING_MATCH", "DEFAULT", "DISABLED") for f in flags.values())
        # every answer names its variant but the disabled feature's (the caller's default)
        assert all(f.variant for k, f in flags.items() if k != "legacy-reports")
        assert flags["legacy-reports"].WhichOneof("value") is None
    flags = flagd.all("acct_acme").flags
    assert flags["sso"].WhichOneof("value") == "bool_value" and flags["sso"].bool_value
    assert flags["execution-concurrency"].double_value == 25
    assert flags["support-tier"].string_value == "email"
    assert json_format.MessageToDict(flags["theme"].object_value) == {
        "accent": "blue",
        "logo": False,
    }
    integrations = json_format.MessageToDict(flags["integrations"].object_value)
    assert integrations["value"] == ["slack", "github", "salesforce"]
    # metered: has_access (what get_boolean_value asks); the numbers ride in the metadata
    assert flags["api-calls"].WhichOneof("value") == "bool_value" and flags["api-calls"].bool_value
    assert json_format.MessageToDict(flags["api-calls"].metadata)["remaining"] == 500000
    assert flagd.all("acct_initech").flags["sso"].bool_value is False


def test_resolve_all_without_targeting_key_answers_the_features_with_variants(
    flagd: Flagd, sidecar: Any
) -> None:
    """As flagd does (decision 2000): features with variants answer without a key; those
    answered per account are left out, like any flag that cannot be resolved."""
    flags = flagd.all(None).flags
    with_variants = {
        k for k, f in sidecar.state.catalog.features.items() if f.targeting is not None
    }
    assert with_variants and set(flags) == with_variants


def test_reflection_lists_both_flagd_services(sidecar: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {s.name for s in response.list_services_response.service}
    assert {"flagd.evaluation.v2.Service", "flagd.evaluation.v1.Service"} <= names


# -- EventStream ----------------------------------------------------------------------------


class Events:
    """An EventStream read on a background thread, so a test can wait with a deadline."""

    def __init__(self, target: str, pb: ModuleType, grpc_mod: ModuleType) -> None:
        self.channel = grpc.insecure_channel(target)
        self.call = grpc_mod.ServiceStub(self.channel).EventStream(pb.EventStreamRequest())
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.received.append((message.type, json_format.MessageToDict(message.data)))
        except grpc.RpcError:
            pass  # cancelled at close

    def wait(self, predicate: Any, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(0.02)
        raise AssertionError(f"no matching event in {timeout}s; received {self.received}")

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_event_stream_ready_changes_and_keep_alive(tmp_path: Path, version: str) -> None:
    catalog = copy_catalog(tmp_path / "catalog")
    with in_process(catalog, tmp_path / "state.db", heartbeat_seconds=0.3) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        events = Events(target, *VERSIONS[version])
        try:
            first = events.wait(lambda item: True)
            assert first[0] == "provider_ready", "provider_ready must come first"
            events.wait(lambda item: item[0] == "keep_alive", timeout=3)

            # a catalog change names exactly the changed flags
            text = catalog.read_text()
            catalog.write_text(text.replace("default: community", "default: email"))
            _, data = events.wait(lambda item: item[0] == "configuration_change")
            assert data == {"flags": {"support-tier": {"type": "update"}}}

            # an account change (here: usage) touches every flag key
            with Stubs(target) as stubs:
                report = pg.UsageReport(account_id="acct_initech", feature="api-calls", amount=5)
                stubs.usage.Report(pg.ReportRequest(reports=[report]), timeout=5)
            _, data = events.wait(
                lambda item: (
                    item[0] == "configuration_change"
                    and len(item[1]["flags"]) == len(sidecar.state.catalog.features)
                )
            )
            assert set(data["flags"]) == set(sidecar.state.catalog.features)
            assert {v["type"] for v in data["flags"].values()} == {"update"}
        finally:
            events.close()
