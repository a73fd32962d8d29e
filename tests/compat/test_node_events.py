"""The Node.js events example (`examples/node-events`): CloudEvents built by the official npm
`cloudevents` SDK, posted in structured mode to `POST /v1/events`, and the metered result read
back through the unmodified npm `@openfeature/flagd-provider` (design §16).

Like `test_node_client.py`, a missing `node` is a failure that says what to install.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.node import node_with_packages
from support.sidecar import ROOT, Stubs, in_process

EXAMPLE_DIR = ROOT / "examples" / "node-events"

pytestmark = pytest.mark.slow

CATALOG = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    dimensions: {model: $.model}
products:
  - name: Acme AI
    features:
      - {name: Tokens, type: metered, meter: llm-tokens}
      - {name: Premium tokens, type: metered, meter: {key: llm-tokens, where: {model: gpt-5}}}
    plans:
      - name: Pro
        entitlements: {tokens: 10000, premium-tokens: 5000}
"""


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_packages(EXAMPLE_DIR, "cloudevents")


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d: Path = tmp_path_factory.mktemp("node-events")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as running:
        with Stubs(f"127.0.0.1:{running.port}") as stubs:
            stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_node"), timeout=5)
            stubs.admin.CreateSubscription(
                pb.CreateSubscriptionRequest(account_id="acct_node", plan="pro"), timeout=5
            )
        yield running


def run_example(node: str, sidecar: Any, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [
            node, "events.js",
            "--events", f"http://127.0.0.1:{sidecar.ofrep_port}/v1/events",
            "--flagd", f"127.0.0.1:{sidecar.port}",
            "--source", "node-test",
            *args,
        ],
        cwd=EXAMPLE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr


def test_cloudevents_count_and_the_flagd_provider_reads_the_result(node: str, sidecar: Any) -> None:
    code, lines, stderr = run_example(
        node, sidecar,
        "send", "llm.completion", "acct_node", '{"tokens": 1200, "model": "gpt-5"}', "req-1",
        "send", "llm.completion", "acct_node", '{"tokens": 1200, "model": "gpt-5"}', "req-1",
        "send", "llm.completion", "acct_node", '{"tokens": 300, "model": "gpt-5-mini"}',
        "send", "signup.completed", "acct_node", '{"plan": "pro"}',
        "eval", "tokens", "acct_node",
        "eval", "premium-tokens", "acct_node",
    )  # fmt: skip
    assert code == 0, stderr
    first, again, mini, other, tokens, premium = lines
    assert first["status"] == "APPLIED" and first["id"] == "req-1"
    assert {f["feature"]: f["usage"] for f in first["features"]} == {
        "tokens": 1200,
        "premium-tokens": 1200,
    }
    assert again["status"] == "DUPLICATE"  # a retry with the same source and id
    assert mini["status"] == "APPLIED" and mini["id"]  # the SDK's own UUID
    assert other["status"] == "UNMATCHED"
    assert (tokens["value"], tokens["error"]) == (10000 - 1500, None)
    assert premium["value"] == 5000 - 1200


def test_a_rejected_event_sets_the_exit_status(node: str, sidecar: Any) -> None:
    code, lines, _ = run_example(
        node, sidecar, "send", "llm.completion", "acct_nobody", '{"tokens": 1}'
    )
    assert code == 1
    assert lines[0]["status"] == "REJECTED" and lines[0]["message"]
