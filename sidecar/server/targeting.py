"""The OpenFeature targeting key of a flagd or OFREP request context: PlanGate's account id."""

from __future__ import annotations

from typing import Any


def split_targeting(context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(account id, the other attributes) of an evaluation context; "" without a key.

    A `targetingKey` that is null or not a string counts as none, as in flagd (decision
    2000): a feature with variants answers without one, any other feature answers
    TARGETING_KEY_MISSING from the engine."""
    attributes = dict(context)
    account = attributes.pop("targetingKey", None)
    return (account if isinstance(account, str) else ""), attributes
