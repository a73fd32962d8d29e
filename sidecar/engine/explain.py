"""The trail of one evaluation (design §4.1 "Explain"): why the answer is what it is.

It walks the same steps as `evaluate`, with the same functions — the override check, the
targeting rule, the candidates and "most generous wins" — and ends with `evaluate`'s own
decision as the winner, so the trail cannot tell a different story from the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..catalog.features import notation
from ..catalog.meters import dimension_text
from ..catalog.model import Entitlement, Feature, FeatureType
from .combine import most_generous
from .decision import Decision, ErrorCode, EvaluationError
from .evaluate import (
    active_override,
    active_subscriptions,
    candidates_for,
    evaluate,
    find_feature,
    priced,
)
from .snapshot import StateView
from .targeting import rule_data, run_rule

_FIRST_WINS = (FeatureType.STRING, FeatureType.OBJECT)


def explain(
    snapshot: StateView, account_id: str, key: str, context: Mapping[str, Any], now: datetime
) -> tuple[Decision | EvaluationError, dict[str, Any]]:
    """The decision (or the error it ends in) and its trail as JSON-shaped data."""
    try:
        result: Decision | EvaluationError = evaluate(snapshot, account_id, key, context, now)
    except EvaluationError as exc:
        if exc.code is not ErrorCode.GENERAL:  # a bad request: nothing to explain
            raise
        result = exc  # the targeting rule failed: the trail shows where
    feature = find_feature(snapshot, key)  # evaluate raised FLAG_NOT_FOUND already if absent
    account = snapshot.accounts.get(account_id)
    subscriptions = active_subscriptions(snapshot, account_id, now)
    trail: dict[str, Any] = {
        "feature": feature.key,
        "account": account_id,
        "account_known": account is not None or bool(snapshot.memberships.get(account_id)),
        "archived": feature.archived,
    }
    price = feature.credits
    if price is not None and price.by is not None:
        given = context.get(price.by)
        trail["credit_rate"] = {
            "by": price.by,
            "value": given,
            "per_unit": priced(feature, context).credits.per_unit,  # type: ignore[union-attr]
            "listed": dimension_text(given) in price.rates,
        }
    override = active_override(account, key, now) if account is not None else None
    trail["override"] = None if override is None else {"value": notation(override)}
    if override is not None and feature.targeting is not None:
        trail["targeting"] = {"skipped": "the override stands above targeting"}
    else:
        trail["targeting"] = _targeting(feature, account_id, snapshot, subscriptions, context, now)
    candidates, _ = candidates_for(snapshot, account, key, subscriptions, now)
    trail["candidates"] = _candidates(feature, candidates, result, trail)
    if isinstance(result, EvaluationError):
        trail["winner"] = None
        trail["error"] = {"code": result.code.value, "message": result.message}
    else:
        trail["winner"] = {
            "source": "targeting" if result.targeted else result.variant,
            "variant": result.variant,
            "value": _plain(result.value),
            "reason": result.reason.value,
            "has_access": result.has_access,
        }
    return result, trail


def _targeting(
    feature: Feature,
    account_id: str,
    snapshot: StateView,
    subscriptions: Any,
    context: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any] | None:
    targeting = feature.targeting
    if targeting is None:
        return None
    account = snapshot.accounts.get(account_id)
    data = rule_data(feature, account_id, account, subscriptions, context, now)
    out: dict[str, Any] = {"volatile": targeting.volatile}
    try:
        out["variant"] = run_rule(targeting, feature.key, data)
    except EvaluationError as exc:
        out["variant"] = None
        out["error"] = exc.message
    return out


def _candidates(
    feature: Feature,
    candidates: list[tuple[Entitlement, str]],
    result: Decision | EvaluationError,
    trail: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Each subscription and grant with its value and, if it lost, why."""
    best = most_generous(candidates)
    out = []
    for value, source in candidates:
        why: str | None
        if trail["archived"]:
            why = "the feature is archived: every account gets its default"
        elif trail["override"] is not None:
            why = "the override replaces every other source"
        elif isinstance(result, Decision) and result.targeted:
            why = f"targeting chose variant {result.variant!r}"
        elif isinstance(result, EvaluationError):
            why = f"the evaluation failed: {result.code.value}"
        elif feature.type is FeatureType.LIST:
            why = None if source in result.variant.split(",") else "adds nothing to the union"
        elif best is not None and (value, source) == best and result.variant == source:
            why = None
        elif best is not None and feature.type in _FIRST_WINS:
            why = f"{best[1]!r} comes first in the account's subscription order"
        elif best is not None:
            why = f"{best[1]!r} is more generous" if best[0] != value else f"ties with {best[1]!r}"
        else:
            why = "no source"
        out.append({"source": source, "value": notation(value), "won": why is None, "why": why})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
