"""Events in shared mode (design §10, §16): two sidecars on one PostgreSQL count the same
events once, each event's features in one transaction, whichever sidecar gets it first."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, in_process, wait_for

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
      - {name: AI credits, type: credits}
      - name: Completions
        type: metered
        meter: llm-tokens
        credits: {pool: ai-credits, per_unit: 1, by: model, rates: {gpt-5: 3}}
    plans:
      - name: Pro
        entitlements: {tokens: unlimited, ai-credits: unlimited, completions: unlimited}
"""


@pytest.fixture
def pair(postgres_cluster: Any, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    environment = f"events-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sidecars = [
            stack.enter_context(
                in_process(
                    tmp_path / "catalog.yaml", postgres_cluster.url(), environment=environment
                )
            )
            for _ in range(2)
        ]
        for sc in sidecars:
            wait_for(lambda sc=sc: sc.feed.connected, timeout=10)
        yield sidecars[0], sidecars[1]


def used(stubs: Stubs, account: str, feature: str) -> float:
    r = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account, feature=feature), timeout=5
    )
    return float(r.metering.used)


def test_two_sidecars_count_the_same_events_once(pair: tuple[Any, Any]) -> None:
    a, b = pair
    account = "acct_shared"
    with Stubs(f"127.0.0.1:{a.port}") as sa, Stubs(f"127.0.0.1:{b.port}") as sb:
        sa.admin.UpsertAccount(pb.UpsertAccountRequest(id=account), timeout=5)
        sa.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=account, plan="pro"), timeout=5
        )
        wait_for(lambda: account in b.state.snapshot.accounts, timeout=10)
        events = []
        for i in range(200):
            data = struct_pb2.Struct()
            data.update({"tokens": 2, "model": "gpt-5"})
            events.append(
                pb.Event(
                    specversion="1.0",
                    id=f"e{i}",
                    source="shared",
                    type="llm.completion",
                    subject=account,
                    data=data,
                )
            )
        statuses: list[str] = []
        errors: list[BaseException] = []

        def send(sidecar: Any, batch: list[pb.Event]) -> None:
            try:
                with Stubs(f"127.0.0.1:{sidecar.port}") as s:
                    for i in range(0, len(batch), 20):
                        reply = s.usage.Ingest(
                            pb.IngestRequest(events=batch[i : i + 20]), timeout=30
                        )
                        statuses.extend(r.status for r in reply.results)
            except BaseException as exc:
                errors.append(exc)

        # every event goes to both sidecars at once, from two clients each
        threads = [
            threading.Thread(target=send, args=(sidecar, order))
            for sidecar in (a, b)
            for order in (events, events[::-1])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert statuses.count("APPLIED") == 200, statuses.count("APPLIED")
        assert statuses.count("DUPLICATE") == 600
        for s in (sa, sb):
            wait_for(lambda s=s: used(s, account, "tokens") == 400, timeout=10)
            assert used(s, account, "completions") == 400
            assert used(s, account, "ai-credits") == 1200  # 400 tokens x rate(gpt-5) once
