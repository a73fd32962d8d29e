"""`plangate stripe import` (design §18): Stripe's list JSON applied as the webhook applies events.

Each listed customer and subscription goes through the webhook's own mapping
(`edits/stripe.py`) and the same `LiveState.edit` path, actor `stripe`, with a mark so later
webhook events order after it. A list is Stripe's *current* state and has no event, so an
object is applied whatever the webhook applied before, and only when it changes something:
a second import of the same lists changes nothing (decision 2402). A dry run takes the same
decisions and validates the result as a commit would, writing nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...catalog.model import StripeConnection
from ...store.base import Record, StripeMark
from ...store.timefmt import parse_ts
from ..edits import records as rec
from ..edits import stripe as mapping
from ..live.declared import split_layer
from ..live.state import LiveState
from .stripe import ACTOR

CUSTOMER_TYPE = "customer.imported"
SUBSCRIPTION_TYPE = "customer.subscription.imported"
"""The marks' types: a subscription's starts `customer.subscription.` as its events' do, so
`customer.deleted` still finds it among the account's subscriptions."""


@dataclass(frozen=True, slots=True)
class Imported:
    """What the import did (or would do) with one listed object."""

    object_id: str
    object: str
    outcome: str  # applied | unchanged | ignored | error
    account: str = ""
    message: str = ""


def read_lists(texts: Sequence[str]) -> list[Mapping[str, Any]]:
    """Every object of the lists, in order; `AdminError` naming the list that is unreadable."""
    objects: list[Mapping[str, Any]] = []
    for n, text in enumerate(texts, 1):
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise rec.AdminError(f"list {n} is not JSON: {exc}") from None
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            raise rec.AdminError(
                f'list {n} is not a Stripe list: expected {{"object": "list", "data": [...]}}'
                " as `stripe customers list` prints it"
            )
        for i, obj in enumerate(data):
            if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
                raise rec.AdminError(f"list {n}: data[{i}] is not a Stripe object with an id")
            objects.append(obj)
    return objects


