"""Accounts declared in the catalog file, and the subscription rules shared with the admin API."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from .features import read_entitlement
from .model import (
    DEFAULT_TOPUP_PRIORITY,
    EMPTY,
    Account,
    AddOn,
    Aggregation,
    Entitlement,
    Feature,
    FeatureType,
    Grant,
    Override,
    Phase,
    Plan,
    Scope,
    Subscription,
    TopUp,
    freeze,
)
from .source import Document, Path
from .values import (
    check_keys,
    is_number,
    read_list,
    read_mapping,
    read_str,
    read_time,
    to_utc,
)

_ACCOUNT = {"id", "name", "attributes", "subscriptions", "overrides", "grants", "topups"}
_SUBSCRIPTION = {
    "id",
    "plan",
    "addons",
    "starts_at",
    "ends_at",
    "trial_ends_at",
    "members",
    "phases",
}
_PHASE = {"starts_at", "plan", "addons"}
_GRANT = {"id", "feature", "value", "starts_at", "ends_at"}
_TOPUP = {"id", "feature", "amount", "priority", "effective_at", "expires_at", "voided_at"}


def subscription_problems(
    plan: Plan, addons: Mapping[str, int], catalog_addons: Mapping[str, AddOn]
) -> list[tuple[str | None, str]]:
    """Why a plan + add-ons combination is not allowed: (add-on key or None, message) pairs.

    Shared by the catalog loader and the admin API so both refuse the same things.
    """
    out: list[tuple[str | None, str]] = []
    for key, quantity in addons.items():
        addon = catalog_addons.get(key)
        if addon is None:
            out.append(
                (key, f"unknown add-on {key!r} (add-ons: {', '.join(sorted(catalog_addons))})")
            )
            continue
        if addon.requires and plan.key not in addon.requires:
            allowed = ", ".join(sorted(addon.requires))
            out.append(
                (
                    key,
                    f"add-on {key!r} cannot be attached to plan {plan.key!r} (requires one of: {allowed})",
                )
            )
        elif not addon.requires and addon.product != plan.product:
            out.append(
                (
                    key,
                    f"add-on {key!r} belongs to product {addon.product!r}, plan {plan.key!r} does not",
                )
            )
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            out.append((key, f"quantity of {key!r} must be a positive integer, got {quantity!r}"))
        elif quantity > addon.max_quantity:
            out.append(
                (
                    key,
                    f"quantity {quantity} of {key!r} exceeds its max_quantity {addon.max_quantity}",
                )
            )
    return out


def read_accounts(
    doc: Document,
    raw: Any,
    plans: Mapping[str, Plan],
    addons: Mapping[str, AddOn],
    features: Mapping[str, Feature],
) -> dict[str, Account]:
    out: dict[str, Account] = {}
    owners: dict[str, str] = {}  # subscription id -> account: pooled usage is keyed by the id
    for i, item in enumerate(read_list(doc, ("accounts",), raw)):
        path: Path = ("accounts", i)
        data = read_mapping(doc, path, item)
        check_keys(doc, path, data, _ACCOUNT)
        account_id = read_str(doc, (*path, "id"), data.get("id"))
        if account_id is None:
            continue
        if account_id in out:
            doc.error((*path, "id"), f"account {account_id!r} is declared twice")
            continue
        reader = _AccountReader(doc, path, account_id, plans, addons, features)
        out[account_id] = Account(
            id=account_id,
            name=str(data.get("name") or ""),
            attributes=freeze(read_mapping(doc, (*path, "attributes"), data.get("attributes"))),
            subscriptions=reader.subscriptions(data.get("subscriptions")),
            overrides=reader.overrides(data.get("overrides")),
            grants=reader.grants(data.get("grants")),
            topups=reader.topups(data.get("topups")),
            declared=True,
        )
        for j, sub in enumerate(out[account_id].subscriptions):
            if sub.id in owners:
                doc.error(
                    (*path, "subscriptions", j, "id"),
                    f"subscription id {sub.id!r} is already used (by account {owners[sub.id]!r}); "
                    "subscription ids are unique across accounts",
                )
            else:
                owners[sub.id] = account_id
    return out


def read_plain_account(
    data: Any,
    plans: Mapping[str, Plan],
    addons: Mapping[str, AddOn],
    features: Mapping[str, Feature],
) -> Account | None:
    """A stored account record as the (not declared) `Account` that `read_accounts` builds
    from it, or None when the record is not of the plain shape recognised here; the caller
    then runs `read_accounts`, which decides and says what is wrong.

    Start-up reads every stored record against the catalog. The reader collects problems with
    their paths as it goes, which is most of a start-up's time; this takes the common shape
    (plain subscriptions referring to plans by key) in one pass and leaves anything unusual,
    invalid or not, to the reader. What a catalog change can break is checked with the
    reader's own rules: plan keys, `subscription_problems`, and overrides, grants, top-ups
    and phases, which go through the reader itself when a record has any.
    """
    if type(data) is not dict or not data.keys() <= _ACCOUNT:
        return None
    account_id = data.get("id")
    if type(account_id) is not str or not account_id.strip():
        return None
    attributes = data.get("attributes")
    if attributes is not None and type(attributes) is not dict:
        return None
    raw_subs = data.get("subscriptions")
    if raw_subs is None:
        raw_subs = ()
    elif type(raw_subs) is not list:
        return None
    reader: _AccountReader | None = None  # made only for the parts the reader reads
    subs: list[Subscription] = []
    for j, item in enumerate(raw_subs):
        if type(item) is not dict or not item.keys() <= _SUBSCRIPTION:
            return None
        ref = item.get("plan")
        plan = plans.get(ref) if type(ref) is str else None
        if plan is None:
            return None
        quantities = item.get("addons")
        if quantities:
            if type(quantities) is not dict or subscription_problems(plan, quantities, addons):
                return None
            quantities = MappingProxyType(dict(quantities))
        elif quantities is None or type(quantities) is dict:
            quantities = EMPTY
        else:
            return None
        times = _plain_times(item)
        if times is None:
            return None
        starts_at, ends_at, trial = times
        members = item.get("members")
        if not members:
            if members is not None and type(members) is not list:
                return None
            members = ()
        elif type(members) is not list or not all(type(m) is str and m.strip() for m in members):
            return None
        phases: tuple[Phase, ...] = ()
        raw_phases = item.get("phases")
        if raw_phases or (raw_phases is not None and type(raw_phases) is not list):
            reader = reader or _AccountReader(
                Document(file="record", data=None), (), account_id, plans, addons, features
            )
            phases = reader._phases((), raw_phases, starts_at)
        subs.append(
            Subscription(
                id=str(item.get("id") or f"{account_id}/{j}"),
                owner=account_id,
                plan=plan.key,
                addons=quantities,
                starts_at=starts_at,
                ends_at=ends_at,
                trial_ends_at=trial,
                members=tuple(members),
                phases=phases,
            )
        )
    if len(subs) > 1 and len({s.id for s in subs}) != len(subs):
        return None  # the reader names the repeated id
    overrides, grants, topups = data.get("overrides"), data.get("grants"), data.get("topups")
    parsed: tuple[Mapping[str, Override], tuple[Grant, ...], tuple[TopUp, ...]] = (EMPTY, (), ())
    if overrides or grants or topups:
        reader = reader or _AccountReader(
            Document(file="record", data=None), (), account_id, plans, addons, features
        )
        parsed = (reader.overrides(overrides), reader.grants(grants), reader.topups(topups))
    elif (
        (overrides is not None and type(overrides) is not dict)
        or (grants is not None and type(grants) is not list)
        or (topups is not None and type(topups) is not list)
    ):
        return None
    if reader is not None and reader.doc.problems:
        return None
    return Account(
        id=account_id,
        name=str(data.get("name") or ""),
        attributes=freeze(attributes) if attributes else EMPTY,
        subscriptions=tuple(subs),
        overrides=parsed[0],
        grants=parsed[1],
        topups=parsed[2],
        declared=False,
    )


_Times = tuple[datetime | None, datetime | None, datetime | None]


def _plain_times(sub: dict[str, Any]) -> _Times | None:
    """A stored subscription's (starts_at, ends_at, trial_ends_at), each None when absent,
    checked as the reader does (ends after starts); None when one is not ISO-8601 text, as
    records hold them, or ends too early (the reader then says what). The instants equal
    `parse_time`'s, which this inlines for the common UTC text."""
    out: list[datetime | None] = [None, None, None]
    for i, key in enumerate(("starts_at", "ends_at", "trial_ends_at")):
        value = sub.get(key)
        if value is None:
            continue
        if type(value) is not str:
            return None
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        out[i] = at if at.tzinfo is UTC else to_utc(at)
    starts_at, ends_at, trial = out
    if starts_at and ends_at and ends_at <= starts_at:
        return None
    return starts_at, ends_at, trial


