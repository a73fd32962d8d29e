"""The sidecar's rate windows (design §17): counted in memory, per sidecar, never stored.

One `Buckets` per (account, feature), kept apart from the working set's LRU (§19): an entry
lives while its window has traffic and is dropped once nothing of it counts (after a whole
window without traffic). Idempotency keys of rate `Consume`s are remembered for one window.
Entries are kept per window width in touch order, so dropping the stale ones only ever looks
at the oldest: no sweep over every window on the hot path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ....protocol.metering import Denial
from ...engine import rates
from ...engine.rates import Buckets


@dataclass(frozen=True, slots=True)
class Admission:
    """What a rate `Consume` answered: a repeated idempotency key answers it again."""

    granted: bool
    denial: str
    used: float  # the window's count right after the call


_Key = tuple[str, str]  # (account, feature)
_IdemKey = tuple[str, str, str]  # (account, feature, idempotency key)


class RateWindows:
    """Every rate window this sidecar counts; a `RateView` for evaluations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[float, OrderedDict[_Key, Buckets]] = {}
        self._answers: dict[float, OrderedDict[_IdemKey, tuple[float, Admission]]] = {}

    def count(self, account: str, feature: str, width: float, now: float) -> float:
        windows = self._windows.get(width)
        if windows is None:
            return 0.0
        return rates.count(windows.get((account, feature)), width, now)

    def admit(
        self,
        key: tuple[str, str],
        width: float,
        now: float,
        amount: float,
        limit: float | None,
        idempotency_key: str = "",
    ) -> tuple[Admission, bool]:
        """Count `amount` for `key` (account, feature) if the window ending `now` admits it
        under `limit`, and whether the answer is a repeat of `idempotency_key`'s. Check and
        count are one step, so concurrent callers never push a window past its limit."""
        with self._lock:
            answers = self._answers.setdefault(width, OrderedDict())
            if idempotency_key:
                _drop_old(answers, now - width)
                seen = answers.get((*key, idempotency_key))
                if seen is not None:
                    return seen[1], True
            windows = self._windows.setdefault(width, OrderedDict())
            while windows and rates.stale(next(iter(windows.values())), width, now):
                windows.popitem(last=False)  # a whole window without traffic: dropped
            buckets = windows.get(key)
            used = rates.count(buckets, width, now)
            granted = rates.admits(used, amount, limit)
            if granted:
                windows[key] = rates.counted(buckets, width, now, amount)
                windows.move_to_end(key)
                used += amount
            answer = Admission(granted, "" if granted else Denial.RATE_LIMITED.value, used)
            if idempotency_key:
                answers[(*key, idempotency_key)] = (now, answer)
            return answer, False

    def __len__(self) -> int:
        """The (account, feature) windows held: a measure for tests and metrics."""
        return sum(len(w) for w in self._windows.values())


def _drop_old(answers: OrderedDict[_IdemKey, tuple[float, Admission]], before: float) -> None:
    """Forget the idempotency keys answered at or before `before`, oldest first."""
    while answers and next(iter(answers.values()))[0] <= before:
        answers.popitem(last=False)
