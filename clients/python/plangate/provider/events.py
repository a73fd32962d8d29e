"""What the sidecar's Watch stream means for OpenFeature: provider events and cache validity.

- `ready` -> `PROVIDER_READY` (the first one is left to the SDK, which emits it when
  `initialize` returns) and the cache starts accepting entries.
- `catalog_changed` -> the whole cache goes, `PROVIDER_CONFIGURATION_CHANGED` with the
  changed feature keys.
- `account_changed` -> those accounts' entries go (all of them for `all_accounts`, which a
  calendar period end sends instead of every id), `PROVIDER_CONFIGURATION_CHANGED` with every
  feature key (any of them may read differently for the account) and the account ids in the
  event metadata, so a handler can ignore accounts it does not serve.
- stream lost -> cache off, `PROVIDER_STALE`; still lost after the grace period ->
  `PROVIDER_ERROR`; `ready` again -> `PROVIDER_READY`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode

from .cache import ResolutionCache

log = logging.getLogger("plangate.provider")

Emit = Callable[[ProviderEvent, ProviderEventDetails], None]


class EventBridge:
    """Implements `WatchListener`; owns the connection state, the grace timer and the
    hand-shake with `initialize` (which must not return before the first `ready`)."""

    def __init__(
        self,
        cache: ResolutionCache | None,
        emit: Emit,
        grace_period: float,
        target: str,
    ) -> None:
        self._cache = cache
        self._emit = emit
        self._grace = grace_period
        self._target = target
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._initializing = True
        self._connected = False
        self._closed = False
        self._outage = 0  # counts disconnections, so a late timer knows it is outdated
        self._timer: threading.Timer | None = None
        self._keys: list[str] = []
        # the catalog's feature keys, None until the first `ready`: which `track` names are
        # usage reports (the rest are events, design §16)
        self.known_features: frozenset[str] | None = None
        self.catalog_version = ""
        self.watch_id = ""  # of the live Watch stream: EvaluateAll names it to add interest

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def feature_keys(self) -> list[str]:
        return list(self._keys)

    def wait_initialized(self, timeout: float) -> bool:
        """Block until the first `ready` (or `timeout`); from now on `ready` is announced here."""
        self._ready.wait(timeout)
        with self._lock:
            self._initializing = False
            return self._connected

    # -- WatchListener ---------------------------------------------------------------------

    def on_ready(self, catalog_version: str, all_features: list[str], watch_id: str) -> None:
        self._keys = sorted(all_features)
        self.known_features = frozenset(all_features)
        self.watch_id = watch_id
        with self._lock:
            if self._closed:
                return
            self._cancel_timer()
            was_down = not self._connected
            self._connected = True
            self.catalog_version = catalog_version
            announce = not self._initializing and was_down
            if self._cache is not None:
                self._cache.activate()
        self._ready.set()
        if announce:
            log.info("PlanGate sidecar at %s is back (catalog %s)", self._target, catalog_version)
            self._emit(
                ProviderEvent.PROVIDER_READY,
                ProviderEventDetails(
                    message=f"connected to {self._target}",
                    metadata={"catalog_version": catalog_version},
                ),
            )

    def on_catalog_changed(
        self, catalog_version: str, features: list[str], all_features: list[str]
    ) -> None:
        if self._cache is not None:
            self._cache.clear()
        self.catalog_version = catalog_version
        self._keys = sorted(all_features)
        self.known_features = frozenset(all_features)
        self._send_changed(
            ProviderEventDetails(
                flags_changed=list(features),
                message=f"catalog {catalog_version}",
                metadata={"catalog_version": catalog_version},
            )
        )

    def on_account_changed(self, account_ids: list[str], cause: str, all_accounts: bool) -> None:
        if self._cache is not None:
            if all_accounts:
                self._cache.clear()
            else:
                self._cache.invalidate_accounts(account_ids)
        self._send_changed(
            ProviderEventDetails(
                flags_changed=self.feature_keys,
                message=f"{'all accounts' if all_accounts else 'accounts'} changed ({cause})",
                metadata={
                    "account_ids": ",".join(account_ids),
                    "all_accounts": all_accounts,
                    "cause": cause,
                },
            )
        )

    def on_disconnected(self, reason: str) -> None:
        with self._lock:
            if self._closed or not self._connected:
                return
            self._connected = False
            if self._cache is not None:
                self._cache.deactivate()
            self._outage += 1
            outage = self._outage
            self._cancel_timer()
            self._timer = threading.Timer(self._grace, self._escalate, args=(outage, reason))
            self._timer.daemon = True
            self._timer.start()
        self._emit(
            ProviderEvent.PROVIDER_STALE,
            ProviderEventDetails(message=f"lost the PlanGate sidecar at {self._target}: {reason}"),
        )

    # -- internals -------------------------------------------------------------------------

    def _escalate(self, outage: int, reason: str) -> None:
        with self._lock:
            if self._closed or self._connected or outage != self._outage:
                return
        self._emit(
            ProviderEvent.PROVIDER_ERROR,
            ProviderEventDetails(
                message=(
                    f"PlanGate sidecar at {self._target} unreachable for more than "
                    f"{self._grace:g} s ({reason})"
                ),
                error_code=ErrorCode.GENERAL,
            ),
        )

    def _send_changed(self, details: ProviderEventDetails) -> None:
        if not self._closed:
            self._emit(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, details)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cancel_timer()
        self._ready.set()
