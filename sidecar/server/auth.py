"""Bearer-token check for the Admin and Usage services (`--token-file`), and who sent a call.

Evaluation stays open: a sidecar listens on loopback next to its application, and the
flagd/OFREP providers that call it have no way to send PlanGate's token.

A token file holds one token per line, `name:token` (the name is what the audit log
records as the actor, design §12) or a bare `token` (named `DEFAULT_NAME`: files written
before names existed keep working). Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from .auth_guard import Failures, address_of, guarded

PROTECTED = ("/plangate.v1.Admin/", "/plangate.v1.Usage/")

MIN_TOKEN_CHARS = 16
"""A shorter token could be guessed (decision 1333)."""

DEFAULT_NAME = "token"
"""The name of a bare token line (no `name:` prefix)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

Tokens = Mapping[str, str]
"""Token -> its name, as read from a token file."""

if TYPE_CHECKING:  # generic only in the type stubs: subscripting them at run time is a TypeError
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


MISSING = "missing token: send metadata 'authorization: Bearer <token>' (see --token-file)"
WRONG = "wrong token: the bearer token does not match the sidecar's --token-file"


def authorization(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The `authorization` metadata value of a call ("" when it sent none)."""
    return str(dict(metadata or ()).get("authorization", ""))


def name_of(sent: str, tokens: Tokens) -> str | None:
    """The name of the token `sent` ("Bearer <token>") carries, None if it is none of them.
    Every token is compared (in constant time), so the time taken tells nothing."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            found = name
    return found


class TokenAuth(_Interceptor):
    """The token check of every Admin and Usage call, with the caller's address: wrong tokens
    from one address lead to `Failures`' backoff. Each method's handler is wrapped once."""

    def __init__(self, tokens: Tokens, failures: Failures | None = None) -> None:
        self._tokens = tokens
        self._failures = failures or Failures()
        self._wrapped: dict[str, tuple[_Handler, _Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED):
            return handler
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = guarded(handler, self.refusal)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def refusal(self, metadata: Iterable[tuple[str, Any]] | None, peer: str) -> str | None:
        """Why a call is refused, or None when its token is one of ours."""
        sent = authorization(metadata)
        if not sent:
            return MISSING
        address = address_of(peer)
        wait = self._failures.blocked_for(address)
        if wait > 0:
            return (
                f"too many wrong tokens from {address}; no token is checked from there for "
                f"{math.ceil(wait)} s"
            )
        if name_of(sent, self._tokens) is None:
            self._failures.failed(address)
            return WRONG
        return None


def read_tokens(path: str) -> dict[str, str]:
    """The tokens of a token file with their names; ValueError saying which line is wrong."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    tokens: dict[str, str] = {}
    numbers: dict[str, int] = {}  # token -> its line
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.partition(":")
        if not colon:
            name, token = DEFAULT_NAME, line
        if not _NAME.fullmatch(name) or not token:
            raise ValueError(
                f"token file {path} line {number}: expected 'name:token' (a name of letters, "
                "digits, '.', '_', '@', '-', up to 64) or a bare token"
            )
        if token in tokens:
            raise ValueError(f"token file {path} line {number}: this token is already listed")
        if name in tokens.values():
            raise ValueError(
                f"token file {path} line {number}: name {name!r} is already used; "
                "give each token its own name (the audit log records it)"
            )
        tokens[token] = name
        numbers[token] = number
    if not tokens:
        raise ValueError(f"token file {path} is empty; put the shared bearer token in it")
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARS:
            number = numbers[token]
            raise ValueError(
                f"token file {path} line {number}: the token is {len(token)} characters long; "
                f"tokens are at least {MIN_TOKEN_CHARS} (e.g. from `openssl rand -hex 16`)"
            )
    return tokens
