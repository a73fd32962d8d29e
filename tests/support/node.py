"""Node.js for the tests that drive unmodified npm clients: the binary, and a folder's
packages installed from its committed lockfile (`npm ci`, once)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def node_with_packages(directory: Path, installed: str) -> str:
    """The `node` binary, after `npm ci` in `directory` unless `node_modules/<installed>`
    is already there; fails the test, saying what to install, when Node.js is missing."""
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "node is not on PATH: install Node.js 18 or newer (e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    if not (directory / "node_modules" / installed).is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is not on PATH: install it with Node.js (apt-get install npm)"
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
    return found
