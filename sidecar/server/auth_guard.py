"""Backoff after wrong tokens, per caller address (decision 1333).

Token guessing used to be limited only by the server's speed (372 guesses a second over
gRPC). After `FREE` wrong tokens from one address, no token from there is checked — a right
one included, or guessing would go on at full speed — for 1 s, doubling with each further
wrong token up to `LONGEST`; `FORGET` seconds without a wrong token start the address afresh.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]

Refusal = Callable[[Iterable[tuple[str, Any]] | None, str], "str | None"]

FREE = 20
"""Wrong tokens an address may send before it must wait (typos, a client started with an
old token)."""

FORGET = 600.0
"""Seconds without a wrong token after which an address starts afresh. A right token does
not clear the count: a guesser sharing an address with a working client would start over."""

LONGEST = 60.0
"""The longest wait, in seconds."""

REMEMBERED = 10_000
"""Addresses remembered at most (the oldest are forgotten first), so the record is bounded."""


def address_of(peer: str) -> str:
    """A gRPC caller's address without its port, as aiohttp names an HTTP caller's (so the
    console's sign-in and gRPC share one count): `ipv4:10.0.0.5:41234` -> `10.0.0.5`,
    `ipv6:[::1]:41234` -> `::1`."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer[5:].rpartition(":")[0].strip("[]")
    return peer


class Failures:
    """Wrong tokens per address, and until when each address must wait. Thread-safe: the
    Admin handlers run on a thread pool."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # address -> (wrong tokens, must wait until, last wrong token)
        self._state: collections.OrderedDict[str, tuple[int, float, float]] = (
            collections.OrderedDict()
        )

    def blocked_for(self, address: str) -> float:
        if not self._state:  # the common case, no wrong token at all, takes no lock
            return 0.0
        with self._lock:
            _, until, _ = self._state.get(address, (0, 0.0, 0.0))
        return max(0.0, until - self._clock())

    def failed(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            count, until, last = self._state.pop(address, (0, 0.0, now))
            count = 1 if now - last > FORGET else count + 1
            if count > FREE:
                until = now + min(LONGEST, 2.0 ** (count - FREE - 1))
            self._state[address] = (count, until, now)
            while len(self._state) > REMEMBERED:
                self._state.popitem(last=False)


def guarded(handler: _Handler, refusal: Refusal) -> _Handler:
    """`handler` with `refusal(metadata, peer)` checked first: a message aborts the call with
    UNAUTHENTICATED. Each behaviour keeps its kind (plain ones still run off the loop)."""
    changes: dict[str, Any] = {}
    for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, name)
        if behaviour is not None:
            changes[name] = _guard(behaviour, refusal)
    return handler._replace(**changes)  # type: ignore[attr-defined, no-any-return]


def _guard(behaviour: Callable[..., Any], refusal: Refusal) -> Callable[..., Any]:
    def why(context: Any) -> str | None:
        return refusal(context.invocation_metadata(), context.peer())

    if inspect.iscoroutinefunction(behaviour):

        async def run_async(request: Any, context: Any) -> Any:
            message = why(context)
            if message is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            return await behaviour(request, context)

        return run_async
    if inspect.isasyncgenfunction(behaviour):

        async def run_gen(request: Any, context: Any) -> AsyncIterator[Any]:
            message = why(context)
            if message is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            async for item in behaviour(request, context):
                yield item

        return run_gen

    def run(request: Any, context: Any) -> Any:
        message = why(context)
        if message is not None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        return behaviour(request, context)

    return run
