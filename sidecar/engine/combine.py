"""How entitlement values combine: add-ons onto a plan, and sources against each other.

Two different rules, kept side by side so their difference is visible:
- `stack` (inside one subscription): add-ons add to the plan, times their quantity.
- `most_generous` (across subscriptions and grants): the best single value wins,
  except lists, which union (Kana's "highest limit", Stigg's cross-source rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import inf

from ..catalog.model import UNLIMITED, Entitlement, MeteredLimit
from .sums import saturated

Sourced = tuple[Entitlement, str]  # a value and the name of its source (the variant)


def stack(base: Entitlement | None, addon: Entitlement, quantity: int) -> Entitlement:
    """Add one add-on (× quantity) onto what the plan (and earlier add-ons) give."""
    if isinstance(addon, MeteredLimit):
        if base is None:
            return _scale(addon, quantity)
        assert isinstance(base, MeteredLimit)
        if base.unlimited or addon.unlimited:
            return MeteredLimit(None, base.soft, base.overage_cap)
        return MeteredLimit(
            saturated((base.limit or 0) + (addon.limit or 0) * quantity),
            base.soft,
            base.overage_cap,
        )
    if addon is UNLIMITED or base is UNLIMITED:
        return UNLIMITED
    if isinstance(addon, bool):
        return bool(base) or addon
    if isinstance(addon, int | float):
        total = (base if isinstance(base, int | float) else 0) + addon * quantity
        return saturated(total) if isinstance(total, float) else total
    if isinstance(addon, tuple):
        return _union(base if isinstance(base, tuple) else (), addon)
    return addon  # strings and objects replace


def _scale(limit: MeteredLimit, quantity: int) -> MeteredLimit:
    if limit.unlimited:
        return limit
    return MeteredLimit(saturated((limit.limit or 0) * quantity), limit.soft, limit.overage_cap)


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def _rank(value: Entitlement) -> tuple[float, float] | None:
    """Orderable generosity of a value, or None where order does not apply (str, object)."""
    if value is UNLIMITED:
        return (inf, inf)
    if isinstance(value, bool):
        return (float(value), 0.0)
    if isinstance(value, int | float):
        return (float(value), 0.0)
    if isinstance(value, MeteredLimit):
        if value.unlimited:
            return (inf, inf)
        ceiling = (
            inf
            if value.soft and value.overage_cap is None
            else (value.limit or 0) + (value.overage_cap or 0)
        )
        return (value.limit or 0.0, ceiling)
    return None


def most_generous(candidates: Sequence[Sourced]) -> Sourced | None:
    """The winning value across sources, in the account's subscription order then grants."""
    if not candidates:
        return None
    first_value, first_source = candidates[0]
    if isinstance(first_value, tuple):
        merged: tuple[str, ...] = ()
        sources: list[str] = []
        for value, source in candidates:
            if isinstance(value, tuple) and set(value) - set(merged):
                merged = _union(merged, value)
                sources.append(source)
        return merged, ",".join(sources) or first_source
    if _rank(first_value) is None:
        return candidates[0]  # strings and objects: first listed source wins
    best = candidates[0]
    for candidate in candidates[1:]:
        if (_rank(candidate[0]) or (-inf, -inf)) > (_rank(best[0]) or (-inf, -inf)):
            best = candidate
    return best
