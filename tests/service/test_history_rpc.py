"""Usage.History and the Usage.Export stream over real gRPC, and `plangate usage history` /
`plangate usage export` against a running sidecar (design §6.2)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def stamp(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


def history(
    stubs: Stubs, account: str, feature: str, start: datetime, end: datetime, window: str = "hour"
) -> pb.HistoryResponse:
    request = pb.HistoryRequest(account_id=account, feature=feature, window=window)
    getattr(request, "from").CopyFrom(stamp(start))
    request.to.CopyFrom(stamp(end))
    return stubs.usage.History(request, timeout=10)


def export(stubs: Stubs, start: datetime, end: datetime) -> list[pb.ExportRow]:
    request = pb.ExportRequest()
    getattr(request, "from").CopyFrom(stamp(start))
    request.to.CopyFrom(stamp(end))
    return list(stubs.usage.Export(request, timeout=30))


def account(stubs: Stubs, account_id: str, plan: str = "free") -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan=plan), timeout=5
    )


def report(stubs: Stubs, *reports: pb.UsageReport) -> None:
    results = stubs.usage.Report(pb.ReportRequest(reports=list(reports)), timeout=5).results
    assert all(r.status == pb.ReportResult.STATUS_APPLIED for r in results), results


def users(account_id: str, *keys: str) -> list[pb.UsageReport]:
    """Unique users seen at the start of this hour (so a test crossing the hour still finds them)."""
    return [
        pb.UsageReport(
            account_id=account_id,
            feature="monthly-active-users",
            unique_key=k,
            timestamp=stamp(HOUR),
        )
        for k in keys
    ]


def test_history_over_grpc(stubs: Stubs) -> None:
    account(stubs, "acct_hist")
    report(stubs, *users("acct_hist", "u1", "u2", "u1", "u3"))
    points = history(
        stubs, "acct_hist", "monthly-active-users", HOUR, HOUR + timedelta(hours=2)
    ).points
    assert [(p.window_start.ToDatetime(UTC), p.usage, p.limit) for p in points] == [
        (HOUR, 3, 50),
        (HOUR + timedelta(hours=1), 0, 50),
    ]
    period = history(stubs, "acct_hist", "monthly-active-users", HOUR, HOUR, "period").points
    assert len(period) == 1 and period[0].usage == 3
    assert period[0].window_start.ToDatetime(UTC) == HOUR.replace(day=1, hour=0)
    account(stubs, "acct_hist_ent", plan="enterprise")
    unlimited = history(stubs, "acct_hist_ent", "api-calls", HOUR, HOUR + timedelta(hours=1))
    assert not unlimited.points[0].HasField("limit")  # unlimited: no limit


@pytest.mark.parametrize(
    ("fields", "start", "end", "needle"),
    [
        ({"window": "week"}, HOUR, HOUR, "unknown window 'week'"),
        ({}, HOUR + timedelta(hours=1), HOUR, "swap them"),
        ({"feature": "no-such"}, HOUR, HOUR, "unknown feature 'no-such'"),
        ({"feature": "sso"}, HOUR, HOUR, "only metered"),
        ({"window": "hour"}, HOUR - timedelta(days=500), HOUR, "use a wider window"),
    ],
)
def test_history_refuses_bad_requests(
    stubs: Stubs, fields: dict[str, str], start: datetime, end: datetime, needle: str
) -> None:
    request = pb.HistoryRequest(account_id="acct_acme", feature="api-calls", window="hour")
    for name, value in fields.items():
        setattr(request, name, value)
    getattr(request, "from").CopyFrom(stamp(start))
    request.to.CopyFrom(stamp(end))
    with pytest.raises(grpc.RpcError) as info:
        stubs.usage.History(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert needle in (info.value.details() or "")


def test_history_needs_a_range_and_a_known_account(stubs: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stubs.usage.History(
            pb.HistoryRequest(account_id="acct_acme", feature="api-calls"), timeout=5
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "from is required" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        history(stubs, "acct_nobody", "api-calls", HOUR, HOUR)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_export_streams_sorted_rows(stubs: Stubs) -> None:
    for name in ("acct_exp_b", "acct_exp_a"):
        account(stubs, name)
        report(
            stubs,
            *users(name, "u1", "u2"),
            pb.UsageReport(account_id=name, feature="api-calls", amount=1200),
        )
    rows = export(stubs, HOUR - timedelta(days=1), HOUR + timedelta(days=1))
    keys = [(r.account_id, r.feature, r.period_start.ToDatetime(UTC)) for r in rows]
    assert keys == sorted(keys)
    mine = {(r.account_id, r.feature): r for r in rows if r.account_id.startswith("acct_exp_")}
    assert sorted(mine) == [
        ("acct_exp_a", "api-calls"),
        ("acct_exp_a", "monthly-active-users"),
        ("acct_exp_b", "api-calls"),
        ("acct_exp_b", "monthly-active-users"),
    ]
    calls = mine[("acct_exp_a", "api-calls")]
    assert (calls.usage, calls.limit, calls.overage, calls.topups_burned) == (1200, 1000, 200, 0)
    assert calls.HasField("period_end")
    with pytest.raises(grpc.RpcError) as info:
        export(stubs, HOUR, HOUR - timedelta(hours=1))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# -- the command line ---------------------------------------------------------------------------


def plangate(sidecar: Any, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [*CLI, *args, "--target", f"127.0.0.1:{sidecar.port}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean,
    )


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_cli_usage_history(sidecar: Any, stubs: Stubs) -> None:
    account(stubs, "acct_cli_hist")
    report(stubs, *users("acct_cli_hist", "a", "b"))
    span = ("--from", iso(HOUR), "--to", iso(HOUR + timedelta(hours=1)))
    run = plangate(sidecar, "usage", "history", "acct_cli_hist", "monthly-active-users", *span)
    assert run.returncode == 0, run.stderr
    header, row = run.stdout.splitlines()
    assert header.split() == ["WINDOW", "START", "WINDOW", "END", "USAGE", "LIMIT"]
    assert row.split()[2:] == ["2", "50"]
    run = plangate(
        sidecar, "usage", "history", "acct_cli_hist", "monthly-active-users", *span, "--json"
    )
    assert run.returncode == 0, run.stderr
    assert [(p["usage"], p["limit"]) for p in json.loads(run.stdout)["points"]] == [(2, 50)]
    # refused by the sidecar: exit 1 with its reason; bad arguments: exit 2
    backwards = ("--from", iso(HOUR + timedelta(hours=1)), "--to", iso(HOUR))
    run = plangate(sidecar, "usage", "history", "acct_cli_hist", "api-calls", *backwards)
    assert run.returncode == 1 and "INVALID_ARGUMENT" in run.stderr and "swap" in run.stderr
    run = plangate(
        sidecar, "usage", "history", "acct_cli_hist", "api-calls", *span, "--window", "week"
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    run = plangate(
        sidecar, "usage", "history", "acct_cli_hist", "api-calls", "--from", "soon", "--to", "x"
    )
    assert run.returncode == 2 and "ISO-8601" in run.stderr


def test_cli_usage_export_csv_and_jsonl(sidecar: Any, stubs: Stubs) -> None:
    account(stubs, "acct_cli_exp", plan="enterprise")
    report(stubs, pb.UsageReport(account_id="acct_cli_exp", feature="api-calls", amount=7))
    span = ("--from", iso(HOUR - timedelta(days=1)), "--to", iso(HOUR + timedelta(days=1)))
    run = plangate(sidecar, "usage", "export", *span)
    assert run.returncode == 0, run.stderr
    table = list(csv.DictReader(io.StringIO(run.stdout)))
    assert run.stdout.splitlines()[0] == (
        "account_id,feature,period_start,period_end,usage,limit,overage,topups_burned"
    )
    mine = [r for r in table if r["account_id"] == "acct_cli_exp"]
    assert [(r["feature"], r["usage"], r["limit"], r["overage"]) for r in mine] == [
        ("api-calls", "7", "", "0")  # unlimited: an empty limit
    ]
    for extra in (("--format", "jsonl"), ("--json",)):
        run = plangate(sidecar, "usage", "export", *span, *extra)
        assert run.returncode == 0, run.stderr
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        assert len(lines) == len(table)
        row = next(r for r in lines if r["account_id"] == "acct_cli_exp")
        assert row["usage"] == 7 and "limit" not in row
    backwards = ("--from", iso(HOUR), "--to", iso(HOUR - timedelta(days=1)))
    run = plangate(sidecar, "usage", "export", *backwards)
    assert run.returncode == 1 and "INVALID_ARGUMENT" in run.stderr
