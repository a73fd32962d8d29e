"""`plangate health [--ready]` against real sidecars: the probe containers and pods run on
themselves (design §13). Exit 0 up/ready, 1 answered but not ready, 2 not reachable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from support.sidecar import copy_catalog, in_process, wait_for

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main", "health"]


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=30, env={**clean, **(env or {})}
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_ready_and_healthy_read_the_management_port_from_the_serve_variable(
    sidecar: Any,
) -> None:
    env = {"PLANGATE_MANAGEMENT_PORT": str(sidecar.management_port)}
    ready = health("--ready", "--json", env=env)
    assert ready.returncode == 0, ready.stderr
    report = json.loads(ready.stdout)
    assert report["ready"] is True and report["status"] == 200
    assert report["url"] == f"http://127.0.0.1:{sidecar.management_port}/readyz"
    assert report["detail"]["catalog_version"] == sidecar.state.catalog.version

    up = health(env={**env, "PLANGATE_MANAGEMENT_HOST": "0.0.0.0"})  # wildcard: ask loopback
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"healthy: http://127.0.0.1:{sidecar.management_port}/healthz"


def test_a_flag_wins_over_the_variable(sidecar: Any) -> None:
    env = {"PLANGATE_MANAGEMENT_PORT": str(closed_port())}
    run = health("--ready", "--port", str(sidecar.management_port), env=env)
    assert run.returncode == 0, run.stderr


def test_nothing_listening_is_exit_2_with_what_to_check() -> None:
    port = closed_port()
    run = health("--ready", env={"PLANGATE_MANAGEMENT_PORT": str(port)})
    assert run.returncode == 2
    assert run.stderr.startswith(f"plangate: cannot reach http://127.0.0.1:{port}/readyz")
    assert "PLANGATE_MANAGEMENT_PORT" in run.stderr and "Traceback" not in run.stderr
    as_json = json.loads(health("--json", "--port", str(port)).stdout)
    assert as_json["reachable"] is False and as_json["healthy"] is False


def test_a_bad_port_variable_is_exit_2_naming_it() -> None:
    run = health(env={"PLANGATE_MANAGEMENT_PORT": "eighty"})
    assert run.returncode == 2
    assert "PLANGATE_MANAGEMENT_PORT='eighty' is not a whole number" in run.stderr


def test_a_sidecar_without_its_database_is_up_but_not_ready(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    """Shared mode with PostgreSQL stopped: /healthz 200 (do not restart it), /readyz 503."""
    catalog = copy_catalog(tmp_path)
    env_name = f"health-{uuid.uuid4().hex[:8]}"
    with in_process(catalog, postgres_cluster.url(), environment=env_name) as sidecar:
        wait_for(lambda: sidecar.feed.connected, timeout=10)
        port = ["--port", str(sidecar.management_port)]
        assert health("--ready", *port).returncode == 0
        postgres_cluster.stop("fast")
        try:
            wait_for(lambda: health("--ready", *port).returncode == 1, timeout=15, interval=0.2)
            run = health("--ready", "--json", *port)
            assert run.returncode == 1
            report = json.loads(run.stdout)
            assert report["status"] == 503 and report["ready"] is False
            assert report["detail"]["store"]["feed"] == "disconnected"
            text = health("--ready", *port)
            assert text.stderr.startswith("plangate: not ready: ") and "answered 503" in text.stderr
            assert health(*port).returncode == 0  # alive: a liveness probe must not kill it
        finally:
            postgres_cluster.start()
