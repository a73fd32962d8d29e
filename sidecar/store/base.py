"""The durable-state interface every backend implements (SQLite now, PostgreSQL in shared mode).

Account records are stored in the catalog file's own account format (a JSON object like
one entry of `accounts:`), so one validator (`catalog.accounts.read_accounts`) checks the
file, admin input and what comes back from the store. Usage is kept as counters keyed by
(scope, feature, period start); the arithmetic comes from `engine.usage`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from ..catalog.model import Feature
from ..engine.usage import UsageReport

Record = dict[str, Any]
"""An account in catalog format: {"id", "name", "attributes", "subscriptions", "overrides", "grants"}."""

CounterKey = tuple[str, str, datetime]
"""(scope key, feature key, period start)."""

Admit = Callable[[float], str | None]
"""Consume's check: given the current usage, None to record or a denial reason to refuse."""


class Status(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class UsageWrite:
    """One report resolved to its counter; `admit` makes it a Consume."""

    scope_key: str
    feature: Feature
    period_start: datetime
    report: UsageReport
    admit: Admit | None = None


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    status: Status
    usage: float
    period_start: datetime | None = None
    message: str = ""


class Store(Protocol):
    """Durable state of one environment. Every method is atomic; a return means durable."""

    environment: str

    def load_records(self) -> dict[str, Record]: ...

    def load_counters(self) -> dict[CounterKey, float]: ...

    def save_record(self, record: Record) -> None: ...

    def delete_record(self, account_id: str) -> bool: ...

    def record_usage(self, writes: Sequence[UsageWrite]) -> list[UsageOutcome]:
        """Apply a batch in one transaction; idempotency keys seen before return the first outcome."""
        ...

    def reset_usage(self, scope_key: str, feature: str, period_start: datetime) -> float:
        """Zero a counter (and forget its unique keys); returns the previous value."""
        ...

    def prune_idempotency(self, older_than: datetime) -> int: ...

    def close(self) -> None: ...
