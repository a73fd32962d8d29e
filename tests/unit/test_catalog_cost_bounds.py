"""Every catalog input has a cost bound, checked while it is read (issue 22 items 6 and 8;
docs/operating.md "Input bounds"): `$ref` expansion, the nodes of one rule, `fractional`
buckets, values written in the file, one value's size, and a file that is no catalog at all
(a path symlinked to a secret) quotes nothing of itself.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from plangate.sidecar.catalog import CatalogError, load_catalog, parse_catalog, source
from plangate.sidecar.catalog.source import MAX_VALUE_BYTES, Stopped, parse_value
from plangate.sidecar.catalog.targeting import (
    MAX_FRACTIONAL_BUCKETS,
    MAX_REF_NODES,
    MAX_RULE_NODES,
)

FEATURE = """\
products:
  - name: P
    features:
      - name: Beta
        type: flag
        variants: {"yes": true, "no": false}
        targeting: %s
"""


def ref_bomb(levels: int) -> str:
    """Evaluators naming the previous one twice: a kilobyte that doubles per level."""
    lines = ["evaluators:", "  e0: {'==': [{var: account.region}, eu]}"]
    lines += [
        f"  e{i}: {{and: [{{$ref: e{i - 1}}}, {{$ref: e{i - 1}}}]}}" for i in range(1, levels + 1)
    ]
    return "\n".join(lines) + "\n" + FEATURE % f"{{if: [{{$ref: e{levels}}}, 'yes', 'no']}}"


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "c.yaml")
    return [str(p) for p in info.value.problems]


def test_a_ref_bomb_is_refused_at_load_with_its_line() -> None:
    text = ref_bomb(16)  # 2^16 copies of e0 once resolved
    assert len(text) < 2_000
    found = problems(text)
    assert any(f"more than {MAX_RULE_NODES} nodes once its $refs are resolved" in p for p in found)
    # the feature's own rule is named at its line, not only the evaluators
    assert any(p.startswith("c.yaml:25 products[0].features[0].targeting:") for p in found), found


def test_refs_add_at_most_max_ref_nodes_to_the_whole_catalog() -> None:
    """Each feature's rule is small, but 60 features each copying a 2,000-node evaluator
    would add 120,000 nodes."""
    size = 11  # e11 resolves to 2^11 - 1 operations of e0 (each a few nodes)
    features = "\n".join(
        f'      - name: F{i}\n        type: flag\n        variants: {{"yes": true, "no": false}}\n'
        f"        targeting: {{if: [{{$ref: e{size - 2}}}, 'yes', 'no']}}"
        for i in range(MAX_REF_NODES // 1_000)
    )
    lines = ["evaluators:", "  e0: {'==': [{var: account.region}, eu]}"]
    lines += [f"  e{i}: {{and: [{{$ref: e{i - 1}}}, {{$ref: e{i - 1}}}]}}" for i in range(1, size)]
    text = "\n".join(lines) + "\nproducts:\n  - name: P\n    features:\n" + features + "\n"
    found = problems(text)
    assert any(f"$ref evaluators add more than {MAX_REF_NODES} nodes" in p for p in found), found


def test_a_fractional_with_too_many_buckets_is_refused() -> None:
    buckets = ", ".join('["yes", 1]' for _ in range(MAX_FRACTIONAL_BUCKETS + 1))
    found = problems(FEATURE % f"{{fractional: [{{var: account.id}}, {buckets}]}}")
    assert found == [
        f"c.yaml:7 products[0].features[0].targeting.fractional: fractional has "
        f"{MAX_FRACTIONAL_BUCKETS + 1} buckets; at most {MAX_FRACTIONAL_BUCKETS} are allowed "
        "(each evaluation scans them): give a variant a larger weight instead of repeating it"
    ]
    # the largest allowed one loads
    ok = ", ".join('["yes", 1]' for _ in range(MAX_FRACTIONAL_BUCKETS))
    parse_catalog(FEATURE % f"{{fractional: [{{var: account.id}}, {ok}]}}")


def test_values_written_in_the_file_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "MAX_NODES", 1_000)
    text = "products: [{name: P, features: [{name: F, type: object, default: {x: [%s]}}]}]\n"
    parse_catalog(text % ", ".join(["1"] * 900))
    found = problems(text % ", ".join(["1"] * 1_000))
    assert found == [
        "c.yaml:1 (document): not valid YAML/JSON: more than 1000 values "
        "(mappings, lists and scalars)"
    ]


def test_a_value_larger_than_the_bound_is_refused_without_being_quoted() -> None:
    big = {"blob": "x" * MAX_VALUE_BYTES}
    text = "products: [{name: P, features: [{name: F, type: object, default: %s}]}]\n"
    found = problems(text % json.dumps(big))
    assert len(found) == 1
    assert f"a value may have at most {MAX_VALUE_BYTES}" in found[0]
    assert "xxxx" not in found[0]


@pytest.mark.parametrize(
    "secret",
    [
        "password: hunter2\napi_key: sk_live_abcdef\n",
        '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}',
        "sk_live_abcdef: 1\nghp_token: 2\n",
    ],
)
def test_a_file_that_is_no_catalog_quotes_nothing_of_itself(tmp_path: Path, secret: str) -> None:
    """A catalog path symlinked to a secret: the problem reaches /readyz, the console and
    the log, so it names neither its keys nor its values."""
    target = tmp_path / "secret"
    target.write_text(secret)
    link = tmp_path / "catalog.yaml"
    link.symlink_to(target)
    with pytest.raises(CatalogError) as info:
        load_catalog(link)
    (problem,) = info.value.problems
    assert problem.path == "(document)"
    assert problem.message.startswith("not a PlanGate catalog")
    for word in ("password", "hunter2", "sk_live", "private_key", "service_account", "ghp_"):
        assert word not in str(info.value)


def test_a_load_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    text = "products:\n" + "".join(f"  - name: P{i}\n" for i in range(5_000))
    with pytest.raises(Stopped):
        parse_catalog(text, "c.yaml", stop)


def test_a_console_value_is_read_with_the_catalog_bounds() -> None:
    assert parse_value("{limit: 10, soft: true}") == {"limit": 10, "soft": True}
    assert parse_value("[slack, github]") == ["slack", "github"]
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 10)}]\n" for a, b in zip("abc", "bcd", strict=True)
    )
    assert len(bomb) < 304  # the form: 304 bytes that stored a 26 MB override
    with pytest.raises(ValueError, match="aliases expand"):
        parse_value(bomb)
    with pytest.raises(ValueError, match="bytes is more than a value may have"):
        parse_value("x" * (MAX_VALUE_BYTES + 1))
