"""Housekeeping in a running sidecar (design §14): the periodic task prunes usage of periods
long over from the store and from memory, keeps the current period's, and `/metrics` counts
what it removed per kind."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store.base import AuditEntry
from plangate.sidecar.store.sqlite import SqliteStore
from prometheus_client.parser import text_string_to_metric_families
from support.sidecar import Stubs, copy_catalog, in_process, wait_for


def pruned(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    return {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "plangate_pruned_total"
    }


def test_the_periodic_task_prunes_old_periods_and_counts_them(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    long_ago = datetime.now(UTC) - timedelta(days=100)  # its month surely ended 32+ days ago
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(long_ago)
    with (
        in_process(copy_catalog(tmp_path), db, history_days=1, housekeeping_seconds=0.2) as sc,
        Stubs(f"127.0.0.1:{sc.port}") as s,
    ):
        old = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=5, timestamp=at)
        now = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=2)
        s.usage.Report(pb.ReportRequest(reports=[old, now]), timeout=5)
        wait_for(lambda: pruned(sc.management_port).get("usage_rows", 0) >= 1, timeout=15)
        features = {(scope, feature) for scope, feature, _ in sc.state.counters.values}
        starts = [start for scope, f, start in sc.state.counters.values if f == "api-calls"]
        assert ("acct:acct_acme", "api-calls") in features
        assert len(starts) == 1 and starts[0] > long_ago  # memory kept only this period's
        res = s.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_acme", feature="api-calls"), timeout=5
        )
        assert res.metering.used == 2
    store = SqliteStore(db)
    try:
        kept = [start for _s, f, start in store.load_counters() if f == "api-calls"]
    finally:
        store.close()
    assert kept == starts  # and so did the store


def test_audit_entries_older_than_audit_days_are_pruned(tmp_path: Path) -> None:
    with (
        in_process(
            copy_catalog(tmp_path), tmp_path / "state.db", audit_days=2, housekeeping_seconds=0.2
        ) as sc,
        Stubs(f"127.0.0.1:{sc.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_old", name="now"), timeout=5)
        # an entry written three days ago (the API stamps entries with the current time)
        long_ago = datetime.now(UTC) - timedelta(days=3)
        old = AuditEntry(long_ago, "alice", "UpsertAccount", "acct_old", "", None, {"name": "x"})
        sc.store.save_record(sc.state.records["acct_old"], audit=old)
        wait_for(lambda: pruned(sc.management_port).get("audit_entries", 0) >= 1, timeout=15)
        entries = s.admin.ListAuditLog(pb.ListAuditLogRequest(), timeout=5).entries
        assert [e.at.ToDatetime(UTC) > long_ago for e in entries] == [True]
