"""Balances (design §5.1): how top-ups add to a period allowance and in which order they burn.

Burn state is kept as usage counters in the store, next to the counter it belongs to, so it is
written in the same transaction as the usage that burns it, read back at start-up, pruned by
the same rules and synced between sidecars like any counter:

- `(scope, "<feature>#topup:<id>", FOREVER)`: what the top-up has burned in total (it survives
  period resets, so it lives outside every period);
- `(scope, "<feature>#topup:<id>", period start)`: what it burned in that period, which is what
  a refund can un-burn and what the period's ceiling keeps covering after the top-up ends.

`#` never occurs in a feature key (slugs are `[a-z0-9-]`), so these never meet a real feature.
Pure functions: the store's write rule and the evaluation call the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..catalog.model import TopUp
from .sums import saturated

CounterKey = tuple[str, str, datetime]

FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
"""The "period start" of a top-up's lifetime burn: after every period, so no pruning cut-off
ever reaches it."""

_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


def burn_feature(feature: str, topup_id: str) -> str:
    return f"{feature}#topup:{topup_id}"


def burn_order(topups: Iterable[TopUp]) -> tuple[TopUp, ...]:
    """Design §5.1: priority (lower first), earliest expiry (none last), earliest start, id."""
    return tuple(
        sorted(
            topups,
            key=lambda t: (
                t.priority,
                t.expires_at is None,
                t.expires_at or FOREVER,
                t.effective_at or _EARLIEST,
                t.id,
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class Balance:
    """A counter's allowance and the top-ups of its feature (in burn order), as of `at`: what
    a write or an evaluation needs besides the stored counters."""

    allowance: float | None  # the period allowance L; None: unlimited (top-ups never burn)
    topups: tuple[TopUp, ...]
    at: datetime

    def keys(self, scope: str, feature: str, period_start: datetime) -> list[CounterKey]:
        out: list[CounterKey] = []
        for t in self.topups:
            name = burn_feature(feature, t.id)
            out += ((scope, name, FOREVER), (scope, name, period_start))
        return out


@dataclass(frozen=True, slots=True)
class TopUpState:
    topup: TopUp
    burned: float  # in total
    burned_now: float  # in the current period
    active: bool

    @property
    def remaining(self) -> float:
        """What it can still cover: nothing once expired or voided (or not yet effective)."""
        return max(0.0, self.topup.amount - self.burned) if self.active else 0.0


def states(
    balance: Balance,
    scope: str,
    feature: str,
    period_start: datetime,
    value: Callable[[CounterKey], float],
) -> list[TopUpState]:
    out = []
    for t in balance.topups:
        name = burn_feature(feature, t.id)
        out.append(
            TopUpState(
                t,
                value((scope, name, FOREVER)),
                value((scope, name, period_start)),
                t.active_at(balance.at),
            )
        )
    return out


def headroom(topups: Sequence[TopUpState]) -> tuple[float, float]:
    """(B, T): top-up amounts covered this period, and the active remainders (each sum
    saturated: stored amounts may add up beyond a float, `engine.sums`)."""
    return (
        saturated(sum(s.burned_now for s in topups)),
        saturated(sum(s.remaining for s in topups)),
    )


def rebalance(
    allowance: float | None,
    topups: Sequence[TopUpState],
    scope: str,
    feature: str,
    period_start: datetime,
    used: float,
) -> dict[CounterKey, float]:
    """The burn counters that change when the period's usage becomes `used`.

    Usage beyond the allowance burns the active top-ups in order (what none can cover is
    overage); usage falling back (a refund) un-burns this period's burns, last in burn order
    first. Unchanged counters are left out.
    """
    if allowance is None:
        return {}
    need = max(0.0, used - allowance)
    covered = sum(s.burned_now for s in topups)
    out: dict[CounterKey, float] = {}
    if need > covered:
        for s in topups:
            if need <= covered:
                break
            take = min(s.remaining, need - covered)
            if take > 0:
                covered += take
                _move(out, s, scope, feature, period_start, take)
    elif need < covered:
        for s in reversed(topups):
            if covered <= need:
                break
            give = min(s.burned_now, covered - need)
            if give > 0:
                covered -= give
                _move(out, s, scope, feature, period_start, -give)
    return out


def _move(
    out: dict[CounterKey, float],
    s: TopUpState,
    scope: str,
    feature: str,
    period_start: datetime,
    amount: float,
) -> None:
    name = burn_feature(feature, s.topup.id)
    out[(scope, name, FOREVER)] = max(0.0, s.burned + amount)
    out[(scope, name, period_start)] = max(0.0, s.burned_now + amount)
