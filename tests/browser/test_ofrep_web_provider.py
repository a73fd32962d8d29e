"""The unmodified npm `@openfeature/ofrep-web-provider` (0.4.3, the newest; 0.4.1 is the first
with OFREP event streams, 0.3.x has none) with `@openfeature/web-sdk`, in the headless Chromium
the console tests use: a page served from another origin than the OFREP port evaluates through
it (CORS, decision 2011) and hears of a usage report through the bulk answer's event stream
alone — polling is off, so only `refetchEvaluation` can bring it.

The packages are installed from the committed lockfile (`npm ci`, once) and loaded as the ES
modules they ship, through an import map (`ofrep-web/page.html`): no bundler.
"""

from __future__ import annotations

import functools
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from support.node import node_with_packages
from support.sidecar import Stubs, copy_catalog, in_process
from test_console_pages import CHROMEDRIVER, CHROMIUM, FLAGS

PAGE_DIR = Path(__file__).parent / "ofrep-web"
ACCOUNT = "acct_initech"
TIMEOUT = 30.0  # generous: the machine may be loaded


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the test's output."""


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """`ofrep-web/` (the page and its node_modules) over HTTP on a loopback port of its own."""
    node_with_packages(PAGE_DIR, "@openfeature/ofrep-web-provider")
    handler = functools.partial(_Quiet, directory=str(PAGE_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def scripted_browser() -> Iterator[webdriver.Chrome]:
    """Chromium as the console tests start it, but with JavaScript (the provider is a script)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), (
            f"{path} is missing: apt-get install -y --no-install-recommends chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='plangate-ofrep-web-')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _until(driver: webdriver.Chrome, script: str) -> Any:
    """The value of `script` once it is truthy (or a page error shows), within TIMEOUT."""

    def done(d: webdriver.Chrome) -> Any:
        error = d.execute_script("return window.check && window.check.error")
        assert not error, f"the provider failed in the page: {error}"
        return d.execute_script(script)

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.2).until(done)


def test_the_web_provider_evaluates_and_follows_the_event_stream(
    tmp_path: Path, page_origin: str, scripted_browser: webdriver.Chrome
) -> None:
    catalog = copy_catalog(tmp_path)
    with (
        in_process(catalog, tmp_path / "s.db", ofrep_cors_origins=page_origin) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
    ):
        ofrep = f"http://127.0.0.1:{sidecar.ofrep_port}"
        scripted_browser.get(f"{page_origin}/page.html?ofrep={ofrep}&account={ACCOUNT}")
        _until(scripted_browser, "return window.check && window.check.ready")
        sso = scripted_browser.execute_script("return window.check.evaluate('sso')")
        assert (sso["value"], sso["errorCode"]) == (False, None)  # the free plan's
        before = scripted_browser.execute_script("return window.check.evaluate('ai-credits')")
        assert before["value"] is True and before["errorCode"] is None
        used = before["metadata"]["used"]

        report = pb.UsageReport(account_id=ACCOUNT, feature="ai-credits", amount=3)
        stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=10)
        changed = _until(
            scripted_browser,
            "return window.check.changes.find(c => c.includes('ai-credits')) || null",
        )
        assert "ai-credits" in changed
        after = scripted_browser.execute_script("return window.check.evaluate('ai-credits')")
        assert after["metadata"]["used"] == used + 3
