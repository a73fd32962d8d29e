"""Holds (design §17): Reserve, Settle, Release and the list, for every face.

Each is one usage write through the group commit, built by `usage_write` like Report and
Consume, with the hold it makes or ends: the store applies it with the one per-write rule
(`engine.write_rule.apply_batch`), which counts every active hold in the admission
(U + H + R <= C) against the stored, locked counters, so concurrent reservers — on one
sidecar or several on one PostgreSQL — never hold more than the ceiling.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from ....protocol.metering import FIXED_DENIALS, Denial
from ...catalog.model import Aggregation, Feature, FeatureType
from ...engine import Decision, UsageRejected, UsageReport, evaluate
from ...engine.holds import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, Hold, HoldState
from ...engine.write_rule import HoldEnd
from ...store.base import Status, UsageOutcome
from ..edits.records import NotFound, Refused
from ..live.state import LiveState, countable
from ..writes.usage_write import usage_write


@dataclass(frozen=True, slots=True)
class Reserved:
    granted: bool
    hold: Hold | None  # the hold made (or, for a repeated key, the first one)
    denial: str
    duplicate: bool
    after: Decision  # the decision once the hold counts (or was refused)


@dataclass(frozen=True, slots=True)
class Ended:
    hold: Hold  # as it is now (settled or released)
    usage: float  # the counter after a settle
    over_ceiling: bool
    duplicate: bool
    after: Decision


def check_ttl(ttl_seconds: int | None) -> int:
    """Design §17: unset is 300; 1..86,400, never clamped."""
    if ttl_seconds is None:
        return DEFAULT_TTL_SECONDS
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise UsageRejected(
            f"ttl_seconds must be between 1 and {MAX_TTL_SECONDS} (24 hours), got {ttl_seconds}; "
            f"leave it unset for {DEFAULT_TTL_SECONDS}"
        )
    return ttl_seconds


def check_amount(amount: float, what: str, *, zero: bool) -> float:
    """A hold's amount: finite and positive (a settle's may be 0)."""
    if not math.isfinite(amount) or amount < 0 or (amount == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise UsageRejected(f"{what} must be a finite number {bound}, got {amount}")
    return amount


class Holds:
    def __init__(self, state: LiveState) -> None:
        self.state = state

    def reserve(
        self,
        account: str,
        key: str,
        amount: float,
        ttl_seconds: int | None = None,
        idempotency_key: str = "",
    ) -> Reserved:
        """Make a hold of `amount` if access holds for it counting usage and every active
        hold; blocks until durable."""
        check_amount(amount, "amount", zero=False)
        ttl = check_ttl(ttl_seconds)
        state = self.state
        snap, now = state.snapshot, state.clock()
        report = UsageReport(account, key, amount, idempotency_key=_key("reserve", idempotency_key))
        feature = _holdable(countable(snap, report, now, state.report_ahead))
        decision = evaluate(snap, account, feature.key, {"requested": amount}, now)
        m = decision.metering
        if m is None or decision.denial in FIXED_DENIALS:
            denial = decision.denial or Denial.NO_ENTITLEMENT
            return Reserved(False, None, denial.value, False, decision)
        pool = m.pool
        pool_scope = ""
        if pool is not None and pool.decision.metering is not None:
            pool_scope = pool.decision.metering.scope_key
        hold = Hold(
            f"hold_{uuid.uuid4().hex}",
            account,
            feature.key,
            m.scope_key,
            amount,
            now,
            now + timedelta(seconds=ttl),
            pool.feature if pool_scope and pool is not None else "",
            pool_scope,
            pool.per_unit if pool_scope and pool is not None else 0.0,
        )
        env = state.store.environment
        write = usage_write(
            snap,
            report,
            feature,
            at=now,
            now=now,
            environment=env,
            decision=decision,
            requested=amount,
        )
        outcome = state.write_usage([replace(write, hold=hold, on_applied=None)])[0]
        after = evaluate(state.snapshot, account, feature.key, {}, now)
        if outcome.status is Status.DENIED:
            return Reserved(False, None, outcome.message, False, after)
        duplicate = outcome.status is Status.DUPLICATE
        if duplicate:
            first = state.store.get_hold(outcome.hold) if outcome.hold else None
            return Reserved(first is not None, first, outcome.message, True, after)
        return Reserved(True, hold, "", False, after)

    def settle(
        self, hold_id: str, amount: float, idempotency_key: str = "", account: str = ""
    ) -> Ended:
        """Record `amount` as usage (in full, even past the ceiling) and end the hold."""
        check_amount(amount, "amount", zero=True)
        return self._end(hold_id, HoldState.SETTLED, amount, idempotency_key, account)

    def release(self, hold_id: str, idempotency_key: str = "", account: str = "") -> Ended:
        """End the hold with no usage."""
        return self._end(hold_id, HoldState.RELEASED, 0.0, idempotency_key, account)

    def _end(
        self, hold_id: str, how: HoldState, amount: float, idempotency_key: str, account: str
    ) -> Ended:
        if not hold_id:
            raise UsageRejected("hold_id is required (the id Reserve answered)")
        state = self.state
        hold = state.holds.by_id.get(hold_id) or state.store.get_hold(hold_id)
        if hold is None or (account and hold.account != account):
            whose = f" of account {account!r}" if account else ""
            raise NotFound(f"no hold {hold_id!r}{whose}; list them with ListHolds")
        snap, now = state.snapshot, state.clock()
        verb = "settle" if how is HoldState.SETTLED else "release"
        report = UsageReport(
            hold.account, hold.feature, amount, idempotency_key=_key(verb, idempotency_key)
        )
        feature = _holdable(countable(snap, report, now, state.report_ahead))
        write = usage_write(
            snap, report, feature, at=now, now=now, environment=state.store.environment
        )
        ends = HoldEnd(hold_id, how, account)
        outcome = state.write_usage([replace(write, ends=ends)])[0]
        _refuse(outcome)
        ended = state.store.get_hold(hold_id) or hold
        after = evaluate(state.snapshot, hold.account, feature.key, {}, now)
        over = how is HoldState.SETTLED and _over_ceiling(after)
        return Ended(ended, outcome.usage, over, outcome.status is Status.DUPLICATE, after)

    def list(self, account: str, feature: str = "") -> list[Hold]:
        """The account's active holds (of `feature` only, when given), earliest expiry first."""
        found = self.state.holds.of_account(account, self.state.clock())
        return [h for h in found if not feature or h.feature == feature]


