"""Grandfathering (design §6.1): a plan `superseded_by` another keeps its subscribers, refuses
new ones naming the successor, and `plangate migrate` schedules the move for all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store.sqlite import SqliteStore
from support.sidecar import Stubs, in_process

CATALOG = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
    plans:
      - name: Legacy
        entitlements: {sso: true}
        superseded_by: pro
      - name: Pro
        entitlements: {sso: true}
accounts:
  - id: acct_file
    subscriptions: [{id: file-s, plan: legacy}]
"""
START = "2026-01-31T10:00:00Z"


def _stored(account: str, plan: str) -> dict[str, Any]:
    sub = {"id": f"{account}-s", "plan": plan, "starts_at": START, "members": []}
    return {"id": account, "subscriptions": [sub], "overrides": {}, "grants": []}


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Any]:
    """Subscribers on `legacy` from before it was superseded: records already stored."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    store = SqliteStore(tmp_path / "state.db")
    for account, plan in [("acct_a", "legacy"), ("acct_b", "legacy"), ("acct_c", "pro")]:
        store.save_record(_stored(account, plan))
    store.close()
    with in_process(tmp_path / "catalog.yaml", tmp_path / "state.db") as sc:
        yield sc


def _plangate(sidecar: Any, *args: str) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    run = subprocess.run(
        [sys.executable, "-m", "plangate.sidecar.cli.main", *args, "--target",
         f"127.0.0.1:{sidecar.port}"],
        capture_output=True, text=True, timeout=30, env=clean,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def _phases(stubs: Stubs, account: str) -> list[tuple[str, datetime]]:
    sub = stubs.admin.GetAccount(pb.GetAccountRequest(id=account), timeout=5).subscriptions[0]
    return [(p.plan, p.starts_at.ToDatetime(tzinfo=UTC)) for p in sub.phases]


def test_a_superseded_plan_keeps_subscribers_and_refuses_new_ones(sidecar: Any) -> None:
    with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
        sso = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_a", feature="sso"), timeout=5
        )
        assert (sso.value.bool_value, sso.variant) == (True, "legacy")
        for call, request in [
            (
                stubs.admin.CreateSubscription,
                pb.CreateSubscriptionRequest(account_id="acct_c", plan="legacy"),
            ),
            (
                stubs.admin.ChangePlan,
                pb.ChangePlanRequest(
                    account_id="acct_c", subscription_id="acct_c-s", plan="legacy"
                ),
            ),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=5)
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "superseded by 'pro'" in (info.value.details() or "")
        # an existing subscriber may still change add-ons or stay put
        stubs.admin.ChangePlan(
            pb.ChangePlanRequest(account_id="acct_a", subscription_id="acct_a-s", plan="legacy"),
            timeout=5,
        )


def test_migrate_dry_run_changes_nothing_then_the_move_is_scheduled(sidecar: Any) -> None:
    dry = _plangate(
        sidecar, "migrate", "--from", "legacy", "--to", "pro", "--at", "period_end", "--dry-run"
    )
    lines = dry.splitlines()
    assert lines[0] == "dry run, nothing changed: 3 subscription(s) on legacy"
    # monthly from Jan 31: the period containing today ends on the anchor day (clamped)
    assert any(line.split()[:5] == ["acct_a", "acct_a-s", "legacy", "→", "pro"] for line in lines)
    assert any("acct_file" in line and "skipped (declared in" in line for line in lines)
    assert not any("acct_c" in line for line in lines)
    with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
        assert _phases(stubs, "acct_a") == [] and _phases(stubs, "acct_b") == []
        reply = json.loads(
            _plangate(
                sidecar,
                "migrate",
                "--from",
                "legacy",
                "--to",
                "pro",
                "--at",
                "period_end",
                "--json",
            )
        )
        moved = {m["account_id"]: m for m in reply["moves"] if not m.get("skipped")}
        assert set(moved) == {"acct_a", "acct_b"}
        for account in ("acct_a", "acct_b"):
            ((plan, at),) = _phases(stubs, account)
            assert plan == "pro" and at.isoformat().replace("+00:00", "Z") == moved[account]["at"]
            assert at.hour == 10 and at > datetime.now(UTC)  # the anchor's time of day
        assert _phases(stubs, "acct_c") == []
        with pytest.raises(grpc.RpcError) as info:
            stubs.admin.MigratePlan(pb.MigratePlanRequest(from_plan="pro", to_plan="legacy"))
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as info:
            stubs.admin.MigratePlan(pb.MigratePlanRequest(from_plan="gold", to_plan="pro"))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
