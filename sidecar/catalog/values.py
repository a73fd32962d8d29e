"""Small typed readers for catalog scalars; each reports a problem and returns None on bad input."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from typing import Any

from .source import MAX_VALUE_BYTES, Document, Path

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """Planship's rule: lowercase, runs of non-alphanumerics become one "-"."""
    return _NON_ALNUM.sub("-", name.lower()).strip("-")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): NaN and infinities are not catalog numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def oversized(value: dict[Any, Any] | list[Any]) -> str | None:
    """Why a list or object value is too large to hold (more than `MAX_VALUE_BYTES` as JSON),
    or None. Every evaluation of the feature copies it into answers, every Watch event and
    every EvaluateAll: an admin value of megabytes would be paid for on each."""
    size = len(json.dumps(value, default=str, separators=(",", ":")))
    if size <= MAX_VALUE_BYTES:
        return None
    return f"the value is {size} bytes as JSON; a value may have at most {MAX_VALUE_BYTES}"


def to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """A timestamp from YAML (datetime/date) or JSON (ISO-8601 string); naive means UTC."""
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return to_utc(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def read_time(doc: Document, path: Path, value: Any) -> datetime | None:
    parsed = parse_time(value)
    if parsed is None:
        doc.error(
            path, f"expected an ISO-8601 timestamp such as 2026-01-15T00:00:00Z, got {value!r}"
        )
    return parsed


def read_str(doc: Document, path: Path, value: Any, *, required: bool = True) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if value is None and not required:
        return None
    doc.error(path, f"expected a non-empty string, got {value!r}")
    return None


def read_list(doc: Document, path: Path, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    doc.error(path, f"expected a list, got {type(value).__name__}")
    return []


def read_mapping(doc: Document, path: Path, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    doc.error(path, f"expected a mapping (key: value), got {type(value).__name__}")
    return {}


def check_keys(doc: Document, path: Path, data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            doc.error(
                (*path, key),
                f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})",
            )
