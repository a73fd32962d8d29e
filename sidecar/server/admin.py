"""`plangate.v1.Admin`: protobuf in and out of `runtime.admin.Admin`, which holds every rule.

Each handler checks what only the wire can get wrong (a missing message field, a bad page
token), names the caller (the `--token-file` name of its token, design §12) and translates
the facade's result; the facade's errors become statuses in `server.errors`.
"""

from __future__ import annotations

import grpc

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ...protocol.values import to_struct, to_timestamp
from ..engine.typed import INT64_MAX
from ..runtime.serve.admin import ANONYMOUS, Admin, Page, TopUpView
from ..runtime.serve.holds import Holds
from ..runtime.serve.stripe_import import StripeImport
from ..store.base import AuditEntry, Delivery
from .auth import Tokens, authorization, name_of
from .convert import (
    account_pb,
    grant_pb,
    hold_pb,
    struct_arg,
    subscription_pb,
    time_arg,
    topup_pb,
    value_arg,
)
from .errors import handled, require
from .metrics import Metrics

_BAD_TOKEN = "page_token must be the next_page_token of a previous page"


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


def _audit_pb(e: AuditEntry) -> pb.AuditEntry:
    out = pb.AuditEntry(
        seq=e.seq,
        at=to_timestamp(e.at),
        actor=e.actor,
        action=e.action,
        account_id=e.account,
        target=e.target,
    )
    if e.before is not None:
        out.before.CopyFrom(to_struct(e.before))
    if e.after is not None:
        out.after.CopyFrom(to_struct(e.after))
    return out


def _topup_view_pb(view: TopUpView) -> pb.TopUp:
    return topup_pb(view.topup, view.state)


def _seq_token(token: str) -> int | None:
    """A page token of a seq-paged listing as the seq to continue before; None for the first."""
    if not token:
        return None
    # ASCII digits only (str.isdigit also takes "²"), and a seq the stores' 64-bit column holds
    require(token.isascii() and token.isdigit() and len(token) <= 19, _BAD_TOKEN)
    seq = int(token)
    require(seq <= INT64_MAX, _BAD_TOKEN)
    return seq


