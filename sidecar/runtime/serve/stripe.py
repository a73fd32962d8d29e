"""The Stripe connection (design §18): verified Stripe events applied to accounts.

Every change goes through `LiveState.edit`, the path the Admin API takes, with actor
`stripe`: one transaction holds the record, its audit entry, its lifecycle webhooks and the
event's mark (`StripeMark`: its id, and its `created` as the object's last applied). The
whole decision — duplicate, stale, what to write — is taken under the state's write lock,
so two deliveries of one object never interleave.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...catalog.model import StripeConnection
from ...store.base import Record, StripeMark
from ..edits import records as rec
from ..edits import stripe as mapping
from ..live.state import LiveState

log = logging.getLogger("plangate.stripe")

ACTOR = "stripe"

CUSTOMER_EVENTS = ("customer.created", "customer.updated", "customer.deleted")
SUBSCRIPTION_EVENTS = tuple(
    f"customer.subscription.{kind}"
    for kind in ("created", "updated", "deleted", "paused", "resumed")
)
HANDLED = (*CUSTOMER_EVENTS, *SUBSCRIPTION_EVENTS, "invoice.paid")


class SecretMissing(ValueError):
    """The webhook secret is not configured or not readable; the message names it."""


def webhook_secret(conn: StripeConnection | None) -> str:
    """The webhook signing secret named by the catalog, read now (a rotation needs no restart)."""
    if conn is None:
        raise SecretMissing("the catalog has no connections.stripe section")
    if conn.webhook_secret_env:
        value = os.environ.get(conn.webhook_secret_env, "").strip()
        if not value:
            raise SecretMissing(
                f"connections.stripe.webhook_secret_env {conn.webhook_secret_env} is not set "
                "or empty in the sidecar's environment"
            )
        return value
    if conn.webhook_secret_file:
        try:
            value = Path(conn.webhook_secret_file).read_text().strip()
        except OSError as exc:
            raise SecretMissing(
                f"connections.stripe.webhook_secret_file {conn.webhook_secret_file}: "
                f"{exc.strerror or exc}"
            ) from exc
        if not value:
            raise SecretMissing(
                f"connections.stripe.webhook_secret_file {conn.webhook_secret_file} is empty"
            )
        return value
    raise SecretMissing(
        "connections.stripe needs webhook_secret_env or webhook_secret_file when "
        "--connections-port is set"
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """What the endpoint answers Stripe: 200 with an outcome, or 400 / 409 with why."""

    status: int
    outcome: str
    message: str = ""


def _applied() -> Answer:
    return Answer(200, "applied")


def _ignored(message: str) -> Answer:
    log.info("stripe: %s; ignored", message)
    return Answer(200, "ignored", message)


class _Skip(Exception):
    """Raised inside an edit's build to leave without writing (the answer says why)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message)
        self.answer = answer


