"""Following the sidecar's `Watch` stream on a background thread, reconnecting forever.

The stream is the provider's only source of truth about freshness: its `ready` says the
sidecar is serving, its change events say what to drop from the cache, and its end (or
silence past the heartbeat timeout, for connections that die without a reset) says
"disconnected". What those mean for OpenFeature is decided by the listener, not here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from .transport import Transport

log = logging.getLogger("plangate.provider")


class WatchListener(Protocol):
    def on_ready(self, catalog_version: str, all_features: list[str], watch_id: str) -> None: ...

    def on_catalog_changed(
        self, catalog_version: str, features: list[str], all_features: list[str]
    ) -> None: ...

    def on_account_changed(
        self, account_ids: list[str], cause: str, all_accounts: bool
    ) -> None: ...

    def on_disconnected(self, reason: str) -> None: ...


class WatchLoop:
    """One thread reading the stream; one watchdog cancelling it when it goes silent.

    With `accounts_only` the stream carries only the accounts this provider caches (its
    `EvaluateAll` calls name the stream's `watch_id`, which adds each account before it is
    evaluated), so the sidecar does not send this process every account's writes."""

    def __init__(
        self,
        transport: Transport,
        listener: WatchListener,
        heartbeat_timeout: float,
        retry_delay: tuple[float, float] = (0.05, 1.0),
        accounts_only: bool = True,
    ) -> None:
        self._transport = transport
        self._listener = listener
        self._heartbeat_timeout = heartbeat_timeout
        self._request = pb.WatchRequest(accounts_only=accounts_only)
        self._retry_min, self._retry_max = retry_delay
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._last_message = time.monotonic()
        self._live = False  # a stream that has said ready is being read
        self._thread = threading.Thread(target=self._run, name="plangate-watch", daemon=True)
        self._watchdog = threading.Thread(
            target=self._guard, name="plangate-watch-guard", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)
        self._watchdog.join(timeout=5)

    def _run(self) -> None:
        delay = self._retry_min
        while not self._stop.is_set():
            connected = False
            reason = "stream ended: the sidecar closed it (shutting down?)"
            try:
                call = self._transport.evaluation.Watch(
                    self._request, metadata=self._transport.metadata, wait_for_ready=True
                )
                with self._lock:
                    self._call = call
                if self._stop.is_set():
                    call.cancel()
                for event in call:
                    self._last_message = time.monotonic()
                    connected = self._dispatch(event) or connected
                    self._live = connected
                    delay = self._retry_min
            except grpc.RpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except Exception:  # a listener bug must not kill the connection loop
                log.exception("PlanGate provider: error handling a Watch event")
                reason = "internal error handling a Watch event"
            finally:
                self._live = False
                with self._lock:
                    self._call = None
            if self._stop.is_set():
                return
            if connected:
                log.warning("PlanGate sidecar connection lost (%s); reconnecting", reason)
                self._listener.on_disconnected(reason)
            self._stop.wait(delay)
            delay = min(self._retry_max, delay * 2)

    def _dispatch(self, event: pb.WatchEvent) -> bool:
        """Hand one event to the listener; True once the stream has said ready."""
        kind = event.WhichOneof("event")
        if kind == "ready":
            ready = event.ready
            self._listener.on_ready(ready.catalog_version, list(ready.all_features), ready.watch_id)
            return True
        if kind == "catalog_changed":
            changed = event.catalog_changed
            self._listener.on_catalog_changed(
                changed.catalog_version, list(changed.features), list(changed.all_features)
            )
        elif kind == "account_changed":
            moved = event.account_changed
            self._listener.on_account_changed(
                list(moved.account_ids), moved.cause, moved.all_accounts
            )
        return False

    def _guard(self) -> None:
        """Cancel a stream that has been silent for longer than the heartbeat timeout."""
        tick = min(1.0, self._heartbeat_timeout / 4)
        while not self._stop.wait(tick):
            with self._lock:
                call = self._call
            silent = time.monotonic() - self._last_message
            if call is None or not self._live or silent < self._heartbeat_timeout:
                continue
            log.warning(
                "PlanGate Watch stream silent for %.0f s; reconnecting", self._heartbeat_timeout
            )
            self._last_message = time.monotonic()
            call.cancel()
