"""Generated inputs for the benchmarks: catalogs, account records and the flagd flag file.

Everything is generated (never checked in) so sizes can be scaled from the command line and
the `--quick` smoke run can use tiny versions of the very same shapes. Generation is
deterministic (fixed seeds), so two runs measure the same data.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

# The three features the headline rows evaluate; every other feature is filler that makes
# EvaluateAll return a realistically sized account (50 features).
BOOLEAN_KEY = "sso"
INTEGER_KEY = "concurrency"
METERED_KEY = "api-calls"

_FILLER_TYPES = ("boolean", "integer", "string", "list", "metered")


def _filler(i: int) -> tuple[dict[str, Any], Any, Any]:
    """(feature definition, free-plan value, pro-plan value) of filler feature number `i`."""
    kind = _FILLER_TYPES[i % len(_FILLER_TYPES)]
    name = f"Feature {i:02d}"
    if kind == "boolean":
        return {"name": name, "type": "boolean", "default": False}, None, True
    if kind == "integer":
        return {"name": name, "type": "integer", "default": 1, "min": 0, "max": 1000}, 1, 50
    if kind == "string":
        feature = {"name": name, "type": "string", "values": ["low", "mid", "high"]}
        return {**feature, "default": "low"}, None, "mid"
    if kind == "list":
        feature = {"name": name, "type": "list", "values": ["a", "b", "c", "d"], "default": []}
        return feature, ["a"], ["a", "b"]
    feature = {"name": name, "type": "metered", "unit": "event", "reset": "monthly"}
    return feature, 100, 100_000


def bench_catalog(features: int = 50) -> dict[str, Any]:
    """One product with `features` features and a free < pro < enterprise plan ladder.

    The Pro plan entitles every feature, so `EvaluateAll` for a Pro account resolves
    `features` real entitlements (not defaults). `api-calls` has a limit high enough that
    the Consume benchmark is always granted (it measures the granted, recording path).
    """
    if features < 3:
        raise ValueError("the bench catalog needs at least its 3 headline features")
    defs: list[dict[str, Any]] = [
        {"name": "SSO", "type": "boolean", "default": False},
        {"name": "Concurrency", "type": "integer", "default": 1, "min": 0, "max": 1000},
        {"name": "API calls", "type": "metered", "unit": "call", "reset": "monthly"},
    ]
    free: dict[str, Any] = {INTEGER_KEY: 1, METERED_KEY: 1000}
    pro: dict[str, Any] = {BOOLEAN_KEY: True, INTEGER_KEY: 10, METERED_KEY: 10**12}
    for i in range(3, features):
        definition, free_value, pro_value = _filler(i)
        defs.append(definition)
        key = f"feature-{i:02d}"
        if free_value is not None:
            free[key] = free_value
        pro[key] = pro_value
    return {
        "products": [
            {
                "name": "Bench",
                "features": defs,
                "plans": [
                    {"name": "Free", "entitlements": free},
                    {"name": "Pro", "extends": "free", "entitlements": pro},
                    {
                        "name": "Enterprise",
                        "extends": "pro",
                        "entitlements": {INTEGER_KEY: "unlimited", METERED_KEY: "unlimited"},
                    },
                ],
                "addons": [
                    {
                        "name": "Extra calls",
                        "requires": ["pro", "enterprise"],
                        "max_quantity": 10,
                        "entitlements": {METERED_KEY: 10_000},
                    }
                ],
            }
        ]
    }


def big_catalog(plans: int, features: int) -> dict[str, Any]:
    """One product with `features` features and `plans` plans, each plan entitling every feature.

    The worst case for a reload: plans × features entitlement values to read, validate and
    compare (every plan writes every value itself; no `extends` shortcuts).
    """
    kinds = ("boolean", "integer", "metered")
    defs: list[dict[str, Any]] = []
    for i in range(features):
        kind = kinds[i % 3]
        definition: dict[str, Any] = {"name": f"Feature {i}", "type": kind}
        if kind == "boolean":
            definition["default"] = False
        elif kind == "integer":
            definition.update(default=0, min=0, max=1_000_000)
        else:
            definition.update(unit="unit", reset="monthly")
        defs.append(definition)
    plan_list = []
    for j in range(plans):
        ents: dict[str, Any] = {}
        for i in range(features):
            kind = kinds[i % 3]
            ents[f"feature-{i}"] = (j + i) % 2 == 0 if kind == "boolean" else (j * 7 + i) % 100_000
        plan_list.append({"name": f"Plan {j}", "entitlements": ents})
    return {"products": [{"name": "Big", "features": defs, "plans": plan_list}]}


def write_yaml(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=200), encoding="utf-8")
    return path


# -- accounts ---------------------------------------------------------------------------------

# How accounts spread over plan + add-on combinations: most on free, some on pro, a few
# with add-on quantities, a few on enterprise. Only a handful of distinct combinations exist,
# which is what lets PlanResolver share computed entitlements among accounts.
_MIX: tuple[tuple[float, str, dict[str, int]], ...] = (
    (0.60, "free", {}),
    (0.28, "pro", {}),
    (0.04, "pro", {"extra-calls": 1}),
    (0.03, "pro", {"extra-calls": 2}),
    (0.03, "pro", {"extra-calls": 5}),
    (0.02, "enterprise", {}),
)


def account_id(i: int) -> str:
    return f"acct_{i:07d}"


def account_records(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Account records exactly as the admin API stores them (runtime.records' shape).

    Each account has one subscription with a random id and its own start instant, like
    accounts created over time through `CreateSubscription`.
    """
    rng = random.Random(seed)
    weights = [w for w, _, _ in _MIX]
    for i in range(count):
        _, plan, addons = rng.choices(_MIX, weights)[0]
        day = rng.randrange(365)
        second = rng.randrange(86_400)
        starts = f"2025-{1 + day // 31 % 12:02d}-{1 + day % 28:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        yield {
            "id": account_id(i),
            "name": "",
            "attributes": {},
            "subscriptions": [
                {
                    "id": f"sub_{rng.getrandbits(48):012x}",
                    "plan": plan,
                    "addons": dict(addons),
                    "starts_at": starts,
                    "members": [],
                }
            ],
            "overrides": {},
            "grants": [],
        }


