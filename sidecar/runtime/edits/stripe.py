"""Stripe objects as account record edits (design §18): pure functions, no I/O.

A subscription is rewritten whole from the Stripe object each time (Stripe is the source of
truth for what it bills), so applying the newest event of each object gives the same record
whatever order the older ones arrived in. Times come from the objects and the event's
`created`, never from the clock, for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ...catalog.accounts import subscription_problems
from ...catalog.model import DEFAULT_TOPUP_PRIORITY, Catalog, StripeConnection, StripePrice
from ...store.base import Record
from .records import edited, new_record, time_text

log = logging.getLogger("plangate.stripe")

ENDED = ("canceled", "unpaid", "incomplete_expired")
"""Statuses that end the subscription at its `ended_at` (design §18)."""


class Unusable(ValueError):
    """A Stripe object this connection cannot read (a field missing or of the wrong type);
    the message names the object and the field."""


def when(seconds: Any, what: str) -> datetime:
    """A Stripe timestamp (Unix seconds) as a UTC instant."""
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise Unusable(f"{what} must be a Unix timestamp, got {seconds!r}")
    return datetime.fromtimestamp(seconds, UTC)


def field(obj: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`metadata.region`) of a Stripe object, or None."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def customer_account(customer: Mapping[str, Any], conn: StripeConnection) -> str:
    """The account a customer is: the mapped field's value, else the customer id (logged)."""
    customer_id = str(customer["id"])
    if conn.account_id:
        value = field(customer, conn.account_id)
        if isinstance(value, str) and value.strip():
            return value
        log.info(
            "stripe customer %s has no %s; its account id is the customer id",
            customer_id,
            conn.account_id,
        )
    return customer_id


def customer_record(
    record: Record | None, account_id: str, customer: Mapping[str, Any], conn: StripeConnection
) -> Record:
    """The account with the customer's name and mapped attributes merged in."""
    rec = edited(record) if record else new_record(account_id)
    name = customer.get("name")
    if isinstance(name, str) and name:
        rec["name"] = name
    attributes = dict(rec.get("attributes") or {})
    for key, path in conn.attributes.items():
        value = field(customer, path)
        if isinstance(value, str | int | float | bool) and value != "":
            attributes[key] = value
    rec["attributes"] = attributes
    return rec


def price_of(price: Any, conn: StripeConnection) -> StripePrice | None:
    """What a Stripe price sells: by its id first, then by its `lookup_key`; None (logged)."""
    if isinstance(price, str):
        price = {"id": price}
    if not isinstance(price, Mapping):
        return None
    found = conn.prices.get(str(price.get("id")))
    if found is None and isinstance(price.get("lookup_key"), str):
        found = conn.prices.get(price["lookup_key"])
    if found is None:
        log.info("stripe price %s maps to nothing in connections.stripe.prices", price.get("id"))
    return found


