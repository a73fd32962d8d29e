"""Conversions between Python values and protobuf well-known types.

Shared by the provider and the sidecar so both read and write the wire the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2


def to_value(value: Any) -> struct_pb2.Value:
    """A JSON-shaped Python value as `google.protobuf.Value` (integers become doubles)."""
    out = struct_pb2.Value()
    if isinstance(value, Mapping):
        out.struct_value.SetInParent()  # an empty {} must still be a struct, not "no value"
        out.struct_value.update(dict(value))
    elif isinstance(value, list | tuple):
        out.list_value.SetInParent()
        out.list_value.extend(list(value))
    elif value is None:
        out.null_value = struct_pb2.NULL_VALUE
    else:
        json_format.ParseDict(value, out)
    return out


def from_value(value: struct_pb2.Value) -> Any:
    """`google.protobuf.Value` as Python; whole-number doubles come back as int."""
    return _ints(json_format.MessageToDict(value))


def to_struct(data: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(dict(data))
    return out


def from_struct(data: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = _ints(json_format.MessageToDict(data))
    return result


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def to_timestamp(at: datetime | None) -> timestamp_pb2.Timestamp | None:
    if at is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at.astimezone(UTC))
    return out


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
