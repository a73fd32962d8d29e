"""Lifecycle events addressed to the catalog's `webhooks:` endpoints (design §7.1).

An event becomes one outbox row per endpoint that subscribes to its type; the row is the
same kind the quota webhooks use (`webhook`: POST `payload["event"]`, signed with the secret
named in the row), so the outbox worker delivers both alike. The rows are written in the
transaction of the change they report: an admin edit (`LiveState.commit`), a usage write
that used a top-up up, or the scheduler's once-only mark of a time-driven event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ...catalog.model import Catalog, TopUp, Webhook
from ...engine.balances import Balance
from ...engine.lifecycle_events import LifecycleEvent, topup_data
from ...engine.typed import iso
from ...engine.write_rule import Exhausted, OutboxEntry, PoolLeg


def body(event: LifecycleEvent, environment: str, delivery_id: str) -> dict[str, Any]:
    """The JSON a receiver gets: type, ids and time first, then the event's own fields."""
    return {
        "type": event.type,
        "delivery_id": delivery_id,
        "environment": environment,
        "account": event.account,
        "at": iso(event.at),
        **event.data,
    }


def webhook_entry(hook: Webhook, account: str, event: Mapping[str, Any]) -> OutboxEntry:
    """One outbox row POSTing `event` (whose `delivery_id` names the row) to `hook`."""
    return OutboxEntry(
        str(event["delivery_id"]),
        "webhook",
        account,
        hook.url,
        {"event": dict(event), "secret_env": hook.secret_env, "secret_file": hook.secret_file},
    )


def subscribers(catalog: Catalog, event_type: str) -> list[Webhook]:
    return [h for h in catalog.webhooks if h.wants(event_type)]


def entries_for(
    catalog: Catalog, environment: str, events: Iterable[LifecycleEvent]
) -> list[OutboxEntry]:
    """The outbox rows of `events`: one per (event, endpoint subscribing to its type)."""
    out: list[OutboxEntry] = []
    for event in events:
        for hook in subscribers(catalog, event.type):
            delivery_id = uuid.uuid4().hex
            out.append(webhook_entry(hook, event.account, body(event, environment, delivery_id)))
    return out


def exhausted_hook(
    catalog: Catalog,
    environment: str,
    account: str,
    balance: Balance | None,
    pool: PoolLeg | None,
) -> Exhausted | None:
    """A usage write's `on_exhausted` (engine.write_rule): `topup.exhausted` rows for the
    endpoints that want them; None (no mark read, nothing to do) when the write burns no
    top-up (`balance`, its pool's) or no endpoint wants the event."""
    burns = balance is not None or (pool is not None and pool.balance is not None)
    if not burns or not subscribers(catalog, "topup.exhausted"):
        return None

    def hook(topup: TopUp, at: datetime) -> list[OutboxEntry]:
        event = LifecycleEvent("topup.exhausted", account, at, topup_data(topup))
        return entries_for(catalog, environment, [event])

    return hook
