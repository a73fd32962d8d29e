"""Events (design §16) through a real sidecar: `Usage.Ingest` over gRPC and `POST /v1/events`
over HTTP count each event toward every feature whose meter reads it, answer event by event
(APPLIED / DUPLICATE / UNMATCHED / REJECTED), remember `(source, id)` durably, and let a
rejected event change nothing and fail no other event of its batch."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, SubprocessSidecar, in_process

CATALOG = """\
meters:
  - key: llm-tokens
    event_type: llm.completion
    value: $.tokens
    unique: $.user
    dimensions: {model: $.model}
  - key: calls
    event_type: api.call
products:
  - name: Acme AI
    features:
      - {name: Tokens, type: metered, meter: llm-tokens}
      - {name: Premium tokens, type: metered, meter: {key: llm-tokens, where: {model: gpt-5}}}
      - {name: Users, type: metered, aggregation: unique, meter: llm-tokens}
      - {name: AI credits, type: credits}
      - name: Completions
        type: metered
        meter: llm-tokens
        credits: {pool: ai-credits, per_unit: 2}
      - {name: API calls, type: metered, meter: calls}
    plans:
      - name: Pro
        entitlements:
          tokens: 100000
          premium-tokens: 50000
          users: 100
          ai-credits: 1000000
          completions: unlimited
          api-calls: 1000
