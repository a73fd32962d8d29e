"""gRPC channels to the sidecar: one blocking channel, plus one `grpc.aio` channel per event loop.

A `grpc.aio` channel belongs to the event loop that created it, and an application may run
several loops over its life (tests, `asyncio.run` per job), so async stubs are made per loop
and dropped once their loop is closed.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from plangate.protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc

from .config import ProviderConfig

# A sidecar next to the app restarts in well under a second; gRPC's default reconnect
# backoff (1 s growing to 120 s) would hide its return for minutes.
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _options(config: ProviderConfig) -> list[tuple[str, Any]]:
    options = list(_CHANNEL_OPTIONS)
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    return options


def _credentials(config: ProviderConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls_ca),
        private_key=_read(config.tls_key),
        certificate_chain=_read(config.tls_cert),
    )


class Transport:
    """Channels and stubs for one sidecar, plus the per-call metadata and deadline."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )
        if config.secure:
            self.channel = grpc.secure_channel(
                config.target, _credentials(config), options=_options(config)
            )
        else:
            self.channel = grpc.insecure_channel(config.target, options=_options(config))
        self.evaluation: Any = pb_grpc.EvaluationStub(self.channel)
        self.usage: Any = pb_grpc.UsageStub(self.channel)
        self._lock = threading.Lock()
        self._aio: dict[asyncio.AbstractEventLoop, tuple[grpc.aio.Channel, Any]] = {}

    def aio_evaluation(self) -> Any:
        """The async Evaluation stub for the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._aio.get(loop)
            if found is None:
                for old in [lp for lp in self._aio if lp.is_closed()]:
                    del self._aio[old]
                channel = self._aio_channel()
                found = (channel, pb_grpc.EvaluationStub(channel))
                self._aio[loop] = found
        return found[1]

    def _aio_channel(self) -> grpc.aio.Channel:
        config = self.config
        if config.secure:
            return grpc.aio.secure_channel(
                config.target, _credentials(config), options=_options(config)
            )
        return grpc.aio.insecure_channel(config.target, options=_options(config))

    def close(self) -> None:
        """Close the blocking channel; async channels close with their loops (or here if idle)."""
        self.channel.close()
        with self._lock:
            aio = list(self._aio.items())
            self._aio.clear()
        for loop, (channel, _) in aio:
            if loop.is_closed():
                continue
            try:
                if loop.is_running():
                    asyncio.run_coroutine_threadsafe(channel.close(None), loop)
                else:
                    loop.run_until_complete(channel.close(None))
            except RuntimeError:
                pass  # the loop is going away; its channel goes with it
