"""A Watch stream read on a background thread, for tests that time the sidecar's events."""

from __future__ import annotations

import threading
import time

import grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from support.sidecar import Stubs


class WatchLog:
    """Every `account_changed` event of one Watch stream, with the wall-clock time it arrived."""

    def __init__(self, stubs: Stubs) -> None:
        self.events: list[tuple[float, pb.AccountChanged]] = []
        self._cond = threading.Condition()
        self._call = stubs.evaluation.Watch(pb.WatchRequest())
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "Watch never said ready"

    def _read(self) -> None:
        try:
            for event in self._call:
                if event.WhichOneof("event") == "ready":
                    self._ready.set()
                elif event.WhichOneof("event") == "account_changed":
                    with self._cond:
                        self.events.append((time.time(), event.account_changed))
                        self._cond.notify_all()
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    def wait_time_event(
        self, account: str, timeout: float = 5.0
    ) -> tuple[float, pb.AccountChanged]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, event in self.events:
                    if event.cause == "time" and (
                        account in event.account_ids or event.all_accounts
                    ):
                        return at, event
                left = deadline - time.monotonic()
                assert left > 0, f"no time event for {account}; saw {self.events}"
                self._cond.wait(left)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)
