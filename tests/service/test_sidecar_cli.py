"""The `plangate` command line against a running sidecar: clean JSON for scripts, text for
people, exit codes that tell an answer from an error (design §2), help texts."""

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
TOKEN = "cli-test-token-0001"


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
    """Run a client command with --target --json; it must succeed and print one JSON document."""
    run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", "--json", env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def text(sidecar: Any, *args: str, env: dict[str, str], code: int = 0) -> str:
    """A client command's output for people (stdout, or stderr when it fails)."""
    run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", env=env)
    assert run.returncode == code, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    return run.stdout if code == 0 else run.stderr


def failed(sidecar: Any, *args: str, env: dict[str, str]) -> tuple[Any, str]:
    """A command whose answer is a failure: exit 1, the reply as JSON, the reason on stderr."""
    run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", "--json", env=env)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stderr.startswith("plangate: ")
    return json.loads(run.stdout), run.stderr


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
    assert account["attributes"] == {"region": "eu", "tier": 2, "beta": True}

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
        {"feature": "execution-concurrency", "value": 33, "expires_at": "2099-01-01T00:00:00Z"}
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
    assert {"feature": "monthly-active-users", "value": {"limit": 10, "soft": True}} in [
        {k: v for k, v in o.items() if k != "expires_at"} for o in soft["overrides"]
    ]

    grant = ok(
        sidecar, "grants", "create", "acct_cli", "api-calls", "unlimited", "--id", "promo",
        "--ends-at", "2099-01-01T00:00:00Z", env=env,
    )  # fmt: skip
    assert (grant["id"], grant["feature"], grant["value"]) == ("promo", "api-calls", "unlimited")

    check = ok(sidecar, "check", "acct_cli", "execution-concurrency", env=env)
    assert (check["as_integer"], check["variant"], check["reason"]) == (
        33,
        "override",
        "TARGETING_MATCH",
    )
    check = ok(sidecar, "check", "user_cli", "seats", "--requested", "20", env=env)
    assert check["metering"]["limit"] == 15 and check["has_access"] is False  # 5 + 2 x 5
    assert check["denial"] == "requested_exceeds_limit"

    report = ok(
        sidecar, "usage", "report", "acct_cli", "exports", "4", "--idempotency-key", "r1", env=env
    )
    assert report["results"][0]["status"] == "applied" and report["results"][0]["usage"] == 4
    again = ok(
        sidecar, "usage", "report", "acct_cli", "exports", "4", "--idempotency-key", "r1", env=env
    )
    assert again["results"][0]["status"] == "duplicate" and again["results"][0]["usage"] == 4
    rejected, why = failed(sidecar, "usage", "report", "acct_cli", "sso", env=env)
    assert rejected["results"][0]["status"] == "rejected"
    assert "metered" in rejected["results"][0]["message"] and "metered" in why
    consumed = ok(sidecar, "usage", "consume", "acct_cli", "exports", "96", env=env)  # Pro: 100/day
    assert consumed["granted"] is True and consumed["usage"] == 100
    denied, why = failed(sidecar, "usage", "consume", "acct_cli", "exports", env=env)
    assert (denied["granted"], denied["usage"]) == (False, 100)  # printed even when false
    assert denied["denial"] == "usage_limit_reached" and "usage_limit_reached" in why

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
    cases: list[
        tuple[int, ...] | tuple[Any, ...]
    ] = [  # usage errors are 2 (nothing sent); refusals 1
        (2, "subscriptions", "create", "acct_cli", "pro", "--addon", "extra-seats=two"),
        (2, "subscriptions", "create", "acct_cli", "pro", "--starts-at", "next tuesday"),
        (2, "accounts", "upsert", "acct_x", "--attributes", "[1, 2]"),
        (2, "deliveries", "retry"),
        (2, "check", "acct_cli"),
        (1, "grants", "create", "acct_cli", "seats", "2026-01-01"),
    ]
    for code, *args in cases:
        run = plangate(*args, "--target", f"127.0.0.1:{sidecar.port}", env=env)
        assert run.returncode == code, args
        assert "Traceback" not in run.stderr and run.stderr.strip(), (args, run.stderr)
    assert "acct_x" not in sidecar.state.snapshot.accounts


