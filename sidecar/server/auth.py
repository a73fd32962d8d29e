"""Bearer-token check for the Admin and Usage services (`--token-file`).

Evaluation stays open: a sidecar listens on loopback next to its application, and the
flagd/OFREP providers that call it have no way to send PlanGate's token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

PROTECTED = ("/plangate.v1.Admin/", "/plangate.v1.Usage/")

if TYPE_CHECKING:  # generic only in the type stubs: subscripting them at run time is a TypeError
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def _deny(message: str) -> _Handler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class TokenAuth(_Interceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        if not details.method.startswith(PROTECTED):
            return await continuation(details)
        sent = str(dict(details.invocation_metadata or ()).get("authorization", ""))
        if not sent:
            return _deny(
                "missing token: send metadata 'authorization: Bearer <token>' (see --token-file)"
            )
        if not hmac.compare_digest(sent.encode(), self._expected):
            return _deny("wrong token: the bearer token does not match the sidecar's --token-file")
        return await continuation(details)


def read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"token file {path} is empty; put the shared bearer token in it")
    return token
