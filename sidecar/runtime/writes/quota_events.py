"""What a crossed quota threshold writes (design §7): its mark, its event, its outbox rows.

A write carries a `QuotaCheck` as its `on_applied` callback. Inside the write's
transaction the store calls it with the counter before and after; each crossed threshold
(`engine.thresholds`) becomes a `Firing`: a mark recorded once per counter (scope, feature,
period) and one outbox row per action and per lifecycle endpoint subscribing to
`quota.threshold_crossed` (design §7.1), enqueued in that same transaction, so usage,
"fired" and the deliveries commit together or not at all. After commit the outbox worker
POSTs webhooks (`runtime.outbox`) and applies account actions (`runtime.quota_actions`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...catalog.features import notation
from ...catalog.model import Feature, QuotaAction, Webhook
from ...engine import StateView
from ...engine.thresholds import Point, QuotaThresholds, thresholds_for
from ...engine.typed import iso, number
from ...store.base import Firing, OutboxEntry
from .webhooks import subscribers, webhook_entry

EVENT_TYPE = "quota.threshold_crossed"


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """A write's `Fire` callback: the thresholds resolved from the snapshot before the write,
    so that inside the transaction only (old, new) decide what fires."""

    environment: str
    thresholds: QuotaThresholds
    now: datetime
    endpoints: tuple[Webhook, ...] = ()  # lifecycle endpoints that want the event (§7.1)

    def __call__(self, old: float, new: float) -> list[Firing]:
        return [
            Firing(
                f"{self.thresholds.plan}:{p.label}",
                self.now,
                tuple(self._entry(p, a, old, new) for a in p.actions)
                + tuple(
                    webhook_entry(
                        hook, self.thresholds.account, self.event(p, old, new, uuid.uuid4().hex)
                    )
                    for hook in self.endpoints
                ),
            )
            for p in self.thresholds.crossed(old, new)
        ]

    def event(self, point: Point, old: float, new: float, delivery_id: str) -> dict[str, Any]:
        """The quota event: the webhook body, and the context kept with every action row."""
        t = self.thresholds
        return {
            "type": EVENT_TYPE,
            "delivery_id": delivery_id,
            "environment": self.environment,
            "account": t.account,
            "reported_by": t.reported_by,
            "feature": t.feature,
            "threshold": {"at": point.label, "value": number(point.value)},
            "usage": number(new),
            "previous_usage": number(old),
            "limit": number(t.limit),
            "unlimited": t.limit is None,
            "soft_limit": t.soft_limit,
            "period": {"start": iso(t.period_start), "end": iso(t.period_end)},
            "plan": t.plan,
            "subscription": t.subscription.id,
            "scope": t.scope_key,
            "fired_at": iso(self.now),
        }

    def _entry(self, point: Point, action: QuotaAction, old: float, new: float) -> OutboxEntry:
        delivery_id = uuid.uuid4().hex
        event = self.event(point, old, new, delivery_id)
        payload: dict[str, Any]
        if action.kind == "webhook":
            target = action.target
            payload = {"secret_env": action.secret_env, "secret_file": action.secret_file}
        elif action.kind == "override":
            target = action.feature
            payload = {"feature": action.feature, "value": notation(action.value)}
        else:
            sub = self.thresholds.subscription
            target = action.target
            payload = {
                "owner": sub.owner,
                "subscription": sub.id,
                "from": self.thresholds.plan,
                "plan": action.target,
            }
        return OutboxEntry(
            delivery_id, action.kind, self.thresholds.account, target, {"event": event, **payload}
        )


def quota_check(
    snapshot: StateView,
    account_id: str,
    feature: Feature,
    at: datetime,
    now: datetime,
    environment: str,
) -> QuotaCheck | None:
    """The quota check for a write of `account_id`'s `feature` usage counted at `at`, or None
    when no threshold can fire (see `engine.thresholds.thresholds_for` for whose quotas)."""
    thresholds = thresholds_for(snapshot, account_id, feature, at)
    if thresholds is None:
        return None
    endpoints = tuple(subscribers(snapshot.catalog, EVENT_TYPE))
    return QuotaCheck(environment, thresholds, now, endpoints)