def _next_token(page: Page[Delivery] | Page[AuditEntry]) -> str:
    return "" if page.next_seq is None else str(page.next_seq)


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, admin: Admin, metrics: Metrics, tokens: Tokens) -> None:
        self.admin = admin
        self.metrics = metrics  # read by `handled` (RPC timings and errors)
        self.tokens = tokens
        self.holds = Holds(admin.state)

    def _actor(self, context: grpc.ServicerContext) -> str:
        """Who is calling: its token's name (the interceptor has checked it), or anonymous."""
        if not self.tokens:
            return ANONYMOUS
        return name_of(authorization(context.invocation_metadata()), self.tokens) or ANONYMOUS

    # -- accounts ----------------------------------------------------------------------------

    @handled
    def UpsertAccount(
        self, request: pb.UpsertAccountRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        account = self.admin.upsert_account(
            request.id,
            name=request.name if request.HasField("name") else None,
            attributes=struct_arg(request.attributes, "attributes")
            if request.HasField("attributes")
            else None,
            clear_attributes=request.clear_attributes,
            actor=self._actor(context),
        )
        return account_pb(account)

    @handled
    def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        out = account_pb(self.admin.get_account(request.id))
        out.holds.extend(hold_pb(h) for h in self.holds.list(request.id))
        return out

    @handled
    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountsResponse:
        accounts, after = self.admin.list_accounts(request.page_token, request.page_size)
        return pb.ListAccountsResponse(
            accounts=[account_pb(a) for a in accounts], next_page_token=after
        )

    @handled
    def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: grpc.ServicerContext
    ) -> pb.DeleteAccountResponse:
        deleted = self.admin.delete_account(request.id, actor=self._actor(context))
        return pb.DeleteAccountResponse(deleted=deleted)

    # -- subscriptions -----------------------------------------------------------------------

    @handled
    def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.create_subscription(
            request.account_id,
            request.plan,
            addons=dict(request.addons),
            starts_at=time_arg(request, "starts_at"),
            ends_at=time_arg(request, "ends_at"),
            trial_ends_at=time_arg(request, "trial_ends_at"),
            trial_then=request.trial_then,
            members=list(request.members),
            subscription_id=request.id,
            allow_repeat_trial=request.allow_repeat_trial,
            no_trial=request.no_trial,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def ChangePlan(
        self, request: pb.ChangePlanRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.change_plan(
            request.account_id,
            request.subscription_id,
            request.plan,
            at=time_arg(request, "at"),
            when=request.when,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def ChangeAddOns(
        self, request: pb.ChangeAddOnsRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.change_addons(
            request.account_id,
            request.subscription_id,
            dict(request.addons),
            at=time_arg(request, "at"),
            when=request.when,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def CancelSubscription(
        self, request: pb.CancelSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.cancel_subscription(
            request.account_id,
            request.subscription_id,
            at=time_arg(request, "at"),
            when=request.when,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def CancelScheduledChange(
        self, request: pb.CancelScheduledChangeRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.cancel_scheduled_change(
            request.account_id,
            request.subscription_id,
            at=time_arg(request, "at"),
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def ResumeSubscription(
        self, request: pb.ResumeSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.resume_subscription(
            request.account_id, request.subscription_id, actor=self._actor(context)
        )
        return subscription_pb(sub)

    @handled
    def MigratePlan(
        self, request: pb.MigratePlanRequest, context: grpc.ServicerContext
    ) -> pb.MigratePlanResponse:
        moves = self.admin.migrate_plan(
            request.from_plan,
            request.to_plan,
            at=time_arg(request, "at"),
            when=request.when,
            dry_run=request.dry_run,
            actor=self._actor(context),
        )
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

    @handled
    def AddMember(
        self, request: pb.MemberRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.add_member(
            request.account_id,
            request.subscription_id,
            request.member_id,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    @handled
    def RemoveMember(
        self, request: pb.MemberRequest, context: grpc.ServicerContext
    ) -> pb.Subscription:
        sub = self.admin.remove_member(
            request.account_id,
            request.subscription_id,
            request.member_id,
            actor=self._actor(context),
        )
        return subscription_pb(sub)

    # -- overrides and grants ----------------------------------------------------------------

    @handled
    def SetOverride(
        self, request: pb.SetOverrideRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        require(bool(request.feature), "feature is required")
        require(
            request.HasField("value"), 'value is required (e.g. 25, true, "unlimited", {limit: 10})'
        )
        account = self.admin.set_override(
            request.account_id,
            request.feature,
            value_arg(request.value, "value"),
            expires_at=time_arg(request, "expires_at"),
            actor=self._actor(context),
        )
        return account_pb(account)

    @handled
    def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        account = self.admin.clear_override(
            request.account_id, request.feature, actor=self._actor(context)
        )
        return account_pb(account)

    @handled
    def CreateGrant(
        self, request: pb.CreateGrantRequest, context: grpc.ServicerContext
    ) -> pb.Grant:
        require(bool(request.account_id), "account_id is required")
        require(bool(request.feature), "feature is required")
        require(request.HasField("value"), "value is required (e.g. 500000 for a metered feature)")
        grant = self.admin.create_grant(
            request.account_id,
            request.feature,
            value_arg(request.value, "value"),
            starts_at=time_arg(request, "starts_at"),
            ends_at=time_arg(request, "ends_at"),
            grant_id=request.id,
            actor=self._actor(context),
        )
        return grant_pb(grant)

    @handled
    def RevokeGrant(
        self, request: pb.RevokeGrantRequest, context: grpc.ServicerContext
    ) -> pb.Account:
        account = self.admin.revoke_grant(
            request.account_id, request.grant_id, actor=self._actor(context)
        )
        return account_pb(account)

    @handled
    def ResetUsage(
        self, request: pb.ResetUsageRequest, context: grpc.ServicerContext
    ) -> pb.ResetUsageResponse:
        previous = self.admin.reset_usage(
            request.account_id, request.feature, actor=self._actor(context)
        )
        return pb.ResetUsageResponse(previous_usage=previous)

    # -- balances (design §5.1) --------------------------------------------------------------

    @handled
    def AddTopUp(self, request: pb.AddTopUpRequest, context: grpc.ServicerContext) -> pb.TopUp:
        view = self.admin.add_topup(
            request.account_id,
            request.feature,
            request.amount,
            priority=request.priority if request.HasField("priority") else None,
            effective_at=time_arg(request, "effective_at"),
            expires_at=time_arg(request, "expires_at"),
            topup_id=request.id,
            actor=self._actor(context),
        )
        return _topup_view_pb(view)

    @handled
    def VoidTopUp(self, request: pb.VoidTopUpRequest, context: grpc.ServicerContext) -> pb.TopUp:
        view = self.admin.void_topup(
            request.account_id, request.topup_id, actor=self._actor(context)
        )
        return _topup_view_pb(view)

    @handled
    def ListTopUps(
        self, request: pb.ListTopUpsRequest, context: grpc.ServicerContext
    ) -> pb.ListTopUpsResponse:
        found = self.admin.list_topups(request.account_id, request.feature)
        return pb.ListTopUpsResponse(topups=[topup_pb(s.topup, s) for s in found])

    # -- quota deliveries (design §7) --------------------------------------------------------

    @handled
    def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        page = self.admin.list_deliveries(
            request.status, request.page_size, _seq_token(request.page_token)
        )
        return pb.ListDeliveriesResponse(
            deliveries=[_delivery_pb(d) for d in page.items], next_page_token=_next_token(page)
        )

    @handled
    def RetryDelivery(
        self, request: pb.RetryDeliveryRequest, context: grpc.ServicerContext
    ) -> pb.RetryDeliveryResponse:
        ids = self.admin.retry_deliveries(
            request.id, all_failed=request.all_failed, actor=self._actor(context)
        )
        return pb.RetryDeliveryResponse(retried=len(ids), ids=ids)

    # -- audit log (design §12) --------------------------------------------------------------

    @handled
    def ListAuditLog(
        self, request: pb.ListAuditLogRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditLogResponse:
        page = self.admin.list_audit(
            request.account_id,
            time_arg(request, "since"),
            request.page_size,
            _seq_token(request.page_token),
        )
        return pb.ListAuditLogResponse(
            entries=[_audit_pb(e) for e in page.items], next_page_token=_next_token(page)
        )

    # -- the Stripe connection (design §18) ----------------------------------------------------

    @handled
    def ImportStripe(
        self, request: pb.ImportStripeRequest, context: grpc.ServicerContext
    ) -> pb.ImportStripeResponse:
        require(
            len(request.objects_json) > 0, "objects_json must hold at least one Stripe list JSON"
        )
        results = StripeImport(self.admin.state, request.dry_run).run(request.objects_json)
        return pb.ImportStripeResponse(
            dry_run=request.dry_run,
            results=[
                pb.ImportStripeResult(
                    object_id=r.object_id,
                    object=r.object,
                    outcome=r.outcome,
                    account_id=r.account,
                    message=r.message,
                )
                for r in results
            ],
        )
