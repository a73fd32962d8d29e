"""Targeting in the catalog (design §4.1): every error at load with `file:line path`.

Each case marks its offending line with `# <-`; the test reads the expected line from that
mark, so a case cannot pass by pointing anywhere else.
"""

from __future__ import annotations

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog

HEAD = """\
evaluators:
  pro-users: {in: [pro, {var: plans}]}
  loop-a: {$ref: loop-b}
  loop-b: {$ref: loop-a}
products:
  - name: Acme
    features:
      - name: Usage
        type: metered
      - name: Tier
        type: integer
        min: 0
        max: 10
"""


def feature(body: str, name: str = "Editor", ftype: str = "string") -> str:
    """HEAD plus one feature (products[0].features[2]) whose body follows its type line."""
    lines = "\n".join("        " + line for line in body.strip("\n").splitlines())
    return HEAD + f"      - name: {name}\n        type: {ftype}\n" + lines + "\n"


CASES = [
    (
        "unknown-operator",
        feature(
            "variants: {a: x, b: y}\ntargeting: {if: [{startswith: [{var: email}, x]}, a, b]}  # <-"
        ),
        "products[0].features[2].targeting.if[0].startswith",
        "unknown operator 'startswith'",
    ),
    (
        "unknown-ref",
        feature("variants: {a: x}\ntargeting: {if: [{$ref: pro-user}, a, null]}  # <-"),
        "products[0].features[2].targeting.if[0].$ref",
        "unknown evaluator 'pro-user' (evaluators: loop-a, loop-b, pro-users)",
    ),
    (
        "evaluator-cycle",
        HEAD.replace("  loop-b: {$ref: loop-a}", "  loop-b: {$ref: loop-a}  # <-")
        + "      - name: X\n        type: boolean\n",
        "evaluators.loop-b.$ref",
        "evaluator cycle: loop-a -> loop-b -> loop-a",
    ),
    (
        "bad-bucket",
        feature("variants: {a: x, b: y}\ntargeting:\n  fractional:\n    - [a, 50, 3]  # <-"),
        "products[0].features[2].targeting.fractional[0]",
        "a fractional bucket is [variant, weight] or [variant]",
    ),
    (
        "targeting-on-metered",
        HEAD.replace(
            "        type: metered\n",
            "        type: metered\n        variants: {a: 5}\n        targeting: a  # <-\n",
        ),
        "products[0].features[0].targeting",
        "usage is a metered feature: its access comes from usage",
    ),
    (
        "variant-outside-range",
        HEAD.replace(
            "        max: 10\n",
            "        max: 10\n        variants:\n          few: 2\n          lots: 50  # <-\n"
            "        targeting: few\n",
        ),
        "products[0].features[1].variants.lots",
        "50 is outside tier's range 0..10",
    ),
    (
        "variant-of-wrong-type",
        feature("variants:\n  yes-please: 1  # <-\ntargeting: yes-please", "Beta", "boolean"),
        "products[0].features[2].variants.yes-please",
        "beta is a boolean feature: expected true or false, got 1",
    ),
    (
        "yaml-boolean-variant-name",
        feature("variants:\n  on: true  # <-\ntargeting: null", "Beta", "boolean"),
        "products[0].features[2].variants.on",
        'variant name True is not a string (YAML reads a bare on/off/yes/no as a boolean: write it in quotes, "on")',
    ),
    (
        "targeting-without-variants",
        feature("targeting: a  # <-"),
        "products[0].features[2].targeting",
        "targeting needs `variants`",
    ),
    (
        "two-operators-in-one-mapping",
        feature("variants: {a: x}\ntargeting: {if: [true, a], var: x}  # <-"),
        "products[0].features[2].targeting",
        "a JSON Logic operation has exactly one operator, got keys 'if', 'var'",
    ),
]


@pytest.mark.parametrize(("name", "text", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_targeting_error_names_line_and_path(name: str, text: str, path: str, message: str) -> None:
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if line.endswith("# <-")]
    assert len(marked) == 1, "each case marks exactly one line"
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.yaml")
    problems = [str(p) for p in info.value.problems]
    where = f"catalog.yaml:{marked[0]} {path}: "
    assert any(p.startswith(where) and message in p for p in problems), "\n".join(problems)


def test_evaluators_resolve_into_the_rule_and_clock_reads_are_volatile() -> None:
    text = HEAD.replace("  loop-a: {$ref: loop-b}\n  loop-b: {$ref: loop-a}\n", "") + (
        "      - name: Editor\n        type: string\n        variants: {a: x, b: y}\n"
        "        targeting: {if: [{$ref: pro-users}, a, b]}\n"
        "      - name: Night\n        type: boolean\n        variants: {'on': true, 'off': false}\n"
        "        targeting: {if: [{'>': [{var: $flagd.timestamp}, 5]}, 'on', 'off']}\n"
    )
    catalog = parse_catalog(text, "catalog.yaml")
    editor = catalog.features["editor"].targeting
    night = catalog.features["night"].targeting
    assert editor is not None and night is not None
    assert editor.rule == {"if": [{"in": ["pro", {"var": "plans"}]}, "a", "b"]}
    assert dict(editor.variants) == {"a": "x", "b": "y"}
    assert not editor.volatile and night.volatile
    # equality follows the rule, so a reload that changes it changes the feature
    changed = parse_catalog(text.replace("a, b]}", "b, a]}"), "catalog.yaml")
    assert changed.features["editor"] != catalog.features["editor"]
    assert changed.features["night"] == catalog.features["night"]
