"""The metered-access rule and the denial names: one definition for the sidecar and the provider.

The sidecar's engine decides access with `metered_access`; the provider re-derives a cached
metered answer for another usage level or `requested` amount with the same function (design
§15), so the two can never disagree. Plain numbers in, so neither side's types leak here.
"""

from __future__ import annotations

from enum import StrEnum


class Denial(StrEnum):
    """Why access was denied (design §4), as it appears on the wire and in flag metadata."""

    ACCOUNT_NOT_FOUND = "account_not_found"
    NO_ENTITLEMENT = "no_entitlement"
    USAGE_LIMIT_REACHED = "usage_limit_reached"
    REQUESTED_EXCEEDS_LIMIT = "requested_exceeds_limit"
    FEATURE_DISABLED = "feature_disabled"
    CREDITS_EXHAUSTED = "credits_exhausted"  # the credit pool cannot cover the request (§5.1)


FIXED_DENIALS = frozenset(
    {Denial.ACCOUNT_NOT_FOUND, Denial.NO_ENTITLEMENT, Denial.FEATURE_DISABLED}
)
"""Denials no usage level or requested amount changes: nothing to re-check for them."""


def metered_access(
    limit: float | None,
    used: float,
    requested: float,
    *,
    soft: bool = False,
    overage_cap: float | None = None,
) -> tuple[bool, Denial | None]:
    """Design §4: unlimited (`limit` None), or U + R <= L, or a soft limit within its overage cap.

    A denied request that could never fit (more than the limit plus any allowed overage) says
    `requested_exceeds_limit`, so a caller knows waiting for the period to end will not help.
    """
    if limit is None:
        return True, None
    total = used + requested
    if total <= limit:
        return True, None
    if soft and (overage_cap is None or total - limit <= overage_cap):
        return True, None
    ceiling = limit + ((overage_cap or 0.0) if soft else 0.0)
    if requested > ceiling:
        return False, Denial.REQUESTED_EXCEEDS_LIMIT
    return False, Denial.USAGE_LIMIT_REACHED
