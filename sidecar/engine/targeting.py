"""Step 1b of design §4: a feature's flagd targeting rule, run by `openfeature-flagd-core`.

The rule was checked and its `$ref`s resolved when the catalog loaded (`catalog/targeting.py`);
here it only runs, with flagd-core's own JSON Logic operators, so `fractional` buckets an
account exactly as flagd would. The data the rule sees is built here and nowhere else, and
`$flagd.timestamp` comes from the evaluation's `now`: the engine stays clock-free (flagd-core's
`targeting()` helper reads the wall clock, so it is not used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from json_logic import jsonLogic
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS

from ..catalog.model import Account, Feature, Subscription, Targeting, thaw
from .decision import ErrorCode, EvaluationError


def rule_data(
    feature: Feature,
    account_id: str,
    account: Account | None,
    subscriptions: Sequence[Subscription],
    context: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """What a targeting rule sees (design §4.1): the context, then the reserved names
    `targetingKey`, `$flagd`, `account`, `plans` and `addons` set over it, so a caller cannot
    claim a plan or another account. `account` holds the custom attributes next to `id` and
    `name` (`{"var": "account.region"}`), which no attribute can replace."""
    plans: dict[str, None] = {}
    addons: dict[str, None] = {}
    for sub in subscriptions:
        plans[sub.plan] = None
        addons.update(dict.fromkeys(sub.addons))
    data = dict(context)
    data.pop("targetingKey", None)
    if account_id:  # decision 2000: without one, the rule runs with `targetingKey` absent
        data["targetingKey"] = account_id
    data["$flagd"] = {"flagKey": feature.key, "timestamp": int(now.timestamp())}
    attributes = thaw(account.attributes) if account is not None else {}
    data["account"] = {
        **attributes,
        "id": account_id,
        "name": account.name if account is not None else "",
    }
    data["plans"] = list(plans)
    data["addons"] = list(addons)
    return data


def run_rule(targeting: Targeting, key: str, data: dict[str, Any]) -> str | None:
    """The variant the rule names, or None when it falls through (`null`).

    A result that names no variant is an error (`GENERAL`), as in flagd; a boolean or number
    result names the variant spelled like it (`true`, `2`), as flagd-core does."""
    if targeting.rule is None:
        return None
    try:
        result = jsonLogic(targeting.rule, data, OPERATORS)
    except Exception as exc:  # a rule that fails at run time (e.g. division by zero)
        raise EvaluationError(
            ErrorCode.GENERAL, f"targeting of {key} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if result is None:
        return None
    name = str(result).lower() if isinstance(result, bool) else str(result)
    if name not in targeting.variants:
        raise EvaluationError(
            ErrorCode.GENERAL,
            f"targeting of {key} returned {result!r}, which names no variant "
            f"(variants: {', '.join(sorted(targeting.variants))})",
        )
    return name