def test_target_from_the_environment_and_an_unreachable_sidecar(
    sidecar: Any, env: dict[str, str]
) -> None:
    run = plangate(
        "check", "acct_acme", "sso", "--json", env={"PLANGATE_TARGET": f"127.0.0.1:{sidecar.port}"}
    )
    assert run.returncode == 0 and json.loads(run.stdout)["as_boolean"] is True
    run = plangate("check", "acct_acme", "sso", "--target", "127.0.0.1:1", "--timeout", "1")
    assert run.returncode == 2 and "UNAVAILABLE" in run.stderr and "Traceback" not in run.stderr


def test_help_explains_the_commands_and_the_environment() -> None:
    top = plangate("--help")
    assert top.returncode == 0
    for word in ("serve", "validate", "check", "accounts", "subscriptions", "overrides", "grants",
                 "usage", "PLANGATE_TARGET", "PLANGATE_TOKEN", "PLANGATE_"):  # fmt: skip
        assert word in top.stdout, word
    serve = plangate("serve", "--help")
    assert serve.returncode == 0
    text = " ".join(serve.stdout.split())  # argparse wraps lines
    from plangate.sidecar.settings import declarations

    for d in declarations():  # every declared option is a flag that names its variable
        assert f"{d.flag} " in text and f"[{d.env}]" in text, d.name
    assert "127.0.0.1" in text


def test_validate(tmp_path: Path) -> None:
    run = plangate("validate", str(EXAMPLE_CATALOG))
    assert run.returncode == 0 and "ok" in run.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_CATALOG.read_text().replace("reset: daily", "reset: fortnightly"))
    run = plangate("validate", str(EXAMPLE_CATALOG), str(bad))
    assert run.returncode == 1
    assert f"{bad}:" in run.stderr and "reset" in run.stderr and "Traceback" not in run.stderr


