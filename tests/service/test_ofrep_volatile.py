"""A volatile feature (targeting reads `$flagd.timestamp`) over OFREP (decision
2010): it is answered in the bulk with metadata `volatile: true`, but it is outside the bulk
ETag, so its flipping with the clock neither moves the ETag (a 304 still answers) nor makes a
change event of the account send `refetchEvaluation` when nothing else changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, copy_catalog, in_process
from test_ofrep_events import Sse

TIMEOUT = 20.0  # generous: the machine may be loaded
ACCOUNT = "acct_clock"  # not in the catalog, so the admin API may change it

# flips every second: "on" at even Unix seconds, "off" at odd ones
CLOCK_FLIP = """\
      - name: Clock flip
        type: flag
        variants: {"on": true, "off": false}
        targeting:
          if:
            - {"==": [{"%": [{"var": "$flagd.timestamp"}, 2]}, 0]}
            - "on"
            - "off"
"""
ANCHOR = "      # A credit pool (design §5.1)"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("ofrep-volatile")
    catalog = copy_catalog(tmp)
    text = catalog.read_text()
    assert ANCHOR in text
    catalog.write_text(text.replace(ANCHOR, CLOCK_FLIP + ANCHOR, 1))
    with in_process(catalog, tmp / "s.db") as running:
        yield running


async def _bulk(
    session: aiohttp.ClientSession, base: str, etag: str = ""
) -> tuple[int, str, dict[str, Any]]:
    headers = {"If-None-Match": etag} if etag else {}
    body = {"context": {"targetingKey": ACCOUNT}}
    async with session.post(f"{base}/ofrep/v1/evaluate/flags", json=body, headers=headers) as r:
        return r.status, r.headers.get("ETag", ""), (await r.json() if r.status == 200 else {})


def _flip(body: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in body["flags"] if f["key"] == "clock-flip")


async def _until_flipped(session: aiohttp.ClientSession, base: str, seen: bool) -> str:
    """Poll the bulk answer until the clock flag's value differs from `seen`; its ETag."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status, etag, body = await _bulk(session, base)
        assert status == 200
        if _flip(body)["value"] != seen:
            return etag
        await asyncio.sleep(0.2)
    raise AssertionError("the clock flag never flipped")


def test_the_clock_flag_is_marked_and_leaves_the_etag_alone(sidecar: Any) -> None:
    async def main() -> None:
        base = f"http://127.0.0.1:{sidecar.ofrep_port}"
        async with aiohttp.ClientSession() as session:
            status, etag, body = await _bulk(session, base)
            assert status == 200
            flip = _flip(body)
            assert flip["metadata"]["volatile"] is True
            assert "volatile" not in next(f for f in body["flags"] if f["key"] == "sso")["metadata"]
            assert await _until_flipped(session, base, flip["value"]) == etag
            status, again, _ = await _bulk(session, base, etag)
            assert (status, again) == (304, etag)

    asyncio.run(main())


def test_the_clock_flag_alone_sends_no_refetch(sidecar: Any) -> None:
    """An account change that changes no stable answer, after the clock flag flipped, sends
    nothing: the first event is the later real change's, naming its ETag."""
    with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=ACCOUNT, name="Clock"), timeout=10)
        asyncio.run(_no_refetch(sidecar, stubs))


async def _no_refetch(sidecar: Any, stubs: Stubs) -> None:
    base = f"http://127.0.0.1:{sidecar.ofrep_port}"
    async with aiohttp.ClientSession() as session:
        status, _, body = await _bulk(session, base)
        assert status == 200
        (stream,) = body["eventStreams"]
        async with session.get(stream["url"]) as response:
            assert response.status == 200
            sse = Sse(response)
            assert (await response.content.readline()).startswith(b":")
            await _until_flipped(session, base, _flip(body)["value"])
            # an event for the account that changes none of its stable answers
            same = pb.UpsertAccountRequest(id=ACCOUNT, name="Clock")
            await asyncio.to_thread(stubs.admin.UpsertAccount, same, timeout=10)
            await asyncio.sleep(1.5)  # past the coalescing interval (1 s) of such an event
            seats = pb.CreateGrantRequest(
                account_id=ACCOUNT, feature="seats", value=struct_pb2.Value(number_value=9)
            )
            await asyncio.to_thread(stubs.admin.CreateGrant, seats, timeout=10)
            _, _, data = await sse.next()
            _, current, _ = await _bulk(session, base)
            assert data["etag"] == current
