"""The working set (design §19): which stored accounts a sidecar with `--max-accounts N`
holds in memory, least recently used first out.

Only the bookkeeping lives here — the order of use, the ids known to be unknown, the
accounts a request in flight is using (never evicted under it), and the counts `/metrics`
shows. What holding an account means (its record, its `Account`, its counters) is the live
state's (`state.LiveState`); it asks this structure what to evict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...store.base import CounterKey

LOAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)
"""Upper bounds (seconds) of `plangate_working_set_load_seconds`: a load is one indexed
query, so the interesting range is sub-millisecond (SQLite) to tens of ms (remote PG)."""


@dataclass(slots=True)
class WorkingSetStats:
    """Counts since start-up, read by `/metrics` (monotonic, like Prometheus counters)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    loads: int = 0
    load_seconds_sum: float = 0.0
    load_bounds: tuple[float, ...] = LOAD_BUCKETS
    load_buckets: list[int] = field(default_factory=lambda: [0] * len(LOAD_BUCKETS))
    """Loads that took at most `LOAD_BUCKETS[i]` seconds (cumulative, as Prometheus's `le`)."""

    def loaded(self, seconds: float) -> None:
        self.loads += 1
        self.load_seconds_sum += seconds
        for i, bound in enumerate(LOAD_BUCKETS):
            if seconds <= bound:
                self.load_buckets[i] += 1


class WorkingSet:
    """At most `capacity` stored accounts (held or remembered as unknown), in order of use.

    Touched on the event loop (hits, pins) and by loading threads under the live state's
    write lock (adds, evictions); every operation is a few dict operations on an
    `OrderedDict`, each atomic under the GIL.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"--max-accounts must be 1 or more, got {capacity}")
        self.capacity = capacity
        self._order: OrderedDict[str, bool] = OrderedDict()  # id -> held (False: unknown)
        self._pins: dict[str, int] = {}  # id -> requests in flight using it
        self.scopes: dict[str, set[CounterKey]] = {}  # counter scope -> its keys in memory
        self.stats = WorkingSetStats()

    def __len__(self) -> int:
        return len(self._order)

    @property
    def held(self) -> int:
        """Stored accounts in memory (the unknown ids remembered are not counted)."""
        return sum(1 for known in self._order.values() if known)

    def has(self, account_id: str) -> bool:
        """Whether the id needs no load: held, or known to be unknown; a hit moves it last."""
        if account_id in self._order:
            self._order.move_to_end(account_id)
            return True
        return False

    def holds(self, account_id: str) -> bool:
        """Held as a stored account (no change to the order)."""
        return self._order.get(account_id, False)

    def add(self, account_id: str, known: bool = True) -> None:
        self._order[account_id] = known
        self._order.move_to_end(account_id)

    def forget(self, account_id: str) -> None:
        self._order.pop(account_id, None)

    def pin(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._pins[i] = self._pins.get(i, 0) + 1

    def unpin(self, ids: Iterable[str]) -> None:
        for i in ids:
            left = self._pins.get(i, 0) - 1
            if left > 0:
                self._pins[i] = left
            else:
                self._pins.pop(i, None)

    def pinned(self, account_id: str) -> bool:
        return account_id in self._pins

    def victims(self) -> list[str]:
        """The least recently used ids beyond the capacity that no request is using, taken
        out of the order (the caller drops what memory holds of them)."""
        out: list[str] = []
        over = len(self._order) - self.capacity
        if over <= 0:
            return out
        for account_id in list(self._order):
            if len(out) >= over:
                break
            if account_id not in self._pins:
                out.append(account_id)
        for account_id in out:
            del self._order[account_id]
        return out

    def note_counters(self, keys: Iterable[CounterKey]) -> None:
        """Index counter keys by scope, so an eviction drops an account's counters without
        scanning all of them."""
        for key in keys:
            self.scopes.setdefault(key[0], set()).add(key)

    def drop_scope(self, scope: str) -> set[CounterKey]:
        return self.scopes.pop(scope, set())
