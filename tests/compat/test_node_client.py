"""The Node.js example client (`examples/node-client`, @grpc/grpc-js) against a real sidecar.

Design §9 says the non-Python client runs in CI, so a missing `node` is a failure that says
what to install, not a skip. `npm ci` installs the locked dependencies when they are missing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from support.node import node_with_packages
from support.sidecar import ROOT, copy_catalog, in_process

CLIENT_DIR = ROOT / "examples" / "node-client"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_packages(CLIENT_DIR, "@grpc/grpc-js")


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("node-client")
    with in_process(copy_catalog(tmp / "catalog"), tmp / "state.db") as running:
        yield running


def run_client(node: str, sidecar: Any, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [node, "client.js", "--target", f"127.0.0.1:{sidecar.port}", *args],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr


def test_evaluate_report_and_evaluate_all(node: str, sidecar: Any) -> None:
    code, lines, stderr = run_client(
        node, sidecar, "--account", "acct_initech",
        "evaluate", "sso",
        "evaluate", "execution-concurrency",
        "evaluate", "api-calls",
        "report", "api-calls", "7",
        "evaluate", "api-calls",
        "all",
    )  # fmt: skip
    assert code == 0, stderr
    assert [line["op"] for line in lines] == ["evaluate"] * 3 + ["report", "evaluate", "all"]
    sso, concurrency, before, report, after, everything = lines
    assert (sso["value"], sso["reason"], sso["as_boolean"]) == (False, "DEFAULT", False)
    assert concurrency["value"] == concurrency["as_integer"] == 1
    assert concurrency["variant"] == "free"
    assert before["metering"]["limit"] == 1000 and before["metering"]["used"] == 0
    assert before["as_integer"] == 1000 and before["as_boolean"] is True
    assert (report["status"], report["usage"]) == ("applied", 7)
    assert after["metering"]["used"] == 7 and after["as_integer"] == 993
    assert after["metadata"]["remaining"] == 993
    assert everything["catalog_version"] == sidecar.state.catalog.version
    assert set(everything["features"]) == set(sidecar.state.catalog.features)
    assert everything["features"]["execution-concurrency"] == 1
    assert everything["features"]["support-tier"] == "community"


def test_values_differ_by_plan(node: str, sidecar: Any) -> None:
    code, lines, stderr = run_client(
        node, sidecar, "--account", "acct_globex", "evaluate", "integrations", "evaluate", "theme"
    )
    assert code == 0, stderr
    integrations, theme = lines
    assert integrations["value"] == ["slack", "github", "jira"]
    assert integrations["as_object"] == ["slack", "github", "jira"]
    assert theme["value"] == {"accent": "custom", "logo": True}
    code, lines, stderr = run_client(
        node, sidecar, "--account", "acct_acme", "--requested", "600000", "evaluate", "api-calls"
    )
    assert code == 0, stderr
    assert lines[0]["has_access"] is False and lines[0]["denial"] == "requested_exceeds_limit"


def test_failures_are_reported_and_set_the_exit_status(node: str, sidecar: Any) -> None:
    code, lines, _ = run_client(
        node, sidecar, "--account", "acct_acme", "evaluate", "no-such-feature", "report", "sso", "1"
    )
    assert code == 1
    missing, rejected = lines
    assert missing["error_code"] == "FLAG_NOT_FOUND"
    assert rejected["status"] == "rejected" and rejected["message"]
