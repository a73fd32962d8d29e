"""Every admin operation, protocol-neutral: what the gRPC Admin servicer and the console call.

Each change edits one account record (`runtime.records`) through `LiveState.edit`: built from
the current record under the write lock (so concurrent edits never undo each other, decision
1300), validated with the catalog's rules before anything is stored, and written to the audit
log in the same transaction (design §12) under `actor`, the name of whoever asked. Arguments and results
are plain Python (catalog `Account`s, records, dataclasses); refusals are `records.AdminError`
subclasses, which each face maps to its own status (gRPC: `server.errors`). Method names in
the audit log are the RPC names, so an entry reads the same whichever face made the change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ...catalog.model import DEFAULT_TOPUP_PRIORITY, Account, Grant, Subscription, TopUp
from ...engine.balances import TopUpState
from ...engine.lifecycle import effective_at, superseded, trial_of
from ...store.base import AuditEntry, Delivery, DeliveryStatus, Record
from ..edits import records as rec
from ..edits.audit import ANONYMOUS
from ..edits.records import AdminError, Declared, NotFound, Refused
from ..jobs import quota_actions
from ..live.state import LiveState
from ..writes.balances import topup_balances
from .migrate import Move, migrate_plan

# What the faces catch and show of the edits below the facade (they import nothing else of
# the runtime, docs/architecture.md).
__all__ = [
    "ANONYMOUS",
    "Admin",
    "AdminError",
    "Declared",
    "NotFound",
    "Page",
    "Refused",
    "TopUpView",
    "topup_balances",
]

MAX_PAGE = 1000
DEFAULT_PAGE = 100

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_seq` (None on the last page) is where the next one starts."""

    items: list[T]
    next_seq: int | None


@dataclass(frozen=True, slots=True)
class TopUpView:
    """A top-up as recorded, with its balance when an evaluation reaches it (active or burned)."""

    topup: TopUp
    state: TopUpState | None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise rec.AdminError(message)


def _page_size(size: int) -> int:
    _require(0 <= size <= MAX_PAGE, f"page_size must be between 0 and {MAX_PAGE}")
    return size or DEFAULT_PAGE


def _addons(addons: Mapping[str, int]) -> dict[str, int]:
    for key, quantity in addons.items():
        _require(quantity >= 0, f"add-on {key!r}: quantity must be >= 0, got {quantity}")
    return {k: int(q) for k, q in addons.items() if q > 0}


def _subscription(account: Account, subscription_id: str) -> Subscription:
    for sub in account.subscriptions:
        if sub.id == subscription_id:
            return sub
    raise rec.NotFound(f"subscription {subscription_id!r} not found")


