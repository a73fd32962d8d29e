"""What an evaluation reads: the catalog, the accounts, memberships and usage counters.

The engine only reads through these mappings and the `UsageView` protocol, so the same
pure functions serve the sidecar's live state, tests and benchmarks alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from ..catalog.model import Account, Catalog, Entitlement, Subscription
from .combine import Sourced, stack
from .holds import HoldView
from .rates import NoRates, RateView


class UsageView(Protocol):
    def used(self, scope_key: str, feature: str, period_start: datetime) -> float:
        """Usage recorded in the period starting at `period_start` (0 when none)."""
        ...


class PlanResolver:
    """Entitlements of a plan + add-ons combination, computed once and shared.

    A million accounts on "pro + 2 extra seats" share one mapping instead of each
    holding a copy; the cache lives as long as the catalog it was built from.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._cache: dict[tuple[str, tuple[tuple[str, int], ...]], Mapping[str, Sourced]] = {}

    def entitlements(self, subscription: Subscription) -> Mapping[str, Sourced]:
        combo = (subscription.plan, tuple(sorted(subscription.addons.items())))
        found = self._cache.get(combo)
        if found is None:
            found = self._cache[combo] = self._compute(*combo)
        return found

    def _compute(self, plan_key: str, addons: tuple[tuple[str, int], ...]) -> Mapping[str, Sourced]:
        plan = self._catalog.plans.get(plan_key)
        if plan is None:
            return MappingProxyType({})
        values: dict[str, Entitlement] = dict(plan.entitlements)
        sources: dict[str, str] = dict.fromkeys(values, plan.slug)
        for addon_key, quantity in addons:
            addon = self._catalog.addons.get(addon_key)
            if addon is None or quantity < 1:
                continue
            for feature, value in addon.entitlements.items():
                values[feature] = stack(values.get(feature), value, quantity)
                sources[feature] = f"{sources.get(feature, plan.slug)}+{addon.slug}"
        return MappingProxyType({k: (v, sources[k]) for k, v in values.items()})


class NoUsage:
    """A `UsageView` with nothing recorded."""

    def used(self, scope_key: str, feature: str, period_start: datetime) -> float:
        return 0.0


@dataclass(frozen=True)
class StateView:
    """What one evaluation reads, named for what it is: a view of the live state, not a frozen
    copy. The catalog is fixed for the view's life (a catalog change makes a new view, so a
    request that holds one never mixes two catalogs); the accounts, memberships and usage
    counters are updated in place by the live state one entry at a time (each value is
    immutable and each dict write atomic), because copying a million accounts on every admin
    change would cost more than any reader gains."""

    catalog: Catalog
    accounts: Mapping[str, Account]
    memberships: Mapping[str, Sequence[Subscription]] = field(default_factory=dict)
    usage: UsageView = field(default_factory=NoUsage)
    holds: HoldView = field(default_factory=HoldView)  # design §17: active holds, by leg
    rates: RateView = field(default_factory=NoRates)  # design §17: the in-memory rate windows
    plans: PlanResolver = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plans", PlanResolver(self.catalog))

    @classmethod
    def of(cls, catalog: Catalog, usage: UsageView | None = None) -> StateView:
        """A snapshot of a catalog with just the accounts it declares."""
        accounts = dict(catalog.accounts)
        return cls(catalog, accounts, memberships_of(accounts.values()), usage or NoUsage())


def memberships_of(accounts: Iterable[Account]) -> dict[str, list[Subscription]]:
    """member id -> subscriptions of other accounts it belongs to, in `membership_order`."""
    out: dict[str, list[Subscription]] = {}
    for account in accounts:
        for sub in account.subscriptions:
            for member in sub.members:
                if member != account.id:
                    out.setdefault(member, []).append(sub)
    for subs in out.values():
        subs.sort(key=membership_order)
    return out


def membership_order(sub: Subscription) -> tuple[str, str]:
    """Shared subscriptions are listed by owner, then subscription id: an order that does not
    depend on when accounts were loaded, so the index can be updated one account at a time."""
    return (sub.owner, sub.id)


def reindex_members(
    memberships: dict[str, list[Subscription]], old: Account | None, new: Account | None
) -> None:
    """Update `memberships` for one account's change from `old` to `new`: only the lists of
    that account's members (before and after) are touched, each rebuilt exactly."""
    account = new or old
    if account is None:
        return
    owner = account.id
    members = {m for a in (old, new) if a is not None for s in a.subscriptions for m in s.members}
    for member in members - {owner}:
        subs = [s for s in memberships.get(member, ()) if s.owner != owner]
        if new is not None:
            subs.extend(s for s in new.subscriptions if member in s.members)
        if subs:
            memberships[member] = sorted(subs, key=membership_order)
        else:
            memberships.pop(member, None)
