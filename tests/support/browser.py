"""Screenshots for the browser tests (tests/browser/): artifacts, and the docs' pictures."""

from __future__ import annotations

import base64
from pathlib import Path

from selenium import webdriver

from support.sidecar import ROOT

ARTIFACTS = ROOT / "tests" / "browser" / "artifacts"


MAX_HEIGHT = 5000
"""Pixels of page height a screenshot keeps (long pages are cut there)."""


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page from its top (Chromium's own full-page capture), saved as an artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_HEIGHT)}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