class Admin:
    """The admin operations over one `LiveState`.

    `on_change(method)` is told after each applied change (the servicer counts them in
    `/metrics`); `wake_outbox` after deliveries were made due again, so the worker does not
    wait for its next poll.
    """

    def __init__(
        self,
        state: LiveState,
        *,
        on_change: Callable[[str], None] | None = None,
        wake_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.on_change = on_change
        self.wake_outbox = wake_outbox

    def _changed(self, method: str) -> None:
        if self.on_change is not None:
            self.on_change(method)

    def _edit(
        self, account_id: str, build: Callable[[], Record], method: str, actor: str, target: str
    ) -> Account:
        """Apply `build` to the account's current record atomically (`LiveState.edit`: it
        runs under the write lock, again on the newer record if another sidecar got first)."""
        account = self.state.edit(account_id, build, actor=actor, action=method, target=target)
        assert account is not None, "an admin build always returns a record"
        self._changed(method)
        return account

    def _owned(self, account_id: str) -> Record:
        """The record of an account this API may change (not one declared in the catalog)."""
        _require(bool(account_id), "account_id is required")
        self.state.refuse_declared(account_id)
        return self.state.record_of(account_id)

    def _declared_grant(self, account_id: str, grant_id: str) -> bool:
        """Whether the catalog file declares this grant (the API may not remove or shadow it)."""
        declared = self.state.catalog.accounts.get(account_id)
        return (
            bool(grant_id)
            and declared is not None
            and any(g.id == grant_id for g in declared.grants)
        )

    # -- accounts ----------------------------------------------------------------------------

    def upsert_account(
        self,
        account_id: str,
        *,
        name: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        clear_attributes: bool = False,
        actor: str,
    ) -> Account:
        """Create or merge into an account (`records.upsert_account`)."""
        _require(
            bool(account_id.strip()),
            "id is required (your application's account id, e.g. 'acct_42')",
        )
        _require(len(account_id) <= 256, "id is longer than 256 characters")
        self.state.refuse_declared(account_id)

        def build() -> Record:
            return rec.upsert_account(
                self.state.records.get(account_id),
                account_id,
                name=name,
                attributes=attributes,
                clear_attributes=clear_attributes,
            )

        return self._edit(account_id, build, "UpsertAccount", actor, "")

    def get_account(self, account_id: str) -> Account:
        _require(bool(account_id), "id is required")
        return self.state.account(account_id)

    def list_accounts(self, after: str = "", page_size: int = 0) -> tuple[list[Account], str]:
        """Accounts by id after `after`; the second item is the next page's `after` ("" at the end)."""
        size = _page_size(page_size)
        if self.state.working is not None:  # design §19: the store lists, memory holds some
            return self._stored_page(after, size)
        ids = sorted(i for i in self.state.snapshot.accounts if i > after)
        page = ids[:size]
        accounts = self.state.snapshot.accounts
        return [accounts[i] for i in page if i in accounts], page[-1] if len(ids) > size else ""

    def _stored_page(self, after: str, size: int) -> tuple[list[Account], str]:
        ids = self.state.account_ids(after, size + 1)
        page: list[Account] = []
        for account_id in ids[:size]:
            try:
                page.append(self.state.account(account_id))
            except rec.NotFound:
                continue  # deleted since it was listed
        return page, ids[size - 1] if len(ids) > size else ""

    def delete_account(self, account_id: str, *, actor: str) -> bool:
        _require(bool(account_id), "id is required")
        deleted = self.state.delete(account_id, actor=actor, action="DeleteAccount")
        if deleted:
            self._changed("DeleteAccount")
        return deleted

    # -- subscriptions -----------------------------------------------------------------------

    def create_subscription(
        self,
        account_id: str,
        plan: str,
        *,
        addons: Mapping[str, int] | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        trial_ends_at: datetime | None = None,
        trial_then: str = "",
        members: Sequence[str] = (),
        subscription_id: str = "",
        allow_repeat_trial: bool = False,
        no_trial: bool = False,
        actor: str,
    ) -> Subscription:
        self._owned(account_id)  # an unknown or declared account is named first
        _require(
            bool(plan),
            f"plan is required (plans: {', '.join(sorted(self.state.catalog.plans))})",
        )
        sub_id = subscription_id or rec.new_id("sub")  # the same id if the edit is rebuilt
        start = starts_at or self.state.clock()
        wanted = _addons(addons or {})

        def build() -> Record:
            record = self._owned(account_id)
            self._refuse_superseded(plan)
            found = self.state.catalog.plans.get(plan)
            try:
                trial = (
                    None
                    if found is None  # the record's validation names the unknown plan
                    else trial_of(
                        self.state.catalog, found, start, trial_ends_at, trial_then, no_trial
                    )
                )
            except ValueError as e:
                raise rec.AdminError(str(e)) from None
            return rec.add_subscription(
                record,
                plan=plan,
                addons=wanted,
                starts_at=start,
                ends_at=ends_at,
                trial=trial,
                members=list(members),
                subscription_id=sub_id,
                allow_repeat_trial=allow_repeat_trial,
            )[0]

        account = self._edit(account_id, build, "CreateSubscription", actor, sub_id)
        return _subscription(account, sub_id)

    def change_plan(
        self,
        account_id: str,
        subscription_id: str,
        plan: str,
        *,
        at: datetime | None = None,
        when: str = "",
        actor: str,
    ) -> Subscription:
        # Declared account: moving back to the file's plan undoes a quota plan change.
        reverted = quota_actions.revert_layer_plan(
            self.state, account_id, subscription_id, plan, actor=actor, action="ChangePlan"
        )
        if reverted is not None:
            self._changed("ChangePlan")
            return _subscription(reverted, subscription_id)
        _require(bool(plan), "plan is required")

        def build() -> Record:
            record = self._owned(account_id)
            now = self.state.clock()
            live = self._live(account_id, subscription_id)
            if live.at(now).plan != plan:  # staying on it: no new subscriber
                self._refuse_superseded(plan)
            when_at = self._effective(live, now, at, when)
            return rec.schedule_change(record, subscription_id, when_at, now, plan=plan)

        account = self._edit(account_id, build, "ChangePlan", actor, subscription_id)
        return _subscription(account, subscription_id)

    def change_addons(
        self,
        account_id: str,
        subscription_id: str,
        addons: Mapping[str, int],
        *,
        at: datetime | None = None,
        when: str = "",
        actor: str,
    ) -> Subscription:
        wanted = _addons(addons)

        def build() -> Record:
            record = self._owned(account_id)
            now = self.state.clock()
            when_at = self._effective(self._live(account_id, subscription_id), now, at, when)
            return rec.schedule_change(record, subscription_id, when_at, now, addons=wanted)

        account = self._edit(account_id, build, "ChangeAddOns", actor, subscription_id)
        return _subscription(account, subscription_id)

    def cancel_subscription(
        self,
        account_id: str,
        subscription_id: str,
        *,
        at: datetime | None = None,
        when: str = "",
        actor: str,
    ) -> Subscription:
        """Ends the subscription at `at` (any instant, default now), or per `when` if given."""

        def build() -> Record:
            record = self._owned(account_id)
            now = self.state.clock()
            if when:
                end = self._effective(self._live(account_id, subscription_id), now, at, when)
            else:
                end = at or now
            return rec.end_subscription(record, subscription_id, end)

        account = self._edit(account_id, build, "CancelSubscription", actor, subscription_id)
        return _subscription(account, subscription_id)

    def cancel_scheduled_change(
        self,
        account_id: str,
        subscription_id: str,
        *,
        at: datetime | None = None,
        actor: str,
    ) -> Subscription:

        def build() -> Record:
            return rec.cancel_scheduled_change(
                self._owned(account_id), subscription_id, self.state.clock(), at
            )

        account = self._edit(account_id, build, "CancelScheduledChange", actor, subscription_id)
        return _subscription(account, subscription_id)

    def resume_subscription(
        self, account_id: str, subscription_id: str, *, actor: str
    ) -> Subscription:

        def build() -> Record:
            return rec.resume_subscription(
                self._owned(account_id), subscription_id, self.state.clock()
            )

        account = self._edit(account_id, build, "ResumeSubscription", actor, subscription_id)
        return _subscription(account, subscription_id)

    def extend_trial(
        self, account_id: str, subscription_id: str, until: datetime, *, actor: str
    ) -> Subscription:
        """A running trial ends at `until` instead; its `then` moves with it (design §12.1)."""

        def build() -> Record:
            return rec.extend_trial(
                self._owned(account_id), subscription_id, until, self.state.clock()
            )

        account = self._edit(account_id, build, "ExtendTrial", actor, subscription_id)
        return _subscription(account, subscription_id)

    def migrate_plan(
        self,
        from_plan: str,
        to_plan: str,
        *,
        at: datetime | None = None,
        when: str = "",
        dry_run: bool = False,
        actor: str,
    ) -> list[Move]:
        _require(bool(from_plan) and bool(to_plan), "from_plan and to_plan are required")
        moves = migrate_plan(self.state, from_plan, to_plan, at, when, dry_run, actor=actor)
        if not dry_run:
            self._changed("MigratePlan")
        return moves

    def _refuse_superseded(self, plan: str) -> None:
        problem = superseded(self.state.catalog, plan)
        if problem is not None:
            raise rec.Refused(problem)

    def _live(self, account_id: str, subscription_id: str) -> Subscription:
        """The subscription as served now."""
        account = self.state.account(account_id)
        sub = next((s for s in account.subscriptions if s.id == subscription_id), None)
        if sub is None:
            raise rec.NotFound(f"account {account_id!r} has no subscription {subscription_id!r}")
        return sub

    def _effective(
        self, sub: Subscription, now: datetime, at: datetime | None, when: str
    ) -> datetime:
        """The instant a change takes effect, from `at` or `when` (design §6.1)."""
        try:
            return effective_at(self.state.catalog, sub, now, at, when)
        except ValueError as e:
            raise rec.AdminError(str(e)) from None

    def add_member(
        self, account_id: str, subscription_id: str, member_id: str, *, actor: str
    ) -> Subscription:
        return self._member(account_id, subscription_id, member_id, "AddMember", actor)

    def _member(
        self, account_id: str, subscription_id: str, member_id: str, method: str, actor: str
    ) -> Subscription:
        def build() -> Record:
            record = self._owned(account_id)
            add = method == "AddMember"
            return rec.set_members(record, subscription_id, member_id, add=add)

        account = self._edit(account_id, build, method, actor, subscription_id)
        return _subscription(account, subscription_id)

    def remove_member(
        self, account_id: str, subscription_id: str, member_id: str, *, actor: str
    ) -> Subscription:
        return self._member(account_id, subscription_id, member_id, "RemoveMember", actor)

    # -- overrides and grants ----------------------------------------------------------------

    def set_override(
        self,
        account_id: str,
        feature: str,
        value: Any,
        *,
        expires_at: datetime | None = None,
        actor: str,
    ) -> Account:
        _require(bool(feature), "feature is required")

        def build() -> Record:
            return rec.set_override(self._owned(account_id), feature, value, expires_at)

        return self._edit(account_id, build, "SetOverride", actor, feature)

    def clear_override(self, account_id: str, feature: str, *, actor: str) -> Account:
        _require(bool(feature), "feature is required")
        # Declared account: clearing an override a quota action set agrees with the file.
        reverted = quota_actions.clear_layer_override(
            self.state, account_id, feature, actor=actor, action="ClearOverride"
        )
        if reverted is not None:
            self._changed("ClearOverride")
            return reverted

        def build() -> Record:
            return rec.clear_override(self._owned(account_id), feature)

        return self._edit(account_id, build, "ClearOverride", actor, feature)

    def create_grant(
        self,
        account_id: str,
        feature: str,
        value: Any,
        *,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        grant_id: str = "",
        actor: str,
    ) -> Grant:
        _require(bool(account_id), "account_id is required")
        _require(bool(feature), "feature is required")
        new_id = grant_id or rec.new_id("grant")  # the same id if the edit is rebuilt

        def build() -> Record:
            if self._declared_grant(account_id, new_id):
                raise rec.AdminError(
                    f"grant id {new_id!r} already exists on account {account_id!r}"
                )
            record = self.state.record_of(account_id)
            return rec.add_grant(record, feature, value, starts_at, ends_at, new_id)[0]

        account = self._edit(account_id, build, "CreateGrant", actor, new_id)
        return next(g for g in account.grants if g.id == new_id)

    def revoke_grant(self, account_id: str, grant_id: str, *, actor: str) -> Account:
        _require(bool(account_id), "account_id is required")
        _require(bool(grant_id), "grant_id is required")

        def build() -> Record:
            if self._declared_grant(account_id, grant_id):
                raise rec.Declared(
                    f"grant {grant_id!r} of account {account_id!r} is declared in "
                    f"{self.state.catalog.source}; remove it there"
                )
            return rec.remove_grant(self.state.record_of(account_id), grant_id)

        return self._edit(account_id, build, "RevokeGrant", actor, grant_id)

    def reset_usage(self, account_id: str, feature: str, *, actor: str) -> float:
        """Zero the account's counter of `feature` in the current period; the previous usage."""
        _require(bool(account_id), "account_id is required")
        _require(bool(feature), "feature is required")
        previous = self.state.reset_usage(account_id, feature, actor=actor, action="ResetUsage")
        self._changed("ResetUsage")
        return previous

    # -- balances (design §5.1) --------------------------------------------------------------

    def _topup(self, account_id: str, topup_id: str) -> TopUpView:
        state = self.state
        for found in topup_balances(state.snapshot, account_id, state.clock()):
            if found.topup.id == topup_id:
                return TopUpView(found.topup, found)
        topup = next(t for t in state.account(account_id).topups if t.id == topup_id)
        return TopUpView(topup, None)

    def add_topup(
        self,
        account_id: str,
        feature: str,
        amount: float,
        *,
        priority: int | None = None,
        effective_at: datetime | None = None,
        expires_at: datetime | None = None,
        topup_id: str = "",
        actor: str,
    ) -> TopUpView:
        _require(bool(account_id), "account_id is required")
        _require(bool(feature), "feature is required")
        _require(
            math.isfinite(amount) and amount > 0,
            f"amount must be a positive number, got {amount!r}",
        )
        state = self.state
        new_id = topup_id or rec.new_id("topup")  # the same id if the edit is rebuilt
        start = effective_at or state.clock()

        def build() -> Record:
            known = state.snapshot.accounts.get(account_id)
            if topup_id and known is not None and any(t.id == topup_id for t in known.topups):
                raise rec.AdminError(
                    f"top-up id {topup_id!r} already exists on account {account_id!r}"
                )
            return rec.add_topup(
                state.record_of(account_id),
                feature,
                amount,
                DEFAULT_TOPUP_PRIORITY if priority is None else priority,
                start,
                expires_at,
                new_id,
            )[0]

        self._edit(account_id, build, "AddTopUp", actor, new_id)
        return self._topup(account_id, new_id)

    def void_topup(self, account_id: str, topup_id: str, *, actor: str) -> TopUpView:
        _require(bool(account_id), "account_id is required")
        _require(bool(topup_id), "topup_id is required")
        state = self.state

        def build() -> Record:
            declared = state.catalog.accounts.get(account_id)
            if declared is not None and any(t.id == topup_id for t in declared.topups):
                raise rec.Declared(
                    f"top-up {topup_id!r} of account {account_id!r} is declared in "
                    f"{state.catalog.source}; remove it or set `voided_at` there"
                )
            return rec.void_topup(state.record_of(account_id), topup_id, state.clock())

        self._edit(account_id, build, "VoidTopUp", actor, topup_id)
        return self._topup(account_id, topup_id)

    def list_topups(self, account_id: str, feature: str = "") -> list[TopUpState]:
        _require(bool(account_id), "account_id is required")
        state = self.state
        state.account(account_id)  # NotFound for an unknown account
        if feature:
            _require(feature in state.catalog.features, f"unknown feature {feature!r}")
        return topup_balances(state.snapshot, account_id, state.clock(), feature)

    # -- quota deliveries (design §7) --------------------------------------------------------

    def list_deliveries(
        self, status: str = "", page_size: int = 0, before_seq: int | None = None
    ) -> Page[Delivery]:
        """Outbox rows newest first, of one status ("" for all)."""
        statuses = [s.value for s in DeliveryStatus]
        _require(
            not status or status in statuses,
            f"status must be one of {', '.join(statuses)} (or empty for all), got {status!r}",
        )
        size = _page_size(page_size)
        rows = self.state.store.list_deliveries(
            DeliveryStatus(status) if status else None, size + 1, before_seq
        )
        page = rows[:size]
        return Page(page, page[-1].seq if len(rows) > size else None)

    def retry_deliveries(
        self, delivery_id: str = "", *, all_failed: bool = False, actor: str
    ) -> list[str]:
        """Make one delivery (by id) or every failed one due again; the ids made due."""
        _require(
            bool(delivery_id) != all_failed,
            "give either id (one delivery) or all_failed (every failed delivery)",
        )
        state = self.state
        now = state.clock()
        audit = AuditEntry(now, actor, "RetryDelivery", "", delivery_id or "all_failed")
        if delivery_id:
            found = state.store.get_delivery(delivery_id)
            if found is None:
                raise rec.NotFound(f"no delivery {delivery_id!r} (see ListDeliveries)")
            _require(
                found.status is not DeliveryStatus.DELIVERED,
                f"delivery {delivery_id!r} was delivered at {found.updated_at.isoformat()}; "
                "nothing to retry",
            )
            audit = AuditEntry(now, actor, "RetryDelivery", found.account, delivery_id)
            ids = state.store.retry_deliveries([delivery_id], now, audit=audit)
        else:
            ids = state.store.retry_deliveries(None, now, audit=audit)
        if ids:
            self._changed("RetryDelivery")
            if self.wake_outbox is not None:
                self.wake_outbox()
        return ids

    # -- audit log (design §12) --------------------------------------------------------------

    def list_audit(
        self,
        account_id: str = "",
        since: datetime | None = None,
        limit: int = 0,
        before_seq: int | None = None,
    ) -> Page[AuditEntry]:
        """Audit entries newest first, of one account ("" for all), at or after `since`."""
        size = _page_size(limit)
        rows = self.state.store.list_audit(account_id, since, size + 1, before_seq)
        page = rows[:size]
        return Page(page, page[-1].seq if len(rows) > size else None)
