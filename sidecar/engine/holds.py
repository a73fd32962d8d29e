"""Holds (design §17): amounts reserved against a balance until settled, released or expired.

A hold counts on one or two legs — its feature's counter scope and, for a credit-priced
feature, its pool's scope at `amount x per_unit` — and it counts regardless of the usage
period (decision 2300): what is reserved is owed whenever it is settled. Expiry is a time
boundary, not a state change anyone writes: a hold is active while `now < expires_at`, so
every store and every sidecar agree on it without a job. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

Leg = tuple[str, str]
"""(scope key, feature key) a hold counts on."""

DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 86_400


class HoldState(StrEnum):
    ACTIVE = "active"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"  # never stored: an active hold past its `expires_at`


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account: str
    feature: str
    scope_key: str
    amount: float
    created_at: datetime
    expires_at: datetime
    pool: str = ""  # a credit-priced feature's pool
    pool_scope: str = ""
    per_unit: float = 0.0
    state: HoldState = HoldState.ACTIVE  # as stored: active, settled or released
    ended_at: datetime | None = None
    settled: float | None = None

    def state_at(self, now: datetime) -> HoldState:
        """The state at `now`: a stored active hold past its expiry is expired."""
        if self.state is HoldState.ACTIVE and now >= self.expires_at:
            return HoldState.EXPIRED
        return self.state

    def legs(self) -> list[tuple[Leg, float]]:
        out: list[tuple[Leg, float]] = [((self.scope_key, self.feature), self.amount)]
        if self.pool:
            out.append(((self.pool_scope, self.pool), self.amount * self.per_unit))
        return out

    def ended_message(self, now: datetime) -> str:
        """Why an ended hold cannot be settled or released again (design §17's wording)."""
        state = self.state_at(now)
        if state is HoldState.EXPIRED:
            return f"hold {self.id} expired at {self.expires_at.isoformat()}"
        return f"hold {self.id} was {state.value}"


def held_on(holds: Iterable[Hold], leg: Leg, now: datetime) -> float:
    """What the holds active at `now` reserve on `leg`."""
    return sum(
        a for h in holds if h.state_at(now) is HoldState.ACTIVE for k, a in h.legs() if k == leg
    )


class HoldView:
    """The active holds in memory, by leg (the engine reads them through `held`)."""

    def __init__(self, holds: Iterable[Hold] = ()) -> None:
        self.by_id: dict[str, Hold] = {}
        self.by_leg: dict[Leg, dict[str, Hold]] = {}
        self.by_account: dict[str, dict[str, Hold]] = {}
        for h in holds:
            self.add(h)

    def add(self, hold: Hold) -> None:
        self.by_id[hold.id] = hold
        self.by_account.setdefault(hold.account, {})[hold.id] = hold
        for leg, _amount in hold.legs():
            self.by_leg.setdefault(leg, {})[hold.id] = hold

    def end(self, hold_id: str) -> Hold | None:
        hold = self.by_id.pop(hold_id, None)
        if hold is not None:
            mine = self.by_account.get(hold.account)
            if mine is not None:
                mine.pop(hold_id, None)
                if not mine:
                    self.by_account.pop(hold.account, None)
            for leg, _amount in hold.legs():
                on = self.by_leg.get(leg)
                if on is not None:
                    on.pop(hold_id, None)
                    if not on:
                        self.by_leg.pop(leg, None)
        return hold

    def held(self, scope_key: str, feature: str, now: datetime) -> tuple[float, datetime | None]:
        """What active holds reserve on (scope, feature) at `now`, and the earliest expiry of
        those holds (the instant the answer changes by time alone)."""
        on = self.by_leg.get((scope_key, feature))
        if not on:
            return 0.0, None
        total, soonest = 0.0, None
        for hold in list(on.values()):
            if now >= hold.expires_at:
                continue
            for leg, amount in hold.legs():
                if leg == (scope_key, feature):
                    total += amount
            if soonest is None or hold.expires_at < soonest:
                soonest = hold.expires_at
        return total, soonest

    def of_account(self, account: str, now: datetime) -> list[Hold]:
        """The account's active holds, earliest expiry first."""
        mine = self.by_account.get(account)
        found = [h for h in list((mine or {}).values()) if now < h.expires_at]
        return sorted(found, key=lambda h: (h.expires_at, h.id))

    def next_expiry(self, account: str, after: datetime) -> datetime | None:
        """The earliest expiry of the account's holds after `after` (a time boundary, §8)."""
        mine = self.by_account.get(account)
        times = [h.expires_at for h in list((mine or {}).values()) if h.expires_at > after]
        return min(times) if times else None