def _key(verb: str, key: str) -> str:
    """Holds' idempotency keys live apart from reports' (a Report and a Settle may share one)."""
    return f"{verb}:{key}" if key else ""


def _holdable(feature: Feature) -> Feature:
    """Design §17: holds are for `sum` metered and credit-priced features and credit pools."""
    if feature.type not in (FeatureType.METERED, FeatureType.CREDITS) or (
        feature.aggregation is not Aggregation.SUM
    ):
        raise UsageRejected(
            f"{feature.key} is not a sum metered feature or credit pool; holds reserve only "
            "amounts that add up (use Consume or Report for it)"
        )
    return feature


def _refuse(outcome: UsageOutcome) -> None:
    if outcome.status is Status.NO_HOLD:
        raise NotFound(outcome.message)
    if outcome.status is Status.ENDED:
        raise Refused(outcome.message)
    if outcome.status is Status.REJECTED:
        raise UsageRejected(outcome.message)


def _over_ceiling(after: Decision) -> bool:
    """Design §17: past the ceiling once recorded (U + H(other holds) > C, or beyond a soft
    limit's overage cap): the answer at `requested = 0` denies access."""
    m = after.metering
    if m is None or m.limit is None:
        return False
    load = m.used + m.held
    if m.soft_limit:
        return m.overage_cap is not None and load > m.limit + m.overage_cap
    return load > m.limit
