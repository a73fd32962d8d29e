"""Usage that `track` accepted but the sidecar has not acknowledged yet.

A check right after `track` must see the usage it just reported, but reports are sent in
the background. Rather than editing cached resolutions (which an invalidation could throw
away, bringing back the old number), the provider keeps this overlay and applies it to
whatever the sidecar answered, cached or not. An item leaves the overlay once its report
is acknowledged; the account's cache entries are invalidated first, so in the short window
between the two the overlay can count a report twice (errs towards "less remaining"),
never zero times.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Counter:
    items: dict[int, tuple[bool, float]] = field(default_factory=dict)  # seq -> (is_set, amount)
    added: float = 0.0  # sum of the additive items, kept so the common case is O(1)
    sets: int = 0

    def apply(self, used: float) -> float:
        if not self.sets:
            return max(0.0, used + self.added)
        for is_set, amount in self.items.values():  # insertion order = report order
            used = amount if is_set else max(0.0, used + amount)
        return used


class PendingUsage:
    """(account, feature) -> reports in flight, applied on top of the sidecar's `used`.

    A report on a credit-priced feature is in flight on its pool too (`amount × per_unit`,
    design §5.1), so a `track` on one feature lowers what every feature drawing on the same
    pool has left, at once. The prices are learned from the resolutions the provider sees.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._prices: dict[str, tuple[str, float]] = {}  # feature -> (pool, per_unit)

    def learn_price(self, feature: str, pool: str, per_unit: float) -> None:
        self._prices[feature] = (pool, per_unit)

    def add(self, seq: int, account: str, feature: str, amount: float, is_set: bool) -> None:
        with self._lock:
            self._add(seq, account, feature, amount, is_set)
            price = self._prices.get(feature)
            if price is not None and not is_set:
                self._add(seq, account, price[0], amount * price[1], False)

    def _add(self, seq: int, account: str, feature: str, amount: float, is_set: bool) -> None:
        counter = self._counters.get((account, feature))
        if counter is None:  # not `setdefault(key, _Counter())`: that builds one every call
            counter = self._counters[account, feature] = _Counter()
        counter.items[seq] = (is_set, amount)
        if is_set:
            counter.sets += 1
        else:
            counter.added += amount

    def settle(self, seq: int, account: str, feature: str) -> None:
        with self._lock:
            self._settle(seq, account, feature)
            price = self._prices.get(feature)
            if price is not None:
                self._settle(seq, account, price[0])

    def _settle(self, seq: int, account: str, feature: str) -> None:
        counter = self._counters.get((account, feature))
        if counter is None:
            return
        item = counter.items.pop(seq, None)
        if item is None:
            return
        if not counter.items:
            del self._counters[(account, feature)]
        elif item[0]:
            counter.sets -= 1
        else:
            counter.added -= item[1]

    def has(self, account: str, feature: str) -> bool:
        """Whether any report for (account, feature) is in flight (cheaper than `used`).

        Lock-free on purpose (it runs on every cached metered check): one dict membership
        test is atomic, and a report added or settled concurrently is simply ordered before
        or after this call, as it would be with the lock.
        """
        return (account, feature) in self._counters

    def used(self, account: str, feature: str, reported: float) -> float | None:
        """`reported` plus what is still in flight, or None when nothing is in flight."""
        with self._lock:
            counter = self._counters.get((account, feature))
            return None if counter is None else counter.apply(reported)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(c.items) for c in self._counters.values())
