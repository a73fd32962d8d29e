"""Durable state behind one interface; SQLite is the embedded default."""

from urllib.parse import urlsplit, urlunsplit

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


def is_shared(url: str) -> bool:
    """`--db` names a PostgreSQL database: shared mode (design §10); anything else is SQLite."""
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str, environment: str) -> Store:
    """A store from `--db`: a `postgresql://` URL (shared mode) or a file path (SQLite)."""
    if is_shared(url):
        try:
            from .postgres import PostgresStore  # psycopg is needed only in shared mode
        except ImportError as exc:
            raise StoreError(
                f"--db {describe_db(url)} needs the PostgreSQL driver ({exc}); "
                'install it with: pip install "plangate[postgres]"'
            ) from exc
        return PostgresStore(url, environment)
    return SqliteStore(url.removeprefix("sqlite:///"), environment)


def describe_db(url: str) -> str:
    """`--db` fit for a log line: a password in a PostgreSQL URL is masked."""
    if not is_shared(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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
    "describe_db",
    "is_shared",
    "open_store",
]
