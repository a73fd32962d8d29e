"""Run mypy (strict) on plangate.sidecar and plangate.provider under their installed names.

The source folders are mapped into the `plangate` namespace by setuptools' package-dir,
which mypy cannot follow from the folders themselves; a throwaway tree of symlinks
(`plangate/{sidecar,provider,protocol}`) gives it the real import paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "plangate"
        pkg.mkdir()
        for name in ("sidecar", "provider", "protocol"):
            (pkg / name).symlink_to(ROOT / name, target_is_directory=True)
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "-p", "plangate.sidecar", "-p", "plangate.provider"]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp, env={**os.environ, "MYPYPATH": tmp}).returncode


if __name__ == "__main__":
    sys.exit(main())
