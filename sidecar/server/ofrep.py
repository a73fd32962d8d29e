"""OFREP, the OpenFeature Remote Evaluation Protocol, over HTTP (design §2: port 8016).

`POST /ofrep/v1/evaluate/flags/{key}` evaluates one feature and `POST /ofrep/v1/evaluate/flags`
every feature, for the account named by `context.targetingKey`. The JSON shapes and status
codes are the protocol's, so the unmodified OFREP providers (any language) work against a
sidecar without knowing anything about PlanGate.

OFREP requests carry no type: the provider type-checks the JSON value it receives. So each
feature answers with its *natural* value (`natural_value`): booleans and flags a boolean,
integers an integer (`infinite` when unlimited), strings a string, lists a JSON array,
objects an object, and metered features a boolean, `has_access`, because "may this account
use it now?" is what a feature-flag call on a metered feature asks (design §8). The limit,
usage and remaining amount of a metered feature travel in the flag metadata, which OFREP
carries as scalars exactly like PlanGate's own metadata.

Served by aiohttp on the sidecar's event loop (design §2.1): an idle keep-alive connection
costs no thread, and evaluations are in-memory reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ..catalog.model import Feature, FeatureType, thaw
from ..engine import Decision, ErrorCode, EvaluationError, Kind, metadata, resolve_as
from ..engine.request import split_targeting
from ..runtime.live.events import EventHub
from ..runtime.serve.decisions import Decisions
from ..store.errors import StoreUnavailable
from .cors import Cors
from .errors import bounded
from .events_http import INGEST_PATH, Handler
from .http_listener import json_response, serving_errors
from .metrics import Metrics
from .ofrep_events import EVENTS_PATH, OfrepEvents, context_hash
from .selector import flag_set

PREFIX = "/ofrep/v1/evaluate/flags"
MAX_BODY = 1 << 20  # an evaluation context is a few hundred bytes; refuse anything silly

_NATURAL: dict[FeatureType, Kind] = {
    FeatureType.BOOLEAN: Kind.BOOLEAN,
    FeatureType.FLAG: Kind.BOOLEAN,
    FeatureType.INTEGER: Kind.INTEGER,
    FeatureType.FLOAT: Kind.FLOAT,
    FeatureType.STRING: Kind.STRING,
    FeatureType.LIST: Kind.OBJECT,
    FeatureType.OBJECT: Kind.OBJECT,
    FeatureType.METERED: Kind.BOOLEAN,
    FeatureType.CREDITS: Kind.BOOLEAN,
    FeatureType.RATE: Kind.BOOLEAN,
}


def natural_value(decision: Decision, feature: Feature) -> tuple[Kind, Any]:
    """The value a protocol without a requested type reports, and its OpenFeature type.

    Goes through `resolve_as`, so it is always one of the cells of the design §4 table
    (metered: `has_access`; a list: the list itself).
    """
    kind = _NATURAL[feature.type]
    return kind, thaw(resolve_as(decision, feature, kind))


def split_context(body: bytes) -> tuple[str, dict[str, Any]]:
    """The targeting key (the account) and the other context attributes of a request body.

    An empty body is an empty context, so it lacks the targeting key; anything that is not a
    JSON object with an object `context` is refused with the matching error code.
    """
    if not body.strip():
        return "", {}
    try:
        data = json.loads(body)
    except RecursionError as exc:  # deeper than the parser goes: too deep for any rule too
        raise EvaluationError(
            ErrorCode.INVALID_CONTEXT,
            "the request body is nested too deeply; send a flatter context",
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(ErrorCode.PARSE_ERROR, f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EvaluationError(
            ErrorCode.PARSE_ERROR, 'request body must be a JSON object such as {"context": {...}}'
        )
    context = data.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise EvaluationError(
            ErrorCode.INVALID_CONTEXT,
            '"context" must be a JSON object, e.g. {"targetingKey": "acct_42"}',
        )
    return split_targeting(context)


def _success(decision: Decision, feature: Feature, by_slug: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"key": feature.slug if by_slug else feature.key}
    if not decision.caller_default:  # decision 2000 / ADR-0006: no `value` = the code default
        out["value"] = natural_value(decision, feature)[1]
    meta = metadata(decision)
    if feature.volatile:  # decision 2010: outside the ETag, so evaluate it singly
        meta["volatile"] = True
    out.update(reason=decision.reason.value, variant=decision.variant, metadata=meta)
    return out


def _failure(key: str, error: EvaluationError) -> dict[str, Any]:
    return {"key": key, "errorCode": error.code.value, "errorDetails": bounded(error.message)}


def etag_of(body: bytes) -> str:
    """A strong ETag from the response body itself.

    Content-based, so it changes exactly when the client would see a difference: a new
    catalog, an account change or new usage, and never collides across accounts. The bulk
    answer's is taken over the answer less its volatile flags (decision 2010).
    """
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of (possibly weak) tags, or `*`."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Bulk:
    """A bulk answer: its status and JSON, and the keys of its volatile flags (decision 2010:
    left out of the ETag, so a clock-driven answer neither moves it nor sends an event)."""

    status: int
    data: dict[str, Any]
    volatile: frozenset[str] = field(default=frozenset())

    def stable(self) -> dict[str, Any]:
        """The answer less its volatile flags: what the ETag is computed from."""
        if not self.volatile:
            return self.data
        flags = [f for f in self.data["flags"] if f["key"] not in self.volatile]
        return {**self.data, "flags": flags}


class Ofrep:
    """The protocol logic, apart from HTTP plumbing: request bytes in, (status, JSON) out."""

    def __init__(self, decisions: Decisions, metrics: Metrics) -> None:
        self.decisions = decisions
        self.metrics = metrics

    def single(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            account, context = split_context(body)
            found = self.decisions.evaluate(account, key, context)
            result = _success(found.decision, found.feature)
        except EvaluationError as exc:
            self.metrics.evaluation_errors.labels("ofrep", exc.code.value).inc()
            status = HTTPStatus.NOT_FOUND if exc.code is ErrorCode.FLAG_NOT_FOUND else 400
            return status, _failure(key, exc)
        self.metrics.evaluations.labels("ofrep", found.decision.reason.value).inc()
        return HTTPStatus.OK, result

    def bulk(self, body: bytes, selector: str | None = None) -> Bulk:
        try:
            account, context = split_context(body)
            product = flag_set(selector)  # decision 2007: a product's features, by slug
            found = self.decisions.evaluate_all(account, context, product)
        except EvaluationError as exc:
            self.metrics.evaluation_errors.labels("ofrep", exc.code.value).inc()
            return Bulk(
                HTTPStatus.BAD_REQUEST,
                {"errorCode": exc.code.value, "errorDetails": bounded(exc.message)},
            )
        flags: list[dict[str, Any]] = []
        volatile: set[str] = set()
        for key, result in found.results.items():
            if isinstance(result, EvaluationError):
                flags.append(_failure(key.rsplit("/", 1)[-1] if product else key, result))
            else:
                flags.append(_success(result.decision, result.feature, product is not None))
                if result.feature.volatile:
                    volatile.add(flags[-1]["key"])
        self.metrics.evaluations.labels("ofrep_bulk", "TARGETING_MATCH").inc(len(flags))
        return Bulk(HTTPStatus.OK, {"flags": flags}, frozenset(volatile))


def ofrep_app(
    decisions: Decisions,
    metrics: Metrics,
    hub: EventHub,
    heartbeat: float,
    coalesce: float,
    cors_origins: frozenset[str] = frozenset(),
    ingest: Handler | None = None,
) -> web.Application:
    """OFREP over HTTP/1.1 (keep-alive, as the providers use a session), with its SSE change
    stream (`ofrep_events.py`). `flagConfigEtag` / `flagConfigLastModified` on a re-fetch are
    accepted and change nothing: every answer is evaluated afresh, and 304 comes only from
    `If-None-Match` (decision 1311). Browser pages of `cors_origins` may call it (decision
    2011). `ingest`: the app-facing `POST /v1/events` (design §16), served on this port too."""
    ofrep = Ofrep(decisions, metrics)

    def payload(origin: str, body: bytes, selector: str) -> tuple[int, bytes, str]:
        """The bulk answer's status, body and ETag (empty unless 200): `eventStreams`
        included, so the ETag covers it; volatile flags left out of it (decision 2010)."""
        found = ofrep.bulk(body, selector or None)
        if found.status != HTTPStatus.OK:
            return found.status, _dump(found.data), ""
        account, context = split_context(body)
        url = events.stream_url(origin, account, selector, context)
        found.data["eventStreams"] = events.event_streams(url)
        return found.status, _dump(found.data), etag_of(_dump(found.stable()))

    events = OfrepEvents(hub, payload, heartbeat)
    events.coalesce = coalesce
    _keep_streamed(events, decisions)

    async def bulk(request: web.Request) -> web.StreamResponse:
        body = await _held_body(request, decisions)
        if isinstance(body, web.StreamResponse):
            return body
        origin, selector = f"{request.scheme}://{request.host}", _selector(request)
        status, payload_bytes, etag = payload(origin, body, selector)
        if status != HTTPStatus.OK:
            return _send(status, payload_bytes)
        account, context = split_context(body)
        events.remember((account, selector, context_hash(context)), origin, body, etag)
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=HTTPStatus.NOT_MODIFIED, headers={"ETag": etag})
        return _send(status, payload_bytes, {"ETag": etag})

    async def single(request: web.Request) -> web.StreamResponse:
        body = await _held_body(request, decisions)
        if isinstance(body, web.StreamResponse):
            return body
        status, data = ofrep.single(request.match_info["key"], body)
        return _send(status, _dump(data))

    async def get(request: web.Request) -> web.StreamResponse:
        message = f"OFREP evaluation takes POST with a JSON body, not GET ({request.path})"
        body = _dump({"errorDetails": message})
        return _send(HTTPStatus.METHOD_NOT_ALLOWED, body, {"Allow": "POST"})

    async def not_found(request: web.Request) -> web.StreamResponse:
        message = f"no such endpoint {request.path}: use POST {PREFIX}/{{key}} or POST {PREFIX}"
        return _send(HTTPStatus.NOT_FOUND, _dump({"errorDetails": message}))

    app = web.Application(middlewares=[serving_errors("OFREP")], client_max_size=MAX_BODY)
    app.router.add_post(PREFIX, bulk)
    app.router.add_post(PREFIX + "/", bulk)
    app.router.add_post(PREFIX + "/{key:.+}", single)
    app.router.add_get(EVENTS_PATH, events.handle)
    app.router.add_get(PREFIX, get)
    app.router.add_get(PREFIX + "/{key:.*}", get)
    _add_extras(app, not_found, cors_origins, ingest)
    return app


def _add_extras(
    app: web.Application, not_found: Handler, cors_origins: frozenset[str], ingest: Handler | None
) -> None:
    """What the port serves beside OFREP: events in (design §16), then the catch-all 404,
    and CORS for browser pages (decision 2011), which wraps every route."""
    if ingest is not None:
        app.router.add_post(INGEST_PATH, ingest)
    app.router.add_route("*", "/{path:.*}", not_found)
    if cors_origins:
        Cors(cors_origins).install(app)


def _keep_streamed(events: OfrepEvents, decisions: Decisions) -> None:
    """Working set (design §19): an account with an open SSE stream stays held, so each
    change is compared against its real answer (not an account the store must read again)."""
    loads = decisions.loads
    if loads.active:

        async def keep(account: str) -> object:
            return await loads.pin((account,))

        events.keep = keep
        events.release = lambda account: loads.unpin((account,))


async def _held_body(request: web.Request, decisions: Decisions) -> bytes | web.StreamResponse:
    """`_body`, with the account it names held (`_hold`)."""
    body = await _body(request)
    if isinstance(body, web.StreamResponse):
        return body
    refused = await _hold(decisions, body)
    return body if refused is None else refused


async def _hold(decisions: Decisions, body: bytes) -> web.Response | None:
    """Working set (design §19): the account the body names, in memory before the
    synchronous evaluation (a body that names none is answered by that evaluation); the 503
    to send when the store cannot be read, never an answer with a default."""
    if decisions.loads.active:
        try:
            account, _ = split_context(body)
        except EvaluationError:
            return None
        try:
            await decisions.loads.hold(account)
        except StoreUnavailable as exc:
            return _send(HTTPStatus.SERVICE_UNAVAILABLE, _dump({"errorDetails": bounded(str(exc))}))
    return None


def _selector(request: web.Request) -> str:
    """The flagd selector a bulk request names (`Flagd-Selector`), for its stream's URL."""
    return request.headers.get("Flagd-Selector", "")


async def _body(request: web.Request) -> bytes | web.StreamResponse:
    """The request body, or the answer to a request whose body is refused."""
    if request.content_length is None and request.headers.get("Transfer-Encoding"):
        message = "send a Content-Length (chunked bodies are not accepted)"
        response = _send(HTTPStatus.LENGTH_REQUIRED, _dump({"errorDetails": message}))
        response.force_close()
        return response
    if request.content_length is not None and request.content_length > MAX_BODY:
        response = _send(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            _dump({"errorDetails": f"request body must be 0..{MAX_BODY} bytes"}),
        )
        response.force_close()
        return response
    return await request.read()


def _send(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(status, body, headers)


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