class _AccountReader:
    def __init__(
        self,
        doc: Document,
        path: Path,
        account_id: str,
        plans: Mapping[str, Plan],
        addons: Mapping[str, AddOn],
        features: Mapping[str, Feature],
    ) -> None:
        self.doc, self.path, self.account_id = doc, path, account_id
        self.plans, self.addons, self.features = plans, addons, features

    def _plan(self, ref: Any, path: Path) -> Plan | None:
        plan = self.plans.get(ref) if isinstance(ref, str) else None
        if plan is None:
            matches = [p for p in self.plans.values() if p.slug == ref]
            plan = matches[0] if len(matches) == 1 else None
        if plan is None:
            self.doc.error(path, f"unknown plan {ref!r} (plans: {', '.join(sorted(self.plans))})")
        return plan

    def subscriptions(self, raw: Any) -> tuple[Subscription, ...]:
        doc = self.doc
        out: list[Subscription] = []
        for j, item in enumerate(read_list(doc, (*self.path, "subscriptions"), raw)):
            path: Path = (*self.path, "subscriptions", j)
            data = read_mapping(doc, path, item)
            check_keys(doc, path, data, _SUBSCRIPTION)
            plan = self._plan(data.get("plan"), (*path, "plan"))
            addon_qty = {
                str(k): v
                for k, v in read_mapping(doc, (*path, "addons"), data.get("addons")).items()
            }
            starts_at, ends_at, trial = (
                self._time(path, data, "starts_at"),
                self._time(path, data, "ends_at"),
                self._time(path, data, "trial_ends_at"),
            )
            if starts_at and ends_at and ends_at <= starts_at:
                doc.error((*path, "ends_at"), "ends_at must be after starts_at")
            members = read_list(doc, (*path, "members"), data.get("members"))
            for k, member in enumerate(members):
                read_str(doc, (*path, "members", k), member)
            phases = self._phases(path, data.get("phases"), starts_at)
            if plan is None:
                continue
            for addon_key, message in subscription_problems(plan, addon_qty, self.addons):
                doc.error((*path, "addons", addon_key) if addon_key else (*path, "addons"), message)
            out.append(
                Subscription(
                    id=str(data.get("id") or f"{self.account_id}/{j}"),
                    owner=self.account_id,
                    plan=plan.key,
                    addons=MappingProxyType(addon_qty) if addon_qty else EMPTY,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    trial_ends_at=trial,
                    members=tuple(str(m) for m in members if isinstance(m, str)),
                    phases=phases,
                )
            )
        return tuple(out)

    def _phases(self, path: Path, raw: Any, starts_at: datetime | None) -> tuple[Phase, ...]:
        """Scheduled changes (design §6.1), each checked like the subscription's own plan and
        add-ons; a record without `phases` (every record before them) has none."""
        doc = self.doc
        out: list[Phase] = []
        for k, item in enumerate(read_list(doc, (*path, "phases"), raw)):
            where: Path = (*path, "phases", k)
            data = read_mapping(doc, where, item)
            check_keys(doc, where, data, _PHASE)
            at = read_time(doc, (*where, "starts_at"), data.get("starts_at"))
            plan = self._plan(data.get("plan"), (*where, "plan"))
            addon_qty = {
                str(a): q
                for a, q in read_mapping(doc, (*where, "addons"), data.get("addons")).items()
            }
            if at is None or plan is None:  # already reported
                continue
            if starts_at is not None and at <= starts_at:
                doc.error((*where, "starts_at"), "a phase must start after its subscription")
            if out and at <= out[-1].starts_at:
                doc.error((*where, "starts_at"), "phases must be in order of starts_at")
            for addon_key, message in subscription_problems(plan, addon_qty, self.addons):
                doc.error(
                    (*where, "addons", addon_key) if addon_key else (*where, "addons"), message
                )
            out.append(Phase(at, plan.key, MappingProxyType(addon_qty) if addon_qty else EMPTY))
        return tuple(out)

    def _time(self, path: Path, data: dict[str, Any], key: str) -> datetime | None:
        return None if data.get(key) is None else read_time(self.doc, (*path, key), data[key])

    def _feature(self, ref: Any, path: Path) -> Feature | None:
        feature = self.features.get(ref) if isinstance(ref, str) else None
        if feature is None:
            self.doc.error(path, f"unknown feature {ref!r}")
        return feature

    def overrides(self, raw: Any) -> Mapping[str, Override]:
        out: dict[str, Override] = {}
        base = (*self.path, "overrides")
        for ref, value in read_mapping(self.doc, base, raw).items():
            path = (*base, ref)
            feature = self._feature(ref, path)
            if feature is None:
                continue
            expires_at = None
            # `{value: V, expires_at: T}` wraps a value that expires; anything else is the value.
            if (
                isinstance(value, dict)
                and "value" in value
                and set(value) <= {"value", "expires_at"}
            ):
                if value.get("expires_at") is not None:
                    expires_at = read_time(self.doc, (*path, "expires_at"), value["expires_at"])
                value, path = value["value"], (*path, "value")
            parsed = read_entitlement(self.doc, path, value, feature)
            if parsed is not None:
                out[feature.key] = Override(feature.key, parsed, expires_at)
        return MappingProxyType(out) if out else EMPTY

    def grants(self, raw: Any) -> tuple[Grant, ...]:
        out: list[Grant] = []
        for j, item in enumerate(read_list(self.doc, (*self.path, "grants"), raw)):
            path: Path = (*self.path, "grants", j)
            data = read_mapping(self.doc, path, item)
            check_keys(self.doc, path, data, _GRANT)
            feature = self._feature(data.get("feature"), (*path, "feature"))
            if feature is None:
                continue
            if "value" not in data:
                self.doc.error((*path, "value"), "a grant needs a value")
                continue
            value: Entitlement | None = read_entitlement(
                self.doc, (*path, "value"), data["value"], feature
            )
            starts_at, ends_at = (
                self._time(path, data, "starts_at"),
                self._time(path, data, "ends_at"),
            )
            if starts_at and ends_at and ends_at <= starts_at:
                self.doc.error((*path, "ends_at"), "ends_at must be after starts_at")
            if value is not None:
                grant_id = str(data.get("id") or f"{self.account_id}/grant/{j}")
                out.append(Grant(grant_id, feature.key, value, starts_at, ends_at))
        return tuple(out)

    def topups(self, raw: Any) -> tuple[TopUp, ...]:
        """Top-ups (design §5.1) on `sum` metered features and `credits` pools of
        account-scoped usage: a balance belongs to one account."""
        out: list[TopUp] = []
        ids: set[str] = set()
        for j, item in enumerate(read_list(self.doc, (*self.path, "topups"), raw)):
            path: Path = (*self.path, "topups", j)
            data = read_mapping(self.doc, path, item)
            check_keys(self.doc, path, data, _TOPUP)
            feature = self._feature(data.get("feature"), (*path, "feature"))
            if feature is None:
                continue
            problem = topup_problem(feature)
            if problem is not None:
                self.doc.error((*path, "feature"), problem)
                continue
            amount: Any = data.get("amount")
            if not (is_number(amount) and math.isfinite(amount) and amount > 0):
                self.doc.error((*path, "amount"), f"must be a positive number, got {amount!r}")
                continue
            priority = data.get("priority", DEFAULT_TOPUP_PRIORITY)
            if not isinstance(priority, int) or isinstance(priority, bool):
                self.doc.error((*path, "priority"), f"must be an integer, got {priority!r}")
                continue
            effective_at, expires_at, voided_at = (
                self._time(path, data, "effective_at"),
                self._time(path, data, "expires_at"),
                self._time(path, data, "voided_at"),
            )
            if effective_at and expires_at and expires_at <= effective_at:
                self.doc.error((*path, "expires_at"), "expires_at must be after effective_at")
                continue
            topup_id = str(data.get("id") or f"{self.account_id}/topup/{j}")
            if topup_id in ids:
                self.doc.error((*path, "id"), f"top-up id {topup_id!r} is used twice")
                continue
            ids.add(topup_id)
            out.append(
                TopUp(
                    topup_id,
                    feature.key,
                    float(amount),
                    priority,
                    effective_at,
                    expires_at,
                    voided_at,
                )
            )
        return tuple(out)


def topup_problem(feature: Feature) -> str | None:
    """Why `feature` cannot take top-ups, or None (shared by the file and the admin API)."""
    if not feature.counted or feature.aggregation is not Aggregation.SUM:
        kind = feature.type.value
        if feature.type is FeatureType.METERED:
            kind = f"{feature.aggregation.value} metered"
        return (
            f"{feature.key} is a {kind} feature; top-ups apply to sum metered and credits features"
        )
    if feature.scope is Scope.SUBSCRIPTION:
        return (
            f"{feature.key} pools usage across a subscription (scope: subscription); "
            "top-ups belong to one account, so they apply to account-scoped features"
        )
    return None
