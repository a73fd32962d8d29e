"""`/metrics` of the working set (design §19 "Metrics"), read from its counts at each scrape:
the live state keeps plain integers on its hot path, never a Prometheus lock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class _Stats(Protocol):
    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def loads(self) -> int: ...
    @property
    def load_seconds_sum(self) -> float: ...
    @property
    def load_bounds(self) -> Sequence[float]: ...
    @property
    def load_buckets(self) -> Sequence[int]: ...


class _Working(Protocol):
    """`runtime.live.working_set.WorkingSet`, as far as it is shown (the servers reach the
    runtime through its facades; the assembly hands this in)."""

    @property
    def held(self) -> int: ...
    @property
    def stats(self) -> _Stats: ...


class WorkingSetCollector(Collector):
    def __init__(self, working: _Working) -> None:
        self.working = working

    def collect(self) -> Iterator[Metric]:
        ws, stats = self.working, self.working.stats
        yield GaugeMetricFamily(
            "plangate_working_set_held_accounts",
            "Stored accounts in memory (--max-accounts; declared accounts not counted)",
            value=ws.held,
        )
        for name, text, value in (
            ("hits", "Uses of an account found in memory", stats.hits),
            ("misses", "Uses of an account that waited for a store read", stats.misses),
            (
                "evictions",
                "Accounts dropped from memory, least recently used first",
                stats.evictions,
            ),
        ):
            yield CounterMetricFamily(f"plangate_working_set_{name}", text, value=value)
        buckets = [
            (repr(b), float(n)) for b, n in zip(stats.load_bounds, stats.load_buckets, strict=True)
        ]
        buckets.append(("+Inf", float(stats.loads)))
        yield HistogramMetricFamily(
            "plangate_working_set_load_seconds",
            "Time to read one account (and its pools) from the store",
            buckets=buckets,
            sum_value=stats.load_seconds_sum,
        )
