"""One usage write (design §5, §15): the `UsageWrite` Report and Consume hand the group commit.

A write is a report resolved against one snapshot: the counter it counts on (scope, period),
its quota check, the top-ups it burns and the credit pool it also counts on (design §5.1),
and, for a Consume, its admission (`engine.write_rule.admit_for`). `usage_write` builds it
for both, so they cannot differ in anything but the admission; phase 3 events and holds
are to be written through it too. Plain metered features skip the balance resolution
(`needs_balance` is False), so their hot path stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ....protocol.metering import Denial
from ...catalog.model import Feature
from ...engine import Decision, StateView, UsageReport, evaluate, slot_for
from ...engine.balances import Balance
from ...engine.evaluate import balance_for
from ...engine.write_rule import Exhausted, PoolLeg, UsageWrite, admit_for
from .quota_events import QuotaCheck, quota_check
from .webhooks import exhausted_hook


@dataclass(frozen=True, slots=True)
class Target:
    """Where a write of one account's feature at one instant counts, and what it carries
    besides its report. It depends on nothing else, so a Report batch, whose reports mostly
    share account, feature and instant, resolves each once (`Memo`)."""

    scope_key: str
    period_start: datetime
    on_applied: QuotaCheck | None
    balance: Balance | None
    pool: PoolLeg | None
    on_exhausted: Exhausted | None


Memo = dict[tuple[str, str, datetime, str], Target]
"""(account, feature, instant, credit-rate dimension value) -> its `Target`, within one batch."""


def usage_write(
    snap: StateView,
    report: UsageReport,
    feature: Feature,
    *,
    at: datetime,
    now: datetime,
    environment: str,
    decision: Decision | None = None,
    requested: float | None = None,
    memo: Memo | None = None,
) -> UsageWrite:
    """`report` on `feature` (checked by `countable`) resolved against `snap` to count at `at`.

    `decision`: the evaluation at `at` the caller already has (Consume's), reused for the
    counter and the balances. `requested` makes the write a Consume: it is recorded only if
    that amount fits (its pool's credits too), checked in the store's transaction against the
    stored counters. `memo` shares resolutions within a batch (Report).
    """
    context = report.context(feature)
    key = (report.account, feature.key, at, next(iter(context.values()), ""))
    target = memo.get(key) if memo is not None else None
    if target is None:
        target = _target(
            snap, report.account, feature, at, now, environment, decision, requested, context
        )
        if memo is not None:
            memo[key] = target
    admit = None
    if requested is not None:
        assert decision is not None and decision.metering is not None
        admit = admit_for(decision.metering, requested)
    return UsageWrite(
        scope_key=target.scope_key,
        feature=feature,
        period_start=target.period_start,
        report=report,
        admit=admit,
        on_applied=target.on_applied,
        balance=target.balance,
        pool=target.pool,
        on_exhausted=target.on_exhausted,
        at=at,
    )


def _target(
    snap: StateView,
    account: str,
    feature: Feature,
    at: datetime,
    now: datetime,
    environment: str,
    decision: Decision | None,
    requested: float | None,
    context: dict[str, str],
) -> Target:
    check = quota_check(snap, account, feature, at, now, environment)
    balance = pool = None
    if needs_balance(snap, account, feature):
        if decision is None:
            decision = evaluate(snap, account, feature.key, context, at)
        balance, pool = _balance_and_pool(snap, account, decision, at, now, environment, requested)
    if decision is not None:
        m = decision.metering
        assert m is not None
        scope_key, period_start = m.scope_key, m.period_start
    else:  # no balances: the counter alone, without a whole evaluation
        slot = slot_for(snap, account, feature, at)
        scope_key, period_start = slot.scope_key, slot.period.start
    hook = exhausted_hook(snap.catalog, environment, account, balance, pool)
    return Target(scope_key, period_start, check, balance, pool, hook)


def needs_balance(snapshot: StateView, account_id: str, feature: Feature) -> bool:
    """Whether a write of `feature` by `account_id` burns top-ups or draws on a pool."""
    if feature.credits is not None:
        return True
    account = snapshot.accounts.get(account_id)
    return account is not None and any(t.feature == feature.key for t in account.topups)


def _balance_and_pool(
    snapshot: StateView,
    account_id: str,
    decision: Decision,
    at: datetime,
    now: datetime,
    environment: str,
    requested: float | None,
) -> tuple[Balance | None, PoolLeg | None]:
    """The write's top-ups and pool leg from its decision; `requested` (Consume) adds the
    pool's admission check for `requested x per_unit` credits."""
    m = decision.metering
    assert m is not None
    balance = balance_for(snapshot, account_id, decision.feature, m.allowance, at)
    share = m.pool
    if share is None or share.decision.metering is None:
        return balance, None
    pm = share.decision.metering
    pool = snapshot.catalog.features[share.feature]
    leg = PoolLeg(
        pm.scope_key,
        pool,
        pm.period_start,
        share.per_unit,
        balance_for(snapshot, account_id, pool.key, pm.allowance, at),
        None
        if requested is None
        else admit_for(pm, requested * share.per_unit, Denial.CREDITS_EXHAUSTED),
        quota_check(snapshot, account_id, pool, at, now, environment),
    )
    return balance, leg
