"""flagd's evaluator conformance suite, read in place (never copied into the project).

`open-feature/flagd-testbed` ships gherkin scenarios (`evaluator/gherkin/*.feature`) and the
flag file they run against (`evaluator/flags/testkit-flags.json`). This module finds the
suite, turns the flag file into a PlanGate catalog, and reads every scenario into plain data
(flag, type, caller's default, context, expectations), with a parser for the small part of
gherkin the suite uses: tags, Feature, Background, Scenario, Scenario Outline with tagged
Examples tables, and steps with data tables. It imports neither plangate nor the flagd
provider (whose proto symbols clash with PlanGate's): the provider's check script uses it too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openfeature.flag_evaluation import FlagEvaluationDetails

ROOT = Path(__file__).resolve().parents[2]
ENV = "PLANGATE_FLAGD_TESTBED"


WORKPLACE = Path("/work/shared/flagd-testbed")
"""Where this workplace keeps the suite, for a clone that does not sit beside `shared/`."""


def find_testbed() -> Path | None:
    """The suite's folder: `$PLANGATE_FLAGD_TESTBED`, else `../shared/flagd-testbed` beside the
    repository, else the workplace's copy; None if none holds it."""
    configured = os.environ.get(ENV)
    candidates = [Path(configured)] if configured else []
    candidates += [ROOT.parent / "shared" / "flagd-testbed", WORKPLACE]
    for folder in candidates:
        if (folder / "evaluator" / "flags" / "testkit-flags.json").is_file():
            return folder
    return None


def testbed() -> Path:
    """The suite's folder. Absent, the conformance test fails (it must not pass by running
    nothing)."""
    folder = find_testbed()
    if folder is None:
        raise AssertionError(
            f"flagd's evaluator suite is not at {ROOT.parent / 'shared' / 'flagd-testbed'} nor "
            f"{WORKPLACE}: it belongs in ../shared/flagd-testbed beside the repository "
            f"(open-feature/flagd-testbed, evaluator/), or set {ENV} to its folder"
        )
    return folder


# -- the flag file as a catalog ---------------------------------------------------------------

PRODUCT = "testkit"
REFUSED_AT_LOAD = {
    # decision 2004: unknown `$ref`s are load errors, where flagd answers PARSE_ERROR
    "ref-to-nonexistent-evaluator-flag": "its targeting has a $ref to an unknown evaluator",
}


def _feature_type(variants: dict[str, Any]) -> str:
    values = list(variants.values())
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, dict) for v in values):
        return "object"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    raise ValueError(f"variants of mixed types: {values!r}")


def feature_of(key: str, flag: dict[str, Any]) -> dict[str, Any]:
    """One flagd flag as a catalog feature, as docs/catalog.md "Moving a flagd flag file"
    says: the key as an exact `slug`, `state: DISABLED` as `disabled`, `defaultVariant` as
    `default_variant`, the rest unchanged."""
    out: dict[str, Any] = {
        "name": key,
        "slug": key,
        "type": _feature_type(flag["variants"]),
        "variants": flag["variants"],
    }
    if flag.get("state") == "DISABLED":
        out["disabled"] = True
    if "defaultVariant" in flag:
        out["default_variant"] = flag["defaultVariant"]
    for word in ("targeting", "metadata"):
        if word in flag:
            out[word] = flag[word]
    return out


def catalog_of(flags: dict[str, Any], leave_out: set[str] | None = None) -> str:
    """The flag file as catalog text (JSON is YAML): one product, a feature per flag."""
    features = [
        feature_of(key, flag)
        for key, flag in flags["flags"].items()
        if key not in (leave_out or set())
    ]
    catalog = {
        "evaluators": flags.get("$evaluators", {}),
        "products": [{"name": PRODUCT, "features": features}],
    }
    return json.dumps(catalog, indent=1)


def flag_file() -> dict[str, Any]:
    text = (testbed() / "evaluator" / "flags" / "testkit-flags.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


# -- what a provider answered -------------------------------------------------------------------

GETTER = {
    "Boolean": "get_boolean_details",
    "String": "get_string_details",
    "Integer": "get_integer_details",
    "Float": "get_float_details",
    "Object": "get_object_details",
}


def observed(result: FlagEvaluationDetails[Any]) -> dict[str, Any]:
    """What a scenario compares: value, reason, variant, error code and flag metadata."""
    return {
        "value": result.value,
        "reason": str(result.reason) if result.reason else None,
        "variant": result.variant,
        "error_code": result.error_code.value if result.error_code else None,
        "metadata": dict(result.flag_metadata),
    }


# -- the scenarios ----------------------------------------------------------------------------


@dataclass
class Scenario:
    """One scenario (an Outline's example row counts as one)."""

    file: str
    name: str
    tags: frozenset[str]
    flag: str = ""
    type: str = ""  # Boolean, String, Integer, Float, Object
    default: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    has_value: bool = False
    reason: str | None = None
    variant: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] | None = None  # "should contain"
    metadata_empty: bool = False

    @property
    def id(self) -> str:
        return f"{self.file}: {self.name}"

    def request(self) -> dict[str, Any]:
        """What a provider check evaluates: JSON-shaped."""
        return {
            "id": self.id,
            "flag": self.flag,
            "type": self.type,
            "default": self.default,
            "context": self.context,
        }


