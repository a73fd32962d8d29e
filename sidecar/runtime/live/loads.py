"""Working-set misses off the loop (design §19 and §2.1): an account that is not held is
read from the store on a loading thread while the loop serves others, and concurrent
requests for the same account wait for the same read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .state import LiveState

LOAD_THREADS = 4
"""Loading threads: loads queue on the live state's write lock anyway (they must not pass a
write of the same account), so more threads would only wait."""


class Loads:
    def __init__(self, state: LiveState) -> None:
        self.state = state
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._threads: ThreadPoolExecutor | None = None

    @property
    def active(self) -> bool:
        """Whether accounts are loaded on use (`--max-accounts`); else every call is a no-op."""
        return self.state.working is not None

    async def hold(self, account_id: str) -> None:
        """Have `account_id` in memory (or known as unknown) for a read that follows at once,
        on the loop, without awaiting anything in between."""
        state = self.state
        if state.working is None or not state.needs_load(account_id):
            return
        pinned = (account_id,)
        state.working.pin(pinned)
        try:
            await self._load(account_id)
        finally:
            state.working.unpin(pinned)
        state.evict_due()

    async def pin(self, ids: Sequence[str]) -> tuple[str, ...]:
        """Have `ids` in memory and keep them there until `unpin` (a request that awaits a
        write in between); returns what to pass to `unpin`."""
        state = self.state
        ws = state.working
        if ws is None:
            return ()
        pinned = tuple(dict.fromkeys(ids))
        ws.pin(pinned)
        try:
            for account_id in pinned:
                if state.needs_load(account_id):
                    await self._load(account_id)
        except BaseException:
            ws.unpin(pinned)
            raise
        return pinned

    def unpin(self, pinned: tuple[str, ...]) -> None:
        ws = self.state.working
        if ws is not None and pinned:
            ws.unpin(pinned)
            self.state.evict_due()

    async def _load(self, account_id: str) -> None:
        ws = self.state.working
        assert ws is not None
        ws.stats.misses += 1  # a request waiting for another's load is a miss too (§19)
        pending = self._pending.get(account_id)
        if pending is None:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="plangate-load")
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._threads, self.state.load, account_id)
            self._pending[account_id] = pending
            pending.add_done_callback(self._done)
        await asyncio.shield(pending)

    def _done(self, future: asyncio.Future[None]) -> None:
        for account_id, pending in list(self._pending.items()):
            if pending is future:
                del self._pending[account_id]
        if not future.cancelled():
            future.exception()  # retrieved: every waiter got it already

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
