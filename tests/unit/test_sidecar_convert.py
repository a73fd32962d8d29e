"""`server.convert.resolution`: every kind, or only the kind asked for, on the wire."""

from __future__ import annotations

from typing import Any

import pytest
from plangate.protocol.values import to_struct, to_value
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import (
    ErrorCode,
    EvaluationError,
    Kind,
    StateView,
    evaluate,
    kinds_of,
    metadata,
    resolve_as,
)
from plangate.sidecar.server.convert import plain_value, resolution
from support.typed_table import CATALOG, JUNE, NOW, TABLE

FIELD = {
    Kind.BOOLEAN: "as_boolean",
    Kind.INTEGER: "as_integer",
    Kind.FLOAT: "as_float",
    Kind.STRING: "as_string",
    Kind.OBJECT: "as_object",
}


@pytest.fixture
def snap(usage: Any) -> StateView:
    usage.set("acct:pro", "calls", JUNE, 30.5)
    return StateView.of(parse_catalog(CATALOG), usage)


def typed(res: Any) -> set[Kind]:
    return {kind for kind, field in FIELD.items() if res.HasField(field)}


@pytest.mark.parametrize("key", list(TABLE))
def test_without_a_kind_every_fitting_kind_is_filled(snap: StateView, key: str) -> None:
    feature = snap.catalog.features[key]
    decision = evaluate(snap, "pro", key, {}, NOW)
    res = resolution(decision, feature)
    assert typed(res) == {Kind(k) for k in TABLE[key]} == set(kinds_of(feature.type))
    if Kind.OBJECT in typed(res):
        assert res.as_object == to_value(resolve_as(decision, feature, Kind.OBJECT))
    assert res.value == to_value(decision.value)
    assert res.metadata == to_struct(metadata(decision))


@pytest.mark.parametrize("key", list(TABLE))
def test_with_a_kind_only_that_field_is_filled(snap: StateView, key: str) -> None:
    feature = snap.catalog.features[key]
    decision = evaluate(snap, "pro", key, {}, NOW)
    everything = resolution(decision, feature)
    for kind in Kind:
        if kind not in kinds_of(feature.type):
            with pytest.raises(EvaluationError) as info:
                resolution(decision, feature, kind)
            assert info.value.code is ErrorCode.TYPE_MISMATCH
            continue
        res = resolution(decision, feature, kind)
        assert typed(res) == {kind}
        # everything but the other typed fields is as in the full resolution
        expected = type(everything)()
        expected.CopyFrom(everything)
        for field in set(FIELD.values()) - {FIELD[kind]}:
            expected.ClearField(field)
        assert res == expected


NESTED = {"a": 1, "b": [1, "x", None, {"c": True}], "d": {}}


@pytest.mark.parametrize(
    "value", [None, True, False, 0, -5, 2.5, 10**12, 2**70, "", "x", {}, [], (), ("a",), NESTED]
)
def test_plain_value_is_to_value(value: Any) -> None:
    assert plain_value(value).SerializeToString() == to_value(value).SerializeToString()
