"""The OpenFeature targeting key of a flagd or OFREP request context: PlanGate's account id."""

from __future__ import annotations

from typing import Any

from ..engine import ErrorCode, EvaluationError

MISSING_KEY = (
    "the context has no targetingKey; set the OpenFeature targeting key "
    "(e.g. EvaluationContext(targeting_key=...)) to the account id"
)


def split_targeting(context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(account id, the other attributes) of an evaluation context."""
    attributes = dict(context)
    account = attributes.pop("targetingKey", None)
    if account is None or account == "":
        raise EvaluationError(ErrorCode.TARGETING_KEY_MISSING, MISSING_KEY)
    if not isinstance(account, str):
        raise EvaluationError(
            ErrorCode.INVALID_CONTEXT,
            f"targetingKey must be a string (the account id), got {account!r}",
        )
    return account, attributes
