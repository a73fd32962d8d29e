"""The outbox worker: delivers quota and lifecycle webhooks (design §7, §7.1) and applies
quota actions after they commit.

Rows reach the store's outbox in the same transaction as the usage write that crossed the
threshold (`runtime.quota_events`), so nothing is lost by a crash: this thread only has to work
through what is due. Each pass claims due rows (a lease, so a second sidecar on a shared
database skips them and a dead worker's claims come due again), runs them and records the
result. A failed attempt is retried after `backoff × 2^(attempt−1)` seconds (capped) until
`max_attempts`, then marked `failed` for an operator (`plangate deliveries retry`).

Webhooks are delivered at least once: only a crash between the receiver's 2xx and the
"delivered" mark repeats a POST, and it carries the same `X-PlanGate-Delivery` id, so a
receiver that remembers ids sees every event exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from ...store.base import Delivery, DeliveryStatus
from ..live.state import LiveState
from ..writes.quota_events import EVENT_TYPE as QUOTA_EVENT
from .quota_actions import ActionFailed, apply_action

log = logging.getLogger("plangate.outbox")

SIGNATURE_HEADER = "X-PlanGate-Signature"
TIMESTAMP_HEADER = "X-PlanGate-Timestamp"
DELIVERY_HEADER = "X-PlanGate-Delivery"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 over `timestamp + "." + body`, hex.

    The timestamp is inside the signed text so that a captured request cannot be replayed
    later with a fresh timestamp header; receivers reject stale timestamps.
    """
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def webhook_body(delivery: Delivery) -> bytes:
    """The exact bytes POSTed (compact, sorted keys): the same on every attempt."""
    return json.dumps(delivery.payload["event"], sort_keys=True, separators=(",", ":")).encode()


class DeliveryError(Exception):
    """An attempt that failed but may succeed later (network, non-2xx, missing secret)."""


class OutboxObserver(Protocol):
    """Where the worker reports what it did (the sidecar's metrics)."""

    def outbox_attempted(self, kind: str, result: str) -> None:
        """`result`: delivered, retry (will try again) or failed (gave up)."""
        ...

    def outbox_backlog(self, counts: Mapping[DeliveryStatus, int]) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    backoff_seconds: float = 5.0  # first retry delay; doubles per attempt
    max_backoff_seconds: float = 3600.0
    max_attempts: int = 10  # then `failed`
    timeout_seconds: float = 10.0  # per HTTP attempt
    poll_seconds: float = 1.0  # how often to look for due rows when not woken
    batch: int = 5  # rows claimed per pass

    @property
    def lease(self) -> timedelta:
        """How long a claim keeps other workers away: long enough to run a whole batch."""
        return timedelta(seconds=self.timeout_seconds * self.batch + 5.0)

    def delay(self, attempts: int) -> timedelta:
        seconds = self.backoff_seconds * 2 ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.max_backoff_seconds))


