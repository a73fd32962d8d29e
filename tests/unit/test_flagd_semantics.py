"""flagd's semantics in the catalog and the engine (decisions 2000-2006): a flagd flag pasted
into a feature answers what flagd answers.

Each test is one gap the issue named: evaluation without a targeting key, exact explicit
slugs, `targeting: {}`, result literals that name no variant, `type: float`,
`default_variant:`, no default variant, fractional weights, `disabled: true`, metadata.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.catalog.model import FeatureType
from plangate.sidecar.engine import (
    ErrorCode,
    EvaluationError,
    Kind,
    Reason,
    StateView,
    evaluate,
    metadata,
    resolve_as,
)
from plangate.sidecar.engine.typed import CALLER_DEFAULT

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

CATALOG = """\
products:
  - name: App
    metadata: {team: growth, owner: product}
    features:
      - name: Shared seed A
        slug: fractional-flag-A-shared-seed
        type: string
        variants: {mine: "mine", other: "other"}
        default_variant: other
        targeting: {if: [{"==": [{var: $flagd.flagKey}, fractional-flag-A-shared-seed]}, mine, other]}
      - name: Plain
        type: boolean
        variants: {"on": true, "off": false}
        default_variant: "on"
        targeting: {}
      - name: Unreached literal
        type: string
        variants: {a: a, b: b}
        default_variant: a
        targeting: {if: [{"==": [{var: pick}, c]}, c, b]}
      - name: Ratio
        type: float
        min: 0
        max: 1
        default: 0.25
        variants: {tenth: 0.1, quarter: 0.25}
      - name: No default
        type: integer
        variants: {small: 10, big: 1000}
        targeting: {if: [{"==": [{var: email}, big@example.com]}, big, null]}
      - name: Weights
        type: string
        variants: {one: one, two: two, fallback: fallback}
        default_variant: fallback
        targeting: {fractional: [{var: targetingKey}, [one, -50], [two, 100]]}
      - name: Zero weights
        type: string
        variants: {one: one, two: two, fallback: fallback}
        default_variant: fallback
        targeting: {fractional: [{var: targetingKey}, [one, 0], [two, 0.5]]}
      - name: Switched off
        type: string
        disabled: true
        variants: {hi: hi}
        default_variant: hi
      - name: Old
        type: boolean
        archived: true
        default: true
      - name: Tagged
        type: boolean
        default: false
        metadata: {owner: billing, version: 2, ratio: 0.5, beta: true, has_access: spoofed}
      - name: Plan only
        type: boolean
        default: false
