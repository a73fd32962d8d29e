"""Same bucket as flagd (design §4.1): for 10,000 generated account ids and three fractional
splits, PlanGate's variant is the one the unmodified `openfeature-provider-flagd` in-process
FILE resolver gives for the same flag definition — every single one.

The provider runs in its own interpreter (`tests/support/flagd_file_buckets.py`); PlanGate's
side is the engine over a catalog holding the same definitions.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import StateView, evaluate

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "support" / "flagd_file_buckets.py"
NOW_ISO = "2026-06-15T12:00:00+00:00"

# the custom bucketing expression, shared through flagd's `$evaluators` / our `evaluators`
BY_REGION = {"cat": [{"var": "region"}, "/", {"var": "targetingKey"}]}
FLAGS: dict[str, dict[str, Any]] = {
    "half": {
        "variants": {"a": "a", "b": "b"},
        "targeting": {"fractional": [["a", 50], ["b", 50]]},
    },
    "tenth": {
        "variants": {"on": True, "off": False},
        "targeting": {"fractional": [["on", 10], ["off", 90]]},
    },
    "colour": {
        "variants": {"red": "red", "green": "green", "blue": "blue"},
        "targeting": {
            "fractional": [{"$ref": "by-region"}, ["red", 30], ["green", 30], ["blue", 40]]
        },
    },
}
# flag -> (feature type, OpenFeature type, default, context)
CALLS: dict[str, tuple[str, str, Any, dict[str, Any]]] = {
    "half": ("string", "string", "", {}),
    "tenth": ("boolean", "boolean", False, {}),
    "colour": ("string", "string", "", {"region": "eu-west"}),
}


def account_ids(n: int = 10_000) -> list[str]:
    rng = random.Random(14)
    return [f"acct_{rng.getrandbits(64):016x}" for _ in range(n)]


def flagd_file() -> dict[str, Any]:
    flags = {
        key: {**spec, "state": "ENABLED", "defaultVariant": next(iter(spec["variants"]))}
        for key, spec in FLAGS.items()
    }
    return {"flags": flags, "$evaluators": {"by-region": BY_REGION}}


def catalog_text() -> str:
    """The same flags as catalog features (JSON is YAML, so each definition is pasted)."""
    features = [{"name": key, "type": CALLS[key][0], **spec} for key, spec in FLAGS.items()]
    doc = {
        "evaluators": {"by-region": BY_REGION},
        "products": [{"name": "P", "features": features}],
    }
    return json.dumps(doc, indent=1)


@pytest.fixture(scope="module")
def flagd_variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    tmp = tmp_path_factory.mktemp("buckets")
    (tmp / "flags.json").write_text(json.dumps(flagd_file()), encoding="utf-8")
    job = {
        "flag_file": str(tmp / "flags.json"),
        "ids": account_ids(),
        "calls": [[key, kind, default, ctx] for key, (_, kind, default, ctx) in CALLS.items()],
    }
    (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(tmp / "job.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_every_account_gets_the_variant_flagd_gives(
    flag: str, flagd_variants: dict[str, list[str]]
) -> None:
    from datetime import datetime

    snap = StateView.of(parse_catalog(catalog_text(), "catalog.json"))
    now = datetime.fromisoformat(NOW_ISO)
    context = CALLS[flag][3]
    ours = [evaluate(snap, a, flag, context, now).variant for a in account_ids()]
    theirs = flagd_variants[flag]
    assert len(theirs) == len(ours) == 10_000
    differ = [(a, o, t) for a, o, t in zip(account_ids(), ours, theirs, strict=True) if o != t]
    assert not differ, f"{len(differ)} of 10000 differ, e.g. {differ[:3]}"
    # and the split is a real split, not one variant for everybody
    assert len(set(ours)) == len(FLAGS[flag]["variants"])
