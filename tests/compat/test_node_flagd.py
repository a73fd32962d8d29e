"""The unmodified npm `@openfeature/flagd-provider` (with `@openfeature/server-sdk`) against
a sidecar process (issue 11.10): READY, a change event after a usage report and after a
catalog edit, STALE (or ERROR) within 1 s of SIGTERM — which needs the streams to end with
UNAVAILABLE, since the provider does not notice a clean end — and READY and events again
after a restart on the same port.

Like `test_node_client.py`, a missing `node` is a failure that says what to install.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.event_lines import EventLines
from support.node import node_with_packages
from support.sidecar import ROOT, Stubs, SubprocessSidecar, copy_catalog

CHECK_DIR = ROOT / "tests" / "compat" / "node-flagd"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_packages(CHECK_DIR, "@openfeature/flagd-provider")


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
    provider = EventLines([node, "check.js", "127.0.0.1", str(sidecar.port)], CHECK_DIR)
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
        assert noticed - signalled < 3.0  # at once; room for a loaded CI box (not 5 s grace)
        assert sidecar.proc.wait(10) == 0

        sidecar.start()  # the same ports again
        provider.next("READY", timeout=15)
        _report(sidecar)
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "api-calls" in changed["flags"]
        assert provider.evaluate("sso", "acct_acme")["value"] is True
    finally:
        provider.close()
