"""The per-write usage rule (design §15): what one batch of usage writes does to the counters.

Every store applies a batch the same way: read what the batch depends on (earlier outcomes of
its idempotency keys, its counters, the unique keys and quota marks already recorded), call
`apply_batch`, and write back what it returns, all in one transaction. The rule itself lives
here, once, with no I/O: SQLite and PostgreSQL cannot drift apart (they did: PostgreSQL once
stored `inf` where SQLite refused), and the unit tests exercise it without a database.

Per write, in order: a repeated idempotency key returns the first outcome; `admit` (Consume)
may refuse, and so may the credit pool's `admit`; a unique key already counted adds nothing;
the counter's next value comes from `engine.usage.next_value` and must stay finite; the
top-ups burn (or un-burn) to cover what the allowance does not (`engine.balances`); a
credit-priced write moves its pool by the same change times `per_unit` (design §5.1); then
the quota marks it reaches fire, each once per counter. The writes of a batch see each
other, exactly as if applied one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ...protocol.metering import Denial, Terms, metered_answer
from ..catalog.model import Aggregation, Feature, TopUp
from .balances import FOREVER, Balance, burn_feature, headroom, rebalance, states
from .decision import Metering
from .holds import Hold, HoldState, Leg, held_on
from .usage import UsageReport, next_value

CounterKey = tuple[str, str, datetime]
"""(scope key, feature key, period start)."""

Admit = Callable[[float, float], str | None]
"""Consume's check: given the current usage and the top-up headroom above the allowance (burned
this period + active remainders, design §5.1), None to record or a denial reason to refuse."""


def admit_for(m: Metering, requested: float, denial: Denial | None = None) -> Admit:
    """Consume's admission (design §5): `requested` fits the allowance of `m` (the decision the
    Consume was evaluated with) plus the top-up headroom the store reads, under the same
    `metered_answer` as every evaluation. It runs inside the store's transaction, against the
    stored counter, so concurrent consumers can never pass the limit together. `denial`
    replaces the denial's name (a credit pool's says `credits_exhausted`)."""
    allowance, soft, cap = m.allowance, m.soft_limit, m.overage_cap

    def admit(current: float, headroom: float) -> str | None:
        answer = metered_answer(Terms(allowance, soft, cap, 0.0, headroom), current, requested)
        if answer.has_access:
            return None
        return (denial or answer.denial or Denial.USAGE_LIMIT_REACHED).value

    return admit


class Status(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    DENIED = "denied"
    ENDED = "ended"  # Settle/Release of a hold already settled, released or expired
    NO_HOLD = "no_hold"  # Settle/Release of a hold unknown (to the account named)


@dataclass(frozen=True, slots=True)
class HoldEnd:
    """What a Settle or Release does to its hold (design §17): `how` is SETTLED (the write's
    report is recorded as usage) or RELEASED (no usage); `account`, when set, must own it."""

    hold_id: str
    how: HoldState
    account: str = ""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """Work to do after a write commits, enqueued in the write's own transaction.

    The store treats it as opaque: `kind` and `payload` (a JSON object) mean something only
    to the outbox worker (a webhook to POST, an account edit to apply).
    """

    id: str
    kind: str
    account: str
    target: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Firing:
    """A once-per-counter mark (e.g. "pro:80%") and the entries to enqueue when it is new.

    The mark is recorded for the write's counter (scope, feature, period start) at most once;
    only the write that records it enqueues `entries`. A repeat, a retry or a second sidecar
    racing on the same counter (its row is locked) therefore never enqueues them twice.
    """

    mark: str
    at: datetime
    entries: tuple[OutboxEntry, ...] = ()


Fire = Callable[[float, float], Sequence[Firing]]
"""A write's quota check: given the counter before and after an applied write, the marks it
reached. Pure (no I/O), so the rule can call it inside any store's transaction."""


Exhausted = Callable[[TopUp, datetime], Sequence[OutboxEntry]]
"""A write's top-up hook: the outbox entries (a `topup.exhausted` webhook, design §7.1) for a
top-up this write used up. Its mark is recorded once per top-up, so a retry or a second
sidecar never enqueues them twice."""

EXHAUSTED_MARK = "topup.exhausted"


@dataclass(frozen=True, slots=True)
class PoolLeg:
    """The credit pool a credit-priced write also counts on: `per_unit` credits per unit."""

    scope_key: str
    feature: Feature  # the `credits` feature
    period_start: datetime
    per_unit: float
    balance: Balance | None = None
    admit: Admit | None = None  # Consume: the pool's balance must cover the request
    on_applied: Fire | None = None  # the pool's quota thresholds

    @property
    def counter(self) -> CounterKey:
        return (self.scope_key, self.feature.key, self.period_start)


