"""CORS on the OFREP port (decision 2011), as a browser would exercise it, read with aiohttp:
the preflight of an allowed origin is answered with the methods and headers OFREP requests
use, another origin's is refused; answers (the SSE stream too) name the allowed origin and
expose `ETag`, and carry nothing for another origin. The real browser check is
tests/browser/test_ofrep_web_provider.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from plangate.sidecar.server.cors import allowed_origins
from support.sidecar import copy_catalog, in_process

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
BODY = {"context": {"targetingKey": "acct_initech"}}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("ofrep-cors")
    with in_process(copy_catalog(tmp), tmp / "s.db", ofrep_cors_origins=f"{APP}/, http://x:1") as s:
        yield s


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, if-none-match",
    }


def test_preflights_and_answers_name_only_allowed_origins(sidecar: Any) -> None:
    async def main() -> None:
        base = f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1"
        async with aiohttp.ClientSession() as session:
            async with session.options(f"{base}/evaluate/flags", headers=_preflight(APP)) as r:
                assert r.status == 204
                assert "POST" in r.headers["Access-Control-Allow-Methods"]
                allowed = r.headers["Access-Control-Allow-Headers"].lower()
                assert "content-type" in allowed and "if-none-match" in allowed
                assert r.headers["Access-Control-Allow-Origin"] == APP
            async with session.options(f"{base}/evaluate/flags", headers=_preflight(OTHER)) as r:
                assert r.status == 403
                assert "ofrep-cors-origins" in (await r.json())["errorDetails"]
                assert "Access-Control-Allow-Origin" not in r.headers

            async with session.post(
                f"{base}/evaluate/flags", json=BODY, headers={"Origin": APP}
            ) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == APP
                assert r.headers["Access-Control-Expose-Headers"] == "ETag"
                assert "Origin" in r.headers.getall("Vary")
                url = (await r.json())["eventStreams"][0]["url"]
            async with session.post(
                f"{base}/evaluate/flags/sso", json=BODY, headers={"Origin": OTHER}
            ) as r:
                assert r.status == 200
                assert "Access-Control-Allow-Origin" not in r.headers
            async with session.get(url, headers={"Origin": APP}) as r:
                assert r.status == 200
                assert r.headers["Access-Control-Allow-Origin"] == APP
                assert (await r.content.readline()).startswith(b":")

    asyncio.run(main())


def test_origins_are_checked_when_read() -> None:
    assert allowed_origins("") == frozenset()
    assert allowed_origins(" * ") == {"*"}
    assert allowed_origins("HTTPS://App.Example.com/, http://127.0.0.1:8080") == {
        "https://app.example.com",
        "http://127.0.0.1:8080",
    }
    for bad in ("app.example.com", "https://app.example.com/path", "ftp://x"):
        with pytest.raises(ValueError, match="not an origin"):
            allowed_origins(bad)
