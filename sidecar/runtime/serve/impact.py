"""Impact review of a catalog change (design §6.1, `plangate diff`): which accounts'
decisions a proposed catalog would alter, feature by feature.

It evaluates with the engine's own `evaluate` over two `LiveState`s on the same stored
accounts and usage, so the review answers exactly what the sidecar would serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...engine import EvaluationError, evaluate
from ...engine.snapshot import StateView


@dataclass(frozen=True, slots=True)
class Change:
    account: str
    feature: str
    before: str
    after: str


def _answer(snapshot: StateView, account: str, feature: str, now: datetime) -> str:
    """One decision as short text: the value, and `(no access)` when it denies."""
    try:
        decision = evaluate(snapshot, account, feature, {}, now)
    except EvaluationError as e:
        return f"<{e.code.value}>"
    value: Any = decision.value
    text = "unlimited" if decision.unlimited else repr(value)
    if decision.caller_default:  # decision 2002: disabled, or no default variant
        text = "<the caller's default>"
    return text if decision.has_access else f"{text} (no access)"


def catalog_impact(old: StateView, new: StateView, now: datetime) -> list[Change]:
    """Every (account, feature) whose decision at `now` differs between the two snapshots;
    accounts and features of either side, in order of account then feature."""
    accounts = sorted({*old.accounts, *old.memberships, *new.accounts, *new.memberships})
    features = sorted({*old.catalog.features, *new.catalog.features})
    out: list[Change] = []
    for account in accounts:
        for feature in features:
            before, after = (_answer(s, account, feature, now) for s in (old, new))
            if before != after:
                out.append(Change(account, feature, before, after))
    return out


def account_impact(old: StateView, new: StateView, account: str, at: datetime) -> list[Change]:
    """Every feature of `account` whose decision at `at` differs between the two snapshots
    (one account's `catalog_impact`: the console's before → after of a change)."""
    out: list[Change] = []
    for feature in sorted({*old.catalog.features, *new.catalog.features}):
        before, after = (_answer(s, account, feature, at) for s in (old, new))
        if before != after:
            out.append(Change(account, feature, before, after))
    return out
