"""Pure evaluation: (snapshot, account, feature, context, now) -> Decision. No I/O, no clock."""

from .decision import Decision, ErrorCode, EvaluationError, Metering, Reason
from .evaluate import Slot, account_at, active_subscriptions, evaluate, find_feature, slot_for
from .explain import explain
from .periods import Period, period_containing
from .snapshot import PlanResolver, StateView, UsageView, memberships_of, reindex_members
from .typed import CALLER_DEFAULT, Kind, detail, kinds_of, metadata, resolve_as
from .usage import Mode, UsageRejected, UsageReport, check_rate_consume, check_report, next_value

__all__ = [
    "CALLER_DEFAULT",
    "Decision",
    "ErrorCode",
    "EvaluationError",
    "Kind",
    "Metering",
    "Mode",
    "Period",
    "PlanResolver",
    "Reason",
    "Slot",
    "StateView",
    "UsageRejected",
    "UsageReport",
    "UsageView",
    "account_at",
    "active_subscriptions",
    "check_rate_consume",
    "check_report",
    "detail",
    "evaluate",
    "explain",
    "find_feature",
    "kinds_of",
    "memberships_of",
    "metadata",
    "next_value",
    "period_containing",
    "reindex_members",
    "resolve_as",
    "slot_for",
]