def typed(kind: str, text: str) -> Any:
    """A value written in a step, read as gherkin's type names say."""
    if kind == "Boolean":
        return text == "true"
    if kind == "Integer":
        return int(text)
    if kind == "Float":
        return float(text)
    if kind == "Object":
        return json.loads(text.replace('\\"', '"'))
    return text


_STEPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'^a (\w+)-flag with key "(.*)" and a fallback value "(.*)"$'), "flag"),
    (re.compile(r'^a context containing a key "(.*)", with type "(\w+)" and with value "(.*)"$'), "key"),
    (re.compile(r'^a context containing a nested property with outer key "(.*)" and inner key "(.*)", with value "(.*)"$'), "nested"),
    (re.compile(r'^a context containing a targeting key with value "(.*)"$'), "targeting"),
    (re.compile(r'^the resolved details value should be "(.*)"$'), "value"),
    (re.compile(r'^the reason should be "(.*)"$'), "reason"),
    (re.compile(r'^the variant should be "(.*)"$'), "variant"),
    (re.compile(r'^the error-code should be "(.*)"$'), "error"),
    (re.compile(r"^the resolved metadata should contain$"), "metadata"),
    (re.compile(r"^the resolved metadata is empty$"), "empty"),
    (re.compile(r"^an evaluator$"), "none"),
    (re.compile(r"^the flag was evaluated with details$"), "none"),
]  # fmt: skip


def _apply(s: Scenario, text: str, table: list[dict[str, str]]) -> None:
    for pattern, what in _STEPS:
        m = pattern.match(text)
        if m is None:
            continue
        g = m.groups()
        if what == "flag":
            s.type, s.flag, s.default = g[0], g[1], typed(g[0], g[2])
        elif what == "key":
            s.context[g[0]] = typed(g[1], g[2])
        elif what == "nested":
            s.context.setdefault(g[0], {})[g[1]] = g[2]
        elif what == "targeting":
            s.context["targetingKey"] = g[0]
        elif what == "value":
            s.value, s.has_value = typed(s.type, g[0]), True
        elif what == "reason":
            s.reason = g[0]
        elif what == "variant":
            s.variant = g[0]
        elif what == "error":
            s.error_code = g[0]
        elif what == "metadata":
            s.metadata = {r["key"]: typed(r["metadata_type"], r["value"]) for r in table}
        elif what == "empty":
            s.metadata_empty = True
        return
    raise AssertionError(f"{s.id}: a step this reader does not know: {text!r}")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@dataclass
class _Block:
    """A Scenario or Scenario Outline as written: its steps and example tables."""

    name: str
    tags: frozenset[str]
    steps: list[tuple[str, list[list[str]]]] = field(default_factory=list)
    examples: list[tuple[str, frozenset[str], list[list[str]]]] = field(default_factory=list)


def parse_feature(path: Path) -> list[Scenario]:
    """Every scenario of one `.feature` file, outlines expanded row by row."""
    feature_tags: frozenset[str] = frozenset()
    background: list[tuple[str, list[list[str]]]] = []
    blocks: list[_Block] = []
    pending: set[str] = set()
    target: list[tuple[str, list[list[str]]]] | None = None
    table: list[list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            pending.update(line.split())
            continue
        if line.startswith("|"):
            assert table is not None, f"{path}: a table outside a step or Examples: {line}"
            table.append(_cells(line))
            continue
        keyword, _, rest = line.partition(":")
        if keyword == "Feature":
            feature_tags, pending = frozenset(pending), set()
        elif keyword == "Background":
            target = background
        elif keyword in ("Scenario", "Scenario Outline"):
            blocks.append(_Block(rest.strip(), feature_tags | pending))
            pending, target = set(), blocks[-1].steps
        elif keyword == "Examples":
            table = []
            blocks[-1].examples.append((rest.strip(), frozenset(pending), table))
            pending = set()
        else:
            word, _, text = line.partition(" ")
            assert word in ("Given", "When", "Then", "And", "But"), f"{path}: {line!r}"
            assert target is not None, f"{path}: a step outside a scenario: {line!r}"
            table = []
            target.append((text, table))
    out: list[Scenario] = []
    for block in blocks:
        steps = background + block.steps
        if not block.examples:
            out.append(_scenario(path.name, block.name, block.tags, steps, {}))
            continue
        for title, tags, rows in block.examples:
            header = rows[0]
            for row in rows[1:]:
                values = dict(zip(header, row, strict=True))
                name = f"{block.name} [{', '.join(f'{k}={v}' for k, v in values.items())}]"
                name += f" ({title})" if title else ""  # v1 and v2 tables repeat rows
                out.append(_scenario(path.name, name, block.tags | tags, steps, values))
    return out


def _scenario(
    file: str,
    name: str,
    tags: frozenset[str],
    steps: list[tuple[str, list[list[str]]]],
    values: dict[str, str],
) -> Scenario:
    def fill(text: str) -> str:
        return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], text)

    s = Scenario(file, name, tags)
    for text, rows in steps:
        table = [dict(zip(rows[0], (fill(c) for c in r), strict=True)) for r in rows[1:]]
        _apply(s, fill(text), table)
    return s


def scenarios() -> list[Scenario]:
    """Every scenario of every `evaluator/gherkin/*.feature`, in file order."""
    folder = testbed() / "evaluator" / "gherkin"
    files = sorted(folder.glob("*.feature"))
    assert files, f"no *.feature files in {folder}"
    return [s for f in files for s in parse_feature(f)]
