"""Wire conversions shared by the provider and the sidecar."""

from __future__ import annotations

from datetime import UTC, datetime

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
