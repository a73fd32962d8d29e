"""Durable state behind one interface; SQLite is the embedded default."""

from .base import Admit, CounterKey, Record, Status, Store, UsageOutcome, UsageWrite
from .sqlite import SqliteStore


def open_store(url: str, environment: str) -> Store:
    """A store from `--db`: a file path (SQLite)."""
    return SqliteStore(url.removeprefix("sqlite:///"), environment)


__all__ = [
    "Admit",
    "CounterKey",
    "Record",
    "SqliteStore",
    "Status",
    "Store",
    "UsageOutcome",
    "UsageWrite",
    "open_store",
]
