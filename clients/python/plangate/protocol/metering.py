"""The metered answer and the denial names: one definition for the sidecar and the provider.

`metered_answer` is the whole metered answer (design §4, §5.1): access and its denial, the
ceiling, `remaining`, `overage`, a credit pool's units and `credits_exhausted`. The engine's
evaluation, Consume's in-transaction admission, the answer after a Consume's write, usage
export and the provider's cache overlay all call it (design §15), so none of them can drift
from the others. Plain numbers in, so neither side's types leak here; no I/O, no clock.
"""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from typing import NamedTuple


class Denial(StrEnum):
    """Why access was denied (design §4), as it appears on the wire and in flag metadata."""

    ACCOUNT_NOT_FOUND = "account_not_found"
    NO_ENTITLEMENT = "no_entitlement"
    USAGE_LIMIT_REACHED = "usage_limit_reached"
    REQUESTED_EXCEEDS_LIMIT = "requested_exceeds_limit"
    FEATURE_DISABLED = "feature_disabled"
    CREDITS_EXHAUSTED = "credits_exhausted"  # the credit pool cannot cover the request (§5.1)
    RATE_LIMITED = "rate_limited"  # the sliding window is full (§17)


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
    """Design §4: unlimited (`limit` None), or U + R <= L, or a soft limit within its overage
    cap: the access part of `metered_answer` for a limit without top-ups."""
    answer = metered_answer(Terms(limit, soft, overage_cap), used, requested)
    return answer.has_access, answer.denial


class Terms(NamedTuple):
    """The limit side of a metered answer: the period allowance `L` (None: unlimited), whether
    it is soft and its overage cap, and the top-ups (design §5.1): `B` what they covered this
    period, `T` what the active ones can still cover. A NamedTuple: the engine makes one per
    metered evaluation, and a tuple is the cheapest immutable record to make."""

    allowance: float | None
    soft: bool = False
    overage_cap: float | None = None
    topup_burned: float = 0.0
    topup_remaining: float = 0.0

    def burned_at(self, used: float) -> Terms:
        """These terms once the counter is written to `used`: the top-ups cover what the
        allowance does not, up to what they can (`engine.balances.rebalance`), so `B` becomes
        `min(U - L, B + T)` and `C` stays. For a cache that knows usage the sidecar has not
        counted yet (the provider's `track` overlay)."""
        if self.allowance is None or not (self.topup_burned or self.topup_remaining):
            return self
        coverable = self.topup_burned + self.topup_remaining
        burned = min(max(0.0, used - self.allowance), coverable)
        return self._replace(topup_burned=burned, topup_remaining=coverable - burned)


class PoolCover(NamedTuple):
    """A credit pool's answer to a request for `requested x per_unit` credits (design §5.1)."""

    per_unit: float
    covered: bool  # the pool's own access for those credits
    remaining: float | None  # the pool's remaining credits; None: unlimited


class MeteredAnswer(NamedTuple):
    """A metered answer: what `metered_answer` computes."""

    has_access: bool
    denial: Denial | None
    limit: float | None  # the ceiling C; None: unlimited
    remaining: float | None  # None: unlimited
    overage: float


def metered_answer(
    terms: Terms,
    used: float,
    requested: float,
    *,
    held: float = 0.0,
    pool: PoolCover | None = None,
) -> MeteredAnswer:
    """The metered answer for counter value `used` and a request of `requested`.

    Access (design §4) is U + H + R <= C, or a soft limit within its overage cap beyond C; a
    request that could never fit says `requested_exceeds_limit`. `remaining = max(0, C - U - H)`;
    `overage = max(0, U - L - B)`. `held` is what active holds reserve (design §17: they
    count for access and `remaining`, not for overage). With a
    `pool`, access also needs the pool to cover the request (else `credits_exhausted`, after
    the own limit's denial), and `remaining` is at most the pool's remaining / per_unit,
    rounded down.
    """
    allowance, soft, overage_cap, burned, topups = terms
    load = used + held
    if allowance is None:
        cap = remaining = None
        access, denial, overage = True, None, 0.0
    else:
        cap = _finite(allowance + burned + topups)  # C = L + B + T, what `limit` reports
        total = load + requested
        if total <= cap or (soft and (overage_cap is None or total - cap <= overage_cap)):
            access, denial = True, None
        else:  # one that could never fit (beyond C and any overage) says so: waiting won't help
            access = False
            most = cap + (overage_cap or 0.0) if soft else cap
            too_big = requested > most
            denial = Denial.REQUESTED_EXCEEDS_LIMIT if too_big else Denial.USAGE_LIMIT_REACHED
        remaining = cap - load if cap > load else 0.0
        over = used - allowance - burned
        overage = over if over > 0.0 else 0.0
    if pool is not None:
        if access and not pool.covered:
            access, denial = False, Denial.CREDITS_EXHAUSTED
        if pool.remaining is not None:
            units = float(math.floor(_finite(pool.remaining / pool.per_unit + 1e-9)))
            remaining = units if remaining is None else min(remaining, units)
    # tuple.__new__ skips the NamedTuple's Python-level __new__: one of these is made per
    # metered evaluation, on the hottest path there is.
    return _make(MeteredAnswer, (access, denial, cap, remaining, overage))


_make = tuple.__new__
_LARGEST = sys.float_info.max


def _finite(value: float) -> float:
    """A sum of finite amounts that overflowed (or NaN from `inf - inf`) read as the largest
    float: stored amounts may add up beyond it, and the answer must stay a number
    (decision 1301)."""
    return value if value <= _LARGEST else _LARGEST
