"""Bearer-token check for the Admin and Usage services (`--token-file`), and who sent a call.

Evaluation stays open: a sidecar listens on loopback next to its application, and the
flagd/OFREP providers that call it have no way to send PlanGate's token.

A token file holds one token per line, `name:token` (the name is what the audit log
records as the actor, design §12) or a bare `token` (named `DEFAULT_NAME`: files written
before names existed keep working). Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

PROTECTED = ("/plangate.v1.Admin/", "/plangate.v1.Usage/")

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


def _deny(message: str) -> _Handler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


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
    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        if not details.method.startswith(PROTECTED):
            return await continuation(details)
        sent = authorization(details.invocation_metadata)
        if not sent:
            return _deny(
                "missing token: send metadata 'authorization: Bearer <token>' (see --token-file)"
            )
        if name_of(sent, self._tokens) is None:
            return _deny("wrong token: the bearer token does not match the sidecar's --token-file")
        return await continuation(details)


def read_tokens(path: str) -> dict[str, str]:
    """The tokens of a token file with their names; ValueError saying which line is wrong."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    tokens: dict[str, str] = {}
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
    if not tokens:
        raise ValueError(f"token file {path} is empty; put the shared bearer token in it")
    return tokens
