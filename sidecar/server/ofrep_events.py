"""OFREP change events over SSE (OFREP ADR-0008, decision 1311).

The bulk evaluation names one event stream per (account, selector, context): its URL carries
the account, the selector and a hash of the context, no secret. The stream is an aiohttp
response on the event loop (an idle one costs no thread, design §2.1) that subscribes to the
account in the event hub — the same interest index the native `Watch` uses, so a write to
another account never touches it. When anything in that account's answers may have changed
(usage, an admin edit, a catalog, a time boundary) the stream recomputes the bulk answer's
ETag for the remembered context and, if it moved, sends

    id: <n>
    event: message
    data: {"type": "refetchEvaluation", "etag": "<the new ETag>", "lastModified": <unix s>}

at most once per `stream_coalesce_seconds` (the first change of a quiet stream at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode

from aiohttp import web

from ..runtime.live.events import EventHub
from ..store.errors import StoreUnavailable
from .http_listener import json_response

EVENTS_PATH = "/ofrep/v1/events"
INACTIVITY_DELAY = 120  # s: ADR-0008's default, said explicitly
KEEPALIVE = 15.0
"""s between comment lines on an idle stream (at least): enough for proxies' idle timeouts, and
a thousand idle streams cost about 70 writes a second, not 200."""
REMEMBERED = 10_000  # contexts whose ETag a stream can recompute; older ones send no etag
REMEMBERED_BYTES = 4096  # a larger request body is not remembered (its events carry no etag)

StreamKey = tuple[str, str, str]  # (account, selector, context hash)
Payload = Callable[[str, bytes, str], tuple[int, bytes, str]]
"""(origin, request body, selector) -> (status, the bulk response body, its ETag)."""


@dataclass(slots=True)
class _Query:
    origin: str
    body: bytes
    etag: str  # the ETag last served for it


def context_hash(context: object) -> str:
    """A short stable hash of an evaluation context (canonical JSON)."""
    text = json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class OfrepEvents:
    """The event-stream half of OFREP: the `eventStreams` entry and the SSE endpoint."""

    def __init__(self, hub: EventHub, payload: Payload, heartbeat: float) -> None:
        self._hub = hub
        self._payload = payload
        self._heartbeat = max(heartbeat, KEEPALIVE)
        self.coalesce = 1.0
        self._queries: OrderedDict[StreamKey, _Query] = OrderedDict()
        # working set (design §19): an account with an open stream stays held
        self.keep: Callable[[str], Awaitable[object]] | None = None
        self.release: Callable[[str], None] = lambda _account: None

    def stream_url(self, origin: str, account: str, selector: str, context: object) -> str:
        """The SSE URL for a bulk request (it names no secret: decision 1311)."""
        query = {"account": account, "context": context_hash(context)}
        if selector:
            query["selector"] = selector
        return f"{origin}{EVENTS_PATH}?{urlencode(query)}"

    def event_streams(self, url: str) -> list[dict[str, object]]:
        return [{"type": "sse", "url": url, "inactivityDelaySec": INACTIVITY_DELAY}]

    def remember(self, key: StreamKey, origin: str, body: bytes, etag: str) -> None:
        """Keep the request a stream's ETag is recomputed from (bounded, least recent out)."""
        if len(body) > REMEMBERED_BYTES:
            return
        self._queries[key] = _Query(origin, body, etag)
        self._queries.move_to_end(key)
        while len(self._queries) > REMEMBERED:
            self._queries.popitem(last=False)

    def _etag(self, key: StreamKey) -> str | None:
        """The bulk answer's ETag now, or None when the context is not remembered."""
        query = self._queries.get(key)
        if query is None:
            return None
        status, _, etag = self._payload(query.origin, query.body, key[1])
        if status != HTTPStatus.OK:
            return None
        query.etag = etag
        return query.etag

    async def handle(self, request: web.Request) -> web.StreamResponse:
        account = request.query.get("account", "")
        if not account:
            message = f"name the account: {EVENTS_PATH}?account=ID (the bulk answer's eventStreams)"
            body = json.dumps({"errorDetails": message}).encode()
            return json_response(HTTPStatus.BAD_REQUEST, body)
        key = (account, request.query.get("selector", ""), request.query.get("context", ""))
        if self.keep is not None:
            try:
                await self.keep(account)
            except StoreUnavailable as exc:
                body = json.dumps({"errorDetails": str(exc)[:1000]}).encode()
                return json_response(HTTPStatus.SERVICE_UNAVAILABLE, body)
        try:
            return await self._stream(request, account, key)
        finally:
            self.release(account)

    async def _stream(
        self, request: web.Request, account: str, key: StreamKey
    ) -> web.StreamResponse:
        subscriber = self._hub.subscribe(self._heartbeat, [account])
        if subscriber.ended:  # stopping: no "ready" a reconnecting client would believe
            body = json.dumps({"errorDetails": "the sidecar is shutting down"}).encode()
            return json_response(HTTPStatus.SERVICE_UNAVAILABLE, body)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            known = self._queries.get(key)
            served = known.etag if known is not None else None
            sent = 0
            await response.write(b": ready\n\n")
            # a change between the bulk answer and this connection is announced at once
            current = self._etag(key) if served is not None else None
            if current is not None and current != served:
                sent = await self._send(response, sent, current)
                served = current
            async for batch in subscriber:
                if batch is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                etag = self._etag(key)
                if etag is not None and etag == served:
                    continue  # nothing this context sees changed
                served = etag
                sent = await self._send(response, sent, etag)
                await asyncio.sleep(self.coalesce)  # at most one event per interval
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away (or the sidecar is stopping)
        finally:
            subscriber.close()
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, sent: int, etag: str | None) -> int:
        """Write one `refetchEvaluation` event; returns the count sent (the next `id`)."""
        data: dict[str, object] = {"type": "refetchEvaluation", "lastModified": int(time.time())}
        if etag is not None:
            data["etag"] = etag
        sent += 1
        line = json.dumps(data, separators=(",", ":"))
        await response.write(f"id: {sent}\nevent: message\ndata: {line}\n\n".encode())
        return sent