class StripeSync:
    """Applies Stripe events; `on_outcome(type, outcome)` counts them (`/metrics`)."""

    def __init__(
        self, state: LiveState, on_outcome: Callable[[str, str], None] | None = None
    ) -> None:
        self.state = state
        self.on_outcome = on_outcome

    def apply(self, event: Any) -> Answer:
        answer, kind = self._apply(event)
        if self.on_outcome is not None:
            self.on_outcome(kind, answer.outcome or str(answer.status))
        return answer

    def _apply(self, event: Any) -> tuple[Answer, str]:
        try:
            kind, obj, mark = _read(event)
        except _Skip as skip:
            return skip.answer, str(event.get("type")) if isinstance(event, Mapping) else "unknown"
        conn = self.state.catalog.stripe
        if conn is None:
            return _ignored("the catalog has no connections.stripe section"), kind
        event_id, created = mark.event_id, mark.created
        try:
            with self.state.write_lock:
                if self.state.store.stripe_seen(event_id):
                    return Answer(200, "duplicate"), kind
                last = self.state.store.stripe_object(mark.object_id)
                if last is not None and created < last.last_created:
                    log.info(
                        "stripe event %s (%s) on %s is older than %s, applied before: stale",
                        event_id,
                        kind,
                        mark.object_id,
                        last.last_event_id,
                    )
                    return Answer(200, "stale"), kind
                if kind in CUSTOMER_EVENTS:
                    return self._customer(kind, obj, mark, conn), kind
                if kind == "invoice.paid":
                    return self._invoice(obj, mark, conn), kind
                return self._subscription(obj, mark, conn), kind
        except mapping.Unusable as exc:
            return _ignored(f"event {event_id} ({kind}): {exc}"), kind
        except _Skip as skip:
            return skip.answer, kind
        except rec.AdminError as exc:
            return _ignored(f"event {event_id} ({kind}) on {mark.object_id} refused: {exc}"), kind

    # -- customers ---------------------------------------------------------------------------

    def _customer(
        self, kind: str, customer: Mapping[str, Any], mark: StripeMark, conn: StripeConnection
    ) -> Answer:
        linked = self.state.store.stripe_object(mark.object_id)
        if kind == "customer.deleted":
            account_id = linked.account if linked and linked.account else ""
            if not account_id:
                self.state.store.mark_stripe(_with(mark, ""))
                return _applied()
            return self._delete_customer(account_id, mark)
        account_id = mapping.customer_account(customer, conn)
        self._refuse_declared(account_id, mark)

        def build() -> Record:
            return mapping.customer_record(
                self.state.records.get(account_id), account_id, customer, conn
            )

        self._edit(account_id, build, _with(mark, account_id))
        return _applied()

    def _delete_customer(self, account_id: str, mark: StripeMark) -> Answer:
        """The account's Stripe subscriptions end now and the customer is unlinked; the
        account stays (design §18)."""
        ids = {
            o.object_id
            for o in self.state.store.stripe_objects_of(account_id)
            if o.last_type.startswith("customer.subscription.")
        }
        at = mapping.when(mark.created, "event created")

        def build() -> Record:
            return mapping.end_subscriptions(self.state.record_of(account_id), ids, at)

        if account_id in self.state.catalog.accounts or account_id not in self.state.records:
            self.state.store.mark_stripe(_with(mark, ""))
        else:
            self._edit(account_id, build, _with(mark, ""))
        return _applied()

    # -- subscriptions and invoices ------------------------------------------------------------

    def _account_of(self, obj: Mapping[str, Any], mark: StripeMark) -> str:
        customer = obj.get("customer")
        customer_id = customer.get("id") if isinstance(customer, Mapping) else customer
        if not isinstance(customer_id, str) or not customer_id:
            raise mapping.Unusable(f"stripe object {mark.object_id} names no customer")
        linked = self.state.store.stripe_object(customer_id)
        if linked is None or not linked.account:
            log.warning(
                "stripe %s %s names customer %s, never seen here: answered 409 (Stripe "
                "retries; `plangate stripe import` fills the gap)",
                mark.event_type,
                mark.object_id,
                customer_id,
            )
            raise _Skip(Answer(409, "", f"unknown customer {customer_id}"))
        self._refuse_declared(linked.account, mark)
        return linked.account

    def _subscription(
        self, sub: Mapping[str, Any], mark: StripeMark, conn: StripeConnection
    ) -> Answer:
        account_id = self._account_of(sub, mark)

        def build() -> Record | None:
            record = self.state.record_of(account_id)
            existing = next(
                (s for s in record.get("subscriptions") or () if s.get("id") == mark.object_id),
                None,
            )
            entry = mapping.subscription_entry(
                sub, conn, self.state.catalog, mark.created, existing
            )
            if entry is None:
                raise _Skip(Answer(200, "ignored"))
            return mapping.put_subscription(record, entry)

        self._edit(account_id, build, _with(mark, account_id))
        return _applied()

    def _invoice(
        self, invoice: Mapping[str, Any], mark: StripeMark, conn: StripeConnection
    ) -> Answer:
        account_id = self._account_of(invoice, mark)

        def build() -> Record | None:
            record = self.state.record_of(account_id)
            updated = mapping.invoice_topups(record, invoice, conn, mark.created)
            if updated is None:
                raise _Skip(_ignored(f"invoice {mark.object_id} sells no mapped top-up"))
            return updated

        self._edit(account_id, build, _with(mark, account_id))
        return _applied()

    # -- shared ------------------------------------------------------------------------------

    def _refuse_declared(self, account_id: str, mark: StripeMark) -> None:
        if account_id in self.state.catalog.accounts:
            raise _Skip(
                _ignored(
                    f"{mark.event_type} {mark.object_id} is for account {account_id!r}, "
                    f"declared in {self.state.catalog.source} (the file's, not Stripe's)"
                )
            )

    def _edit(self, account_id: str, build: Callable[[], Record | None], mark: StripeMark) -> None:
        self.state.edit(
            account_id,
            build,
            cause="admin",
            actor=ACTOR,
            action=mark.event_type,
            target=mark.object_id,
            stripe=mark,
        )


def _read(event: Any) -> tuple[str, Mapping[str, Any], StripeMark]:
    """The event's type, object and mark; `_Skip` with 400 for what is no Stripe event, 200
    `ignored` for a type not handled or an event without an object."""
    if not isinstance(event, Mapping):
        raise _Skip(Answer(400, "", "the body is not a Stripe event object"))
    kind = event.get("type")
    event_id, created = event.get("id"), event.get("created")
    obj = mapping.field(event, "data.object")
    if not (isinstance(kind, str) and isinstance(event_id, str) and event_id):
        raise _Skip(Answer(400, "", "the event has no id or type"))
    if not isinstance(created, int) or isinstance(created, bool):
        raise _Skip(Answer(400, "", f"event {event_id} has no `created` timestamp"))
    if kind not in HANDLED:
        raise _Skip(Answer(200, "ignored"))
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise _Skip(_ignored(f"event {event_id} ({kind}) has no data.object with an id"))
    return kind, obj, StripeMark(event_id, kind, str(obj["id"]), created)


def _with(mark: StripeMark, account: str) -> StripeMark:
    return StripeMark(mark.event_id, mark.event_type, mark.object_id, mark.created, account)
