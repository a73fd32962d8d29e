"""A usage view for engine unit tests: counters in a dict, every read recorded."""

from __future__ import annotations

from datetime import datetime

from plangate.sidecar.engine import StateView


class FakeUsage:
    """A dict-backed `UsageView`: (scope key, feature, period start) -> amount.

    Every read is recorded in `reads`, so a test can check which counter an evaluation used.
    """

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str, datetime], float] = {}
        self.reads: list[tuple[str, str, datetime]] = []

    def set(self, scope_key: str, feature: str, period_start: datetime, amount: float) -> None:
        self.counters[(scope_key, feature, period_start)] = amount

    def used(self, scope_key: str, feature: str, period_start: datetime) -> float:
        self.reads.append((scope_key, feature, period_start))
        return self.counters.get((scope_key, feature, period_start), 0.0)


def usage_of(snapshot: StateView) -> FakeUsage:
    """The `FakeUsage` a test snapshot was built with, typed as such."""
    assert isinstance(snapshot.usage, FakeUsage), "snapshot was not built with FakeUsage"
    return snapshot.usage
