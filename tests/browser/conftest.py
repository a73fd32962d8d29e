"""Real-browser tests of the console (design §12): Debian's `chromium` driven through its
`chromedriver` by Selenium, against a real sidecar on the example catalog.

They are a slow check of their own (`scripts/browser-check.sh`, a separate `.ci/run` step);
`scripts/test.sh` leaves this folder out. Screenshots of every page land in
`tests/browser/artifacts/` (ignored by git) for a person to look at after a run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from support.console import bearer, seed, wait_for_failed_delivery, write_token_file
from support.sidecar import Stubs, copy_catalog, in_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# What Chromium needs as root in a container, and what keeps it off the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), (
            f"{path} is missing: apt-get install -y --no-install-recommends chromium chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="plangate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sidecar with a token file and something in it: usage, a top-up, a trial, a failed
    webhook delivery (its quota webhook points at a port nobody listens on)."""
    d = tmp_path_factory.mktemp("console")
    with in_process(
        copy_catalog(d),
        d / "state.db",
        token_file=str(write_token_file(d)),
        webhook_max_attempts=1,
        webhook_timeout_seconds=0.5,
        outbox_poll_seconds=0.05,
    ) as sc:
        with Stubs(f"127.0.0.1:{sc.port}") as stubs:
            seed(stubs, bearer())
            wait_for_failed_delivery(stubs, bearer())
        yield sc