@dataclass(frozen=True, slots=True)
class UsageWrite:
    """One report resolved to its counter; `admit` makes it a Consume; `on_applied` checks quotas;
    `balance` burns top-ups; `pool` counts it on a credit pool too; `at` is the instant it
    counts at (the report's timestamp, else the arrival), whose hour its history bucket is."""

    scope_key: str
    feature: Feature
    period_start: datetime
    report: UsageReport
    admit: Admit | None = None
    on_applied: Fire | None = None
    balance: Balance | None = None
    pool: PoolLeg | None = None
    on_exhausted: Exhausted | None = None
    at: datetime | None = None
    hold: Hold | None = None  # a Reserve: the hold to make if admitted (no usage recorded)
    ends: HoldEnd | None = None  # a Settle or Release

    @property
    def counter(self) -> CounterKey:
        return (self.scope_key, self.feature.key, self.period_start)

    @property
    def legs(self) -> list[Leg]:
        """The (scope, feature) pairs whose active holds this write's admission counts."""
        out = [(self.scope_key, self.feature.key)]
        if self.pool is not None:
            out.append((self.pool.scope_key, self.pool.feature.key))
        return out

    @property
    def records_usage(self) -> bool:
        """Whether an applied write changes its counter (a Reserve and a Release do not)."""
        return self.hold is None and (self.ends is None or self.ends.how is HoldState.SETTLED)

    @property
    def counters(self) -> list[CounterKey]:
        """Every counter the write may read or change (the store reads and locks them all)."""
        out = [self.counter]
        if self.balance is not None:
            out += self.balance.keys(self.scope_key, self.feature.key, self.period_start)
        pool = self.pool
        if pool is not None:
            out.append(pool.counter)
            if pool.balance is not None:
                out += pool.balance.keys(pool.scope_key, pool.feature.key, pool.period_start)
        return out

    @property
    def quota_counters(self) -> list[CounterKey]:
        """The counters whose fired quota marks the write needs."""
        out = [self.counter] if self.on_applied is not None else []
        if self.pool is not None and self.pool.on_applied is not None:
            out.append(self.pool.counter)
        if self.on_exhausted is not None:  # a top-up's exhaustion mark sits on its total
            out += [k for k in self.counters if k[2] == FOREVER]
        return out

    @property
    def counts_unique(self) -> bool:
        return self.feature.aggregation is Aggregation.UNIQUE


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    status: Status
    usage: float
    period_start: datetime | None = None
    message: str = ""
    fired: tuple[Firing, ...] = ()  # the firings whose marks this write recorded
    # other counters this write changed (its pool, burned top-ups), for memory to follow
    changes: tuple[tuple[CounterKey, float], ...] = ()
    pool_fired: tuple[Firing, ...] = ()  # the firings recorded on the pool's counter
    hold: str = ""  # Reserve, Settle, Release: the hold's id


@dataclass(frozen=True, slots=True)
class BatchReads:
    """What a store read, inside its transaction, before applying a batch."""

    outcomes: Mapping[str, UsageOutcome]
    """The first outcome stored under each of the batch's idempotency keys seen before."""
    values: Mapping[CounterKey, float]
    """The current value of the batch's counters (a counter not there is 0)."""
    uniques: AbstractSet[tuple[CounterKey, str]] = frozenset()
    """(counter, unique key) pairs of the batch already counted."""
    marks: AbstractSet[tuple[CounterKey, str]] = frozenset()
    """(counter, mark) pairs already fired on the counters of writes with `on_applied`."""
    holds: Mapping[str, Hold] = field(default_factory=dict)
    """The stored holds active on the legs of writes with `admit`, and the holds `ends` names."""


@dataclass(slots=True)
class BatchWrites:
    """What the store writes back in the same transaction."""

    outcomes: list[UsageOutcome] = field(default_factory=list)
    """One per write, in order."""
    values: dict[CounterKey, float] = field(default_factory=dict)
    """Counters whose value changed, with the new value."""
    uniques: list[tuple[CounterKey, str]] = field(default_factory=list)
    """Unique keys newly counted."""
    marks: list[tuple[CounterKey, Firing]] = field(default_factory=list)
    """Marks newly fired, in order; the store enqueues their entries in the outbox."""
    keys: dict[str, UsageOutcome] = field(default_factory=dict)
    """Idempotency keys newly remembered, with their first outcome."""
    holds: list[Hold] = field(default_factory=list)
    """Holds newly made (Reserve)."""
    ended: list[Hold] = field(default_factory=list)
    """Holds newly settled or released, as they now are."""


