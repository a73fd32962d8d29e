"""What a newcomer trips on at the command line (issue 22 item 10): selling a plan with or
without its trial, a sidecar that is down or asks for a token, output cut short by `| head`,
a busy port, a diff beside the demo's store — each said in words a person can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.store.sqlite import SqliteStore
from support.sidecar import in_process

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]
TOKEN = "newcomer-token-0123"
CATALOG = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: integer
        default: 1
    plans:
      - name: Free
        entitlements: {seats: 2}
      - name: Team
        entitlements: {sso: true, seats: 25}
        trial: {days: 14, then: free}
"""


def plangate(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
        env={**clean, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("newcomer")
    (d / "catalog.yaml").write_text(CATALOG)
    (d / "tokens").write_text(f"ops:{TOKEN}\n")
    with in_process(d / "catalog.yaml", d / "state.db", token_file=str(d / "tokens")) as sc:
        yield sc


def _create(sidecar: Any, account: str, *flags: str) -> Any:
    target = ("--target", f"127.0.0.1:{sidecar.port}")
    env = {"PLANGATE_TOKEN": TOKEN}
    assert plangate("accounts", "upsert", account, *target, env=env).returncode == 0
    run = plangate("subscriptions", "create", account, "team", *flags, *target, "--json", env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_plan_with_a_trial_can_be_sold_without_it(sidecar: Any) -> None:
    with_trial = _create(sidecar, "acct_trial", "--starts-at", "2026-01-01T00:00:00Z")
    assert with_trial["trial_ends_at"] == "2026-01-15T00:00:00Z"
    straight = _create(sidecar, "acct_paid", "--no-trial")
    assert "trial_ends_at" not in straight and "phases" not in straight


def test_trial_then_and_a_repeated_trial_from_the_cli(sidecar: Any) -> None:
    first = _create(
        sidecar, "acct_again", "--trial-then", "cancel", "--starts-at", "2026-01-01T00:00:00Z"
    )
    assert first["ends_at"] == first["trial_ends_at"] == "2026-01-15T00:00:00Z"
    target = ("--target", f"127.0.0.1:{sidecar.port}")
    refused = plangate(
        "subscriptions", "create", "acct_again", "team", *target, env={"PLANGATE_TOKEN": TOKEN}
    )
    assert refused.returncode == 1 and "allow_repeat_trial" in refused.stderr
    second = _create(sidecar, "acct_again", "--allow-repeat-trial")
    assert "trial_ends_at" in second


def test_no_trial_with_a_trial_end_is_refused(sidecar: Any) -> None:
    target = ("--target", f"127.0.0.1:{sidecar.port}")
    env = {"PLANGATE_TOKEN": TOKEN}
    plangate("accounts", "upsert", "acct_both", *target, env=env)
    run = plangate(
        "subscriptions", "create", "acct_both", "team", "--no-trial", "--trial-then", "free",
        *target, env=env,
    )  # fmt: skip
    assert run.returncode == 1 and "no_trial cannot go with" in run.stderr


def test_a_missing_token_names_plangate_token(sidecar: Any) -> None:
    run = plangate("accounts", "list", "--target", f"127.0.0.1:{sidecar.port}")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "UNAUTHENTICATED" in run.stderr and "set PLANGATE_TOKEN" in run.stderr


def test_a_sidecar_that_is_down_is_said_in_words() -> None:
    run = plangate("check", "acct_acme", "sso", "--target", "127.0.0.1:1", "--timeout", "1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("plangate: cannot reach a sidecar at 127.0.0.1:1")
    assert "PLANGATE_TARGET" in run.stderr and "failed to connect" not in run.stderr


def test_output_cut_short_by_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    read, write = os.pipe()
    os.close(read)  # like `| head` that has already exited
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    try:
        run = subprocess.run(
            [*CLI, "validate", str(tmp_path / "catalog.yaml")],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, env=clean,
        )  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr, run.stderr
    assert run.returncode == 1


def test_a_busy_port_is_one_line_without_grpc_noise(sidecar: Any, tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    run = plangate(
        "serve", "--catalog", str(tmp_path / "catalog.yaml"), "--db", str(tmp_path / "s.db"),
        "--port", str(sidecar.port), "--management-port", "0", "--ofrep-port", "0",
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"plangate serve: cannot listen on 127.0.0.1:{sidecar.port} (port in use?); "
        "choose another with --port"
    ]


def test_diff_reads_the_store_serve_would_use(tmp_path: Path) -> None:
    old = CATALOG
    new = CATALOG.replace("{seats: 2}", "{seats: 3}")
    (tmp_path / "old.yaml").write_text(old)
    (tmp_path / "new.yaml").write_text(new)
    store = SqliteStore(tmp_path / "plangate.db")
    sub = {"id": "s", "plan": "free", "starts_at": "2026-01-01T00:00:00Z", "members": []}
    store.save_record({"id": "acct_db", "subscriptions": [sub], "overrides": {}, "grants": []})
    store.close()
    beside = plangate("diff", "old.yaml", "new.yaml", cwd=tmp_path)
    assert beside.returncode == 0, beside.stderr
    assert beside.stdout.splitlines() == ["acct_db  seats: 2 → 3"]
    assert "stored in plangate.db" in beside.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_variable = plangate(
        "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), cwd=elsewhere,
        env={"PLANGATE_DB": str(tmp_path / "plangate.db")},
    )  # fmt: skip
    assert by_variable.stdout.splitlines() == ["acct_db  seats: 2 → 3"]
    alone = plangate("diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), cwd=elsewhere)
    assert alone.stdout == "" and "declared accounts only" in alone.stderr
    missing = plangate("diff", "old.yaml", "new.yaml", "--db", "nope.db", cwd=tmp_path)
    assert missing.returncode == 1 and "no store at nope.db" in missing.stderr


def test_a_client_command_loads_no_server_side_package() -> None:
    """A client call imports gRPC and the stubs, not the catalog, store or HTTP server (they
    took most of a second to import, paid by every `plangate check`)."""
    probe = (
        "import sys, plangate.sidecar.cli.main as m; "
        "m.build_parser().parse_args(['check', 'a', 'sso']); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('sqlite_utils', 'aiohttp', 'watchfiles', 'psycopg') or n.startswith("
        "('plangate.sidecar.catalog', 'plangate.sidecar.store', 'plangate.sidecar.runtime'))))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