def records_on_plans(plans: list[str], count: int) -> Iterator[dict[str, Any]]:
    """`count` single-subscription accounts spread round-robin over `plans` (plan keys)."""
    for i in range(count):
        yield {
            "id": account_id(i),
            "name": "",
            "attributes": {},
            "subscriptions": [
                {
                    "id": f"sub_{i:012x}",
                    "plan": plans[i % len(plans)],
                    "addons": {},
                    "starts_at": "2025-01-01T00:00:00Z",
                    "members": [],
                }
            ],
            "overrides": {},
            "grants": [],
        }


def pro_record(i: int) -> dict[str, Any]:
    """A Pro account (the account the single-account rows evaluate)."""
    return {
        "id": account_id(i),
        "name": f"Bench {i}",
        "attributes": {"region": "eu"},
        "subscriptions": [
            {
                "id": f"sub_pro_{i}",
                "plan": "pro",
                "addons": {},
                "starts_at": "2025-01-01T00:00:00Z",
                "members": [],
            }
        ],
        "overrides": {},
        "grants": [],
    }


def seed_store(db: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write account records into a SQLite store in one transaction; returns the count.

    A million accounts through `save_record` (one durable commit each) would take many
    minutes, so the first record goes through the store's own `save_record` and the rest
    are inserted in bulk as the same rows; the bulk row of the first record is checked to
    equal what the store wrote, so a change of the store's format fails here loudly instead
    of benchmarking something else. The sidecar later validates every row as it loads.
    """
    from plangate.sidecar.store.sqlite import SqliteStore

    it = iter(records)
    first = next(it, None)
    store = SqliteStore(db)  # creates the schema
    try:
        if first is None:
            return 0
        store.save_record(first)
        environment = store.environment
    finally:
        store.close()
    insert = (
        "INSERT INTO accounts (environment, id, record, updated_at) "
        "VALUES (?, ?, ?, datetime('now'))"
    )
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        (stored,) = conn.execute(
            "SELECT record FROM accounts WHERE environment = ? AND id = ?",
            (environment, first["id"]),
        ).fetchone()
        if stored != _row_text(first):
            raise RuntimeError("the store's account row format changed; update seed_store")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        n = 1
        for record in it:
            conn.execute(insert, (environment, record["id"], _row_text(record)))
            n += 1
        conn.execute("COMMIT")
    finally:
        conn.close()
    return n


def _row_text(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


# -- the flagd peer ---------------------------------------------------------------------------


def flagd_flags() -> dict[str, Any]:
    """The flagd equivalent of the `sso` lookup: on for accounts whose plan is pro or enterprise.

    flagd has no accounts, so the caller passes the plan in the evaluation context; the
    targeting rule is what a team would write to gate SSO by plan with flagd alone.
    """
    return {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            BOOLEAN_KEY: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {
                    "if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "on", "off"]
                },
            }
        },
    }


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def main() -> None:
    """`python bench/catalogs.py DB N`: seed N Pro accounts into DB from a separate process
    (for scripts that must not import the sidecar themselves)."""
    import sys

    db, count = Path(sys.argv[1]), int(sys.argv[2])
    seed_store(db, [pro_record(i) for i in range(count)])


if __name__ == "__main__":
    main()
