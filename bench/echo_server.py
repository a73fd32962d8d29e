"""The gRPC floor: a unary echo server configured like the sidecar's gRPC server.

Same grpcio, same `ThreadPoolExecutor` size (read from the sidecar's own `Settings`, so the
two never drift apart), same server options, its own process like the sidecar. It returns
the request bytes untouched (no protobuf parsing), so a call through it costs exactly what
gRPC and loopback cost and nothing else: the least any RPC-based evaluation can cost.

Run: `python bench/echo_server.py` — prints `echo: ready 127.0.0.1:PORT`, serves until killed.
"""

from __future__ import annotations

import signal
import threading
from concurrent import futures
from typing import Any

import grpc

SERVICE = "plangate.bench.Echo"
METHOD = f"/{SERVICE}/Echo"


def _echo(request: bytes, context: Any) -> bytes:
    return request


def serve(host: str = "127.0.0.1") -> None:
    from plangate.sidecar.server.app import Settings

    workers = Settings(catalog="").workers
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", 0)],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    print(f"echo: ready {host}:{port} workers={workers}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(0.5).wait()


def echo_server() -> Any:
    """Start the echo server as a child process (a `harness.Server`)."""
    from harness import Server

    return Server(["bench/echo_server.py"], ready=r"echo: ready \S+:(\d+)")


if __name__ == "__main__":
    serve()
