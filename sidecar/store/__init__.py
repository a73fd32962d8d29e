"""Durable state behind one interface; SQLite is the embedded default."""

from .base import (
    Admit,
    CounterKey,
    Record,
    Status,
    Store,
    StoreError,
    UsageOutcome,
    UsageWrite,
)
from .sqlite import SqliteStore


def open_store(url: str, environment: str) -> Store:
    """A store from `--db`: a `postgresql://` URL (shared mode) or a file path (SQLite)."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # psycopg is needed only in shared mode

        return PostgresStore(url, environment)
    return SqliteStore(url.removeprefix("sqlite:///"), environment)


__all__ = [
    "Admit",
    "CounterKey",
    "Record",
    "SqliteStore",
    "Status",
    "Store",
    "StoreError",
    "UsageOutcome",
    "UsageWrite",
    "open_store",
]
