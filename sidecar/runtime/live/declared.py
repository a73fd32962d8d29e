"""The runtime layer on accounts declared in the catalog file (design §3, §7).

Accounts declared in the file are the file's; quota actions still apply to them ("usage,
grants and quota actions apply to every account") as a layer kept in the account's store
record under `"quota"` and merged over the file's account when it is served. The actions
that write the layer are in `runtime.quota_actions`; this module only reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ...catalog.accounts import subscription_problems
from ...catalog.model import Account, Catalog, Subscription
from ...store.base import Record
from ..edits import records as rec

LAYER = "quota"
"""Key of the runtime layer in a declared account's store record: {"overrides", "plans"}."""


def split_layer(record: Record) -> tuple[Record, Mapping[str, Any]]:
    """A store record without its quota layer (what the account validator reads), and the layer."""
    if LAYER not in record:
        return record, {}
    return {k: v for k, v in record.items() if k != LAYER}, record[LAYER] or {}


def apply_layer(account: Account, layer: Mapping[str, Any], catalog: Catalog) -> Account:
    """A declared account with the quota actions applied to it.

    Overrides replace the file's for their features. A plan change holds while the file still
    gives the subscription the plan it was made from: once the file changes that plan, the file
    wins again. Raises `AdminError` when the layer does not fit the catalog.
    """
    overrides = layer.get("overrides") or {}
    if overrides:
        parsed = rec.validate({"id": account.id, "overrides": overrides}, catalog).overrides
        account = replace(account, overrides=MappingProxyType({**account.overrides, **parsed}))
    plans: Mapping[str, Any] = layer.get("plans") or {}
    if plans:
        subs: list[Subscription] = []
        for sub in account.subscriptions:
            entry = plans.get(sub.id)
            if entry and entry.get("from") == sub.plan:
                plan = catalog.plans.get(str(entry.get("to")))
                if plan is None:
                    raise rec.AdminError(
                        f"quota plan change of subscription {sub.id!r}: unknown plan {entry.get('to')!r}"
                    )
                problems = subscription_problems(plan, sub.addons, catalog.addons)
                if problems:
                    raise rec.AdminError(
                        f"quota plan change of subscription {sub.id!r} to {plan.key!r}: "
                        + "; ".join(message for _, message in problems)
                    )
                sub = replace(sub, plan=plan.key)
            subs.append(sub)
        account = replace(account, subscriptions=tuple(subs))
    return account
