"""Run mypy (strict) on plangate.sidecar and plangate.provider under their installed names,
then on the tests.

The sidecar's folder is mapped into the `plangate` namespace by setuptools' package-dir, which
mypy cannot follow from the folder itself, and the provider's distribution keeps its packages
in clients/python/plangate; a throwaway tree of symlinks (`plangate/{sidecar,provider,protocol}`)
gives mypy the real import paths of both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "sidecar": ROOT / "sidecar",
    "provider": ROOT / "clients" / "python" / "plangate" / "provider",
    "protocol": ROOT / "clients" / "python" / "plangate" / "protocol",
}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "plangate"
        pkg.mkdir()
        for name, folder in FOLDERS.items():
            (pkg / name).symlink_to(folder, target_is_directory=True)
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
