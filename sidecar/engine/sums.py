"""Sums of finite numbers that overflow: refused when an edit would make one, saturated when read.

Every amount a request or a catalog gives is checked to be finite, but the engine adds them
up — top-ups onto an allowance (design §5.1), add-ons onto a plan — and two top-ups of 1e308
make `inf`, which no answer can carry (`math.floor`, JSON). So (decision 1301):

- an edit whose account would need such a sum is refused (`overflows`, called by the live
  state before anything is stored), naming the sum;
- what is already stored (written before this check existed, or declared in a catalog file)
  is evaluated with saturating sums (`saturated`): a ceiling beyond the largest float is
  served as the largest float (about 1.8e308), so the account has access to anything that
  fits and every face answers a finite number instead of an error.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..catalog.model import Account, Entitlement, MeteredLimit, Subscription

if TYPE_CHECKING:  # at run time `snapshot` imports `combine`, which imports this module
    from .snapshot import PlanResolver

LARGEST = sys.float_info.max
"""The largest finite float: where a saturated sum stops."""


def saturated(value: float) -> float:
    """`value` if finite, else the largest float of its sign (NaN, which only `inf - inf`
    makes, counts as beyond every bound)."""
    if math.isfinite(value):
        return value
    return -LARGEST if value < 0 else LARGEST


def overflows(
    account: Account, plans: PlanResolver, shared: Sequence[Subscription] = ()
) -> dict[str, str]:
    """Each sum an evaluation of `account` would make past what a float holds, by what it is
    the sum of (a subscription's feature, a feature's top-ups), with a message saying what to
    change; empty if none. Checked: each subscription's plan plus add-ons (in every phase),
    and per feature the top-ups' total on top of the largest allowance any source gives (its
    own and the `shared` subscriptions it is a member of, overrides, grants); a voided top-up
    holds nothing more, so voiding one is how such an account is repaired."""
    found = _stacked_overflows(account, plans)
    limits = _largest_limits(account, plans, shared)
    totals: dict[str, float] = {}
    for topup in account.topups:
        if topup.voided_at is None:  # a voided top-up holds nothing more
            totals[topup.feature] = totals.get(topup.feature, 0.0) + topup.amount
    for key, total in totals.items():
        allowance = max(limits.get(key, ()), default=0.0)
        if not _below(total + allowance):
            found[f"top-ups {key}"] = (
                f"{key}: the top-ups' amounts ({_sum_text(account, key)}) on top of an allowance "
                f"of {allowance:g} add up to more than the largest number a balance can hold "
                f"({LARGEST:.3g}); add a smaller amount (or void a top-up first)"
            )
    return found


def _stacked_overflows(account: Account, plans: PlanResolver) -> dict[str, str]:
    """Each subscription's plan plus add-ons (in every phase) that add up past a float."""
    found: dict[str, str] = {}
    for sub in account.subscriptions:
        for phase in _phases(sub):
            for key, (value, source) in plans.entitlements(phase).items():
                if not _finite(value):
                    found[f"subscription {sub.id} {key}"] = (
                        f"subscription {sub.id!r}: {key} of {source} (add-ons × quantity) adds up "
                        f"to more than the largest number a limit can hold ({LARGEST:.3g}); "
                        "lower the add-on quantities"
                    )
    return found


def _largest_limits(
    account: Account, plans: PlanResolver, shared: Sequence[Subscription]
) -> dict[str, list[float]]:
    """Per feature, every allowance a source gives the account: its own and the `shared`
    subscriptions (every phase), overrides, grants."""
    limits: dict[str, list[float]] = {}
    for sub in (*account.subscriptions, *shared):
        for phase in _phases(sub):
            for key, (value, _source) in plans.entitlements(phase).items():
                _add_limit(limits, key, value)
    for key, override in account.overrides.items():
        _add_limit(limits, key, override.value)
    for grant in account.grants:
        _add_limit(limits, grant.feature, grant.value)
    return limits


def _phases(sub: Subscription) -> Iterable[Subscription]:
    """The subscription as it stands before and in each of its phases."""
    yield sub
    for phase in sub.phases:
        yield sub.at(phase.starts_at)


def _finite(value: Entitlement) -> bool:
    """Below the largest float: a stacked value that reached it overflowed (`stack` saturates)."""
    if isinstance(value, MeteredLimit):
        return value.limit is None or _below(value.limit)
    if isinstance(value, float):
        return _below(value)
    return True


def _below(value: float) -> bool:
    return abs(value) < LARGEST  # False for inf and NaN too


def _add_limit(limits: dict[str, list[float]], key: str, value: Entitlement) -> None:
    if isinstance(value, MeteredLimit) and value.limit is not None:
        limits.setdefault(key, []).append(value.limit)


def _sum_text(account: Account, key: str) -> str:
    amounts = [f"{t.amount:g}" for t in account.topups if t.feature == key and not t.voided_at]
    shown = " + ".join(amounts[:3]) + (f" + … ({len(amounts)} in all)" if len(amounts) > 3 else "")
    return shown