class StripeImport:
    """One import: listed customers first (subscriptions name them), then subscriptions.
    A dry run keeps what it would have written (records, customer links) so later objects
    of the same import see it, as they would in a real one."""

    def __init__(self, state: LiveState, dry_run: bool) -> None:
        self.state = state
        self.dry_run = dry_run
        self._records: dict[str, Record] = {}
        self._links: dict[str, str] = {}

    def run(self, texts: Sequence[str]) -> list[Imported]:
        objects = read_lists(texts)
        conn = self.state.catalog.stripe
        if conn is None:
            raise rec.AdminError("the catalog has no connections.stripe section to map with")
        ordered = sorted(objects, key=lambda o: 0 if o.get("object") == "customer" else 1)
        return [self._one(obj, conn) for obj in ordered]

    def _record(self, account_id: str) -> Record | None:
        return self._records.get(account_id) or self.state.records.get(account_id)

    def _one(self, obj: Mapping[str, Any], conn: StripeConnection) -> Imported:
        kind, object_id = str(obj.get("object", "")), str(obj["id"])
        try:
            with self.state.write_lock:
                if kind == "customer":
                    return self._customer(obj, conn)
                if kind == "subscription":
                    return self._subscription(obj, conn)
        except (mapping.Unusable, rec.AdminError) as exc:
            return Imported(object_id, kind, "error", message=str(exc))
        return Imported(object_id, kind, "ignored", message="not a customer or subscription")

    def _customer(self, customer: Mapping[str, Any], conn: StripeConnection) -> Imported:
        object_id = str(customer["id"])
        if customer.get("deleted") is True:
            return Imported(object_id, "customer", "ignored", message="a deleted customer")
        account_id = mapping.customer_account(customer, conn)

        def build() -> Record:
            return mapping.customer_record(self._record(account_id), account_id, customer, conn)

        what = "new account" if self._record(account_id) is None else "name and attributes"
        return self._apply("customer", CUSTOMER_TYPE, customer, account_id, build, what)

    def _subscription(self, sub: Mapping[str, Any], conn: StripeConnection) -> Imported:
        object_id = str(sub["id"])
        customer = sub.get("customer")
        customer_id = customer.get("id") if isinstance(customer, Mapping) else customer
        linked = self.state.store.stripe_object(str(customer_id)) if customer_id else None
        account_id = self._links.get(str(customer_id)) or (linked.account if linked else "")
        if not account_id:
            return Imported(
                object_id,
                "subscription",
                "error",
                message=f"customer {customer_id} was never seen: import the customers list "
                "first (or in the same command)",
            )
        entry_of: list[dict[str, Any]] = []

        def build() -> Record | None:
            record = self._record(account_id) or self.state.record_of(account_id)
            existing = next(
                (s for s in record.get("subscriptions") or () if s.get("id") == object_id), None
            )
            at = _effective(existing, self.state.clock())
            entry = mapping.subscription_entry(sub, conn, self.state.catalog, at, existing)
            if entry is None:
                return None
            entry_of.append(entry)
            return mapping.put_subscription(record, entry)

        return self._apply("subscription", SUBSCRIPTION_TYPE, sub, account_id, build, "", entry_of)

    def _apply(
        self,
        kind: str,
        mark_type: str,
        obj: Mapping[str, Any],
        account_id: str,
        build: Callable[[], Record | None],
        what: str,
        entry_of: list[dict[str, Any]] | None = None,
    ) -> Imported:
        """Apply one object (the caller holds the write lock): write the record when it
        changes, else only the customer's link when it is new; nothing on a dry run."""
        object_id = str(obj["id"])
        if account_id in self.state.catalog.accounts:
            return Imported(
                object_id,
                kind,
                "ignored",
                account_id,
                f"account {account_id!r} is declared in {self.state.catalog.source} (the file's)",
            )
        record = build()
        if record is None:
            return Imported(
                object_id, kind, "ignored", account_id, "no price maps to a plan, or incomplete"
            )
        if entry_of:
            what = _described(entry_of[-1])
        known = self.state.store.stripe_object(object_id)
        changed = record != self._record(account_id)
        if not changed and known is not None and known.account == account_id:
            return Imported(object_id, kind, "unchanged", account_id)
        if not changed:
            what = "linked to the account"
        created = known.last_created if known is not None else self._created(obj)
        mark = StripeMark(
            f"import:{object_id}:{uuid.uuid4().hex}", mark_type, object_id, created, account_id
        )
        if self.dry_run:
            if changed:
                rec.check_text(record)
                rec.validate_stored(split_layer(record)[0], self.state.catalog)
                self._records[account_id] = record
            if kind == "customer":
                self._links[object_id] = account_id
        elif changed:
            self.state.edit(
                account_id,
                build,
                cause="admin",
                actor=ACTOR,
                action=mark_type,
                target=object_id,
                stripe=mark,
            )
        else:
            self.state.store.mark_stripe(mark)
        return Imported(object_id, kind, "applied", account_id, what)

    def _created(self, obj: Mapping[str, Any]) -> int:
        """The object's own `created` (a later webhook event is never stale against the
        import), or now when the list left it out."""
        created = obj.get("created")
        if isinstance(created, int) and not isinstance(created, bool):
            return created
        return int(self.state.clock().timestamp())


def _effective(existing: Mapping[str, Any] | None, now: datetime) -> int:
    """The time that stands for an event's `created` (a paused or ended subscription ends
    then): now, or the end already applied when it has passed, so a repeat changes nothing."""
    ends = (existing or {}).get("ends_at")
    if isinstance(ends, str) and ends <= (rec.time_text(now) or ""):
        return int(parse_ts(ends).timestamp())
    return int(now.timestamp())


def _described(entry: Mapping[str, Any]) -> str:
    addons = ", ".join(f"{k}×{v}" for k, v in sorted((entry.get("addons") or {}).items()))
    text = f"plan {entry['plan']}" + (f" + {addons}" if addons else "")
    if entry.get("trial_ends_at"):
        text += f", trial until {entry['trial_ends_at']}"
    if entry.get("ends_at"):
        text += f", ends {entry['ends_at']}"
    return text
