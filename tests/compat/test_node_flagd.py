"""The unmodified npm `@openfeature/flagd-provider` (with `@openfeature/server-sdk`) against
a sidecar process (issue 11.10): READY, a change event after a usage report and after a
catalog edit, STALE (or ERROR) within 1 s of SIGTERM — which needs the streams to end with
UNAVAILABLE, since the provider does not notice a clean end — and READY and events again
after a restart on the same port.

Like `test_node_client.py`, a missing `node` is a failure that says what to install.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import ROOT, Stubs, SubprocessSidecar, copy_catalog

CHECK_DIR = ROOT / "tests" / "compat" / "node-flagd"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "node is not on PATH: install Node.js 18 or newer (e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    if not (CHECK_DIR / "node_modules" / "@openfeature" / "flagd-provider").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is not on PATH: install it with Node.js (apt-get install npm)"
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CHECK_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
    return found


class NodeProvider:
    """check.js as a child process: its JSON lines arrive on a queue."""

    def __init__(self, node: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [node, "check.js", "127.0.0.1", str(port)],
            cwd=CHECK_DIR,
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


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SubprocessSidecar]:
    running = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "s.db").start()
    yield running
    running.kill()


def _report(sidecar: SubprocessSidecar) -> None:
    with Stubs(sidecar.target) as s:
        report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)
        s.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)


def test_flagd_provider_follows_changes_shutdown_and_restart(
    node: str, sidecar: SubprocessSidecar
) -> None:
    provider = NodeProvider(node, sidecar.port)
    try:
        provider.next("READY")
        assert provider.evaluate("sso", "acct_acme")["value"] is True
        _report(sidecar)
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "api-calls" in changed["flags"]
        text = sidecar.catalog.read_text()
        sidecar.catalog.write_text(text.replace("infinite: -1", "infinite: -2", 1))
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "execution-concurrency" in changed["flags"]

        assert sidecar.proc is not None
        signalled = time.monotonic()
        sidecar.proc.send_signal(signal.SIGTERM)
        _, noticed = provider.next("STALE", "ERROR")
        assert noticed - signalled < 1.0
        assert sidecar.proc.wait(10) == 0

        sidecar.start()  # the same ports again
        provider.next("READY", timeout=15)
        _report(sidecar)
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "api-calls" in changed["flags"]
        assert provider.evaluate("sso", "acct_acme")["value"] is True
    finally:
        provider.close()
