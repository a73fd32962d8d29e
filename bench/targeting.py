"""Targeting cost (design §4.1): PlanGate's targeted evaluation against flagd's, and its floor.

Two comparisons, interleaved so machine load affects both sides alike:

- **Provider**: one targeted boolean (a plan condition around a 50/50 `fractional`) through
  PlanGate's cached provider vs the same flag definition through `openfeature-provider-flagd`'s
  in-process FILE resolver. flagd has no accounts, so its context carries `plans`; the rule
  text is the same. Target: PlanGate ≥ 1.5× faster.
- **Engine**: `evaluate` of a targeted feature vs an untargeted one on the same account, and
  flagd-core's JSON Logic alone on the same rule with prebuilt data (the floor: the part of a
  targeted evaluation PlanGate cannot make cheaper). Target: targeted ≤ 5× untargeted.

The sidecar runs as its own process; this one loads the catalog and engine (for the engine
measures) but never PlanGate's flagd stubs, which clash with the flagd provider's.

Run: `python bench/targeting.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import Case, emit, interleaved, sidecar
from json_logic import jsonLogic
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS
from openfeature.evaluation_context import EvaluationContext

KEY = "rollout"
ACCOUNT = "acct_bench"
RULE: dict[str, Any] = {
    "if": [{"in": ["pro", {"var": "plans"}]}, {"fractional": [["on", 50], ["off", 50]]}, "off"]
}
CATALOG = {
    "products": [
        {
            "name": "Bench",
            "features": [
                {
                    "name": KEY,
                    "type": "boolean",
                    "variants": {"on": True, "off": False},
                    "targeting": RULE,
                },
                {"name": "plain", "type": "boolean"},
            ],
            "plans": [{"name": "Pro", "entitlements": {"plain": True}}],
        }
    ],
    "accounts": [{"id": ACCOUNT, "subscriptions": [{"plan": "pro"}]}],
}
FLAGS = {
    "flags": {
        KEY: {
            "state": "ENABLED",
            "defaultVariant": "off",
            "variants": {"on": True, "off": False},
            "targeting": RULE,
        }
    }
}


def engine_cases(catalog: Path, n: int) -> list[Case]:
    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.engine import StateView, evaluate

    snap = StateView.of(load_catalog(catalog))
    now = datetime(2026, 6, 15, tzinfo=UTC)
    feature = snap.catalog.features[KEY]
    assert feature.targeting is not None
    rule = feature.targeting.rule
    data = {
        "targetingKey": ACCOUNT,
        "$flagd": {"flagKey": KEY, "timestamp": int(now.timestamp())},
        "plans": ["pro"],
    }
    if evaluate(snap, ACCOUNT, KEY, {}, now).variant != jsonLogic(rule, data, OPERATORS):
        raise RuntimeError("engine and flagd-core disagree on the bench account")
    return [
        Case("targeting.engine_untargeted", lambda: evaluate(snap, ACCOUNT, "plain", {}, now), n),
        Case("targeting.engine_targeted", lambda: evaluate(snap, ACCOUNT, KEY, {}, now), n),
        Case("targeting.flagd_core_json_logic", lambda: jsonLogic(rule, data, OPERATORS), n),
    ]


def measure(quick: bool, reps: int) -> dict[str, Any]:
    n = 1000 if quick else 20000
    out: dict[str, Any] = {"measures": {}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="plangate-bench-targeting-") as tmp:
        d = Path(tmp)
        (d / "flags.json").write_text(json.dumps(FLAGS), encoding="utf-8")
        catalog = d / "catalog.yaml"
        catalog.write_text(json.dumps(CATALOG), encoding="utf-8")
        flagd = FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(d / "flags.json"),
            deadline_ms=60_000,  # also the file watcher's poll period: keep it out of the loop
        )
        api.set_provider_and_wait(flagd, domain="flagd")
        flagd_client = api.get_client("flagd")
        flagd_ctx = EvaluationContext(ACCOUNT, {"plans": ["pro"]})
        cases = engine_cases(catalog, n)
        with sidecar(catalog, d / "state.db") as side:
            from plangate.provider import PlanGateProvider

            provider = PlanGateProvider(target=side.target, cache=True, deadline_ms=5000)
            api.set_provider_and_wait(provider, domain="plangate")
            plangate = api.get_client("plangate")
            ctx = EvaluationContext(ACCOUNT)
            ours = plangate.get_boolean_details(KEY, False, ctx)
            theirs = flagd_client.get_boolean_details(KEY, False, flagd_ctx)
            if (ours.value, ours.variant) != (theirs.value, theirs.variant):
                raise RuntimeError(f"PlanGate {ours} and flagd {theirs} disagree")
            cases += [
                Case(
                    "targeting.flagd_inprocess",
                    lambda: flagd_client.get_boolean_value(KEY, False, flagd_ctx),
                    n,
                ),
                Case(
                    "targeting.plangate_cached",
                    lambda: plangate.get_boolean_value(KEY, False, ctx),
                    n,
                ),
            ]
            for name, stats in interleaved(cases, reps).items():
                out["measures"][name] = stats.as_json()
            api.shutdown()
    if any(m.startswith("plangate.sidecar.protocol.flagd") for m in sys.modules):
        raise RuntimeError("this process must not load PlanGate's flagd stubs")
    m = {k: v["value"] for k, v in out["measures"].items()}
    out["ratios"] = {
        "flagd_over_plangate_cached": m["targeting.flagd_inprocess"]
        / m["targeting.plangate_cached"],
        "engine_targeted_over_untargeted": m["targeting.engine_targeted"]
        / m["targeting.engine_untargeted"],
    }
    out["settings"] = {"reps": reps, "calls_per_rep": n}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    emit(measure(args.quick, args.reps or (2 if args.quick else 7)))


if __name__ == "__main__":
    main()
