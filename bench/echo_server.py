"""The gRPC floor: a unary echo server served like the sidecar's gRPC port.

Same grpcio, same serving (`grpc.aio` on one asyncio event loop, design §2.1), same server
options (`GRPC_OPTIONS`, imported from the sidecar so the two never drift apart), its own
process like the sidecar. It returns the request bytes untouched (no protobuf parsing), so a
call through it costs exactly what gRPC and loopback cost and nothing else: the least any
RPC-based evaluation can cost.

Run: `python bench/echo_server.py` — prints `echo: ready 127.0.0.1:PORT`, serves until killed.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc

SERVICE = "plangate.bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _serve(host: str) -> None:
    from plangate.sidecar.server.app import GRPC_OPTIONS

    server = grpc.aio.server(options=GRPC_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    print(f"echo: ready {host}:{port} serving=grpc.aio", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await server.stop(0.5)


def serve(host: str = "127.0.0.1") -> None:
    asyncio.run(_serve(host))


def echo_server() -> Any:
    """Start the echo server as a child process (a `harness.Server`)."""
    from harness import Server

    return Server(["bench/echo_server.py"], ready=r"echo: ready \S+:(\d+)")


if __name__ == "__main__":
    serve()
