"""Helpers for the provider tests (no tests here): OpenFeature set-up and teardown, an event
recorder, native-API look-ups used as the independent source of truth, and /metrics counts.

The provider is always driven through `openfeature.api`; the native stubs only read what the
sidecar itself says, so a provider bug cannot hide behind its own answers.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider import PlanGateProvider

from support.sidecar import Stubs

PROVIDER_NAME = "PlanGate"


@contextmanager
def provider(target: str | None, **options: Any) -> Iterator[PlanGateProvider]:
    """A PlanGateProvider registered as the default provider; unregistered (and shut down) after."""
    p = PlanGateProvider(target, **options)
    api.set_provider_and_wait(p)
    try:
        yield p
    finally:
        api.clear_providers()


@dataclass(frozen=True)
class Seen:
    at: float
    event: ProviderEvent
    details: EventDetails


class EventLog:
    """Every OpenFeature event of the PlanGate provider, with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        self._handlers = {event: self._handler(event) for event in ProviderEvent}

    def _handler(self, event: ProviderEvent) -> Any:
        def record(details: EventDetails) -> None:
            if details.provider_name != PROVIDER_NAME:
                return  # the SDK replays the no-op provider's READY to new handlers
            with self._cond:
                self.seen.append(Seen(time.monotonic(), event, details))
                self._cond.notify_all()

        return record

    def __enter__(self) -> EventLog:
        for event, handler in self._handlers.items():
            api.add_handler(event, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for event, handler in self._handlers.items():
            with suppress(ValueError):  # api.clear_providers() already dropped every handler
                api.remove_handler(event, handler)

    def mark(self) -> int:
        with self._cond:
            return len(self.seen)

    def wait(
        self, event: ProviderEvent, since: int = 0, timeout: float = 5.0, **where: Any
    ) -> Seen:
        """The first `event` recorded at index >= `since` whose details match `where`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self.seen[since:]:
                    if seen.event is event and all(
                        getattr(seen.details, k) == v for k, v in where.items()
                    ):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [s.event.name for s in self.seen[since:]]
                    raise AssertionError(f"no {event.name} within {timeout}s; saw {kinds}")
                self._cond.wait(left)

    def kinds(self, since: int = 0) -> list[ProviderEvent]:
        with self._cond:
            return [s.event for s in self.seen[since:]]


def native(stubs: Stubs, account: str, feature: str, **ctx: Any) -> pb.Resolution:
    request = pb.EvaluateRequest(account_id=account, feature=feature)
    request.context.update(ctx)
    return stubs.evaluation.Evaluate(request, timeout=5)


def native_used(stubs: Stubs, account: str, feature: str) -> float:
    res = native(stubs, account, feature)
    assert not res.error_code, res.error_message
    return res.metering.used


def new_account(stubs: Stubs, account: str, plan: str = "free") -> str:
    """A run-time account with one subscription; returns the subscription id."""
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account, name=account), timeout=5)
    sub = stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account, plan=plan), timeout=5
    )
    return str(sub.id)


def rpc_count(management_port: int, method: str) -> int:
    """How many `method` calls the sidecar handled, from its Prometheus /metrics."""
    url = f"http://127.0.0.1:{management_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    prefix = f'plangate_rpc_seconds_count{{method="{method}"}}'
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line.split()[-1]))
    return 0
