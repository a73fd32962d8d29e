"""`plangate meters CATALOG` (design §16): what each meter feeds, read from the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plangate.sidecar.cli.main import main

CATALOG = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    dimensions: {model: $.model, project: "$['project-id']"}
  - key: unused
    event_type: nothing.yet
products:
  - name: Acme AI
    features:
      - {name: Tokens, type: metered, meter: llm-tokens}
      - {name: Premium, type: metered, meter: {key: llm-tokens, where: {model: [gpt-5]}}}
      - {name: AI credits, type: credits}
      - name: Completions
        type: metered
        meter: llm-tokens
        credits: {pool: ai-credits, per_unit: 1, by: model, rates: {gpt-5: 3}}
"""


def test_meters_lists_what_each_meter_feeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "catalog.yaml"
    file.write_text(CATALOG)
    assert main(["meters", str(file), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [m["meter"] for m in listing] == ["llm-tokens", "unused"]
    tokens = listing[0]
    assert tokens["dimensions"] == {"model": "$.model", "project": "$.project-id"}
    assert tokens["features"] == [
        {"feature": "tokens", "aggregation": "sum"},
        {"feature": "premium", "aggregation": "sum", "where": {"model": ["gpt-5"]}},
        {
            "feature": "completions",
            "aggregation": "sum",
            "credits": {"pool": "ai-credits", "per_unit": 1, "by": "model", "rates": {"gpt-5": 3}},
        },
    ]
    assert main(["meters", str(file)]) == 0
    text = capsys.readouterr().out
    assert "llm-tokens  type llm.completion  value $.tokens" in text
    assert "-> premium  where model in ['gpt-5']" in text
    assert "-> completions  1 ai-credits per unit (by model: gpt-5: 3)" in text
    assert "unused  type nothing.yet  value 1 per event" in text
    assert "(no feature counts it)" in text


def test_meters_stops_on_a_catalog_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "catalog.yaml"
    file.write_text(CATALOG.replace("meter: llm-tokens}", "meter: nope}"))
    assert main(["meters", str(file)]) == 1
    assert "unknown meter 'nope'" in capsys.readouterr().err