"""


@pytest.fixture(scope="module")
def snap() -> StateView:
    return StateView.of(parse_catalog(CATALOG, "catalog.yaml"))


def ev(snapshot: StateView, account_id: str, key: str, **context: Any) -> Any:
    return evaluate(snapshot, account_id, key, context, NOW)


def test_a_feature_with_variants_answers_without_a_targeting_key(snap: StateView) -> None:
    d = ev(snap, "", "plain")
    assert (d.value, d.variant, d.reason) == (True, "on", Reason.DEFAULT)
    targeted = ev(snap, "", "no-default", email="big@example.com")
    assert (targeted.value, targeted.variant, targeted.reason) == (
        1000,
        "big",
        Reason.TARGETING_MATCH,
    )


def test_a_feature_without_variants_still_needs_the_key(snap: StateView) -> None:
    with pytest.raises(EvaluationError) as info:
        ev(snap, "", "plan-only")
    assert info.value.code is ErrorCode.TARGETING_KEY_MISSING


def test_an_explicit_slug_is_kept_exactly_and_flagkey_sees_it(snap: StateView) -> None:
    assert "fractional-flag-A-shared-seed" in snap.catalog.features
    assert "shared-seed-a" not in snap.catalog.features  # not derived from the name
    d = ev(snap, "acct", "fractional-flag-A-shared-seed")
    assert (d.value, d.reason) == ("mine", Reason.TARGETING_MATCH)
    with pytest.raises(EvaluationError) as info:
        ev(snap, "acct", "fractional-flag-a-shared-seed")  # keys are case-sensitive
    assert info.value.code is ErrorCode.FLAG_NOT_FOUND


def test_derived_slugs_stay_lowercase(snap: StateView) -> None:
    assert "unreached-literal" in snap.catalog.features


def test_empty_targeting_means_no_rule(snap: StateView) -> None:
    targeting = snap.catalog.features["plain"].targeting
    assert targeting is not None and targeting.rule is None
    d = ev(snap, "acct", "plain")
    assert (d.value, d.variant, d.reason) == (True, "on", Reason.DEFAULT)


def test_a_literal_naming_no_variant_is_a_warning_and_general_if_reached(snap: StateView) -> None:
    (warning,) = [w for w in snap.catalog.warnings if "names no variant" in w]
    assert warning.startswith("catalog.yaml:20 products[0].features[2].targeting.if[1]:")
    assert "'c' names no variant" in warning
    assert ev(snap, "acct", "unreached-literal", pick="x").value == "b"
    with pytest.raises(EvaluationError) as info:
        ev(snap, "acct", "unreached-literal", pick="c")
    assert info.value.code is ErrorCode.GENERAL


def test_validate_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    file = tmp_path / "catalog.yaml"
    file.write_text(CATALOG)
    proc = subprocess.run(
        [sys.executable, "-m", "plangate.sidecar.cli.main", "validate", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: " in proc.stderr and "'c' names no variant" in proc.stderr


def test_float_features_resolve_as_float_only(snap: StateView) -> None:
    feature = snap.catalog.features["ratio"]
    assert feature.type is FeatureType.FLOAT
    d = ev(snap, "acct", "ratio")
    assert (d.value, d.variant, d.reason) == (0.25, "quarter", Reason.DEFAULT)
    assert resolve_as(d, feature, Kind.FLOAT) == 0.25
    with pytest.raises(EvaluationError) as info:
        resolve_as(d, feature, Kind.INTEGER)
    assert info.value.code is ErrorCode.TYPE_MISMATCH


def test_float_values_are_checked_against_min_and_max() -> None:
    bad = CATALOG.replace("variants: {tenth: 0.1, quarter: 0.25}", "variants: {lots: 1.5}")
    with pytest.raises(CatalogError, match=r"1\.5 is outside ratio's range 0\.\.1"):
        parse_catalog(bad, "catalog.yaml")


def test_default_variant_names_the_default_and_its_value(snap: StateView) -> None:
    d = ev(snap, "acct", "unreached-literal")  # no `pick`: the rule gives "b"
    assert d.value == "b"
    off = ev(snap, "acct", "fractional-flag-A-shared-seed", x=1)
    assert off.variant == "mine"
    feature = snap.catalog.features["weights"]
    assert (feature.default, feature.default_variant) == ("fallback", "fallback")


def test_default_variant_must_name_a_variant() -> None:
    bad = CATALOG.replace(
        "default_variant: fallback\n        targeting: {fractional: [{var: "
        "targetingKey}, [one, -50]",
        "default_variant: nope\n        targeting: {fractional: [{var: targetingKey}, [one, -50]",
    )
    with pytest.raises(CatalogError, match="default_variant: 'nope' names no variant"):
        parse_catalog(bad, "catalog.yaml")


def test_no_default_variant_answers_the_callers_default(snap: StateView) -> None:
    d = ev(snap, "acct", "no-default")
    assert (d.reason, d.variant, d.value, d.caller_default) == (Reason.DEFAULT, "", None, True)
    assert resolve_as(d, snap.catalog.features["no-default"], Kind.INTEGER) is CALLER_DEFAULT
    keyless = ev(snap, "", "no-default")
    assert (keyless.reason, keyless.variant, keyless.caller_default) == (Reason.DEFAULT, "", True)


def test_fractional_negative_weight_counts_zero(snap: StateView) -> None:
    for account in ("a", "b", "c", "d", "e"):
        assert ev(snap, account, "weights").value == "two"


def test_fractional_all_zero_weights_choose_no_variant(snap: StateView) -> None:
    d = ev(snap, "any-user", "zero-weights")  # 0 and a non-integer weight (counts 0)
    assert (d.value, d.variant, d.reason) == ("fallback", "fallback", Reason.DEFAULT)


@pytest.mark.parametrize("key", ["switched-off", "old"])
def test_disabled_and_archived_answer_the_callers_default(snap: StateView, key: str) -> None:
    for account in ("acct", ""):
        if key == "old" and not account:
            continue  # no variants: answered per account
        d = ev(snap, account, key)
        assert (d.reason, d.variant, d.value, d.caller_default) == (
            Reason.DISABLED,
            "",
            None,
            True,
        )


def test_feature_metadata_over_product_metadata_and_plangate_keys_over_both(
    snap: StateView,
) -> None:
    meta = metadata(ev(snap, "acct", "tagged"))
    assert meta["owner"] == "billing" and meta["team"] == "growth"  # feature's, then product's
    assert (meta["version"], meta["ratio"], meta["beta"]) == (2, 0.5, True)
    assert meta["has_access"] is False  # PlanGate's own key wins over the catalog's
    assert meta["flagSetId"] == "app" and meta["flagSetVersion"] == snap.catalog.version
    assert any("'has_access' is PlanGate's own flag metadata" in w for w in snap.catalog.warnings)


def test_metadata_values_are_scalars() -> None:
    bad = CATALOG.replace("ratio: 0.5, beta: true", "ratio: [1], beta: true")
    with pytest.raises(CatalogError, match="metadata values are strings, numbers or booleans"):
        parse_catalog(bad, "catalog.yaml")


def test_the_converted_testbed_example_in_catalog_md_loads_and_answers_as_flagd() -> None:
    """docs/catalog.md "Moving a flagd flag file": the converted flags answer what the
    flagd-testbed scenarios say for them."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "catalog.md").read_text()
    section = text[text.index("### Moving a flagd flag file") :]
    yaml_block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    snapshot = StateView.of(parse_catalog(yaml_block, "catalog.md"))
    assert ev(snapshot, "", "float-flag").value == 0.5
    ceo = ev(snapshot, "", "no-default-flag-null-targeting-variant", email="jobs@orange.com")
    assert (ceo.value, ceo.reason) == ("CEO", Reason.TARGETING_MATCH)
    assert ev(snapshot, "", "no-default-flag-null-targeting-variant").caller_default
    assert ev(snapshot, "", "disabled-string-flag").reason is Reason.DISABLED
    hi = ev(snapshot, "", "ref-whitespace-compact-flag", email="ballmer@macrosoft.com")
    assert hi.value == "hi"
    seeded = ev(snapshot, "", "fractional-flag-A-shared-seed", user={"name": "jack"})
    assert seeded.reason is Reason.TARGETING_MATCH