"""
SOURCE = "test-suite"
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("events")
    (d / "catalog.yaml").write_text(CATALOG)
    with in_process(d / "catalog.yaml", d / "state.db") as sc:
        yield sc


def account(stubs: Stubs, account_id: str) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="pro"), timeout=5
    )
    return account_id


def event(
    id: str, subject: str, data: dict[str, Any] | None = None, type: str = "llm.completion"
) -> pb.Event:
    out = pb.Event(specversion="1.0", id=id, source=SOURCE, type=type, subject=subject)
    if data is not None:
        s = struct_pb2.Struct()
        s.update(data)
        out.data.CopyFrom(s)
    return out


def ingest(stubs: Stubs, *events: pb.Event) -> list[pb.IngestResult]:
    response = stubs.usage.Ingest(pb.IngestRequest(events=list(events)), timeout=10)
    return list(response.results)


def used(stubs: Stubs, account_id: str, feature: str) -> float:
    r = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )
    return float(r.metadata.fields["used"].number_value)


def counted(result: pb.IngestResult) -> dict[str, float]:
    return {f.feature: f.usage for f in result.features}


def test_one_event_counts_toward_every_matching_feature(stubs: Stubs) -> None:
    a = account(stubs, "acct_one")
    (result,) = ingest(stubs, event("e1", a, {"tokens": 1200, "user": "ann", "model": "gpt-5"}))
    assert result.status == "APPLIED", result.message
    assert counted(result) == {
        "tokens": 1200,
        "premium-tokens": 1200,
        "users": 1,
        "completions": 1200,
    }
    assert used(stubs, a, "tokens") == 1200
    assert used(stubs, a, "ai-credits") == 2400  # credit pricing applies as for a report
    (other,) = ingest(stubs, event("e2", a, {"tokens": 10, "user": "bob", "model": "gpt-4"}))
    assert counted(other) == {"tokens": 1210, "users": 2, "completions": 1210}  # `where`
    assert used(stubs, a, "premium-tokens") == 1200


def test_a_resent_event_is_a_duplicate_with_the_first_result(stubs: Stubs) -> None:
    a = account(stubs, "acct_dup")
    payload = {"tokens": 7, "user": "ann", "model": "x"}
    (first,) = ingest(stubs, event("same", a, payload))
    ingest(stubs, event("later", a, {"tokens": 3, "user": "ann", "model": "x"}))
    again, twice = ingest(stubs, event("same", a, payload), event("same", a, payload))
    assert first.status == "APPLIED"
    assert again.status == twice.status == "DUPLICATE"
    assert counted(again) == counted(first) == {"tokens": 7, "users": 1, "completions": 7}
    assert used(stubs, a, "tokens") == 10
    # the same id from another source is another event
    other = event("same", a, payload)
    other.source = "elsewhere"
    (third,) = ingest(stubs, other)
    assert third.status == "APPLIED" and used(stubs, a, "tokens") == 17


def test_a_batch_is_answered_event_by_event(stubs: Stubs) -> None:
    a = account(stubs, "acct_batch")
    good = {"tokens": 5, "user": "u", "model": "m"}
    no_subject = event("b3", "", good)
    no_time = event("b7", a, good)
    no_time.time.FromJsonString("2001-01-01T00:00:00Z")
    results = ingest(
        stubs,
        event("b1", a, good),
        event("b2", a, good, type="nobody.reads.this"),
        no_subject,
        event("b4", "acct_nobody", good),
        event("b5", a, {"user": "u", "model": "m"}),  # the value path is missing
        event("b6", a, {"tokens": "5", "user": "u"}),  # a numeric string is not a number
        no_time,  # older than the keys are kept
        event("b8", a, {"tokens": 1, "model": "m"}),  # the unique path is missing
        event("b9", a, good, type="api.call"),  # no value path: counts 1
    )
    statuses = [r.status for r in results]
    assert statuses == [
        "APPLIED",
        "UNMATCHED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "APPLIED",
    ], [(r.status, r.message) for r in results]
    assert "subject" in results[2].message
    assert "acct_nobody" in results[3].message
    assert "$.tokens" in results[4].message and "$.tokens" in results[5].message
    assert "7 days" in results[6].message
    assert "users" in results[7].message
    assert counted(results[8]) == {"api-calls": 1}
    # a rejected event changed nothing; the valid ones counted once
    assert used(stubs, a, "tokens") == 5 and used(stubs, a, "users") == 1
    # a corrected resend of a rejected event counts (only APPLIED events are remembered)
    (fixed,) = ingest(stubs, event("b5", a, good))
    assert fixed.status == "APPLIED" and used(stubs, a, "tokens") == 10


def test_an_empty_request_is_invalid(stubs: Stubs) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as caught:
        stubs.usage.Ingest(pb.IngestRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def post(
    port: int, body: bytes, content_type: str, token: str = ""
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def cloudevent(id: str, subject: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": "llm.completion",
        "subject": subject,
        "time": "2026-01-01T00:00:00Z",
        "data": data,
    }


def test_http_single_and_batch(sidecar: Any, stubs: Stubs) -> None:
    a = account(stubs, "acct_http")
    port = sidecar.ofrep_port
    one = cloudevent("h1", a, tokens=4, user="ann", model="gpt-5")
    one.pop("time")
    status, body, _ = post(port, json.dumps(one).encode(), SINGLE)
    assert status == 200
    assert body["results"] == [
        {
            "status": "APPLIED",
            "features": [
                {"feature": "tokens", "usage": 4},
                {"feature": "premium-tokens", "usage": 4},
                {"feature": "users", "usage": 1},
                {"feature": "completions", "usage": 4},
            ],
            "message": "",
        }
    ]
    batch: list[Any] = [
        one,
        {**cloudevent("h2", a, tokens=6, user="bob", model="m"), "time": "2099-01-01T00:00:00Z"},
        {**cloudevent("h3", a, user="bob"), "data_base64": "AAAA"},
        {**cloudevent("h4", a), "data": [1, 2]},
        {**cloudevent("h5", a), "time": "yesterday"},
        "not an event",
        {**cloudevent("h6", a, tokens=6, user="bob", model="m")},
    ]
    batch[-1].pop("time")
    status, body, _ = post(port, json.dumps(batch).encode(), BATCH + "; charset=utf-8")
    assert status == 200
    got = [(r["status"], r["message"]) for r in body["results"]]
    assert [s for s, _ in got] == [
        "DUPLICATE",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "REJECTED",
        "APPLIED",
    ], got
    assert "ahead" in got[1][1] and "data_base64" in got[2][1]
    assert "data" in got[3][1] and "time" in got[4][1] and "object" in got[5][1]
    assert used(stubs, a, "tokens") == 10


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{}", "application/json", 415),
        (b"[]", SINGLE, 400),  # an array sent as one event
        (b"{}", BATCH, 400),  # an object sent as a batch
        (b"{nope", SINGLE, 400),
        (b"[]", BATCH, 400),  # no event
    ],
)
def test_http_refuses_bodies_it_cannot_read(
    sidecar: Any, body: bytes, content_type: str, status: int
) -> None:
    got, answer, _ = post(sidecar.ofrep_port, body, content_type)
    assert got == status and answer["errorDetails"]


def test_http_with_a_token_file_needs_the_bearer_token(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    token = "t" * 32
    (tmp_path / "tokens").write_text(token + "\n")
    with in_process(
        tmp_path / "catalog.yaml", tmp_path / "state.db", token_file=str(tmp_path / "tokens")
    ) as sc:
        body = json.dumps(cloudevent("t1", "acct_x", tokens=1, user="u")).encode()
        for sent in ("", "wrong" * 8):
            status, answer, headers = post(sc.ofrep_port, body, SINGLE, sent)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in answer["errorDetails"]
        status, answer, _ = post(sc.ofrep_port, body, SINGLE, token)
        assert status == 200 and answer["results"][0]["status"] == "REJECTED"  # unknown account


def test_an_acknowledged_event_survives_sigkill_and_counts_once(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    with SubprocessSidecar(tmp_path / "catalog.yaml", tmp_path / "state.db") as sc:
        with Stubs(sc.target) as s:
            a = account(s, "acct_kill")
            batch = [event(f"k{i}", a, {"tokens": 2, "user": f"u{i}"}) for i in range(50)]
            assert {r.status for r in ingest(s, *batch)} == {"APPLIED"}
        sc.kill()
        sc.restart()
        with Stubs(sc.target) as s:
            assert used(s, a, "tokens") == 100 and used(s, a, "users") == 50
            assert {r.status for r in ingest(s, *batch)} == {"DUPLICATE"}
            assert used(s, a, "tokens") == 100


def test_cli_events_send_prints_each_line_and_fails_on_a_rejection(
    sidecar: Any, stubs: Stubs, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    file = tmp_path / "events.jsonl"
    a = account(stubs, "acct_cli")
    command = [sys.executable, "-m", "plangate.sidecar.cli.main", "events", "send", str(file)]
    target = ["--target", f"127.0.0.1:{sidecar.port}"]
    good = cloudevent("c1", a, tokens=3, user="ann", model="gpt-5")
    good.pop("time")

    def send(*lines: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        file.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
        return subprocess.run(
            [*command, *target],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean,
        )

    run = send(good, {**good, "id": "c2", "type": "nobody.reads"})
    assert run.returncode == 0, run.stderr
    assert "APPLIED" in run.stdout and "tokens=3" in run.stdout and "UNMATCHED" in run.stdout
    run = send(good, {**good, "id": "c3", "subject": ""})
    assert run.returncode == 1 and "1 of 2 events rejected" in run.stderr
    assert "DUPLICATE" in run.stderr and "subject is required" in run.stderr
    file.write_text("{nope\n")
    bad = subprocess.run(
        [*command, *target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and f"{file}:1: not JSON" in bad.stderr
    assert used(stubs, a, "tokens") == 3
