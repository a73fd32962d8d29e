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

Like the management endpoint, this is the standard library's threading HTTP server: a
sidecar serves one application on loopback, and evaluations are in-memory reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from ..catalog.model import Feature, FeatureType, thaw
from ..engine import Decision, ErrorCode, EvaluationError, Kind, evaluate, metadata, resolve_as
from ..runtime.state import LiveState
from .http_listener import HttpListener
from .metrics import Metrics
from .targeting import MISSING_KEY, split_targeting

log = logging.getLogger("plangate.ofrep")

PREFIX = "/ofrep/v1/evaluate/flags"
MAX_BODY = 1 << 20  # an evaluation context is a few hundred bytes; refuse anything silly

_NATURAL: dict[FeatureType, Kind] = {
    FeatureType.BOOLEAN: Kind.BOOLEAN,
    FeatureType.FLAG: Kind.BOOLEAN,
    FeatureType.INTEGER: Kind.INTEGER,
    FeatureType.STRING: Kind.STRING,
    FeatureType.LIST: Kind.OBJECT,
    FeatureType.OBJECT: Kind.OBJECT,
    FeatureType.METERED: Kind.BOOLEAN,
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
        raise EvaluationError(ErrorCode.TARGETING_KEY_MISSING, MISSING_KEY)
    try:
        data = json.loads(body)
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


def _success(decision: Decision, feature: Feature) -> dict[str, Any]:
    _, value = natural_value(decision, feature)
    return {
        "key": feature.key,
        "value": value,
        "reason": decision.reason.value,
        "variant": decision.variant,
        "metadata": metadata(decision),
    }


def _failure(key: str, error: EvaluationError) -> dict[str, Any]:
    return {"key": key, "errorCode": error.code.value, "errorDetails": error.message}


def etag_of(body: bytes) -> str:
    """A strong ETag from the response body itself.

    Content-based, so it changes exactly when the client would see a difference: a new
    catalog, an account change or new usage, and never collides across accounts.
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


class Ofrep:
    """The protocol logic, apart from HTTP plumbing: request bytes in, (status, JSON) out."""

    def __init__(self, state: LiveState, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics

    def single(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            account, context = split_context(body)
            snap = self.state.snapshot
            decision = evaluate(snap, account, key, context, self.state.clock())
            result = _success(decision, snap.catalog.features[key])
        except EvaluationError as exc:
            self.metrics.evaluation_errors.labels("ofrep", exc.code.value).inc()
            status = HTTPStatus.NOT_FOUND if exc.code is ErrorCode.FLAG_NOT_FOUND else 400
            return status, _failure(key, exc)
        self.metrics.evaluations.labels("ofrep", decision.reason.value).inc()
        return HTTPStatus.OK, result

    def bulk(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            account, context = split_context(body)
            results = self.state.evaluate_all(account, context)
        except EvaluationError as exc:
            self.metrics.evaluation_errors.labels("ofrep", exc.code.value).inc()
            return HTTPStatus.BAD_REQUEST, {
                "errorCode": exc.code.value,
                "errorDetails": exc.message,
            }
        features = self.state.catalog.features
        flags: list[dict[str, Any]] = []
        for key, result in results.items():
            feature = features.get(key)
            if feature is None:
                continue  # the catalog changed under this request and dropped the key
            try:
                if isinstance(result, EvaluationError):
                    raise result
                flags.append(_success(result, feature))
            except EvaluationError as exc:  # incl. a type changed by that same catalog change
                flags.append(_failure(key, exc))
        self.metrics.evaluations.labels("ofrep_bulk", "TARGETING_MATCH").inc(len(flags))
        return HTTPStatus.OK, {"flags": flags}


class OfrepServer:
    """OFREP over HTTP/1.1 (keep-alive, as the providers use a session) in a daemon thread."""

    def __init__(self, host: str, port: int, state: LiveState, metrics: Metrics) -> None:
        ofrep = Ofrep(state, metrics)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # idle keep-alive connections release their thread
            server_version = "PlanGate-OFREP"

            def do_POST(self) -> None:
                body = self._body()
                if body is None:
                    return
                try:
                    self._evaluate(self.path.split("?", 1)[0], body)
                except Exception:  # a bug must still answer, or the provider waits for its timeout
                    log.exception("OFREP %s failed", self.path)
                    message = "internal error in the sidecar; see its log"
                    self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _dump({"errorDetails": message}))

            def _evaluate(self, path: str, body: bytes) -> None:
                if path.rstrip("/") == PREFIX:
                    status, data = ofrep.bulk(body)
                    payload = _dump(data)
                    if status != HTTPStatus.OK:
                        self._send(status, payload)
                        return
                    etag = etag_of(payload)
                    if etag_matches(self.headers.get("If-None-Match"), etag):
                        self._send(HTTPStatus.NOT_MODIFIED, b"", {"ETag": etag})
                    else:
                        self._send(status, payload, {"ETag": etag})
                elif path.startswith(PREFIX + "/"):
                    key = unquote(path[len(PREFIX) + 1 :])
                    status, data = ofrep.single(key, body)
                    self._send(status, _dump(data))
                else:
                    self._not_found()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith(PREFIX):
                    message = f"OFREP evaluation takes POST with a JSON body, not GET ({path})"
                    body = _dump({"errorDetails": message})
                    self._send(HTTPStatus.METHOD_NOT_ALLOWED, body, {"Allow": "POST"})
                else:
                    self._not_found()

            def _not_found(self) -> None:
                message = (
                    f"no such endpoint {self.path}: use POST {PREFIX}/{{key}} or POST {PREFIX}"
                )
                self._send(HTTPStatus.NOT_FOUND, _dump({"errorDetails": message}))

            def _body(self) -> bytes | None:
                """The request body, or None after answering a request whose body is refused."""
                length = self.headers.get("Content-Length")
                if length is None:
                    if self.headers.get("Transfer-Encoding"):
                        self.close_connection = True
                        message = "send a Content-Length (chunked bodies are not accepted)"
                        self._send(HTTPStatus.LENGTH_REQUIRED, _dump({"errorDetails": message}))
                        return None
                    return b""
                try:
                    size = int(length)
                except ValueError:
                    size = -1
                if size < 0 or size > MAX_BODY:
                    self.close_connection = True
                    self._send(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        _dump({"errorDetails": f"request body must be 0..{MAX_BODY} bytes"}),
                    )
                    return None
                return self.rfile.read(size)

            def _send(
                self, status: int, body: bytes, headers: Mapping[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if status != HTTPStatus.NOT_MODIFIED:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and status != HTTPStatus.NOT_MODIFIED:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self.listener = HttpListener(host, port, Handler, "OFREP", "--ofrep-port")
        self.port = self.listener.port
        self.start = self.listener.start
        self.stop = self.listener.stop


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
