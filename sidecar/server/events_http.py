"""`POST /v1/events` on the OFREP port (design §16): CloudEvents in structured JSON mode.

One event (`application/cloudevents+json`) or a batch (`application/cloudevents-batch+json`),
the shape OpenMeter's ingest API takes, answered 200 with one result per event in order —
the same JSON for one event and for a batch, the same results `Usage.Ingest` gives. Only a
body that cannot be read as the declared shape is 400, another `Content-Type` 415; with
`--token-file`, a missing or wrong bearer token is 401, as Report's token check is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ..engine.events import event_from_json
from ..runtime.serve.decisions import Decisions
from ..runtime.serve.events import IngestResult
from .auth import WRONG, Tokens, name_of
from .auth_guard import Failures
from .http_listener import json_response

INGEST_PATH = "/v1/events"
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_EVENTS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ingest_handler(
    decisions: Decisions, writer: Executor, tokens: Tokens, failures: Failures
) -> Handler:
    """The `POST /v1/events` handler; `tokens` empty means no token is required."""

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = _refusal(request, tokens, failures)
        if refused is not None:
            return _error(
                HTTPStatus.UNAUTHORIZED, refused, {"WWW-Authenticate": 'Bearer realm="plangate"'}
            )
        kind = request.content_type
        if kind not in (SINGLE, BATCH):
            return _error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be {SINGLE} (one event) or {BATCH} (an array), got {kind!r}",
            )
        try:
            body = json.loads(await request.read(), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return _error(HTTPStatus.BAD_REQUEST, "the body is not JSON")
        if kind == SINGLE and not isinstance(body, dict):
            return _error(HTTPStatus.BAD_REQUEST, f"{SINGLE} is one event: a JSON object")
        if kind == BATCH and not isinstance(body, list):
            return _error(HTTPStatus.BAD_REQUEST, f"{BATCH} is a JSON array of events")
        raw = [body] if kind == SINGLE else body
        if not 0 < len(raw) <= MAX_EVENTS:
            return _error(HTTPStatus.BAD_REQUEST, f"send 1..{MAX_EVENTS} events per request")
        events = [event_from_json(e) for e in raw]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(writer, decisions.ingest, events)
        answer = {"results": [_result(r) for r in results]}
        return json_response(HTTPStatus.OK, json.dumps(answer, separators=(",", ":")).encode())

    return handle


def _refusal(request: web.Request, tokens: Tokens, failures: Failures) -> str | None:
    if not tokens:
        return None
    sent = request.headers.get("Authorization", "")
    if not sent:
        return "missing token: send the header 'Authorization: Bearer <token>' (see --token-file)"
    address = request.remote or ""
    if failures.blocked_for(address) > 0:
        return f"too many wrong tokens from {address}; try again later"
    if name_of(sent, tokens) is None:
        failures.failed(address)
        return WRONG
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _result(r: IngestResult) -> dict[str, Any]:
    return {
        "status": r.status.value,
        "features": [{"feature": f, "usage": u} for f, u in r.features],
        "message": r.message,
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, json.dumps({"errorDetails": message}).encode(), headers)
