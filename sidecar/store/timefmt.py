"""The one text form of an instant used in stored keys, so equal instants compare equal as text."""

from __future__ import annotations

from datetime import UTC, datetime


def ts(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
