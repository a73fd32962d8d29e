"""Run mypy (strict) on plangate.sidecar and plangate.provider under their installed names,
then on the tests.

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
        mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        code = subprocess.run([*mypy, "-p", "plangate.sidecar", "-p", "plangate.provider"],
                              cwd=tmp, env={**os.environ, "MYPYPATH": tmp}).returncode  # fmt: skip
        return code or _check_tests(mypy, tmp)


def _check_tests(mypy: list[str], tmp: str) -> int:
    """The tests, as pytest imports them: each test file by its base name (pytest's
    "prepend" mode), `support` as a package. Still strict about every definition, but
    generated gRPC stubs are untyped, and a test that reads an optional field it expects
    set fails on its own when it is not, so those two checks are off here."""
    tests = ROOT / "tests"
    files = sorted(str(p) for p in tests.rglob("*.py") if "node_modules" not in p.parts)
    path = os.pathsep.join(
        [tmp, str(tests), *(str(d) for d in sorted(tests.iterdir()) if d.is_dir())]
    )
    relaxed = ["--no-explicit-package-bases", "--allow-untyped-calls",
               "--disable-error-code=union-attr", "--disable-error-code=no-any-return",
               "--no-warn-unused-ignores"]  # fmt: skip
    return subprocess.run(
        [*mypy, *relaxed, *files], cwd=tmp, env={**os.environ, "MYPYPATH": path}
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