def _no_empty_strings(data: Any, where: str = "") -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            _no_empty_strings(value, f"{where}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _no_empty_strings(value, f"{where}[{i}]")
    else:
        assert data != "", f"empty string at {where}"


def test_json_for_scripts_has_real_numbers_and_no_unset_fields(
    sidecar: Any, env: dict[str, str]
) -> None:
    ok(sidecar, "accounts", "upsert", "acct_json", "--attributes", "{tier: 2}", env=env)
    ok(sidecar, "subscriptions", "create", "acct_json", "pro", "--id", "sub_json", env=env)
    ok(sidecar, "usage", "report", "acct_json", "api-calls", "7", env=env)
    check = ok(sidecar, "check", "acct_json", "api-calls", env=env)
    assert check["metering"]["limit"] == 100_000 and type(check["metering"]["limit"]) is int
    assert type(check["metering"]["used"]) is int and check["metering"]["used"] == 7
    assert type(check["as_integer"]) is int and type(check["value"]) is int
    assert check["metering"]["period_end"].endswith("Z")
    for unset in ("denial", "error_code", "error_message", "as_string"):
        assert unset not in check, unset
    flag = ok(sidecar, "check", "acct_json", "sso", env=env)
    assert (flag["as_boolean"], flag["has_access"], flag["reason"]) == (
        True,
        True,
        "TARGETING_MATCH",
    )
    assert "metering" not in flag and "as_integer" not in flag
    for reply in (
        check,
        flag,
        ok(sidecar, "accounts", "get", "acct_json", env=env),
        ok(sidecar, "accounts", "list", env=env),
        ok(sidecar, "subscriptions", "list", "acct_json", env=env),
    ):
        _no_empty_strings(reply)
    account = ok(sidecar, "accounts", "get", "acct_json", env=env)
    assert "name" not in account and account["attributes"] == {"tier": 2}
    assert "ends_at" not in account["subscriptions"][0]


def test_text_for_people_shows_value_reason_and_a_usage_bar(
    sidecar: Any, env: dict[str, str]
) -> None:
    ok(sidecar, "accounts", "upsert", "acct_text", env=env)
    ok(sidecar, "subscriptions", "create", "acct_text", "pro", "--id", "sub_text", env=env)
    ok(sidecar, "usage", "report", "acct_text", "api-calls", "70000", env=env)
    lines = text(sidecar, "check", "acct_text", "api-calls", env=env).splitlines()
    assert lines[0].split()[:2] == ["api-calls", "allowed"]
    assert "███████░░░ 70,000 / 100,000 (30,000 left, soft limit, resets 20" in lines[0]
    assert (
        lines[1].strip().startswith("why:") and "pro" in lines[1] and "TARGETING_MATCH" in lines[1]
    )
    seats = text(sidecar, "check", "acct_text", "seats", "--requested", "9", env=env)
    assert seats.split()[:2] == ["seats", "denied"] and "requested_exceeds_limit" in seats
    assert text(sidecar, "check", "acct_text", "sso", env=env).split()[:3] == [
        "sso",
        "allowed",
        "on",
    ]
    table = text(sidecar, "subscriptions", "list", "acct_text", env=env).splitlines()
    assert table[0].split() == ["ID", "PLAN", "ADD-ONS", "STARTS", "ENDS", "MEMBERS", "SCHEDULED"]
    assert table[1].split()[:2] == ["sub_text", "pro"]
    assert "no subscriptions" in text(sidecar, "subscriptions", "list", "acct_cli_bad", env=env)
    listed = text(sidecar, "accounts", "list", env=env)
    assert any(row.split()[:2] == ["acct_text", "pro"] for row in listed.splitlines())
    account = text(sidecar, "accounts", "get", "acct_text", env=env)
    assert "{" not in account and "sub_text" in account  # aligned text, not JSON


def test_text_for_people_is_truthful_about_pools_and_off_booleans(
    sidecar: Any, env: dict[str, str]
) -> None:
    """Design §12.1: a credit-priced feature its pool caps shows what the pool allows, never
    "unlimited"; a boolean that is simply off says "off", not "denied"."""
    ok(sidecar, "accounts", "upsert", "acct_pool_text", env=env)
    ok(sidecar, "subscriptions", "create", "acct_pool_text", "free", env=env)
    ok(sidecar, "usage", "report", "acct_pool_text", "ai-completions", "30", env=env)
    completions = text(sidecar, "check", "acct_pool_text", "ai-completions", env=env)
    first = completions.splitlines()[0]
    assert "unlimited" not in first, first
    assert "30 / 100" in first and "70 left: what the ai-credits pool allows" in first, first
    sso = text(sidecar, "check", "acct_pool_text", "sso", env=env)  # Free has no SSO
    assert sso.split()[:3] == ["sso", "off", "off"], sso
    assert "denied" not in sso


def test_scheduled_changes_are_shown_and_can_be_removed(sidecar: Any, env: dict[str, str]) -> None:
    """Design §6.1: `--at TIME|period_end`, pending phases and ends in the listing, removal."""
    ok(sidecar, "accounts", "upsert", "acct_sched", env=env)
    ok(sidecar, "subscriptions", "create", "acct_sched", "free", "--id", "s1", env=env)
    changed = ok(
        sidecar, "subscriptions", "change-plan", "acct_sched", "s1", "pro", "--at",
        "2031-02-01T00:00:00Z", env=env,
    )  # fmt: skip
    assert changed["plan"] == "free"
    assert changed["phases"] == [{"starts_at": "2031-02-01T00:00:00Z", "plan": "pro"}]
    ended = ok(
        sidecar, "subscriptions", "cancel", "acct_sched", "s1", "--at", "period_end", env=env
    )
    assert ended["ends_at"] < "2031"  # the end of this month's period; the phase went with it
    assert "phases" not in ended
    ok(sidecar, "subscriptions", "resume", "acct_sched", "s1", env=env)
    ok(sidecar, "subscriptions", "change-plan", "acct_sched", "s1", "pro", "--at",
       "2031-02-01T00:00:00Z", env=env)  # fmt: skip
    row = text(sidecar, "subscriptions", "list", "acct_sched", env=env).splitlines()[1]
    assert row.split()[-3:] == ["pro", "from", "2031-02-01"], row
    ok(sidecar, "subscriptions", "cancel-scheduled", "acct_sched", "s1", env=env)
    assert (
        "phases"
        not in ok(sidecar, "subscriptions", "list", "acct_sched", env=env)["subscriptions"][0]
    )
    message = text(
        sidecar, "subscriptions", "change-plan", "acct_sched", "s1", "pro", "--at", "soon",
        env=env, code=2,
    )  # fmt: skip
    assert "ISO-8601" in message


def test_errors_and_rejections_exit_1_and_a_typo_gets_the_nearest_feature(
    sidecar: Any, env: dict[str, str]
) -> None:
    message = text(sidecar, "check", "acct_acme", "sso2", env=env, code=1)
    assert message.strip() == "plangate: unknown feature 'sso2'; did you mean 'sso'?"
    reply, message = failed(sidecar, "check", "acct_acme", "api-cals", env=env)
    assert reply["error_code"] == "FLAG_NOT_FOUND" and "did you mean 'api-calls'?" in message
    reply, message = failed(
        sidecar, "check", "acct_acme", "api-calls", "--requested", "nan", env=env
    )
    assert reply["error_code"] == "INVALID_CONTEXT" and "INVALID_CONTEXT" in message
    reply, message = failed(sidecar, "usage", "report", "acct_acme", "exprots", env=env)
    assert reply["results"][0]["status"] == "rejected" and "did you mean 'exports'?" in message
    # a denial is an answer, not an error: check exits 0
    ok(sidecar, "check", "acct_nobody", "sso", env=env)


def test_upsert_from_the_cli_merges_and_clears_only_when_asked(
    sidecar: Any, env: dict[str, str]
) -> None:
    # the README's CLI example, then a rename that says nothing about attributes
    ok(sidecar, "accounts", "upsert", "acct_merge", "--name", "Merge", "--attributes", "{region: eu, beta: true}", env=env)  # fmt: skip
    renamed = ok(sidecar, "accounts", "upsert", "acct_merge", "--name", "Merge Ltd", env=env)
    assert renamed["attributes"] == {"region": "eu", "beta": True}
    merged = ok(sidecar, "accounts", "upsert", "acct_merge", "--attributes", "{tier: 3, beta: null}", env=env)  # fmt: skip
    assert (merged["name"], merged["attributes"]) == ("Merge Ltd", {"region": "eu", "tier": 3})
    cleared = ok(sidecar, "accounts", "upsert", "acct_merge", "--clear-attributes", env=env)
    assert (cleared["name"], cleared.get("attributes", {})) == ("Merge Ltd", {})
    assert sidecar.state.records["acct_merge"]["attributes"] == {}


def test_every_client_command_takes_json_and_documents_the_exit_codes() -> None:
    from plangate.sidecar.cli import client
    from plangate.sidecar.cli.main import build_parser

    parser = build_parser()
    for command in client.COMMANDS:
        words = command.words.split()
        args = parser.parse_args([*words, *["x"] * 4][: len(words)] + _positionals(command))
        assert args.json is False, command.words
        assert parser.parse_args([*words, *_positionals(command), "--json"]).json is True
    top = plangate("check", "--help")
    assert (
        "--json" in top.stdout
        and "exit codes" in top.stdout
        and "sidecar cannot be reached" in top.stdout
    )


def _positionals(command: Any) -> list[str]:
    """The arguments a command cannot do without: positionals and required options."""
    out: list[str] = []
    for a in command.args:
        if a.options.get("required"):
            out += [a.names[0], "1"]
        elif not a.names[0].startswith("-") and a.options.get("nargs") not in ("?", "*"):
            out.append("1")
    return out


def test_check_explain_shows_the_trail(sidecar: Any, env: dict[str, str]) -> None:
    """design §4.1: override, targeting, every source and why it lost, the winner."""
    shown = text(sidecar, "check", "acct_acme", "execution-concurrency", "--explain", env=env)
    assert "1  override   25" in shown
    assert "1b targeting  none (the feature has no targeting)" in shown
    assert "2  pro        10  lost: the override replaces every other source" in shown
    assert "=> override  25" in shown
    rollout = text(sidecar, "check", "acct_acme", "pipeline-editor-v2", "--explain", env=env)
    assert "1b targeting  variant off" in rollout and "=> targeting  off" in rollout
    reply = ok(sidecar, "check", "acct_acme", "api-calls", "--explain", env=env)
    trail = json.loads(reply["explain"])
    assert [c["source"] for c in trail["candidates"]] == ["pro", "grant"]
    assert trail["winner"]["source"] == "grant"
    assert "explain" not in ok(sidecar, "check", "acct_acme", "api-calls", env=env)


def test_audit_lists_the_changes_the_cli_made(sidecar: Any, env: dict[str, str]) -> None:
    ok(sidecar, "accounts", "upsert", "acct_audit_cli", "--name", "Audit", env=env)
    ok(sidecar, "overrides", "set", "acct_audit_cli", "seats", "4", env=env)
    ok(sidecar, "usage", "reset", "acct_audit_cli", "api-calls", env=env)
    reply = ok(sidecar, "audit", "--account", "acct_audit_cli", env=env)
    entries = reply["entries"]
    # a bare token in --token-file is named "token" (docs/operating.md)
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("token", "ResetUsage"),
        ("token", "SetOverride"),
        ("token", "UpsertAccount"),
    ]
    assert entries[1]["after"] == {"overrides": {"seats": {"value": 4, "expires_at": None}}}
    assert "before" not in entries[2]  # created: nothing before
    since = ok(sidecar, "audit", "--since", entries[1]["at"], "--page-size", "1", env=env)
    assert [e["action"] for e in since["entries"]] == ["ResetUsage"]
    assert since["next_page_token"]

    shown = text(sidecar, "audit", "--account", "acct_audit_cli", env=env).splitlines()
    assert shown[0].split() == ["AT", "WHO", "WHAT", "ACCOUNT", "TARGET", "CHANGED"]
    reset = ["token", "ResetUsage", "acct_audit_cli", "api-calls", "usage", "0", "->", "0"]
    assert shown[1].split()[1:] == reset
    assert shown[2].split()[1:] == ["token", "SetOverride", "acct_audit_cli", "seats", "overrides"]
    assert shown[3].split()[1:] == ["token", "UpsertAccount", "acct_audit_cli", "created"]
    assert text(sidecar, "audit", "--account", "acct_nobody", env=env).strip() == "no audit entries"
    assert "not an ISO-8601 time" in text(sidecar, "audit", "--since", "yesterday", env=env, code=2)


