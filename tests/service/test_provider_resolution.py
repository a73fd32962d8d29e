"""Resolution through OpenFeature (design §4, §8): every type, sync and async, cache on and off,
reasons, variants, flag metadata and errors — compared with what the sidecar's native API says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct, from_value
from support.provider import native, provider
from support.sidecar import Stubs

ACCOUNTS = ["acct_acme", "acct_globex", "acct_initech", "user_ann", "acct_nobody"]
FEATURES = [
    "sso",
    "beta-dashboard",
    "execution-concurrency",
    "support-tier",
    "integrations",
    "theme",
    "api-calls",
    "monthly-active-users",
    "seats",
    "exports",
    "legacy-reports",
]
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "integer": -999,
    "float": -1.5,
    "string": "dflt",
    "object": {"dflt": True},
}
TYPE_NUMBER = {
    "boolean": pb.VALUE_TYPE_BOOLEAN,
    "integer": pb.VALUE_TYPE_INTEGER,
    "float": pb.VALUE_TYPE_FLOAT,
    "string": pb.VALUE_TYPE_STRING,
    "object": pb.VALUE_TYPE_OBJECT,
}
FIELD = {
    "boolean": "as_boolean",
    "integer": "as_integer",
    "float": "as_float",
    "string": "as_string",
    "object": "as_object",
}


@pytest.fixture(params=[True, False], ids=["cache", "no-cache"])
def client(request: pytest.FixtureRequest, sidecar: Any) -> Iterator[OpenFeatureClient]:
    """Values, not latency, are checked here (that is `bench/`'s): a generous deadline, so a
    loaded machine answering a burst of 100 gathered calls late is not a wrong answer."""
    with provider(f"127.0.0.1:{sidecar.port}", cache=request.param, deadline_ms=10_000):
        yield api.get_client()


def _sync(client: OpenFeatureClient, kind: str, key: str, ctx: EvaluationContext) -> Any:
    method = getattr(client, f"get_{kind}_details")
    return method(key, DEFAULTS[kind], ctx)


async def _async(client: OpenFeatureClient, kind: str, key: str, ctx: EvaluationContext) -> Any:
    method = getattr(client, f"get_{kind}_details_async")
    return await method(key, DEFAULTS[kind], ctx)


def _expect(stubs: Stubs, account: str, key: str, kind: str) -> dict[str, Any]:
    """What OpenFeature must report, derived from the native API with an explicit type."""
    res = native(stubs, account, key)
    typed = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account, feature=key, type=TYPE_NUMBER[kind]), timeout=5
    )
    if typed.error_code:
        return {"value": DEFAULTS[kind], "error_code": typed.error_code, "reason": Reason.ERROR}
    if res.reason in ("DEFAULT", "DISABLED") and not res.variant and not res.HasField("value"):
        # decision 2002: the sidecar says "the caller's default"; OpenFeature has no variant
        return {"value": DEFAULTS[kind], "error_code": None, "reason": res.reason, "variant": None}
    field = FIELD[kind]
    value = from_value(res.as_object) if kind == "object" else getattr(res, field)
    if kind == "object" and value is None:  # an empty list/object whose Value kind is unset
        value = [] if res.feature_type == "list" else {}
    return {
        "value": value,
        "error_code": None,
        "reason": res.reason,
        "variant": res.variant,
        "flag_metadata": from_struct(res.metadata),
    }


def _check(got: FlagEvaluationDetails[Any], want: dict[str, Any], where: str) -> None:
    for name, value in want.items():
        actual = getattr(got, name)
        if name == "error_code" and actual is not None:
            actual = str(actual.value)
        assert actual == value, f"{where}: {name} = {actual!r}, want {value!r}"
        if name == "value":
            assert type(actual) is type(value), f"{where}: value type {type(actual)}"


Wanted = dict[tuple[str, str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def wanted(stubs: Stubs) -> Wanted:
    """(account, feature, type) -> expected OpenFeature details, for the whole table."""
    return {
        (a, k, t): _expect(stubs, a, k, t) for a in ACCOUNTS for k in FEATURES for t in DEFAULTS
    }


def test_every_feature_as_every_type_matches_the_sidecar_sync(
    client: OpenFeatureClient, wanted: Wanted
) -> None:
    for (account, key, kind), want in wanted.items():
        ctx = EvaluationContext(account)
        _check(_sync(client, kind, key, ctx), want, f"{account} {key} as {kind}")
        # and again: the second answer may come from the cache
        _check(_sync(client, kind, key, ctx), want, f"{account} {key} as {kind} (again)")


def test_every_feature_as_every_type_matches_the_sidecar_async(
    client: OpenFeatureClient, wanted: Wanted
) -> None:
    async def run() -> None:
        for (account, key, kind), want in wanted.items():
            got = await _async(client, kind, key, EvaluationContext(account))
            _check(got, want, f"async {account} {key} as {kind}")
        # many at once on one loop, as an async web app would do
        keys = list(wanted)
        results = await asyncio.gather(
            *(_async(client, t, k, EvaluationContext(a)) for a, k, t in keys)
        )
        for (account, key, kind), got in zip(keys, results, strict=True):
            _check(got, wanted[(account, key, kind)], f"gathered {account} {key} as {kind}")

    asyncio.run(run())
    asyncio.run(run())  # a second event loop gets its own grpc.aio channel


def test_spot_checks_read_as_the_design_says(client: OpenFeatureClient) -> None:
    acme = EvaluationContext("acct_acme")
    sso = client.get_boolean_details("sso", False, acme)
    assert (sso.value, sso.variant, sso.reason) == (True, "pro", "TARGETING_MATCH")
    assert dict(sso.flag_metadata) == {
        "has_access": True,
        "flagSetId": "pipewise",  # decision 2006: the product is the flag set
        "flagSetVersion": sso.flag_metadata["flagSetVersion"],
    }

    concurrency = client.get_integer_details("execution-concurrency", 0, acme)
    assert (concurrency.value, concurrency.variant) == (25, "override")
    assert client.get_float_value("execution-concurrency", 0.0, acme) == 25.0
    assert client.get_string_value("support-tier", "", acme) == "email"
    integrations = client.get_object_value("integrations", [], acme)
    assert integrations == ["slack", "github", "salesforce"]
    free = client.get_object_details("integrations", ["x"], EvaluationContext("acct_initech"))
    assert (free.value, free.error_code, free.reason) == ([], None, "DEFAULT")

    calls = client.get_integer_details("api-calls", 0, acme)
    assert calls.value == 500_000 and calls.variant == "grant"
    meta = dict(calls.flag_metadata)
    assert meta.pop("flagSetId") == "pipewise" and meta.pop("flagSetVersion")
    assert meta.pop("period_end").endswith("Z")
    assert meta.pop("valid_until").endswith("Z")  # the grant's end or the period's (design §8)
    assert meta == {
        "has_access": True,
        "unlimited": False,
        "limit": 500_000,
        "used": 0,
        "remaining": 500_000,
    }
    detail = client.get_object_value("api-calls", {}, acme)
    assert isinstance(detail, dict)
    assert {"limit", "used", "remaining", "unlimited", "has_access", "source"} <= set(detail)

    theme = client.get_object_details("theme", {}, acme)
    assert theme.value == {"accent": "blue", "logo": False} and theme.reason == "DEFAULT"
    enterprise = client.get_object_value("theme", {}, EvaluationContext("acct_globex"))
    assert enterprise == {"accent": "custom", "logo": True}
    unlimited = client.get_boolean_details("api-calls", False, EvaluationContext("acct_globex"))
    assert unlimited.value is True and unlimited.flag_metadata["unlimited"] is True
    assert "limit" not in unlimited.flag_metadata

    archived = client.get_boolean_details("legacy-reports", True, acme)  # the caller's default
    assert (archived.value, archived.reason, archived.variant) == (True, "DISABLED", None)

    member = client.get_boolean_details("sso", False, EvaluationContext("user_ann"))
    assert member.value is True and member.reason == "TARGETING_MATCH"


def test_errors_surface_as_openfeature_errors(client: OpenFeatureClient) -> None:
    acme = EvaluationContext("acct_acme")

    missing = client.get_boolean_details("no-such-feature", True, acme)
    assert (missing.value, missing.error_code, missing.reason) == (
        True,
        ErrorCode.FLAG_NOT_FOUND,
        Reason.ERROR,
    )
    assert "no-such-feature" in (missing.error_message or "")

    mismatch = client.get_string_details("sso", "fallback", acme)
    assert (mismatch.value, mismatch.error_code) == ("fallback", ErrorCode.TYPE_MISMATCH)
    assert "boolean" in (mismatch.error_message or "")
    assert client.get_integer_details("support-tier", 7, acme).error_code == ErrorCode.TYPE_MISMATCH
    assert client.get_boolean_details("integrations", True, acme).value is True

    for ctx in (EvaluationContext(), EvaluationContext(None, {"requested": 1}), None):
        no_key = client.get_boolean_details("sso", True, ctx)
        assert (no_key.value, no_key.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)

    bad = client.get_boolean_details(
        "api-calls", True, EvaluationContext("acct_acme", {"requested": "lots"})
    )
    assert (bad.value, bad.error_code) == (True, ErrorCode.INVALID_CONTEXT)
    assert "requested" in (bad.error_message or "")


def test_unknown_account_gets_the_default_with_its_denial(client: OpenFeatureClient) -> None:
    res = client.get_boolean_details("sso", True, EvaluationContext("acct_never_heard_of"))
    assert res.error_code is None
    assert (res.value, res.reason) == (False, "DEFAULT")
    assert res.flag_metadata["denial"] == "account_not_found"


def test_requested_amount_decides_metered_access(client: OpenFeatureClient, stubs: Stubs) -> None:
    for requested in (1, 999, 1000, 1001, 0):
        ctx = EvaluationContext("acct_initech", {"requested": requested})
        got = client.get_boolean_details("api-calls", True, ctx)
        res = native(stubs, "acct_initech", "api-calls", requested=requested)
        assert got.value is res.as_boolean, requested
        assert got.flag_metadata == from_struct(res.metadata), requested
    too_many = client.get_boolean_details(
        "api-calls", True, EvaluationContext("acct_initech", {"requested": 5000})
    )
    assert too_many.value is False
    assert too_many.flag_metadata["denial"] == "requested_exceeds_limit"


def test_other_context_attributes_are_accepted(client: OpenFeatureClient) -> None:
    ctx = EvaluationContext(
        "acct_acme", {"region": "eu", "at": datetime(2026, 1, 1, tzinfo=UTC), "tags": ["a"]}
    )
    assert client.get_boolean_value("sso", False, ctx) is True
