"""flagd's own evaluator conformance suite, through the unmodified flagd provider and through
`PlanGateProvider` (issue 24; decisions 2000-2008).

The suite (`open-feature/flagd-testbed`, `evaluator/`) is read in place from
`../shared/flagd-testbed` beside the repository (or `$PLANGATE_FLAGD_TESTBED`); its absence
fails the test. Its `testkit-flags.json` becomes a catalog at test time, a sidecar serves it
as a separate process, and every scenario of every `*.feature` runs through both providers.
Each answer must be what the scenario says flagd answers — value, reason, variant, error code,
metadata — and both providers must agree with each other, except for the documented
differences listed below with their reasons. Nothing is skipped silently: scenarios written
for flagd-core 1.x's fractional algorithm are listed too, with the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from plangate.sidecar.catalog import CatalogError, parse_catalog
from support.flagd_testbed import (
    GETTER,
    REFUSED_AT_LOAD,
    Scenario,
    catalog_of,
    find_testbed,
    flag_file,
    observed,
    scenarios,
)
from support.flagd_testbed import testbed as suite_folder
from support.provider import provider
from support.sidecar import ROOT, SubprocessSidecar

CHECK = ROOT / "tests" / "support" / "flagd_testbed_check.py"
DOCS = ROOT / "docs" / "clients.md"

pytestmark = pytest.mark.slow

# Scenarios written for a fractional algorithm older than flagd-core 2.x, which PlanGate
# runs. flagd-core 2.x hashes the CBOR encoding of the bucketing value; @fractional-v1
# (float bucketing of the hash of the value's text) and @fractional-v2 ((hash * total
# weight) >> 32 of the same text hash) name buckets computed from the text's bytes. So do
# two @fractional-nested outlines, whose comments give those bucket values ("jon@company.com
# bv(100)=36", the text hash of "jon@company.com"). They still run through both providers,
# which must agree with each other; the suite's expected value is not asserted for them.
LEGACY_TAGS = {"@fractional-v1", "@fractional-v2"}
LEGACY_OUTLINES = {
    "Fractional operator with nested if expression as variant name",
    "Fractional operator with nested var expression as variant name",
    "Fractional operator with nested if expression as weight",
}
LEGACY_REASON = "bucket values of the pre-CBOR fractional hash (flagd-core < 2.x)"
# The Python flagd provider's RPC resolver (openfeature-provider-flagd 0.6.1) returns no flag
# metadata at all, so metadata is checked through PlanGateProvider only.
FLAGD_PROVIDER_DROPS_METADATA = True

# Documented differences (docs/catalog.md "Moving a flagd flag file"; decisions 2004, 2006):
NEVER_STATIC = "PlanGate never answers STATIC (decision 0015): DEFAULT instead"
PLANGATE_METADATA = "PlanGate always sends its own flag metadata keys (decision 2006)"
REFUSED = "refused at load (decision 2004): flagd answers PARSE_ERROR at evaluation"

# The flag metadata keys PlanGate sends for a plain flagd flag (no catalog `metadata`).
OWN_METADATA = {"has_access", "denial", "unlimited", "flagSetId", "flagSetVersion", "source"}

# Without the suite nothing is collected from it, and the test below fails saying where it
# was looked for (a collection error would stop the whole run).
ALL = scenarios() if find_testbed() is not None else []


def test_the_suite_is_there() -> None:
    assert (suite_folder() / "evaluator" / "gherkin").is_dir()


def _legacy(s: Scenario) -> bool:
    return bool(LEGACY_TAGS & s.tags) or s.name.split(" [")[0] in LEGACY_OUTLINES


def _refused(s: Scenario) -> bool:
    return s.flag in REFUSED_AT_LOAD


RUN = [s for s in ALL if not _refused(s)]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every scenario's answer from each provider: {"flagd": {id: ...}, "plangate": {...}}."""
    tmp = tmp_path_factory.mktemp("flagd-testbed")
    folder = tmp / "catalog"
    folder.mkdir()
    catalog = folder / "catalog.json"
    catalog.write_text(catalog_of(flag_file(), set(REFUSED_AT_LOAD)))
    requests = tmp / "requests.json"
    requests.write_text(json.dumps([s.request() for s in RUN]))
    with SubprocessSidecar(catalog, tmp / "state.db") as sidecar:
        proc = subprocess.run(
            [sys.executable, str(CHECK), "--port", str(sidecar.port), "--requests", str(requests)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert proc.returncode == 0, f"{proc.stderr}\n--- sidecar log ---\n{''.join(sidecar.log)}"
        flagd: dict[str, Any] = json.loads(proc.stdout)
        plangate: dict[str, Any] = {}
        with provider(sidecar.target):
            client = api.get_client()
            for s in RUN:
                context = dict(s.context)
                ctx = EvaluationContext(context.pop("targetingKey", None), context)
                getter = getattr(client, GETTER[s.type])
                plangate[s.id] = observed(getter(s.flag, s.default, ctx))
    return {"flagd": flagd, "plangate": plangate}


def problems(
    s: Scenario, got: dict[str, Any], metadata: bool = True, exempt: bool = True
) -> list[str]:
    """How `got` differs from what the scenario says flagd answers (documented differences
    applied); `metadata` False: the provider does not return flag metadata; `exempt` False:
    a LEGACY scenario is compared too (for the table)."""
    out: list[str] = []
    if exempt and _legacy(s):
        return out  # LEGACY_REASON
    if s.has_value and not _same(got["value"], s.value):
        out.append(f"value {got['value']!r}, expected {s.value!r}")
    if s.reason is not None:
        expected = "DEFAULT" if s.reason == "STATIC" else s.reason
        if got["reason"] != expected:
            why = f" ({NEVER_STATIC})" if s.reason == "STATIC" else ""
            out.append(f"reason {got['reason']!r}, expected {expected!r}{why}")
    if s.variant is not None and got["variant"] != s.variant:
        out.append(f"variant {got['variant']!r}, expected {s.variant!r}")
    if s.error_code is not None and got["error_code"] != s.error_code:
        out.append(f"error code {got['error_code']!r}, expected {s.error_code!r}")
    if s.error_code is None and got["error_code"] is not None:
        out.append(f"error code {got['error_code']!r}, expected none")
    if not metadata:
        return out
    if s.metadata is not None:
        missing = {k: v for k, v in s.metadata.items() if not _same(got["metadata"].get(k), v)}
        if missing:
            out.append(f"metadata {got['metadata']!r} lacks {missing!r}")
    if s.metadata_empty and set(got["metadata"]) - OWN_METADATA:  # PLANGATE_METADATA
        out.append(
            f"metadata {got['metadata']!r} has keys besides PlanGate's own: {PLANGATE_METADATA}"
        )
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return float(a) == float(b) and not isinstance(b, bool)
    return bool(a == b and type(a) is type(b)) or (isinstance(a, dict) and a == b)


@pytest.mark.parametrize("scenario", RUN, ids=[s.id for s in RUN])
def test_every_scenario_answers_as_flagd_through_both_providers(
    answers: dict[str, dict[str, Any]], scenario: Scenario
) -> None:
    flagd, plangate = answers["flagd"][scenario.id], answers["plangate"][scenario.id]
    found = problems(scenario, flagd, metadata=not FLAGD_PROVIDER_DROPS_METADATA)
    assert not found, ("flagd provider", found, flagd)
    assert not problems(scenario, plangate), ("PlanGateProvider", problems(scenario, plangate))
    for word in ("value", "reason", "variant", "error_code"):
        assert _same(flagd[word], plangate[word]) or flagd[word] == plangate[word], (
            word,
            flagd,
            plangate,
        )


def test_an_unknown_ref_is_refused_at_load_with_its_line_and_path() -> None:
    """REFUSED: the flags left out of the served catalog fail to load, each naming its $ref."""
    for key, why in REFUSED_AT_LOAD.items():
        assert any(s.flag == key for s in ALL), f"{key} is no longer in the suite"
        with pytest.raises(CatalogError) as info:
            parse_catalog(catalog_of(flag_file()), "testkit.json")
        (problem,) = [p for p in info.value.problems if "$ref" in p.path]
        assert "unknown evaluator 'nonexistent_evaluator'" in problem.message, why


def test_the_legacy_list_names_only_fractional_scenarios_of_the_suite() -> None:
    """LEGACY_OUTLINES names outlines that exist, all in fractional.feature, and no scenario
    outside it is exempt."""
    names = {s.name.split(" [")[0] for s in ALL}
    assert names >= LEGACY_OUTLINES, LEGACY_OUTLINES - names
    assert {s.file for s in ALL if _legacy(s)} == {"fractional.feature"}, LEGACY_REASON


def test_the_flagd_provider_really_drops_metadata(answers: dict[str, dict[str, Any]]) -> None:
    """FLAGD_PROVIDER_DROPS_METADATA stays true only while it is: once the provider returns
    metadata, the scenarios check it through it too."""
    seen = [a["metadata"] for a in answers["flagd"].values()]
    assert any(seen) != FLAGD_PROVIDER_DROPS_METADATA


def _outcome(s: Scenario, plangate: dict[str, Any]) -> str:
    if _refused(s) or s.reason == "STATIC" or s.metadata_empty:
        return "differs"
    if _legacy(s) and problems(s, plangate[s.id], exempt=False):
        return "legacy"
    return "agree"


def results_table(plangate: dict[str, Any]) -> str:
    """The docs/clients.md table: per file, its scenarios and how each is accounted for."""
    rows = [
        "| file | scenarios | agree | documented difference | older fractional hash |",
        "|---|---|---|---|---|",
    ]
    total: Counter[str] = Counter()
    for file in sorted({s.file for s in ALL}):
        mine = [s for s in ALL if s.file == file]
        counts = Counter(_outcome(s, plangate) for s in mine)
        counts["all"] = len(mine)
        total.update(counts)
        rows.append(
            f"| `{file}` | {counts['all']} | {counts['agree']} | {counts['differs']} "
            f"| {counts['legacy']} |"
        )
    rows.append(
        f"| **all** | {total['all']} | {total['agree']} | {total['differs']} | {total['legacy']} |"
    )
    return "\n".join(rows)


def test_docs_show_the_results_table(answers: dict[str, dict[str, Any]]) -> None:
    table = results_table(answers["plangate"])
    found = re.search(r"\| file \| scenarios \|.*?(?=\n\n)", DOCS.read_text(), re.S)
    assert found is not None, "docs/clients.md lacks the flagd-testbed results table:\n" + table
    assert found.group(0) == table, "update docs/clients.md's table:\n" + table


def test_every_scenario_has_its_own_id() -> None:
    assert len(ALL) == len({s.id for s in ALL}), "two scenarios with one id"
    assert RUN, "nothing to run"