def apply_batch(writes: Sequence[UsageWrite], reads: BatchReads) -> BatchWrites:
    """The outcomes of `writes` applied in order to the state in `reads`, and what changed.

    A rejected write (its counter would leave the finite numbers) changes nothing and its
    idempotency key is not remembered: like a report refused by `check_report`, it may be
    sent again once corrected. A denied Consume is remembered (a retry gets the same answer).
    """
    out = BatchWrites()
    values = dict(reads.values)
    uniques = set(reads.uniques)
    marks = set(reads.marks)
    holds = dict(reads.holds)
    for w in writes:
        key = w.report.idempotency_key
        first = (out.keys.get(key) or reads.outcomes.get(key)) if key else None
        if first is not None:
            out.outcomes.append(
                UsageOutcome(
                    Status.DUPLICATE,
                    first.usage,
                    first.period_start,
                    first.message,
                    hold=first.hold,
                )
            )
            continue
        outcome = _apply_one(w, values, uniques, marks, out, holds)
        if key and outcome.status not in _FORGOTTEN:
            out.keys[key] = outcome
        out.outcomes.append(outcome)
    return out


_FORGOTTEN = frozenset({Status.REJECTED, Status.ENDED, Status.NO_HOLD})
"""Outcomes that changed nothing and whose idempotency key is not remembered."""


def _apply_one(
    w: UsageWrite,
    values: dict[CounterKey, float],
    uniques: set[tuple[CounterKey, str]],
    marks: set[tuple[CounterKey, str]],
    out: BatchWrites,
    holds: dict[str, Hold],
) -> UsageOutcome:
    counter = w.counter
    current = values.get(counter, 0.0)
    pool = w.pool
    ending, early = _first_steps(w, current, values, holds, out)
    if early is not None:
        return early
    new_unique = True
    if w.counts_unique:
        new_unique = (counter, w.report.unique_key) not in uniques
    value = next_value(w.feature, current, w.report, new_unique)
    pool_before = pool_after = 0.0
    if pool is not None:
        pool_before = values.get(pool.counter, 0.0)
        pool_after = max(0.0, pool_before + (value - current) * pool.per_unit)
    if not math.isfinite(value) or not math.isfinite(pool_after):
        return UsageOutcome(
            Status.REJECTED,
            current,
            w.period_start,
            f"{w.feature.key}: usage {current:g} + {w.report.amount:g} is out of range "
            "(a counter must stay a finite number); report a smaller amount or reset the counter",
        )
    if w.counts_unique and new_unique:
        uniques.add((counter, w.report.unique_key))
        out.uniques.append((counter, w.report.unique_key))
    changes: dict[CounterKey, float] = {}
    _set(counter, value, values, out)
    changes.update(_burn(w.balance, counter, value, values, out, marks, w.on_exhausted))
    if pool is not None:
        _set(pool.counter, pool_after, values, out)
        changes[pool.counter] = pool_after
        changes.update(
            _burn(pool.balance, pool.counter, pool_after, values, out, marks, w.on_exhausted)
        )
    fired = _fire(w.on_applied, counter, current, value, marks, out)
    pool_fired: tuple[Firing, ...] = ()
    if pool is not None:
        pool_fired = _fire(pool.on_applied, pool.counter, pool_before, pool_after, marks, out)
    if ending is not None:
        _end(ending, holds, out)
    return UsageOutcome(
        Status.APPLIED,
        value,
        w.period_start,
        fired=fired,
        changes=tuple(changes.items()),
        pool_fired=pool_fired,
        hold=ending.id if ending is not None else "",
    )


def _first_steps(
    w: UsageWrite,
    current: float,
    values: dict[CounterKey, float],
    holds: dict[str, Hold],
    out: BatchWrites,
) -> tuple[Hold | None, UsageOutcome | None]:
    """What comes before the counter moves: the hold a Settle ends (a Release ends it here),
    the admission, and a Reserve's hold. Returns the hold being settled, or the outcome when
    the write stops here."""
    at = w.at or w.period_start
    ending: Hold | None = None
    if w.ends is not None:
        step = _ending(w.ends, holds, w, current, at)
        if isinstance(step, UsageOutcome):
            return None, step
        ending = step
        if w.ends.how is HoldState.RELEASED:
            _end(ending, holds, out)
            return None, UsageOutcome(Status.APPLIED, current, w.period_start, hold=ending.id)
    if w.admit is not None:
        denial = _admission(w, w.admit, current, values, holds, at)
        if denial is not None:
            return None, UsageOutcome(Status.DENIED, current, w.period_start, denial)
    if w.hold is not None:  # an admitted Reserve: the hold counts from now on, no usage
        holds[w.hold.id] = w.hold
        out.holds.append(w.hold)
        return None, UsageOutcome(Status.APPLIED, current, w.period_start, hold=w.hold.id)
    return ending, None


