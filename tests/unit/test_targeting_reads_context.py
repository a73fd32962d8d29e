"""Which targeting rules read the caller's context (design §21 `context_dependent`): only those
answers may not be kept as an account's last-known value for an outage."""

from __future__ import annotations

import json

import pytest
from plangate.sidecar.catalog import parse_catalog

RULES = {
    "plans only": ({"if": [{"in": ["pro", {"var": "plans"}]}, "on", "off"]}, False),
    "account attribute": ({"if": [{"==": [{"var": "account.region"}, "eu"]}, "on", "off"]}, False),
    "bucketed by account": ({"fractional": [["on", 50], ["off", 50]]}, False),
    "the clock": ({"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "on", "off"]}, False),
    "context attribute": ({"if": [{"==": [{"var": "cohort"}, "beta"]}, "on", "off"]}, True),
    "nested context": ({"if": [{"==": [{"var": "user.role"}, "admin"]}, "on", "off"]}, True),
    "computed name": ({"if": [{"var": [{"cat": ["a", "b"]}]}, "on", "off"]}, True),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_reads_context(name: str) -> None:
    rule, expected = RULES[name]
    text = (
        "products:\n  - name: App\n    features:\n      - name: Gate\n        type: boolean\n"
        '        variants: {"on": true, "off": false}\n'
        f"        targeting: {json.dumps(rule)}\n"
    )
    feature = parse_catalog(text).features["gate"]
    assert feature.targeting is not None
    assert feature.targeting.reads_context is expected
