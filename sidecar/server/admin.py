"""`plangate.v1.Admin`: accounts, subscriptions, members, overrides, grants, usage reset.

Each call edits one account record (`runtime.records`), which `LiveState.commit`
validates with the catalog's rules before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ...protocol.values import from_struct, from_timestamp, from_value
from ..runtime import records as rec
from ..runtime.state import LiveState
from ..store.base import Record
from .convert import account_pb
from .errors import handled, require
from .metrics import Metrics

MAX_PAGE = 1000


def _time(msg: object, field: str) -> datetime | None:
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return from_timestamp(ts)


def _addons(addons: Mapping[str, int]) -> dict[str, int]:
    for key, quantity in addons.items():
        require(quantity >= 0, f"add-on {key!r}: quantity must be >= 0, got {quantity}")
    return {k: int(q) for k, q in addons.items() if q > 0}


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, state: LiveState, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def _commit(self, record: Record, method: str) -> pb.Account:
        account = self.state.commit(record)
        self.metrics.admin_changes.labels(method).inc()
        return account_pb(account)

    def _owned(self, account_id: str) -> Record:
        """The record of an account this API may change (not one declared in the catalog)."""
        require(bool(account_id), "account_id is required")
        self.state.refuse_declared(account_id)
        return self.state.record_of(account_id)

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
        current = self.state.records.get(request.id)
        record = rec.edited(current) if current else rec.new_record(request.id)
        record["name"] = request.name
        record["attributes"] = from_struct(request.attributes)
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
        record, sub_id = rec.add_subscription(
            record,
            plan=request.plan,
            addons=_addons(request.addons),
            starts_at=_time(request, "starts_at") or self.state.clock(),
            ends_at=_time(request, "ends_at"),
            trial_ends_at=_time(request, "trial_ends_at"),
            members=list(request.members),
            subscription_id=request.id,
        )
        return self._subscription(self._commit(record, "CreateSubscription"), sub_id)

    @handled
    def ChangePlan(
        self, request: pb.ChangePlanRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        require(bool(request.plan), "plan is required")
        record = rec.change_subscription(record, request.subscription_id, plan=request.plan)
        return self._subscription(self._commit(record, "ChangePlan"), request.subscription_id)

    @handled
    def ChangeAddOns(
        self, request: pb.ChangeAddOnsRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        record = rec.change_subscription(
            record, request.subscription_id, addons=_addons(request.addons)
        )
        return self._subscription(self._commit(record, "ChangeAddOns"), request.subscription_id)

    @handled
    def CancelSubscription(
        self, request: pb.CancelSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        record = self._owned(request.account_id)
        at = _time(request, "at") or self.state.clock()
        record = rec.change_subscription(record, request.subscription_id, ends_at=rec.time_text(at))
        return self._subscription(
            self._commit(record, "CancelSubscription"), request.subscription_id
        )

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
            from_value(request.value),
            _time(request, "expires_at"),
        )
        return self._commit(record, "SetOverride")

    @handled
    def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.feature), "feature is required")
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
        record, grant_id = rec.add_grant(
            self.state.record_of(request.account_id),
            request.feature,
            from_value(request.value),
            _time(request, "starts_at"),
            _time(request, "ends_at"),
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