def _ending(
    ends: HoldEnd, holds: dict[str, Hold], w: UsageWrite, current: float, at: datetime
) -> Hold | UsageOutcome:
    """The hold a Settle or Release ends, as it will be; or why it cannot (design §17)."""
    found = holds.get(ends.hold_id)
    if found is None or (ends.account and found.account != ends.account):
        whose = f" of account {ends.account!r}" if ends.account else ""
        message = f"no hold {ends.hold_id!r}{whose}; list them with ListHolds"
        return UsageOutcome(Status.NO_HOLD, current, w.period_start, message)
    if found.state_at(at) is not HoldState.ACTIVE:
        return UsageOutcome(Status.ENDED, current, w.period_start, found.ended_message(at))
    settled = w.report.amount if ends.how is HoldState.SETTLED else None
    return replace(found, state=ends.how, ended_at=at, settled=settled)


def _admission(
    w: UsageWrite,
    admit: Admit,
    current: float,
    values: dict[CounterKey, float],
    holds: dict[str, Hold],
    at: datetime,
) -> str | None:
    """Consume's and Reserve's check, counting every active hold (design §17: U + H + R)."""
    live = holds.values()
    held = held_on(live, (w.scope_key, w.feature.key), at) if live else 0.0
    denial = admit(current + held, _headroom(w.balance, w.counter, values))
    pool = w.pool
    if denial is None and pool is not None and pool.admit is not None:
        pool_now = values.get(pool.counter, 0.0)
        if live:
            pool_now += held_on(live, (pool.scope_key, pool.feature.key), at)
        denial = pool.admit(pool_now, _headroom(pool.balance, pool.counter, values))
    return denial


def _end(hold: Hold, holds: dict[str, Hold], out: BatchWrites) -> None:
    """`hold` (settled or released) stops counting for the rest of the batch too."""
    holds[hold.id] = hold
    out.ended.append(hold)


def _set(
    counter: CounterKey, value: float, values: dict[CounterKey, float], out: BatchWrites
) -> None:
    if value != values.get(counter, 0.0) or counter in out.values:
        out.values[counter] = value
    values[counter] = value


def _headroom(
    balance: Balance | None, counter: CounterKey, values: dict[CounterKey, float]
) -> float:
    """B + T of the counter's top-ups (0 without any)."""
    if balance is None or not balance.topups:
        return 0.0
    scope, feature, start = counter
    burned, remaining = headroom(states(balance, scope, feature, start, _reader(values)))
    return burned + remaining


def _burn(
    balance: Balance | None,
    counter: CounterKey,
    used: float,
    values: dict[CounterKey, float],
    out: BatchWrites,
    marks: set[tuple[CounterKey, str]],
    on_exhausted: Exhausted | None,
) -> dict[CounterKey, float]:
    """Burn or un-burn the counter's top-ups for its new usage; the burn counters changed.
    A top-up used up here fires its exhaustion mark (once per top-up) when the write asks."""
    if balance is None or not balance.topups:
        return {}
    scope, feature, start = counter
    found = states(balance, scope, feature, start, _reader(values))
    moved = rebalance(balance.allowance, found, scope, feature, start, used)
    for key, value in moved.items():
        _set(key, value, values, out)
    if on_exhausted is not None:
        for s in found:
            total = (scope, burn_feature(feature, s.topup.id), FOREVER)
            after = moved.get(total, s.burned)
            if s.burned < s.topup.amount <= after and (total, EXHAUSTED_MARK) not in marks:
                marks.add((total, EXHAUSTED_MARK))
                entries = tuple(on_exhausted(s.topup, balance.at))
                out.marks.append((total, Firing(EXHAUSTED_MARK, balance.at, entries)))
    return moved


def _reader(values: dict[CounterKey, float]) -> Callable[[CounterKey], float]:
    return lambda key: values.get(key, 0.0)


def _fire(
    check: Fire | None,
    counter: CounterKey,
    before: float,
    after: float,
    marks: set[tuple[CounterKey, str]],
    out: BatchWrites,
) -> tuple[Firing, ...]:
    fired: list[Firing] = []
    for firing in check(before, after) if check is not None else ():
        if (counter, firing.mark) in marks:
            continue
        marks.add((counter, firing.mark))
        out.marks.append((counter, firing))
        fired.append(firing)
    return tuple(fired)
