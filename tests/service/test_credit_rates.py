"""Credit rates by dimension (design §16) through a real sidecar: an event, a report and a
Consume on `model: gpt-5` draw units × rate(gpt-5) from the pool, unlisted models `per_unit`;
evaluation prices `remaining` at the context's rate, and explain shows the rate used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, in_process

CATALOG = """\
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
        credits: {pool: ai-credits, per_unit: 1, by: model, rates: {gpt-5: 10, gpt-5-mini: 2}}
    plans:
      - name: Pro
        entitlements: {ai-credits: 100000, completions: unlimited}
"""


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    d = tmp_path_factory.mktemp("rates")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        yield s


def account(stubs: Stubs, account_id: str) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="pro"), timeout=5
    )
    return account_id


def pool_used(stubs: Stubs, account_id: str) -> float:
    r = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account_id, feature="ai-credits"), timeout=5
    )
    return float(r.metadata.fields["used"].number_value)


def event(id: str, subject: str, tokens: int, model: str) -> pb.Event:
    data = struct_pb2.Struct()
    data.update({"tokens": tokens, "model": model})
    return pb.Event(
        specversion="1.0", id=id, source="t", type="llm.completion", subject=subject, data=data
    )


def test_events_draw_at_their_models_rate(stubs: Stubs) -> None:
    a = account(stubs, "acct_events")
    results = stubs.usage.Ingest(
        pb.IngestRequest(events=[event("1", a, 100, "gpt-5"), event("2", a, 100, "gpt-5-mini")]),
        timeout=10,
    ).results
    assert [r.status for r in results] == ["APPLIED", "APPLIED"]
    assert pool_used(stubs, a) == 100 * 10 + 100 * 2
    stubs.usage.Ingest(pb.IngestRequest(events=[event("3", a, 100, "llama")]), timeout=10)
    assert pool_used(stubs, a) == 1200 + 100 * 1  # unlisted: per_unit


def test_reports_and_consume_take_the_value_from_dimensions(stubs: Stubs) -> None:
    a = account(stubs, "acct_reports")
    stubs.usage.Report(
        pb.ReportRequest(
            reports=[
                pb.UsageReport(
                    account_id=a, feature="completions", amount=5, dimensions={"model": "gpt-5"}
                ),
                pb.UsageReport(account_id=a, feature="completions", amount=5),
            ]
        ),
        timeout=10,
    )
    assert pool_used(stubs, a) == 50 + 5
    done = stubs.usage.Consume(
        pb.ConsumeRequest(
            account_id=a, feature="completions", amount=3, dimensions={"model": "gpt-5-mini"}
        ),
        timeout=10,
    )
    assert done.granted and pool_used(stubs, a) == 55 + 6


def test_evaluation_prices_remaining_at_the_context_rate_and_explain_shows_it(
    stubs: Stubs,
) -> None:
    a = account(stubs, "acct_eval")

    def evaluate(model: str | None, explain: bool = False) -> pb.Resolution:
        context = struct_pb2.Struct()
        if model is not None:
            context.update({"model": model})
        return stubs.evaluation.Evaluate(
            pb.EvaluateRequest(
                account_id=a,
                feature="completions",
                context=context,
                type=pb.VALUE_TYPE_INTEGER,
                explain=explain,
            ),
            timeout=5,
        )

    assert evaluate("gpt-5").as_integer == 10000
    assert evaluate("gpt-5-mini").as_integer == 50000
    assert evaluate(None).as_integer == 100000
    assert evaluate(None).context_dependent  # a cache keeps it for its context alone
    trail: dict[str, Any] = json.loads(evaluate("gpt-5", explain=True).explain)
    assert trail["credit_rate"] == {
        "by": "model",
        "value": "gpt-5",
        "per_unit": 10,
        "listed": True,
    }
