"""What a usage write carries for balances (design §5.1): its top-ups and its credit pool.

Report and Consume resolve a write against one snapshot; for a feature with top-ups or a
credit price that resolution needs the evaluation's allowance and the pool's counter, so it
is built here, once, from the decision both paths already have. Plain metered features skip
this entirely (`needs_balance` is False), so their hot path stays as it was.
"""

from __future__ import annotations

from datetime import datetime

from ...protocol.metering import Denial, metered_access
from ..catalog.model import Feature
from ..engine import Decision, Metering, StateView, evaluate
from ..engine.balances import Balance, TopUpState
from ..engine.evaluate import balance_for
from ..engine.write_rule import Admit, PoolLeg
from .quota_events import quota_check


def needs_balance(snapshot: StateView, account_id: str, feature: Feature) -> bool:
    """Whether a write of `feature` by `account_id` burns top-ups or draws on a pool."""
    if feature.credits is not None:
        return True
    account = snapshot.accounts.get(account_id)
    return account is not None and any(t.feature == feature.key for t in account.topups)


def admit_for(m: Metering, requested: float, denial: Denial | None = None) -> Admit:
    """Consume's in-transaction check against the allowance plus the top-up headroom the store
    reads; `denial` replaces the denial's name (the pool says `credits_exhausted`)."""
    allowance, soft, cap = m.allowance, m.soft_limit, m.overage_cap

    def admit(current: float, headroom: float) -> str | None:
        limit = None if allowance is None else allowance + headroom
        granted, found = metered_access(limit, current, requested, soft=soft, overage_cap=cap)
        if granted:
            return None
        return (denial or found or Denial.USAGE_LIMIT_REACHED).value

    return admit


def balance_and_pool(
    snapshot: StateView,
    account_id: str,
    decision: Decision,
    at: datetime,
    now: datetime,
    environment: str,
    requested: float | None = None,
) -> tuple[Balance | None, PoolLeg | None]:
    """The write's top-ups and pool leg from its decision; `requested` (Consume) adds the
    pool's admission check for `requested × per_unit` credits."""
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


def topup_balances(
    snapshot: StateView, account_id: str, now: datetime, feature: str = ""
) -> list[TopUpState]:
    """The account's top-ups with what each burned and can still cover, feature by feature
    in catalog order, each feature's in burn order (what `ListTopUps` shows)."""
    account = snapshot.accounts.get(account_id)
    if account is None:
        return []
    keys = {t.feature for t in account.topups if not feature or t.feature == feature}
    out: list[TopUpState] = []
    for key in (k for k in snapshot.catalog.features if k in keys):
        m = evaluate(snapshot, account_id, key, {}, now).metering
        out += m.topups if m is not None else ()
    return out
