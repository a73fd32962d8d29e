"""Targeting in evaluation (design §4.1): override -> targeting -> sources -> default."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import (
    ErrorCode,
    EvaluationError,
    Reason,
    StateView,
    evaluate,
    metadata,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

CATALOG = """\
evaluators:
  eu-pro:
    and:
      - in: [pro, {var: plans}]
      - "==": [{var: account.region}, eu]
products:
  - name: App
    features:
      - name: Editor
        type: string
        values: [classic, new]
        default: classic
        variants: {classic: classic, new: new}
        targeting:
          if:
            - {$ref: eu-pro}
            - new
            - {"==": [{var: beta}, true]}
            - new
            - null
      - name: Seats
        type: integer
        default: 1
        variants: {trial: 3}
        targeting: {if: [{"==": [{var: account.id}, nobody]}, trial, null]}
      - name: Clock
        type: boolean
        variants: {"on": true, "off": false}
        targeting: {if: [{">=": [{var: $flagd.timestamp}, 1781524800]}, "on", "off"]}
      - name: Key
        type: string
        variants: {match: "y", other: "n"}
        targeting: {if: [{"==": [{var: $flagd.flagKey}, key]}, match, other]}
      - name: Broken
        type: string
        variants: {a: a}
        targeting: {var: pick}
      - name: Kill switch
        type: boolean
        variants: {"off": false}
        targeting: "off"
    plans:
      - name: Pro
        entitlements: {editor: classic, seats: 10, kill-switch: true}
accounts:
  - id: eu-pro
    attributes: {region: eu}
    subscriptions: [{plan: pro}]
  - id: us-pro
    attributes: {region: us}
    subscriptions: [{plan: pro}]
  - id: overridden
    attributes: {region: eu}
    subscriptions: [{plan: pro}]
    overrides: {editor: classic}
"""


@pytest.fixture(scope="module")
def snap() -> StateView:
    return StateView.of(parse_catalog(CATALOG, "catalog.yaml"))


def ev(snapshot: StateView, account_id: str, key: str, **context: Any) -> Any:
    return evaluate(snapshot, account_id, key, context, NOW)


def test_targeting_names_the_variant_with_reason_and_source(snap: StateView) -> None:
    d = ev(snap, "eu-pro", "editor")
    assert (d.value, d.variant, d.reason) == ("new", "new", Reason.TARGETING_MATCH)
    assert metadata(d)["source"] == "targeting"


def test_null_falls_through_to_the_plan(snap: StateView) -> None:
    d = ev(snap, "us-pro", "editor")
    assert (d.value, d.variant) == ("classic", "pro")
    assert "source" not in metadata(d)


def test_override_stands_above_targeting(snap: StateView) -> None:
    d = ev(snap, "overridden", "editor")
    assert (d.value, d.variant) == ("classic", "override")


def test_context_attributes_are_seen_but_reserved_names_cannot_be_spoofed(snap: StateView) -> None:
    assert ev(snap, "us-pro", "editor", beta=True).variant == "new"
    spoof = {"plans": ["pro"], "account": {"id": "x", "region": "eu"}}
    assert ev(snap, "us-pro", "editor", **spoof).variant == "pro"
    assert ev(snap, "us-pro", "seats", account={"id": "nobody"}).variant == "pro"


def test_unknown_accounts_are_targeted_with_only_an_id(snap: StateView) -> None:
    d = ev(snap, "nobody", "seats")
    assert (d.value, d.variant, d.reason) == (3, "trial", Reason.TARGETING_MATCH)
    d = ev(snap, "stranger", "editor")
    assert (d.value, d.reason) == ("classic", Reason.DEFAULT)
    assert d.denial is not None and d.denial.value == "account_not_found"


def test_timestamp_comes_from_now_and_flag_key_from_the_feature(snap: StateView) -> None:
    before = datetime(2026, 6, 15, 11, 59, 59, tzinfo=UTC)  # 1781524800 is 12:00:00
    assert evaluate(snap, "us-pro", "clock", {}, before).variant == "off"
    assert evaluate(snap, "us-pro", "clock", {}, NOW).variant == "on"
    assert ev(snap, "us-pro", "key").variant == "match"


def test_a_result_naming_no_variant_is_general(snap: StateView) -> None:
    with pytest.raises(EvaluationError) as info:
        ev(snap, "us-pro", "broken", pick="zzz")
    assert info.value.code is ErrorCode.GENERAL
    assert "'zzz', which names no variant (variants: a)" in info.value.message
    assert ev(snap, "us-pro", "broken", pick="a").variant == "a"


def test_kill_switch_beats_the_plan(snap: StateView) -> None:
    d = ev(snap, "eu-pro", "kill-switch")
    assert (d.value, d.variant, d.has_access) == (False, "off", False)


ROLLOUT = """\
products:
  - name: App
    features:
      - name: Rollout
        type: boolean
        variants: {"on": true, "off": false}
        targeting: {fractional: [["on", %d], ["off", %d]]}
"""


@settings(max_examples=40, deadline=None)
@given(
    first=st.integers(0, 100),
    other=st.integers(1, 100),
    more=st.integers(1, 100),
    seed=st.integers(0, 2**32),
)
def test_raising_the_first_weight_keeps_everyone_already_in_it(
    first: int, other: int, more: int, seed: int
) -> None:
    before = StateView.of(parse_catalog(ROLLOUT % (first, other), "catalog.yaml"))
    after = StateView.of(parse_catalog(ROLLOUT % (first + more, other), "catalog.yaml"))
    rng = random.Random(seed)
    ids = [f"acct_{rng.getrandbits(48):x}" for _ in range(200)]
    was_on = {a for a in ids if evaluate(before, a, "rollout", {}, NOW).variant == "on"}
    now_on = {a for a in ids if evaluate(after, a, "rollout", {}, NOW).variant == "on"}
    assert was_on <= now_on


def test_explain_covers_every_feature_type_and_ends_in_the_decision() -> None:
    from pathlib import Path

    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.engine import explain

    example = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"
    snapshot = StateView.of(load_catalog(example))
    seen = set()
    for key, feature in snapshot.catalog.features.items():
        for account in ("acct_acme", "acct_globex", "acct_initech", "acct_nobody"):
            decision, trail = explain(snapshot, account, key, {}, NOW)
            assert not isinstance(decision, EvaluationError)
            assert decision == evaluate(snapshot, account, key, {}, NOW)
            json.dumps(trail)  # JSON-shaped, as the wire carries it
            winner = trail["winner"]
            assert (winner["variant"], winner["reason"]) == (decision.variant, decision.reason)
            won = [c for c in trail["candidates"] if c["won"]]
            lost = [c for c in trail["candidates"] if not c["won"]]
            assert all(c["why"] for c in lost)
            if (
                decision.variant != "override"
                and decision.reason is not Reason.DEFAULT  # the default names its variant
                and not decision.targeted
                and not decision.caller_default
            ):
                assert won, (key, account, trail)
            if decision.targeted or decision.variant == "override":
                assert not won
            seen.add(feature.type)
    assert seen == {f.type for f in snapshot.catalog.features.values()}
    _, trail = explain(snapshot, "acct_acme", "integrations", {}, NOW)
    assert trail["candidates"][0]["won"] and trail["winner"]["value"] == [
        "slack",
        "github",
        "salesforce",
    ]
