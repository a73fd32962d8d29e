"""Conversions between Python values and protobuf well-known types.

Shared by the provider and the sidecar so both read and write the wire the same way.
"""

from __future__ import annotations

import math
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
    """`google.protobuf.Value` as Python; whole-number doubles come back as int. Read
    directly rather than through `json_format` (a fifth of an uncached provider call's own
    time went there), with its rule kept: a non-finite number raises `ValueError`."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        if not math.isfinite(n):
            raise ValueError(f"Fail to serialize {n} for Value.number_value")
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return None  # null_value, or no kind at all


def to_struct(data: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(dict(data))
    return out


def from_struct(data: struct_pb2.Struct) -> dict[str, Any]:
    return {key: from_value(v) for key, v in data.fields.items()}


def to_timestamp(at: datetime | None) -> timestamp_pb2.Timestamp | None:
    if at is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at.astimezone(UTC))
    return out


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
