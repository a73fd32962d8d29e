"""Observing a sidecar from outside for admin tests: its Watch events, and a fingerprint of
everything a client can see (to prove a refused call changed nothing)."""

from __future__ import annotations

import queue
import threading
import time

import grpc
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from support.sidecar import Stubs


class Events:
    """A `Watch` stream read by a background thread; `account_changes()` drains what came.

    Without `accounts` the stream is broad, so the sidecar coalesces its account changes
    (decision 1310): a test counting events one by one needs a sidecar started with
    `stream_coalesce_seconds=0`, or must name the accounts it watches (told at once)."""

    def __init__(self, stubs: Stubs, accounts: tuple[str, ...] = ()) -> None:
        self.queue: queue.Queue[pb.WatchEvent] = queue.Queue()
        self.stream = stubs.evaluation.Watch(pb.WatchRequest(accounts=accounts))
        assert next(self.stream).HasField("ready")
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self.queue.put(event)
        except grpc.RpcError:
            pass

    def account_changes(self, first: float = 0.3) -> list[tuple[set[str], str]]:
        """(account ids, cause) of every account_changed event: waits up to `first` s for one,
        then briefly for stragglers."""
        out: list[tuple[set[str], str]] = []
        deadline = time.monotonic() + first
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if event.HasField("account_changed"):
                out.append((set(event.account_changed.account_ids), event.account_changed.cause))
                deadline = time.monotonic() + 0.05
        return out

    def expect(self, *ids: str, cause: str = "admin") -> None:
        """Exactly one account_changed event arrives, naming at least `ids`."""
        changes = self.account_changes(first=5.0)
        assert len(changes) == 1, changes
        assert set(ids) <= changes[0][0] and changes[0][1] == cause, changes

    def close(self) -> None:
        self.stream.cancel()


def fingerprint(stubs: Stubs) -> bytes:
    """Everything a client can observe: every account, and every feature (with usage) for
    every account and subscription member."""
    accounts: list[pb.Account] = []
    token = ""
    while True:
        page = stubs.admin.ListAccounts(pb.ListAccountsRequest(page_size=50, page_token=token))
        accounts.extend(page.accounts)
        token = page.next_page_token
        if not token:
            break
    ids = sorted(
        {a.id for a in accounts} | {m for a in accounts for s in a.subscriptions for m in s.members}
    )
    out = b"".join(a.SerializeToString(deterministic=True) for a in accounts)
    for account_id in ids:
        everything = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=account_id))
        out += everything.SerializeToString(deterministic=True)
    return out
