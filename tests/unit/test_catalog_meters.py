"""Catalog `meters:` and features' `meter:` (design §16): what loads, and every inconsistency
refused with `file:line path` and what is wrong."""

from __future__ import annotations

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.catalog.meters import dimension_text, parse_path

GOOD = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    unique: $.user
    dimensions: {model: $.model, project: "$['project-id']"}
  - key: calls
    event_type: api.call
products:
  - name: Acme AI
    features:
      - name: Tokens
        type: metered
        meter: llm-tokens
      - name: Premium tokens
        type: metered
        meter: {key: llm-tokens, where: {model: [gpt-5, claude-opus], project: 7}}
      - name: Users
        type: metered
        aggregation: unique
        meter: llm-tokens
      - name: API calls
        type: metered
        meter: calls
"""


def test_meters_and_meter_uses_load() -> None:
    catalog = parse_catalog(GOOD, "cat.yaml")
    tokens = catalog.meters["llm-tokens"]
    assert tokens.event_type == "llm.completion"
    assert tokens.value == ("tokens",)
    assert tokens.unique == ("user",)
    assert dict(tokens.dimensions) == {"model": ("model",), "project": ("project-id",)}
    assert catalog.meters["calls"].value is None  # each event counts 1
    premium = catalog.features["premium-tokens"].meter
    assert premium is not None and premium.key == "llm-tokens"
    assert dict(premium.where) == {"model": ("gpt-5", "claude-opus"), "project": ("7",)}
    assert catalog.features["tokens"].meter is not None


def test_path_subset_and_dimension_text() -> None:
    assert parse_path("$.a.b") == ("a", "b")
    assert parse_path("$.a[0]") == ("a", 0)
    assert parse_path("$['a-b'].c") == ("a-b", "c")
    for bad in ("a.b", "$", "$..a", "$.a[*]", "$[?(@.x)]", "$.a."):
        assert parse_path(bad) is None, bad
    assert [dimension_text(v) for v in (1, 2.5, 3.0, True, "x")] == ["1", "2.5", "3", "true", "x"]
    assert dimension_text(None) is None and dimension_text({"a": 1}) is None


def _problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "cat.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "        meter: calls\n",
            "        meter: nope\n",
            "cat.yaml:24 products[0].features[3].meter: unknown meter 'nope' (meters: calls, llm-tokens)",
        ),
        (
            "where: {model: [gpt-5, claude-opus], project: 7}",
            "where: {region: eu}",
            "cat.yaml:17 products[0].features[1].meter.where.region: meter 'llm-tokens' declares "
            "no dimension 'region' (its dimensions: model, project)",
        ),
        (
            "    unique: $.user\n",
            "",
            "cat.yaml:20 products[0].features[2].meter: the feature counts unique keys, but "
            "meter 'llm-tokens' has no `unique:` path",
        ),
        (
            "    value: $.tokens\n",
            "    value: tokens\n",
            "cat.yaml:4 meters[0].value: must be a JSONPath into the event's data",
        ),
        (
            "    event_type: api.call\n",
            "    event_type: tokens\n",
            "cat.yaml:8 meters[1].event_type: 'tokens' is also a feature key",
        ),
        (
            "  - key: calls\n",
            "  - key: llm-tokens\n",
            "cat.yaml:7 meters[1].key: meter key 'llm-tokens' is already used",
        ),
        (
            "{model: $.model,",
            "{requested: $.model,",
            "cat.yaml:6 meters[0].dimensions.requested: 'requested' is a reserved context key",
        ),
        (
            "      - name: API calls\n        type: metered\n",
            "      - name: API calls\n        type: integer\n",
            "cat.yaml:24 products[0].features[3].meter: a integer feature counts no events",
        ),
        (
            "where: {model: [gpt-5, claude-opus], project: 7}",
            "where: {model: [{a: 1}]}",
            "cat.yaml:17 products[0].features[1].meter.where.model: must be a value or a list",
        ),
    ],
)
def test_meter_errors_name_file_line_and_path(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    problems = _problems(GOOD.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems


RATED = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    dimensions: {model: $.model}
products:
  - name: Acme AI
    features:
      - {name: AI credits, type: credits}
      - name: Completions
        type: metered
        meter: llm-tokens
        credits:
          pool: ai-credits
          per_unit: 0.001
          by: model
          rates: {gpt-5: 0.01, 4: 0.5}
"""


def test_credit_rates_by_dimension_load() -> None:
    price = parse_catalog(RATED, "cat.yaml").features["completions"].credits
    assert price is not None and price.by == "model"
    assert dict(price.rates) == {"gpt-5": 0.01, "4": 0.5}
    assert (
        price.rate("gpt-5") == 0.01 and price.rate("gpt-4") == 0.001 and price.rate(None) == 0.001
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "          rates: {gpt-5: 0.01, 4: 0.5}\n",
            "",
            "cat.yaml:16 products[0].features[1].credits.by: `by: model` needs `rates:`",
        ),
        (
            "          by: model\n",
            "",
            "cat.yaml:16 products[0].features[1].credits.rates: `rates:` needs `by:`",
        ),
        (
            "          by: model\n",
            "          by: region\n",
            "cat.yaml:16 products[0].features[1].credits.by: meter 'llm-tokens' declares no "
            "dimension 'region'",
        ),
        (
            "{gpt-5: 0.01, 4: 0.5}",
            "{gpt-5: -1}",
            "cat.yaml:17 products[0].features[1].credits.rates.gpt-5: must be a positive number",
        ),
    ],
)
def test_credit_rate_errors(old: str, new: str, expected: str) -> None:
    assert old in RATED
    problems = _problems(RATED.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems
