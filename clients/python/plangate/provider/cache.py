"""Per-account cache of `EvaluateAll` results, invalidated by the sidecar's Watch events.

Why this shape:
- One entry per (account, context): a result computed for one account is never served to
  another, and contexts that could change the answer do not share an entry.
- The cache only holds entries while the Watch stream is healthy (`activate`/`deactivate`):
  without the stream nobody would tell us an entry went stale.
- An entry is good until the earliest `valid_until` of its resolutions (design §8 "Time"):
  `get` treats it as a miss from then on, so a boundary (an override expiring, a month
  turning) is honoured even before, or without, the sidecar's Watch event about it.
- A fetch that races an invalidation must not store what it read before the change, so a
  fetch is registered (`begin`) and voided by any invalidation that touches its account;
  `put` then drops it. No generation counters per account are kept, so memory stays bounded
  by `max_entries` plus the fetches in flight.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openfeature.flag_evaluation import FlagType

from .resolution import Outcome, outcome

_wall_clock = time.time  # bound once: `get` is the cached hit path

CacheKey = tuple[str, str]
"""(account id, canonical JSON of the context attributes that reach the sidecar)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One `EvaluateAll` answer, plus its resolutions already converted for OpenFeature.

    The conversion is memoised here, on the entry, so it lives and dies with it: an
    invalidation or eviction drops both, and nothing converted for one (account, context)
    can be served for another.
    """

    catalog_version: str
    resolutions: Mapping[str, Any]  # feature key -> plangate.v1.Resolution
    valid_until: float = math.inf  # epoch seconds: the earliest of the resolutions' valid_until
    # features whose targeting reads the clock (design §4.1): always asked for afresh
    volatile: frozenset[str] = frozenset()
    _outcomes: dict[tuple[str, FlagType], Outcome] = field(
        default_factory=dict, compare=False, repr=False
    )

    def outcome(self, feature: str, kind: FlagType) -> Outcome | None:
        """`feature` as `kind`, converted on first use; None if the catalog lacks it.

        Two threads may convert the same feature at once; both results are equal, so the
        race is harmless and needs no lock.
        """
        found = self._outcomes.get((feature, kind))
        if found is None:
            res = self.resolutions.get(feature)
            if res is None:
                return None  # not memoised: flag keys come from callers, unbounded
            found = self._outcomes[(feature, kind)] = outcome(res, kind)
        return found


@dataclass(eq=False, slots=True)
class Fetch:
    """A read from the sidecar in flight; `void` once an invalidation overtook it."""

    key: CacheKey
    void: bool = field(default=False)


class ResolutionCache:
    """A bounded LRU of account evaluations. Thread-safe; every operation is O(1) or O(hits)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._by_account: dict[str, set[CacheKey]] = {}
        self._inflight: set[Fetch] = set()
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if _wall_clock() >= entry.valid_until:  # time alone changed it: a miss
                del self._entries[key]
                self._unindex(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def begin(self, key: CacheKey) -> Fetch:
        fetch = Fetch(key)
        with self._lock:
            self._inflight.add(fetch)
        return fetch

    def put(self, fetch: Fetch, entry: Entry) -> bool:
        """Store the result of `fetch` unless it was overtaken; True if stored."""
        with self._lock:
            self._inflight.discard(fetch)
            if fetch.void or not self._active:
                return False
            key = fetch.key
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._by_account.setdefault(key[0], set()).add(key)
            while len(self._entries) > self._max:
                old, _ = self._entries.popitem(last=False)
                self._unindex(old)
            return True

    def abandon(self, fetch: Fetch) -> None:
        with self._lock:
            self._inflight.discard(fetch)

    def invalidate_accounts(self, account_ids: Iterable[str]) -> None:
        ids = set(account_ids)
        with self._lock:
            for account in ids:
                for key in self._by_account.pop(account, ()):
                    self._entries.pop(key, None)
            for fetch in self._inflight:
                if fetch.key[0] in ids:
                    fetch.void = True

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def activate(self) -> None:
        """The Watch stream is live again: start caching from a clean slate."""
        with self._lock:
            self._clear()
            self._active = True

    def deactivate(self) -> None:
        """The Watch stream is gone: nothing cached can be trusted, and nothing new is kept."""
        with self._lock:
            self._active = False
            self._clear()

    def _clear(self) -> None:
        self._entries.clear()
        self._by_account.clear()
        for fetch in self._inflight:
            fetch.void = True

    def _unindex(self, key: CacheKey) -> None:
        keys = self._by_account.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_account[key[0]]
