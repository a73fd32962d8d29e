"""An idle server-reflection stream ends with UNAVAILABLE when the sidecar stops, like Watch
and EventStream, instead of holding the stop for the whole grace period."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from grpc_reflection.v1alpha import reflection_pb2_grpc as rpb_grpc
from support.sidecar import copy_catalog

GRACE = 60.0  # far longer than any wait below: a stop that takes it has waited for the stream


def test_an_idle_reflection_stream_does_not_hold_the_stop(tmp_path: Path) -> None:
    from plangate.sidecar.server.app import Sidecar
    from plangate.sidecar.settings import Settings

    sidecar = Sidecar(
        Settings(
            catalog=str(copy_catalog(tmp_path)),
            db=str(tmp_path / "s.db"),
            port=0,
            management_port=0,
            ofrep_port=0,
        )
    ).start()
    ended: list[grpc.StatusCode] = []
    idle = threading.Event()

    async def hold() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            stub = rpb_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo()
            await call.write(rpb.ServerReflectionRequest(list_services=""))
            first = await call.read()
            assert first.list_services_response.service  # answered; now idle
            idle.set()
            try:
                while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
                    pass
            except grpc.aio.AioRpcError as exc:
                ended.append(exc.code())

    client = threading.Thread(target=asyncio.run, args=(hold(),))
    client.start()
    assert idle.wait(timeout=30), "the reflection stream never answered"
    started = time.monotonic()
    sidecar.stop(grace=GRACE)
    took = time.monotonic() - started
    client.join(timeout=30)
    assert ended == [grpc.StatusCode.UNAVAILABLE]
    assert took < GRACE / 2, f"stop waited {took:.1f} s for an idle reflection stream"
