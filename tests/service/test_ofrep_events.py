"""OFREP change events over SSE (OFREP ADR-0008, decision 1311), read by a plain
aiohttp SSE client: the bulk answer names the stream, and a usage report, an admin edit or a
catalog change to that account sends `refetchEvaluation` with the bulk answer's new ETag;
`If-None-Match` with that ETag answers 304, `flagConfigEtag` changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, copy_catalog, in_process

ACCOUNT = "acct_initech"
TIMEOUT = 20.0  # generous: the machine may be loaded; timing belongs in bench/streams.py


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ofrep-sse")


@pytest.fixture(scope="module")
def sidecar(tmp: Path) -> Iterator[Any]:
    with in_process(copy_catalog(tmp), tmp / "s.db", poll_seconds=0.2) as running:
        yield running


@pytest.fixture
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s


class Sse:
    """The events of one SSE response: `next()` is the next event's (id, event, JSON data)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self) -> tuple[str, str, dict[str, Any]]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(TIMEOUT):
            while True:
                raw = await self.response.content.readline()
                assert raw, "the stream ended"
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    return fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])


async def _bulk(
    session: aiohttp.ClientSession,
    base: str,
    query: str = "",
    etag: str = "",
    account: str = ACCOUNT,
) -> tuple[int, str, dict[str, Any]]:
    headers = {"If-None-Match": etag} if etag else {}
    body = {"context": {"targetingKey": account, "region": "eu"}}
    async with session.post(
        f"{base}/ofrep/v1/evaluate/flags{query}", json=body, headers=headers
    ) as response:
        body = await response.json() if response.status == 200 else {}
        return response.status, response.headers.get("ETag", ""), body


Opened = tuple[aiohttp.ClientSession, str, Sse, str]


@contextlib.asynccontextmanager
async def opened(sidecar: Any, account: str = ACCOUNT) -> AsyncIterator[Opened]:
    """A session, the OFREP base URL, the open SSE stream of the account's context, its bulk
    ETag."""
    base = f"http://127.0.0.1:{sidecar.ofrep_port}"
    async with aiohttp.ClientSession() as session:
        status, etag, body = await _bulk(session, base, account=account)
        assert status == 200 and etag
        (stream,) = body["eventStreams"]
        assert stream["type"] == "sse" and stream["inactivityDelaySec"] == 120
        assert f"account={account}" in stream["url"]
        async with session.get(stream["url"]) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            sse = Sse(response)
            first = await response.content.readline()
            assert first.startswith(b":")  # the stream is open (a comment)
            yield session, base, sse, etag


def _report(stubs: Stubs, account: str) -> None:
    report = pb.UsageReport(account_id=account, feature="ai-credits", amount=1)
    stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=10)


def run(
    sidecar: Any, body: Callable[[Opened], Coroutine[Any, Any, None]], account: str = ACCOUNT
) -> None:
    """Run `body` with a freshly opened stream of the account, on a loop of its own."""

    async def main() -> None:
        async with opened(sidecar, account) as o:
            await body(o)

    asyncio.run(main())


def test_usage_sends_refetch_with_the_new_etag_that_if_none_match_honours(
    sidecar: Any, stubs: Stubs
) -> None:
    run(sidecar, lambda o: _usage(o, stubs))


async def _usage(o: Opened, stubs: Stubs) -> None:
    session, base, sse, before = o
    await asyncio.to_thread(_report, stubs, "acct_initech")
    event_id, kind, data = await sse.next()
    assert kind == "message" and event_id
    assert data["type"] == "refetchEvaluation"
    assert isinstance(data["lastModified"], int)
    assert data["etag"] != before
    # the re-fetch the event asks for: flagConfigEtag only forces a fresh answer ...
    status, etag, _ = await _bulk(session, base, f"?flagConfigEtag={data['etag']}")
    assert (status, etag) == (200, data["etag"])
    # ... and If-None-Match with the event's ETag is a 304 while nothing changed since
    status, etag, _ = await _bulk(session, base, etag=data["etag"])
    assert (status, etag) == (304, data["etag"])
    status, _, _ = await _bulk(session, base, etag=before)
    assert status == 200


def test_an_admin_edit_sends_refetch_and_another_accounts_write_does_not(
    sidecar: Any, stubs: Stubs
) -> None:
    run(sidecar, lambda o: _admin(o, stubs))