class OutboxWorker:
    """One background thread working through the outbox of one sidecar's store."""

    def __init__(
        self,
        state: LiveState,
        settings: OutboxSettings | None = None,
        observer: OutboxObserver | None = None,
    ) -> None:
        self.state = state
        self.store = state.store
        self.settings = settings or OutboxSettings()
        self.observer = observer
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsigned_warned: set[str] = set()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due rows now (called when a threshold fires or an operator retries)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                handled = self.run_once()
            except Exception:
                log.exception("outbox pass failed; trying again in %ss", self.settings.poll_seconds)
                handled = 0
            if handled < self.settings.batch:
                self._wake.wait(self.settings.poll_seconds)

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim and run the due rows (at most one batch); returns how many were claimed."""
        now = self.state.clock()
        due = self.store.claim_deliveries(now, now + self.settings.lease, self.settings.batch)
        for i, delivery in enumerate(due):
            if self._stopping.is_set():
                self._release(due[i:])
                break
            self._run(delivery)
        if self.observer is not None:
            self.observer.outbox_backlog(self.store.count_deliveries())
        return len(due)

    def _release(self, claimed: list[Delivery]) -> None:
        # Shutting down: hand unstarted claims back at once instead of waiting out the lease.
        now = self.state.clock()
        for d in claimed:
            self.store.finish_delivery(d.id, DeliveryStatus.PENDING, d.attempts, now, "", now)

    def _run(self, d: Delivery) -> None:
        attempts = d.attempts + 1
        try:
            if d.kind == "webhook":
                self._post(d, attempts)
            else:
                changed = apply_action(self.state, d)
                log.info(
                    "quota %s for %s: %s",
                    d.kind,
                    d.account,
                    "applied" if changed else "already in effect",
                )
        except ActionFailed as exc:
            self._failed(d, attempts, str(exc))
        except Exception as exc:
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            if attempts >= self.settings.max_attempts:
                self._failed(d, attempts, f"{error} (gave up after {attempts} attempts)")
            else:
                due = self.state.clock() + self.settings.delay(attempts)
                log.warning(
                    "delivery %s (%s %s) attempt %d failed: %s; next at %s",
                    d.id,
                    d.kind,
                    d.target,
                    attempts,
                    error,
                    due.isoformat(),
                )
                self.store.finish_delivery(
                    d.id, DeliveryStatus.PENDING, attempts, due, error, self.state.clock()
                )
                self._observe(d.kind, "retry")
        else:
            self.store.finish_delivery(
                d.id, DeliveryStatus.DELIVERED, attempts, None, "", self.state.clock()
            )
            self._observe(d.kind, "delivered")

    def _failed(self, d: Delivery, attempts: int, error: str) -> None:
        log.error("delivery %s (%s %s) failed: %s", d.id, d.kind, d.target, error)
        self.store.finish_delivery(
            d.id, DeliveryStatus.FAILED, attempts, None, error, self.state.clock()
        )
        self._observe(d.kind, "failed")

    def _observe(self, kind: str, result: str) -> None:
        if self.observer is not None:
            self.observer.outbox_attempted(kind, result)

    # -- webhooks ----------------------------------------------------------------------------

    def _secret(self, d: Delivery) -> bytes | None:
        """The signing secret named by the action, read now (so a rotation needs no restart).

        A secret that is named but unreadable fails the attempt rather than sending unsigned:
        the receiver expects a signature. No secret named: unsigned, with one warning.
        """
        env = str(d.payload.get("secret_env") or "")
        file = str(d.payload.get("secret_file") or "")
        if env:
            value = os.environ.get(env, "")
            if not value:
                raise DeliveryError(
                    f"secret_env {env} is not set in the sidecar's environment; not sending unsigned"
                )
            return value.encode()
        if file:
            try:
                text = Path(file).read_text().strip()
            except OSError as exc:
                raise DeliveryError(f"secret_file {file}: {exc.strerror or exc}") from exc
            if not text:
                raise DeliveryError(f"secret_file {file} is empty; not sending unsigned")
            return text.encode()
        if d.target not in self._unsigned_warned:
            self._unsigned_warned.add(d.target)
            log.warning(
                "webhook %s has no secret_env/secret_file: its deliveries are unsigned", d.target
            )
        return None

    def _post(self, d: Delivery, attempt: int) -> None:
        body = webhook_body(d)
        stamp = str(int(self.state.clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "plangate-webhook/1",
            "X-PlanGate-Event": str(d.payload["event"].get("type") or QUOTA_EVENT),
            DELIVERY_HEADER: d.id,
            TIMESTAMP_HEADER: stamp,
            "X-PlanGate-Attempt": str(attempt),
        }
        secret = self._secret(d)
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, stamp, body)
        status, reason, detail = _http_post(d.target, body, headers, self.settings.timeout_seconds)
        # Only a 2xx counts; a redirect is not followed (a POST must not turn into a GET).
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status} {reason}" + (f": {detail}" if detail else ""))


def _http_post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str, str]:
    """POST with the headers exactly as given; (status, reason, start of the body)."""
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.netloc, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    try:
        conn.request("POST", path, body=body, headers=dict(headers))
        response = conn.getresponse()
        detail = response.read(200).decode("utf-8", "replace").strip()
        return response.status, response.reason, detail
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"cannot deliver to {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
