"""The `plangate` command line against a running sidecar: JSON out, exit codes, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sidecar import EXAMPLE_CATALOG, copy_catalog, in_process

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]
TOKEN = "cli-test-token"


def plangate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=30, env={**clean, **(env or {})}
    )


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("cli")
    token = d / "token"
    token.write_text(TOKEN)
    with in_process(copy_catalog(d), d / "state.db", token_file=str(token)) as sc:
        yield sc


@pytest.fixture(scope="module")
def env(sidecar: Any) -> dict[str, str]:
    return {"PLANGATE_TOKEN": TOKEN}


def ok(sidecar: Any, *args: str, env: dict[str, str]) -> Any:
    """Run a client command with --target; it must succeed and print one JSON document."""
    run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def refused(sidecar: Any, *args: str, env: dict[str, str]) -> str:
    run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", env=env)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert run.stdout == "" and "Traceback" not in run.stderr
    return run.stderr


def test_operating_a_sidecar_from_the_command_line(sidecar: Any, env: dict[str, str]) -> None:
    account = ok(
        sidecar, "accounts", "upsert", "acct_cli", "--name", "CLI Corp",
        "--attributes", "{region: eu, tier: 2, beta: true}", env=env,
    )  # fmt: skip
    assert account["id"] == "acct_cli" and account["name"] == "CLI Corp"
    assert account["attributes"] == {"region": "eu", "tier": 2.0, "beta": True}

    sub = ok(
        sidecar, "subscriptions", "create", "acct_cli", "pro", "--addon", "extra-seats=2",
        "--member", "user_cli", "--starts-at", "2026-01-01T00:00:00Z",
        "--ends-at", "2030-01-01T00:00:00Z", "--id", "sub_cli", env=env,
    )  # fmt: skip
    assert (sub["id"], sub["plan"], sub["owner"]) == ("sub_cli", "pro", "acct_cli")
    assert sub["addons"] == {"extra-seats": 2} and sub["members"] == ["user_cli"]
    assert sub["starts_at"] == "2026-01-01T00:00:00Z" and sub["ends_at"] == "2030-01-01T00:00:00Z"

    after = ok(
        sidecar, "overrides", "set", "acct_cli", "execution-concurrency", "33",
        "--expires-at", "2099-01-01T00:00:00Z", env=env,
    )  # fmt: skip
    assert after["overrides"] == [
        {"feature": "execution-concurrency", "value": 33.0, "expires_at": "2099-01-01T00:00:00Z"}
    ]
    soft = ok(
        sidecar,
        "overrides",
        "set",
        "acct_cli",
        "monthly-active-users",
        "{limit: 10, soft: true}",
        env=env,
    )
    assert {"feature": "monthly-active-users", "value": {"limit": 10.0, "soft": True}} in [
        {k: v for k, v in o.items() if k != "expires_at"} for o in soft["overrides"]
    ]

    grant = ok(
        sidecar, "grants", "create", "acct_cli", "api-calls", "unlimited", "--id", "promo",
        "--ends-at", "2099-01-01T00:00:00Z", env=env,
    )  # fmt: skip
    assert (grant["id"], grant["feature"], grant["value"]) == ("promo", "api-calls", "unlimited")

    check = ok(sidecar, "check", "acct_cli", "execution-concurrency", env=env)
    assert (check["as_integer"], check["variant"], check["reason"]) == (
        "33",
        "override",
        "TARGETING_MATCH",
    )
    check = ok(sidecar, "check", "user_cli", "seats", "--requested", "20", env=env)
    assert check["metering"]["limit"] == 15 and check["has_access"] is False  # 5 + 2 x 5
    assert check["denial"] == "requested_exceeds_limit"

    report = ok(
        sidecar, "usage", "report", "acct_cli", "exports", "4", "--idempotency-key", "r1", env=env
    )
    assert report["results"][0]["status"] == "STATUS_APPLIED" and report["results"][0]["usage"] == 4
    again = ok(
        sidecar, "usage", "report", "acct_cli", "exports", "4", "--idempotency-key", "r1", env=env
    )
    assert again["results"][0]["status"] == "STATUS_DUPLICATE" and again["results"][0]["usage"] == 4
    rejected = ok(sidecar, "usage", "report", "acct_cli", "sso", env=env)
    assert rejected["results"][0]["status"] == "STATUS_REJECTED"
    assert "metered" in rejected["results"][0]["message"]
    consumed = ok(sidecar, "usage", "consume", "acct_cli", "exports", "96", env=env)  # Pro: 100/day
    assert consumed["granted"] is True and consumed["usage"] == 100
    denied = ok(sidecar, "usage", "consume", "acct_cli", "exports", env=env)
    assert (denied["granted"], denied["usage"]) == (False, 100)  # printed even when false
    assert denied["denial"] == "usage_limit_reached"

    reset = ok(sidecar, "usage", "reset", "acct_cli", "exports", env=env)
    assert reset["previous_usage"] == 100
    fresh = ok(sidecar, "check", "acct_cli", "exports", env=env)
    assert (fresh["metering"]["used"], fresh["has_access"]) == (0, True)

    # the server state matches what the commands printed
    served = sidecar.state.account("acct_cli")
    assert served.subscriptions[0].addons == {"extra-seats": 2}
    assert [g.id for g in served.grants] == ["promo"]


def test_refusals_exit_1_with_the_servers_reason(sidecar: Any, env: dict[str, str]) -> None:
    message = refused(sidecar, "accounts", "upsert", "acct_acme", env=env)
    assert "FAILED_PRECONDITION" in message and "catalog.yaml" in message
    message = refused(sidecar, "subscriptions", "create", "acct_acme2", "pro", env=env)
    assert "NOT_FOUND" in message and "acct_acme2" in message
    ok(sidecar, "accounts", "upsert", "acct_cli_bad", env=env)
    message = refused(sidecar, "subscriptions", "create", "acct_cli_bad", "platinum", env=env)
    assert "INVALID_ARGUMENT" in message and "unknown plan 'platinum'" in message
    message = refused(sidecar, "overrides", "set", "acct_cli_bad", "sso", "maybe", env=env)
    assert "INVALID_ARGUMENT" in message and "true or false" in message
    # without the token, admin and usage commands are refused; check stays open
    message = refused(sidecar, "accounts", "list", env={})
    assert "UNAUTHENTICATED" in message and "token" in message
    assert ok(sidecar, "check", "acct_acme", "sso", env={})["as_boolean"] is True


def test_bad_arguments_are_reported_without_a_traceback(sidecar: Any, env: dict[str, str]) -> None:
    cases = [
        ("subscriptions", "create", "acct_cli", "pro", "--addon", "extra-seats=two"),
        ("subscriptions", "create", "acct_cli", "pro", "--starts-at", "next tuesday"),
        ("accounts", "upsert", "acct_x", "--attributes", "[1, 2]"),
        ("grants", "create", "acct_cli", "seats", "2026-01-01"),
    ]
    for args in cases:
        run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", env=env)
        assert run.returncode != 0, args
        assert "Traceback" not in run.stderr and run.stderr.strip(), (args, run.stderr)
    assert "acct_x" not in sidecar.state.snapshot.accounts


def test_target_from_the_environment_and_an_unreachable_sidecar(
    sidecar: Any, env: dict[str, str]
) -> None:
    run = plangate(
        "check", "acct_acme", "sso", env={"PLANGATE_TARGET": f"127.0.0.1:{sidecar.port}"}
    )
    assert run.returncode == 0 and json.loads(run.stdout)["as_boolean"] is True
    run = plangate("check", "acct_acme", "sso", "--target", "127.0.0.1:1", "--timeout", "1")
    assert run.returncode == 1 and "UNAVAILABLE" in run.stderr and "Traceback" not in run.stderr


def test_help_explains_the_commands_and_the_environment() -> None:
    top = plangate("--help")
    assert top.returncode == 0
    for word in ("serve", "validate", "check", "accounts", "subscriptions", "overrides", "grants",
                 "usage", "PLANGATE_TARGET", "PLANGATE_TOKEN", "PLANGATE_"):  # fmt: skip
        assert word in top.stdout, word
    serve = plangate("serve", "--help")
    assert serve.returncode == 0
    text = " ".join(serve.stdout.split())  # argparse wraps lines
    for flag, variable in [
        ("--catalog", "PLANGATE_CATALOG"),
        ("--db", "PLANGATE_DB"),
        ("--host", "PLANGATE_HOST"),
        ("--port", "PLANGATE_PORT"),
        ("--management-port", "PLANGATE_MANAGEMENT_PORT"),
        ("--socket", "PLANGATE_SOCKET"),
        ("--token-file", "PLANGATE_TOKEN_FILE"),
        ("--tls-cert", "PLANGATE_TLS_CERT"),
        ("--tls-client-ca", "PLANGATE_TLS_CLIENT_CA"),
        ("--environment", "PLANGATE_ENVIRONMENT"),
    ]:
        assert flag in text and variable in text, flag
    assert "127.0.0.1" in text


def test_validate(tmp_path: Path) -> None:
    run = plangate("validate", str(EXAMPLE_CATALOG))
    assert run.returncode == 0 and "ok" in run.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_CATALOG.read_text().replace("reset: daily", "reset: fortnightly"))
    run = plangate("validate", str(EXAMPLE_CATALOG), str(bad))
    assert run.returncode == 1
    assert f"{bad}:" in run.stderr and "reset" in run.stderr and "Traceback" not in run.stderr