async def _admin(o: Opened, stubs: Stubs) -> None:
    session, base, sse, _ = o
    await asyncio.to_thread(_report, stubs, "acct_acme")  # another account: nothing
    request = pb.CreateGrantRequest(
        account_id="acct_initech", feature="seats", value=struct_pb2.Value(number_value=7)
    )
    await asyncio.to_thread(stubs.admin.CreateGrant, request, timeout=10)
    _, _, data = await sse.next()
    _, current, _ = await _bulk(session, base)
    assert data["etag"] == current  # the edit's, so no event came for acct_acme before it


def test_a_catalog_change_sends_refetch(sidecar: Any, tmp: Path) -> None:
    run(sidecar, lambda o: _catalog(o, tmp))


async def _catalog(o: Opened, tmp: Path) -> None:
    session, base, sse, before = o
    catalog = tmp / "catalog.yaml"
    text = catalog.read_text()
    catalog.write_text(text.replace("default: community", "default: email", 1))
    try:
        _, _, data = await sse.next()
        assert data["etag"] != before
        _, current, _ = await _bulk(session, base)
        assert data["etag"] == current
    finally:
        catalog.write_text(text)


def test_the_stream_needs_an_account(sidecar: Any) -> None:
    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/events") as response,
        ):
            assert response.status == 400
            assert "account" in (await response.json())["errorDetails"]

    asyncio.run(main())


def test_a_time_boundary_sends_refetch(sidecar: Any, stubs: Stubs) -> None:
    """A grant that ends while the stream is open: one event for the edit, one at its end."""
    run(sidecar, lambda o: _boundary(o, stubs))


async def _boundary(o: Opened, stubs: Stubs) -> None:
    session, base, sse, _ = o
    ends = Timestamp()
    ends.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    request = pb.CreateGrantRequest(
        account_id="acct_initech",
        feature="seats",
        value=struct_pb2.Value(number_value=40),
        ends_at=ends,
    )
    await asyncio.to_thread(stubs.admin.CreateGrant, request, timeout=10)
    _, _, granted = await sse.next()
    _, _, ended = await sse.next()  # nothing else changes this account meanwhile
    assert ended["etag"] != granted["etag"]
    _, current, body = await _bulk(session, base)
    assert ended["etag"] == current
    seats = next(f for f in body["flags"] if f["key"] == "seats")
    assert seats["value"] != 40


def test_an_expiring_override_sends_refetch(sidecar: Any, stubs: Stubs) -> None:
    """An override that expires while the stream is open (decision 1311: a time boundary)."""
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_overridden"), timeout=10)
    run(sidecar, lambda o: _override(o, stubs), "acct_overridden")


async def _override(o: Opened, stubs: Stubs) -> None:
    session, base, sse, _ = o
    expires = Timestamp()
    expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    request = pb.SetOverrideRequest(
        account_id="acct_overridden",
        feature="support-tier",
        value=struct_pb2.Value(string_value="priority"),
        expires_at=expires,
    )
    await asyncio.to_thread(stubs.admin.SetOverride, request, timeout=10)
    _, _, overridden = await sse.next()
    _, _, expired = await sse.next()  # nothing else changes this account meanwhile
    assert expired["etag"] != overridden["etag"]
    _, current, body = await _bulk(session, base, account="acct_overridden")
    assert expired["etag"] == current
    tier = next(f for f in body["flags"] if f["key"] == "support-tier")
    assert tier["value"] != "priority"


def test_a_trial_ending_sends_refetch(sidecar: Any, stubs: Stubs) -> None:
    """A trial that ends (and is cancelled) while the stream is open: the plan's features go."""
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_trying"), timeout=10)
    run(sidecar, lambda o: _trial(o, stubs), "acct_trying")


async def _trial(o: Opened, stubs: Stubs) -> None:
    session, base, sse, _ = o
    ends = Timestamp()
    ends.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    request = pb.CreateSubscriptionRequest(
        account_id="acct_trying",
        plan="enterprise",
        trial_ends_at=ends,
        trial_then="cancel",
        id="initech-enterprise-trial",
    )
    await asyncio.to_thread(stubs.admin.CreateSubscription, request, timeout=10)
    _, _, trial = await sse.next()
    _, current, body = await _bulk(session, base, account="acct_trying")
    theme = next(f for f in body["flags"] if f["key"] == "theme")
    assert theme["metadata"].get("trial") is True  # enterprise's, while the trial runs
    _, _, ended = await sse.next()
    assert ended["etag"] != trial["etag"]
    _, current, body = await _bulk(session, base, account="acct_trying")
    assert ended["etag"] == current
    theme = next(f for f in body["flags"] if f["key"] == "theme")
    assert "trial" not in theme["metadata"]
