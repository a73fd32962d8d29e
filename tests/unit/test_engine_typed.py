"""Typed resolution (design §4 table): every feature type resolved as every kind."""

from __future__ import annotations

import json
from typing import Any

import pytest
from plangate.protocol.metering import Denial
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import (
    ErrorCode,
    EvaluationError,
    Kind,
    StateView,
    detail,
    evaluate,
    metadata,
    resolve_as,
)
from support.typed_table import CATALOG, JUNE, NOW, TABLE
from support.usage import FakeUsage, usage_of

# What the "pro" account gets, with 30.5 calls used this month.
EXPECTED = {
    ("sso", "boolean"): True,
    ("beta", "boolean"): True,
    ("concurrency", "integer"): 10,
    ("concurrency", "float"): 10.0,
    ("tier", "string"): "email",
    ("integrations", "object"): ["slack", "github"],
    ("theme", "object"): {"accent": "green", "logo": {"size": 3}},
    ("calls", "boolean"): True,
    ("calls", "integer"): 69,  # remaining 69.5, as an integer
    ("calls", "float"): 69.5,
}


@pytest.fixture
def snap(usage: FakeUsage) -> StateView:
    usage.set("acct:pro", "calls", JUNE, 30.5)
    return StateView.of(parse_catalog(CATALOG), usage)


def resolve(snapshot: StateView, account: str, key: str, kind: Kind) -> Any:
    decision = evaluate(snapshot, account, key, {}, NOW)
    return decision, resolve_as(decision, snapshot.catalog.features[key], kind)


CELLS = [(key, kind) for key in TABLE for kind in Kind]


@pytest.mark.parametrize(("key", "kind"), CELLS, ids=[f"{k}-{c.value}" for k, c in CELLS])
def test_table_cell(snap: StateView, key: str, kind: Kind) -> None:
    cell = TABLE[key].get(kind.value)
    if cell is None:
        with pytest.raises(EvaluationError) as info:
            resolve(snap, "pro", key, kind)
        assert info.value.code is ErrorCode.TYPE_MISMATCH
        assert key in info.value.message and kind.value in info.value.message
        return
    decision, value = resolve(snap, "pro", key, kind)
    if cell == "detail":
        assert value == detail(decision)
        assert value["value"] == decision.value
        assert value["has_access"] is decision.has_access
        assert value["source"] == "pro"
        json.dumps(value)  # a JSON object
        return
    expected = EXPECTED[(key, kind.value)]
    assert value == expected
    assert type(value) is type(expected)


def test_every_type_has_its_row() -> None:
    catalog = parse_catalog(CATALOG)
    assert {f.type.value for f in catalog.features.values()} == {
        "boolean",
        "flag",
        "integer",
        "string",
        "list",
        "object",
        "metered",
    }
    assert {(k, c) for k, c in CELLS} >= {(k, Kind(c)) for k, c in EXPECTED}


def test_unlimited_integer_and_metered_resolve_to_infinite(snap: StateView) -> None:
    _, as_int = resolve(snap, "max", "concurrency", Kind.INTEGER)
    assert as_int == 9999  # the feature's `infinite`
    # A metered feature has no `infinite` option: it resolves to the default sentinel.
    _, remaining = resolve(snap, "max", "calls", Kind.INTEGER)
    assert remaining == snap.catalog.features["calls"].infinite == -1
    _, as_float = resolve(snap, "max", "concurrency", Kind.FLOAT)
    assert as_float == 9999.0
    _, access = resolve(snap, "max", "calls", Kind.BOOLEAN)
    assert access is True


def test_metered_detail_carries_the_whole_decision(snap: StateView) -> None:
    _, value = resolve(snap, "pro", "calls", Kind.OBJECT)
    assert {
        "value",
        "limit",
        "used",
        "remaining",
        "unlimited",
        "period_end",
        "has_access",
        "source",
    } <= set(value)
    assert (value["limit"], value["used"], value["remaining"], value["unlimited"]) == (
        100,
        30.5,
        69.5,
        False,
    )
    assert value["period_end"] == "2026-07-01T00:00:00Z"
    assert value["has_access"] is True
    _, unlimited = resolve(snap, "max", "calls", Kind.OBJECT)
    assert unlimited["unlimited"] is True and unlimited["limit"] is None
    json.dumps(value)


def test_metered_remaining_when_exhausted(snap: StateView) -> None:
    usage_of(snap).set("acct:pro", "calls", JUNE, 150)
    decision, remaining = resolve(snap, "pro", "calls", Kind.INTEGER)
    assert remaining == 0
    assert resolve_as(decision, snap.catalog.features["calls"], Kind.BOOLEAN) is False
    assert metadata(decision)["denial"] == "usage_limit_reached"


def test_metadata_is_scalars_only(snap: StateView) -> None:
    for key in TABLE:
        for account in ("pro", "max", "ghost"):
            meta = metadata(evaluate(snap, account, key, {}, NOW))
            assert all(isinstance(v, bool | int | float | str) for v in meta.values()), meta
    meta = metadata(evaluate(snap, "pro", "calls", {}, NOW))
    # decision 2006: the product is the flagd flag set, the catalog version its version
    assert meta.pop("flagSetId") == snap.catalog.features["calls"].product
    assert meta.pop("flagSetVersion") == snap.catalog.version
    assert meta == {
        "has_access": True,
        "limit": 100,
        "used": 30.5,
        "remaining": 69.5,
        "unlimited": False,
        "period_end": "2026-07-01T00:00:00Z",
        "valid_until": "2026-07-01T00:00:00Z",
    }
    ghost = evaluate(snap, "ghost", "sso", {}, NOW)
    assert ghost.denial is Denial.ACCOUNT_NOT_FOUND
    assert metadata(ghost)["denial"] == "account_not_found"
