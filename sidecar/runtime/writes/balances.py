"""Top-up balances as `ListTopUps` and the console show them (design §5.1).

What a usage write carries for its top-ups and credit pool is resolved in `usage_write`;
how top-ups burn is `engine.balances`.
"""

from __future__ import annotations

from datetime import datetime

from ...engine import StateView, evaluate
from ...engine.balances import TopUpState


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
