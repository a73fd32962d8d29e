"""Last-known answers for an outage: `on_unavailable="last_known"` (design §21).

While the sidecar cannot be reached, a feature in mode `last_known` answers the last value the
provider received for that account and feature, with reason `STALE`, as long as that answer's
own `valid_until` has not passed (after it, the answer could be wrong by time alone, so the
caller's default is the honest answer). Kept apart from the cache: a dropped `Watch` empties
the cache, because nobody would tell it about changes, but an outage is exactly when these are
wanted. Only answers that hold for the account whatever the context are kept (the sidecar
marks the others `context_dependent`), and never clock-driven ones (`volatile`) or errors.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Any

from .config import LAST_KNOWN, ProviderConfig

# (account, feature) pairs kept: bounded so a provider serving many accounts stays small.
MAX_ENTRIES = 100_000


class LastKnown:
    def __init__(self, config: ProviderConfig, max_entries: int = MAX_ENTRIES) -> None:
        self._config = config
        self._max = max_entries
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[str, str], tuple[Any, float]] = OrderedDict()

    def record(self, account: str, res: Any) -> None:
        """Keep `res` (a plangate.v1.Resolution) if its feature's mode is `last_known`."""
        if res.error_code or res.context_dependent or res.volatile:
            return
        if self._config.outage_mode(res.feature) != LAST_KNOWN:
            return
        until = math.inf
        if res.HasField("valid_until"):
            until = res.valid_until.seconds + res.valid_until.nanos / 1e9
        key = (account, res.feature)
        with self._lock:
            self._answers[key] = (res, until)
            self._answers.move_to_end(key)
            if len(self._answers) > self._max:
                self._answers.popitem(last=False)

    def recall(self, account: str, feature: str) -> Any | None:
        """The last answer for (account, feature) while it is still valid, else None."""
        with self._lock:
            found = self._answers.get((account, feature))
        if found is None or time.time() >= found[1]:
            return None
        return found[0]
