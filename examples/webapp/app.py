"""Pipewise web app: a small Flask service that gates its endpoints with OpenFeature.

The app never talks to PlanGate directly. It asks OpenFeature questions about the caller's
account (the OpenFeature targeting key) and reports metered usage with `client.track`; the
PlanGate provider answers from its cache and delivers the usage in the background.

    PLANGATE_TARGET=localhost:8013 python examples/webapp/app.py      # serves on :8080
    curl -H 'X-Account-Id: acct_acme' localhost:8080/reports
    curl -H 'X-Account-Id: acct_initech' localhost:8080/api/pipelines

Endpoints:
    GET  /entitlements   what the caller's plan gives (string, integer and object features)
    GET  /reports        boolean gate: needs the `beta-dashboard` flag (Pro and up)
    GET  /sso            boolean gate: needs `sso`
    GET  /api/pipelines  metered: one `api-calls` unit per request; 429 once the limit is hit
    POST /api/exports    metered with an amount: `?count=N` asks for N `exports` at once
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from flask import Flask, Response, jsonify, request
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails

ACCOUNT_HEADER = "X-Account-Id"


def _account() -> EvaluationContext | None:
    """The caller's account; a real app takes it from its session or API key, not a header."""
    account = request.headers.get(ACCOUNT_HEADER, "").strip()
    return EvaluationContext(account) if account else None


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


def create_app(client: OpenFeatureClient | None = None) -> Flask:
    """The Flask app; `client` defaults to the global OpenFeature client."""
    app = Flask("pipewise")
    features = client or api.get_client("pipewise")

    @app.before_request
    def require_account() -> tuple[Response, int] | None:
        if _account() is None:
            return _error(401, f"send the {ACCOUNT_HEADER} header")
        return None

    @app.get("/entitlements")
    def entitlements() -> Response:
        ctx = _account()
        return jsonify(
            support_tier=features.get_string_value("support-tier", "community", ctx),
            concurrency=features.get_integer_value("execution-concurrency", 1, ctx),
            integrations=features.get_object_value("integrations", [], ctx),
            theme=features.get_object_value("theme", {}, ctx),
        )

    def gate(feature: str) -> tuple[Response, int] | None:
        """403 unless the boolean `feature` is on for the caller (fails closed on errors)."""
        details = features.get_boolean_details(feature, False, _account())
        if details.value:
            return None
        denial = details.flag_metadata.get("denial", details.error_code or "no_entitlement")
        return _error(403, f"your plan does not include {feature}", denial=str(denial))

    @app.get("/reports")
    def reports() -> Response | tuple[Response, int]:
        return gate("beta-dashboard") or jsonify(reports=["throughput", "latency", "cost"])

    @app.get("/sso")
    def sso() -> Response | tuple[Response, int]:
        return gate("sso") or jsonify(sso={"provider": "saml", "enabled": True})

    def metered(feature: str, amount: int) -> tuple[Response, int] | dict[str, str]:
        """Check that `amount` more units fit; on success record them and return rate headers."""
        ctx = _account()
        assert ctx is not None
        ask = EvaluationContext(ctx.targeting_key, {"requested": amount})
        details = features.get_boolean_details(feature, False, ask)
        meta = details.flag_metadata
        if not details.value:
            denial = meta.get("denial", details.error_code or "no_entitlement")
            return _error(
                429, f"{feature} limit reached", denial=str(denial), used=meta.get("used")
            )
        features.track(feature, ctx, TrackingEventDetails(value=amount))
        used = meta.get("used", 0)
        headers = {"X-Usage-Used": str(used + amount if isinstance(used, int | float) else used)}
        if "limit" in meta:
            headers["X-Usage-Limit"] = str(meta["limit"])
        return headers

    @app.get("/api/pipelines")
    def pipelines() -> Response | tuple[Response, int]:
        outcome = metered("api-calls", 1)
        if isinstance(outcome, tuple):
            return outcome
        response = jsonify(pipelines=[{"id": "p1", "name": "orders"}, {"id": "p2", "name": "crm"}])
        response.headers.update(outcome)
        return response

    @app.post("/api/exports")
    def exports() -> Response | tuple[Response, int]:
        count = request.args.get("count", "1")
        if not count.isdigit() or int(count) < 1:
            return _error(400, "count must be a positive whole number")
        outcome = metered("exports", int(count))
        if isinstance(outcome, tuple):
            return outcome
        response = jsonify(exported=int(count))
        response.headers.update(outcome)
        return response

    return app


def main() -> None:
    from plangate.provider import PlanGateProvider

    api.set_provider_and_wait(PlanGateProvider())  # PLANGATE_TARGET etc. from the environment
    atexit.register(api.shutdown)  # deliver queued usage before exiting
    port = int(os.environ.get("PORT", "8080"))
    create_app().run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