def test_holds_from_the_command_line(sidecar: Any, env: dict[str, str]) -> None:
    ok(sidecar, "accounts", "upsert", "acct_cli_holds", env=env)
    ok(sidecar, "subscriptions", "create", "acct_cli_holds", "pro", env=env)  # exports: 100/day
    hold = ok(
        sidecar, "holds", "reserve", "acct_cli_holds", "exports", "70", "--ttl", "600", env=env
    )
    assert hold["granted"] is True and hold["hold_id"].startswith("hold_")
    assert hold["resolution"]["metering"]["held"] == 70
    denied, why = failed(sidecar, "holds", "reserve", "acct_cli_holds", "exports", "40", env=env)
    assert denied["granted"] is False and "usage_limit_reached" in why
    shown = text(sidecar, "check", "acct_cli_holds", "exports", env=env)
    assert "30 left" in shown and "70 held" in shown
    listed = text(sidecar, "holds", "list", "acct_cli_holds", env=env)
    assert hold["hold_id"] in listed and "exports" in listed and "70" in listed

    settled = text(sidecar, "holds", "settle", hold["hold_id"], "120", env=env)
    assert "settled 120" in settled and "over the ceiling" in settled
    message = refused(sidecar, "holds", "release", hold["hold_id"], env=env)
    assert "FAILED_PRECONDITION" in message and "was settled" in message
    assert ok(sidecar, "holds", "list", "acct_cli_holds", env=env) == {}
    assert "acct_cli_holds has no active holds" in text(
        sidecar, "holds", "list", "acct_cli_holds", env=env
    )

    other = ok(sidecar, "holds", "reserve", "acct_cli_holds", "ai-credits", "5", env=env)
    released = ok(
        sidecar, "holds", "release", other["hold_id"], "--account", "acct_cli_holds", env=env
    )
    assert released["hold"]["state"] == "released"
    message = refused(
        sidecar, "holds", "reserve", "acct_cli_holds", "exports", "1", "--ttl", "0", env=env
    )
    assert "INVALID_ARGUMENT" in message and "ttl_seconds" in message
    message = refused(sidecar, "holds", "settle", "hold_nope", "1", env=env)
    assert "NOT_FOUND" in message
