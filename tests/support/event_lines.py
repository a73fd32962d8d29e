"""A provider driven in a child process that prints one JSON line per provider event (and
answers `eval FLAG ACCOUNT` lines on stdin): the npm flagd provider (tests/compat/node-flagd)
and the Python flagd provider (flagd_provider_events.py), which cannot share our process."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class EventLines:
    def __init__(self, cmd: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, *wanted: str, timeout: float = 10.0) -> tuple[dict[str, Any], float]:
        """The next line whose event is one of `wanted` (others are skipped); and when."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted} event within {timeout}s"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line.get("event") in wanted or ("eval" in line and "eval" in wanted):
                return line, time.monotonic()

    def evaluate(self, flag: str, account: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"eval {flag} {account}\n")
        self.proc.stdin.flush()
        return self.next("eval")[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
