"""The connections listener (design §18): `POST /connections/stripe`, on its own port.

Stripe calls it from outside, so it is never the management port and answers any `Host`
(the signature is what authenticates). The signature is checked with the official `stripe`
package (`WebhookSignature.verify_header`, 300 s tolerance) before the body is even parsed;
then the event goes to `runtime/serve/stripe.py`, off the loop. This module only translates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Executor

import stripe
from aiohttp import web

from ..runtime.serve.stripe import SecretMissing, StripeSync, webhook_secret
from .http_listener import json_response, serving_errors

log = logging.getLogger("plangate.stripe")

PATH = "/connections/stripe"
TOLERANCE_SECONDS = 300
MAX_BODY = 1 << 20
"""Stripe events are a few kB; a subscription with many items stays far below this."""


def connections_app(sync: StripeSync, blocking: Executor) -> web.Application:
    async def stripe_event(request: web.Request) -> web.StreamResponse:
        payload = await request.read()
        try:
            secret = webhook_secret(sync.state.catalog.stripe)
        except SecretMissing as exc:
            log.error("stripe event refused: %s", exc)
            return _answer(503, {"error": str(exc)})
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, request.headers.get("Stripe-Signature", ""), secret, TOLERANCE_SECONDS
            )
        except (UnicodeDecodeError, stripe.SignatureVerificationError) as exc:
            log.warning("stripe event refused: bad signature (%s)", exc)
            return _answer(400, {"error": f"signature verification failed: {exc}"})
        try:
            event = json.loads(text)
        except ValueError:
            log.warning("stripe event refused: the body is not JSON")
            return _answer(400, {"error": "the body is not JSON"})
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(blocking, sync.apply, event)
        if answer.status == 200:
            return _answer(200, {"outcome": answer.outcome})
        return _answer(answer.status, {"error": answer.message})

    app = web.Application(middlewares=[serving_errors("connections")], client_max_size=MAX_BODY)
    app.router.add_post(PATH, stripe_event)
    return app


def _answer(status: int, body: dict[str, str]) -> web.Response:
    return json_response(status, json.dumps(body).encode())
