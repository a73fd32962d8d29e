"""`plangate.v1.Admin`: accounts, subscriptions, members, overrides, grants, top-ups, usage reset.

Each call edits one account record (`runtime.records`), which `LiveState.commit`
validates with the catalog's rules before anything is stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime

import grpc

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ...protocol.values import to_struct, to_timestamp
from ..catalog.model import DEFAULT_TOPUP_PRIORITY, Subscription
from ..engine.lifecycle import effective_at, superseded, trial_of
from ..runtime import quota_actions
from ..runtime import records as rec
from ..runtime.balances import topup_balances
from ..runtime.migrate import migrate_plan
from ..runtime.state import LiveState
from ..store.base import Delivery, DeliveryStatus, Record
from .convert import account_pb, struct_arg, time_arg, topup_pb, value_arg
from .errors import handled, require
from .metrics import Metrics

MAX_PAGE = 1000


def _addons(addons: Mapping[str, int]) -> dict[str, int]:
    for key, quantity in addons.items():
        require(quantity >= 0, f"add-on {key!r}: quantity must be >= 0, got {quantity}")
    return {k: int(q) for k, q in addons.items() if q > 0}


def _delivery_pb(d: Delivery) -> pb.Delivery:
    event = dict(d.payload.get("event") or {})
    return pb.Delivery(
        id=d.id,
        kind=d.kind,
        status=d.status.value,
        account_id=d.account,
        feature=str(event.get("feature", "")),
        threshold=str((event.get("threshold") or {}).get("at", "")),
        target=d.target,
        attempts=d.attempts,
        last_error=d.last_error,
        created_at=to_timestamp(d.created_at),
        updated_at=to_timestamp(d.updated_at),
        next_attempt_at=to_timestamp(d.next_attempt_at),
        event=to_struct(event),
    )


class AdminService(pb_grpc.AdminServicer):
    def __init__(
        self,
        state: LiveState,
        metrics: Metrics,
        wake_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.wake_outbox = wake_outbox

    def _commit(self, record: Record, method: str) -> pb.Account:
        account = self.state.commit(record)
        self.metrics.admin_changes.labels(method).inc()
        return account_pb(account)

    def _owned(self, account_id: str) -> Record:
        """The record of an account this API may change (not one declared in the catalog)."""
        require(bool(account_id), "account_id is required")
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

    def _subscription(self, account: pb.Account, subscription_id: str) -> pb.Subscription:
        for sub in account.subscriptions:
            if sub.id == subscription_id:
                return sub
        raise rec.NotFound(f"subscription {subscription_id!r} not found")

    # -- accounts ----------------------------------------------------------------------------

    @handled
    def UpsertAccount(
        self, request: pb.UpsertAccountRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(
            bool(request.id.strip()),
            "id is required (your application's account id, e.g. 'acct_42')",
        )
        require(len(request.id) <= 256, "id is longer than 256 characters")
        self.state.refuse_declared(request.id)
        record = rec.upsert_account(
            self.state.records.get(request.id),
            request.id,
            name=request.name if request.HasField("name") else None,
            attributes=struct_arg(request.attributes, "attributes")
            if request.HasField("attributes")
            else None,
            clear_attributes=request.clear_attributes,
        )
        return self._commit(record, "UpsertAccount")

    @handled
    def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.id), "id is required")
        return account_pb(self.state.account(request.id))

    @handled
    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountsResponse:
        require(0 <= request.page_size <= MAX_PAGE, f"page_size must be between 0 and {MAX_PAGE}")
        size = request.page_size or 100
        ids = sorted(i for i in self.state.snapshot.accounts if i > request.page_token)
        page = ids[:size]
        accounts = self.state.snapshot.accounts
        return pb.ListAccountsResponse(
            accounts=[account_pb(accounts[i]) for i in page if i in accounts],
            next_page_token=page[-1] if len(ids) > size else "",
        )

    @handled
    def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: grpc.ServicerContext
    ) -> pb.DeleteAccountResponse:
        require(bool(request.id), "id is required")
        deleted = self.state.delete(request.id)
        if deleted:
            self.metrics.admin_changes.labels("DeleteAccount").inc()
        return pb.DeleteAccountResponse(deleted=deleted)

    # -- subscriptions -----------------------------------------------------------------------

    @handled
    def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        require(
            bool(request.plan),
            f"plan is required (plans: {', '.join(sorted(self.state.catalog.plans))})",
        )
        self._refuse_superseded(request.plan)
        starts_at = time_arg(request, "starts_at") or self.state.clock()
        plan = self.state.catalog.plans.get(request.plan)
        try:
            trial = (
                None
                if plan is None  # the record's validation names the unknown plan
                else trial_of(
                    self.state.catalog,
                    plan,
                    starts_at,
                    time_arg(request, "trial_ends_at"),
                    request.trial_then,
                )
            )
        except ValueError as e:
            raise rec.AdminError(str(e)) from None
        record, sub_id = rec.add_subscription(
            record,
            plan=request.plan,
            addons=_addons(request.addons),
            starts_at=starts_at,
            ends_at=time_arg(request, "ends_at"),
            trial=trial,
            members=list(request.members),
            subscription_id=request.id,
            allow_repeat_trial=request.allow_repeat_trial,
        )
        return self._subscription(self._commit(record, "CreateSubscription"), sub_id)

    @handled
    def ChangePlan(
        self, request: pb.ChangePlanRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        # Declared account: moving back to the file's plan undoes a quota plan change.
        reverted = quota_actions.revert_layer_plan(
            self.state, request.account_id, request.subscription_id, request.plan
        )
        if reverted is not None:
            self.metrics.admin_changes.labels("ChangePlan").inc()
            return self._subscription(account_pb(reverted), request.subscription_id)
        record = self._owned(request.account_id)
        require(bool(request.plan), "plan is required")
        now = self.state.clock()
        if self._live(request).at(now).plan != request.plan:  # staying on it: no new subscriber
            self._refuse_superseded(request.plan)
        at = self._effective(request, now)
        record = rec.schedule_change(record, request.subscription_id, at, now, plan=request.plan)
        return self._subscription(self._commit(record, "ChangePlan"), request.subscription_id)

    @handled
    def ChangeAddOns(
        self, request: pb.ChangeAddOnsRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        now = self.state.clock()
        at = self._effective(request, now)
        record = rec.schedule_change(
            record, request.subscription_id, at, now, addons=_addons(request.addons)
        )
        return self._subscription(self._commit(record, "ChangeAddOns"), request.subscription_id)

    @handled
    def CancelSubscription(
        self, request: pb.CancelSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        if request.when:
            at = self._effective(request, self.state.clock())
        else:  # `at` keeps its wire form: any instant, default now
            at = time_arg(request, "at") or self.state.clock()
        record = rec.end_subscription(record, request.subscription_id, at)
        return self._subscription(
            self._commit(record, "CancelSubscription"), request.subscription_id
        )

    @handled
    def CancelScheduledChange(
        self, request: pb.CancelScheduledChangeRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        record = rec.cancel_scheduled_change(
            record, request.subscription_id, self.state.clock(), time_arg(request, "at")
        )
        return self._subscription(
            self._commit(record, "CancelScheduledChange"), request.subscription_id
        )

    @handled
    def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        record = rec.resume_subscription(record, request.subscription_id, self.state.clock())
        return self._subscription(
            self._commit(record, "ResumeSubscription"), request.subscription_id
        )

    @handled
    def MigratePlan(
        self, request: pb.MigratePlanRequest, context: grpc.ServicerContext
    ) -> pb.MigratePlanResponse:
        require(
            bool(request.from_plan) and bool(request.to_plan), "from_plan and to_plan are required"
        )
        moves = migrate_plan(
            self.state,
            request.from_plan,
            request.to_plan,
            time_arg(request, "at"),
            request.when,
            request.dry_run,
        )
        if not request.dry_run:
            self.metrics.admin_changes.labels("MigratePlan").inc()
        return pb.MigratePlanResponse(
            moves=[
                pb.PlanMove(
                    account_id=m.account,
                    subscription_id=m.subscription,
                    from_plan=m.from_plan,
                    to_plan=m.to_plan,
                    at=to_timestamp(m.at),
                    skipped=m.skipped,
                )
                for m in moves
            ],
            dry_run=request.dry_run,
        )

    def _refuse_superseded(self, plan: str) -> None:
        problem = superseded(self.state.catalog, plan)
        if problem is not None:
            raise rec.Refused(problem)

    def _live(
        self,
        request: pb.ChangePlanRequest | pb.ChangeAddOnsRequest | pb.CancelSubscriptionRequest,
    ) -> Subscription:
        """The request's subscription as served now."""
        account = self.state.account(request.account_id)
        sub = next((s for s in account.subscriptions if s.id == request.subscription_id), None)
        if sub is None:
            raise rec.NotFound(
                f"account {request.account_id!r} has no subscription {request.subscription_id!r}"
            )
        return sub

    def _effective(
        self,
        request: pb.ChangePlanRequest | pb.ChangeAddOnsRequest | pb.CancelSubscriptionRequest,
        now: datetime,
    ) -> datetime:
        """The instant a change takes effect, from the request's `at` or `when` (design §6.1)."""
        sub, at = self._live(request), time_arg(request, "at")
        try:
            return effective_at(self.state.catalog, sub, now, at, request.when)
        except ValueError as e:
            raise rec.AdminError(str(e)) from None

    @handled
    def AddMember(
        self, request: pb.MemberRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = rec.set_members(
            self._owned(request.account_id), request.subscription_id, request.member_id, add=True
        )
        return self._subscription(self._commit(record, "AddMember"), request.subscription_id)

    @handled
    def RemoveMember(
        self, request: pb.MemberRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = rec.set_members(
            self._owned(request.account_id), request.subscription_id, request.member_id, add=False
        )
        return self._subscription(self._commit(record, "RemoveMember"), request.subscription_id)

    # -- overrides and grants ----------------------------------------------------------------

    @handled
    def SetOverride(
        self, request: pb.SetOverrideRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.feature), "feature is required")
        require(
            request.HasField("value"), 'value is required (e.g. 25, true, "unlimited", {limit: 10})'
        )
        record = rec.set_override(
            self._owned(request.account_id),
            request.feature,
            value_arg(request.value, "value"),
            time_arg(request, "expires_at"),
        )
        return self._commit(record, "SetOverride")

    @handled
    def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.feature), "feature is required")
        # Declared account: clearing an override a quota action set agrees with the file.
        reverted = quota_actions.clear_layer_override(
            self.state, request.account_id, request.feature
        )
        if reverted is not None:
            self.metrics.admin_changes.labels("ClearOverride").inc()
            return account_pb(reverted)
        return self._commit(
            rec.clear_override(self._owned(request.account_id), request.feature), "ClearOverride"
        )

    @handled
    def CreateGrant(
        self, request: pb.CreateGrantRequest, context: grpc.ServicerContext
    ) -> pb.Grant:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required")
        require(request.HasField("value"), "value is required (e.g. 500000 for a metered feature)")
        if self._declared_grant(request.account_id, request.id):
            raise rec.AdminError(
                f"grant id {request.id!r} already exists on account {request.account_id!r}"
            )
        record, grant_id = rec.add_grant(
            self.state.record_of(request.account_id),
            request.feature,
            value_arg(request.value, "value"),
            time_arg(request, "starts_at"),
            time_arg(request, "ends_at"),
            request.id,
        )
        account = self._commit(record, "CreateGrant")
        return next(g for g in account.grants if g.id == grant_id)

    @handled
    def RevokeGrant(
        self, request: pb.RevokeGrantRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.grant_id), "grant_id is required")
        if self._declared_grant(request.account_id, request.grant_id):
            raise rec.Declared(
                f"grant {request.grant_id!r} of account {request.account_id!r} is declared in "
                f"{self.state.catalog.source}; remove it there"
            )
        record = rec.remove_grant(self.state.record_of(request.account_id), request.grant_id)
        return self._commit(record, "RevokeGrant")

    @handled
    def ResetUsage(
        self, request: pb.ResetUsageRequest, context: grpc.ServicerContext
    ) -> pb.ResetUsageResponse:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required")
        previous = self.state.reset_usage(request.account_id, request.feature)
        self.metrics.admin_changes.labels("ResetUsage").inc()
        return pb.ResetUsageResponse(previous_usage=previous)

    # -- balances (design §5.1) --------------------------------------------------------------

    def _topup(self, account_id: str, topup_id: str) -> pb.TopUp:
        state = self.state
        for found in topup_balances(state.snapshot, account_id, state.clock()):
            if found.topup.id == topup_id:
                return topup_pb(found.topup, found)
        topup = next(t for t in state.account(account_id).topups if t.id == topup_id)
        return topup_pb(topup)

    @handled
    def AddTopUp(self, request: pb.AddTopUpRequest, context: grpc.ServicerContext) -> pb.TopUp:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required")
        require(
            math.isfinite(request.amount) and request.amount > 0,
            f"amount must be a positive number, got {request.amount!r}",
        )
        state = self.state
        known = state.snapshot.accounts.get(request.account_id)
        if request.id and known is not None and any(t.id == request.id for t in known.topups):
            raise rec.AdminError(
                f"top-up id {request.id!r} already exists on account {request.account_id!r}"
            )
        record, topup_id = rec.add_topup(
            state.record_of(request.account_id),
            request.feature,
            request.amount,
            request.priority if request.HasField("priority") else DEFAULT_TOPUP_PRIORITY,
            time_arg(request, "effective_at") or state.clock(),
            time_arg(request, "expires_at"),
            request.id,
        )
        state.commit(record)
        self.metrics.admin_changes.labels("AddTopUp").inc()
        return self._topup(request.account_id, topup_id)

    @handled
    def VoidTopUp(self, request: pb.VoidTopUpRequest, context: grpc.ServicerContext) -> pb.TopUp:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.topup_id), "topup_id is required")
        state = self.state
        declared = state.catalog.accounts.get(request.account_id)
        if declared is not None and any(t.id == request.topup_id for t in declared.topups):
            raise rec.Declared(
                f"top-up {request.topup_id!r} of account {request.account_id!r} is declared in "
                f"{state.catalog.source}; remove it or set `voided_at` there"
            )
        record = rec.void_topup(
            state.record_of(request.account_id), request.topup_id, state.clock()
        )
        state.commit(record)
        self.metrics.admin_changes.labels("VoidTopUp").inc()
        return self._topup(request.account_id, request.topup_id)

    @handled
    def ListTopUps(
        self, request: pb.ListTopUpsRequest, context: grpc.ServicerContext
    ) -> pb.ListTopUpsResponse:
        require(bool(request.account_id), "account_id is required")
        state = self.state
        state.account(request.account_id)  # NOT_FOUND for an unknown account
        if request.feature:
            require(
                request.feature in state.catalog.features,
                f"unknown feature {request.feature!r}",
            )
        found = topup_balances(state.snapshot, request.account_id, state.clock(), request.feature)
        return pb.ListTopUpsResponse(topups=[topup_pb(s.topup, s) for s in found])

    # -- quota deliveries (design §7) --------------------------------------------------------

    @handled
    def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        statuses = [s.value for s in DeliveryStatus]
        require(
            not request.status or request.status in statuses,
            f"status must be one of {', '.join(statuses)} (or empty for all), got {request.status!r}",
        )
        require(0 <= request.page_size <= MAX_PAGE, f"page_size must be between 0 and {MAX_PAGE}")
        require(
            not request.page_token or request.page_token.isdigit(),
            "page_token must be the next_page_token of a previous page",
        )
        size = request.page_size or 100
        rows = self.state.store.list_deliveries(
            DeliveryStatus(request.status) if request.status else None,
            size + 1,
            int(request.page_token) if request.page_token else None,
        )
        page = rows[:size]
        return pb.ListDeliveriesResponse(
            deliveries=[_delivery_pb(d) for d in page],
            next_page_token=str(page[-1].seq) if len(rows) > size else "",
        )

    @handled
    def RetryDelivery(
        self, request: pb.RetryDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.RetryDeliveryResponse:
        require(
            bool(request.id) != request.all_failed,
            "give either id (one delivery) or all_failed (every failed delivery)",
        )
        now = self.state.clock()
        if request.id:
            found = self.state.store.get_delivery(request.id)
            if found is None:
                raise rec.NotFound(f"no delivery {request.id!r} (see ListDeliveries)")
            require(
                found.status is not DeliveryStatus.DELIVERED,
                f"delivery {request.id!r} was delivered at {found.updated_at.isoformat()}; "
                "nothing to retry",
            )
            ids = self.state.store.retry_deliveries([request.id], now)
        else:
            ids = self.state.store.retry_deliveries(None, now)
        if ids:
            self.metrics.admin_changes.labels("RetryDelivery").inc()
            if self.wake_outbox is not None:
                self.wake_outbox()
        return pb.RetryDeliveryResponse(retried=len(ids), ids=ids)
