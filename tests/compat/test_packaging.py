"""The distribution installs as a normal wheel and both packages import from outside the repo."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_into_fresh_virtualenv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheels = list(dist.glob("plangate-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "-q", str(wheels[0])], check=True, capture_output=True
    )
    probe = (
        "import plangate.provider, plangate.sidecar.server.app, plangate.protocol.plangate.v1.plangate_pb2 as pb;"
        "print(plangate.provider.__file__); print(pb.Resolution.DESCRIPTOR.full_name)"
    )
    out = subprocess.run(
        [py, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0].startswith(str(env_dir)), f"provider imported from {out[0]}, not the fresh venv"
    assert out[1] == "plangate.v1.Resolution"
    cli = subprocess.run(
        [env_dir / "bin" / "plangate", "validate", str(ROOT / "examples" / "catalog.yaml")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "ok (version" in cli.stdout


def test_provider_does_not_import_the_sidecar() -> None:
    """Applications install the provider and talk to a sidecar; they never load the daemon."""
    probe = "import sys, plangate.provider; print(sorted(m for m in sys.modules if m.startswith('plangate.sidecar')))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_committed_stubs_match_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
