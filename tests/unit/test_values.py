"""Wire conversions shared by the provider and the sidecar."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.protocol.values import (
    from_struct,
    from_timestamp,
    from_value,
    to_struct,
    to_timestamp,
    to_value,
)


def test_empty_collections_survive_the_wire() -> None:
    assert from_value(to_value([])) == []
    assert from_value(to_value({})) == {}
    assert from_value(to_value({"a": []}))["a"] == []


def test_values_round_trip_with_whole_numbers_as_int() -> None:
    data = {"n": 3, "f": 1.5, "s": "x", "b": True, "none": None, "list": [1, "a", {"k": 2}]}
    assert from_value(to_value(data)) == data
    assert isinstance(from_value(to_value(3)), int)
    assert from_struct(to_struct(data)) == data


def test_timestamps_are_utc() -> None:
    at = datetime(2026, 2, 28, 23, 59, 59, 123000, tzinfo=UTC)
    ts = to_timestamp(at)
    assert ts is not None
    assert from_timestamp(ts) == at
    assert to_timestamp(None) is None


def _through_json_format(value: struct_pb2.Value) -> Any:
    """What `from_value` answered when it went through protobuf's JSON conversion."""

    def ints(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v)
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ints(x) for x in v]
        return v

    return ints(json_format.MessageToDict(value))


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**60), 2**60) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(_JSON)
def test_values_read_as_protobuf_json_conversion_reads_them(data: Any) -> None:
    """Same Python values, and the same refusal of NaN and infinities (a bad flagd context)."""
    wire = struct_pb2.Value()
    try:
        wire.CopyFrom(to_value(data))
    except ValueError:  # json_format refuses to build a non-finite number
        wire.number_value = float("nan")
    try:
        expected = _through_json_format(wire)
    except ValueError:
        with pytest.raises(ValueError):
            from_value(wire)
        return
    got = from_value(wire)
    assert got == expected and repr(got) == repr(expected)  # repr: int vs float too
    if wire.HasField("struct_value"):
        assert from_struct(wire.struct_value) == expected
