"""Two distributions from one repository (design §21): the provider's wheel installs alone, with
nothing of the sidecar, and talks to a sidecar installed from the other wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from zipfile import ZipFile

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import EXAMPLE_CATALOG, Stubs, SubprocessSidecar, copy_catalog, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_PROJECT = ROOT / "clients" / "python"

pytestmark = pytest.mark.slow

# What the sidecar needs and an application must not get with the provider.
SIDECAR_ONLY = {
    "aiohttp",
    "pyyaml",
    "sqlite-utils",
    "watchfiles",
    "prometheus-client",
    "grpcio-health-checking",
    "grpcio-reflection",
    "openfeature-flagd-core",
    "orjson",
    "plangate",
}

# Run by the provider-only interpreter: ready event, every kind of answer, track, the
# configuration-changed event the sidecar sends for the usage, a flushing shutdown.
PROBE = """
import json, sys, threading
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.track import TrackingEventDetails
from plangate.provider import PlanGateProvider

events = []
changed = threading.Event()
api.add_handler(ProviderEvent.PROVIDER_READY, lambda d: events.append("ready"))
def on_change(details):
    events.append("changed")
    changed.set()
api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
provider = PlanGateProvider(sys.argv[1])
api.set_provider_and_wait(provider)
client = api.get_client()
ctx = EvaluationContext("acct_acme")
out = {
    "sso": client.get_boolean_value("sso", False, ctx),
    "tier": client.get_string_value("support-tier", "none", ctx),
    "api": client.get_boolean_details("api-calls", False, ctx).value,
}
client.track("api-calls", ctx, TrackingEventDetails(value=3))
out["changed"] = changed.wait(30)
api.shutdown()
out["undelivered"] = provider.pending_reports
out["events"] = events
print(json.dumps(out))
"""


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both projects built with `python -m build` (sdist and wheel each) into one folder."""
    dist = tmp_path_factory.mktemp("dist")
    for project in (PROVIDER_PROJECT, ROOT):
        _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, project)
    yield dist


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_the_wheels_split_the_packages_and_pin_the_version(wheels: Path) -> None:
    provider = _one(wheels, "openfeature_provider_plangate-*.whl")
    sidecar = _one(wheels, "plangate-*.whl")
    _one(wheels, "openfeature_provider_plangate-*.tar.gz")
    _one(wheels, "plangate-*.tar.gz")
    provider_files = ZipFile(provider).namelist()
    sidecar_files = ZipFile(sidecar).namelist()
    assert "plangate/provider/py.typed" in provider_files
    assert "plangate/protocol/plangate/v1/plangate_pb2.pyi" in provider_files
    assert "plangate/sidecar/py.typed" in sidecar_files
    for files in (provider_files, sidecar_files):  # a namespace package in both
        assert "plangate/__init__.py" not in files
    assert not [
        f for f in provider_files if f.startswith(("plangate/sidecar", "plangate/protocol/flagd"))
    ]
    assert not [
        f for f in sidecar_files if f.startswith(("plangate/provider", "plangate/protocol/"))
    ]
    assert "plangate/sidecar/protocol/flagd/evaluation/v2/evaluation_pb2.py" in sidecar_files
    version = provider.name.split("-")[1]
    assert sidecar.name.split("-")[1] == version
    metadata = ZipFile(sidecar).read(f"plangate-{version}.dist-info/METADATA").decode()
    assert f"Requires-Dist: openfeature-provider-plangate=={version}" in metadata
    meta = ZipFile(provider).read(f"openfeature_provider_plangate-{version}.dist-info/METADATA")
    text = meta.decode()
    for field in ("License-Expression: Apache-2.0", "Classifier: Typing :: Typed", "Project-URL"):
        assert field in text, field
    requires = sorted(
        line.split(":", 1)[1].split(">")[0].split("=")[0].split("<")[0].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    )
    assert requires == ["grpcio", "openfeature-sdk", "protobuf"]


def test_the_provider_wheel_alone_talks_to_a_sidecar_from_the_other(
    wheels: Path, tmp_path: Path
) -> None:
    app = _venv(tmp_path / "app")
    _run(app, "-m", "pip", "install", "-q", _one(wheels, "openfeature_provider_plangate-*.whl"))
    installed = json.loads(_run(app, "-m", "pip", "list", "--format", "json"))
    names = {d["name"].lower().replace("_", "-") for d in installed}
    assert not names & SIDECAR_ONLY, (
        f"the provider brought sidecar packages: {names & SIDECAR_ONLY}"
    )
    assert "openfeature-provider-plangate" in names

    daemon = _venv(tmp_path / "sidecar")
    _run(
        daemon, "-m", "pip", "install", "-q", "--find-links", wheels, _one(wheels, "plangate-*.whl")
    )
    validated = _run(tmp_path / "sidecar" / "bin" / "plangate", "validate", EXAMPLE_CATALOG)
    assert "ok (version" in validated
    catalog = copy_catalog(tmp_path / "catalog")
    with SubprocessSidecar(catalog, tmp_path / "state.db", python=daemon) as sidecar:
        out = _run(
            daemon,
            "-c",
            "import plangate.sidecar, plangate.provider; print(plangate.sidecar.__file__)",
        )
        assert out.startswith(str(tmp_path / "sidecar")), out
        with Stubs(sidecar.target) as stubs:
            request = pb.EvaluateRequest(account_id="acct_acme", feature="api-calls")
            before = stubs.evaluation.Evaluate(request).metering.used
            probe = _run(app, "-c", PROBE, sidecar.target, cwd=tmp_path)
            answer = json.loads(probe.strip().splitlines()[-1])
            assert answer["sso"] is True and answer["api"] is True
            assert answer["tier"] in {"community", "email", "priority"}
            assert answer["changed"] and answer["events"][0] == "ready"
            assert answer["undelivered"] == 0
            wait_for(
                lambda: stubs.evaluation.Evaluate(request).metering.used == before + 3, timeout=20
            )


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
