"""Screenshots for the browser tests (tests/browser/): artifacts, and the docs' pictures."""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver

from support.sidecar import ROOT

ARTIFACTS = ROOT / "tests" / "browser" / "artifacts"


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page (the window grown to the page's height), saved as an artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height, 600), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path
