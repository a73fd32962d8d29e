"""Stripe events as Stripe sends them: a `Stripe-Signature` header built from Stripe's
published scheme (`t=<unix time>,v1=<HMAC-SHA256 of "<t>.<body>">`), posted over real HTTP to
a sidecar's connections port, where the `stripe` package verifies it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any


def signature(payload: bytes, secret: str, at: int | None = None) -> str:
    """The header Stripe would send for `payload` at unix time `at` (default: now)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_signed(port: int, body: bytes, header: str | None) -> tuple[int, dict[str, Any]]:
    """POST `body` to `/connections/stripe` with `header` as its signature (None: none);
    the HTTP status and the JSON answer, whatever the status."""
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/connections/stripe", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