def subscription_entry(
    sub: Mapping[str, Any],
    conn: StripeConnection,
    catalog: Catalog,
    created: int,
    existing: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The record's subscription for a Stripe subscription, or None when it grants nothing
    to write (no item maps to a plan, or `incomplete` and not known yet)."""
    sub_id = str(sub["id"])
    items = field(sub, "items.data")
    if not isinstance(items, list):
        raise Unusable(f"stripe subscription {sub_id} has no items.data list")
    plan, plan_item, addons = _items(sub_id, items, conn)
    status = sub.get("status")
    if not plan:
        log.info("stripe subscription %s has no price mapped to a plan; ignored", sub_id)
        return None
    if status == "incomplete" and existing is None:
        log.info("stripe subscription %s is incomplete: it grants nothing yet", sub_id)
        return None
    for addon, problem in subscription_problems(catalog.plans[plan], addons, catalog.addons):
        if addon is not None and addon in addons:
            log.warning("stripe subscription %s: add-on left out: %s", sub_id, problem)
            del addons[addon]
    starts_at = when(
        sub.get("start_date", sub.get("created")), f"stripe subscription {sub_id} start_date"
    )
    entry: dict[str, Any] = {
        "id": sub_id,
        "plan": plan,
        "addons": addons,
        "starts_at": time_text(starts_at),
        "members": list((existing or {}).get("members") or []),
    }
    trial_end = sub.get("trial_end")
    if status == "trialing" and trial_end is not None:
        entry["trial_ends_at"] = time_text(
            when(trial_end, f"stripe subscription {sub_id} trial_end")
        )
    end = _end(sub, sub_id, status, conn, created, plan_item)
    if end is not None:
        entry["ends_at"] = time_text(max(end, starts_at))
    return entry


def _items(
    sub_id: str, items: list[Any], conn: StripeConnection
) -> tuple[str, Mapping[str, Any] | None, dict[str, int]]:
    """The plan (of the first item that maps to one), its item, and add-on quantities."""
    plan, plan_item = "", None
    addons: dict[str, int] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise Unusable(f"stripe subscription {sub_id} has an item that is not an object")
        sells = price_of(item.get("price"), conn)
        quantity = item.get("quantity", 1)
        quantity = quantity if isinstance(quantity, int) and quantity > 0 else 1
        if sells is None:
            continue
        if sells.plan and not plan:
            plan, plan_item = sells.plan, item
        elif sells.addon:
            addons[sells.addon] = addons.get(sells.addon, 0) + quantity
    return plan, plan_item, addons


def _end(
    sub: Mapping[str, Any],
    sub_id: str,
    status: Any,
    conn: StripeConnection,
    created: int,
    plan_item: Mapping[str, Any] | None,
) -> datetime | None:
    """When the subscription ends: now-ish for an ended, paused (or `past_due: end`) one, at
    the pending end of one canceling, or never."""
    if status in ENDED:
        ended = sub.get("ended_at")
        return when(
            ended if ended is not None else created, f"stripe subscription {sub_id} ended_at"
        )
    if (
        status == "paused"
        or status == "incomplete"
        or (status == "past_due" and conn.past_due == "end")
    ):
        return when(created, "event created")
    if sub.get("cancel_at") is not None:
        return when(sub["cancel_at"], f"stripe subscription {sub_id} cancel_at")
    if sub.get("cancel_at_period_end") is True:
        period_end = (plan_item or {}).get("current_period_end", sub.get("current_period_end"))
        return when(period_end, f"stripe subscription {sub_id} current_period_end")
    return None


def put_subscription(record: Record, entry: Mapping[str, Any]) -> Record:
    """The record with the subscription replaced (same id) or added."""
    rec = edited(record)
    subs: list[dict[str, Any]] = rec.setdefault("subscriptions", [])
    for i, sub in enumerate(subs):
        if sub.get("id") == entry["id"]:
            subs[i] = dict(entry)
            return rec
    subs.append(dict(entry))
    return rec


def end_subscriptions(record: Record, ids: set[str], at: datetime) -> Record:
    """The record with these subscriptions ending at `at` (unless they end earlier)."""
    rec = edited(record)
    for sub in rec.get("subscriptions") or ():
        if sub.get("id") in ids:
            ends = sub.get("ends_at")
            if ends is None or ends > time_text(at):
                sub["ends_at"] = time_text(at)
                sub.pop("phases", None)
    return rec


def invoice_topups(
    record: Record, invoice: Mapping[str, Any], conn: StripeConnection, created: int
) -> Record | None:
    """The record with a top-up per paid invoice line whose price maps to one (id = the line
    id, so a repeat adds nothing; amount × quantity), or None when no line does."""
    invoice_id = str(invoice["id"])
    lines = field(invoice, "lines.data")
    if not isinstance(lines, list):
        raise Unusable(f"stripe invoice {invoice_id} has no lines.data list")
    rec = edited(record)
    topups: list[dict[str, Any]] = rec.setdefault("topups", [])
    known = {t.get("id") for t in topups}
    added = False
    paid = when(created, "event created")
    for line in lines:
        if not isinstance(line, Mapping) or not isinstance(line.get("id"), str):
            raise Unusable(f"stripe invoice {invoice_id} has a line without an id")
        price = line.get("price") or field(line, "pricing.price_details.price")
        sells = price_of(price, conn)
        if sells is None or sells.topup is None or line["id"] in known:
            continue
        quantity = line.get("quantity")
        quantity = quantity if isinstance(quantity, int) and quantity > 0 else 1
        topup: dict[str, Any] = {
            "id": line["id"],
            "feature": sells.topup.feature,
            "amount": sells.topup.amount * quantity,
            "priority": DEFAULT_TOPUP_PRIORITY,
            "effective_at": time_text(paid),
        }
        if sells.topup.expires_days is not None:
            topup["expires_at"] = time_text(paid + timedelta(days=sells.topup.expires_days))
        topups.append(topup)
        added = True
    return rec if added else None
