"""The embedded SQLite store: WAL, schema versions and migrations, and evaluation without it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import sqlite_utils
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store import StoreError
from plangate.sidecar.store import sqlite as sqlite_store
from plangate.sidecar.store.sqlite import MIGRATIONS, SqliteStore
from support.sidecar import Stubs, copy_catalog, in_process, wait_for

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]


def _versions(db: Path) -> list[int]:
    with sqlite3.connect(db) as c:
        return [v for (v,) in c.execute("SELECT version FROM plangate_schema ORDER BY version")]


def test_database_is_in_wal_mode_at_the_latest_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with in_process(copy_catalog(tmp_path), db) as sidecar, Stubs(f"127.0.0.1:{sidecar.port}") as s:
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_wal"), timeout=5)
        with sqlite3.connect(db) as other:  # a separate connection sees the file's own settings
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert Path(f"{db}-wal").exists()
        assert _versions(db) == list(range(1, len(MIGRATIONS) + 1))
        assert sidecar.store.schema_version == len(MIGRATIONS)


def test_reopening_runs_no_migration_twice_and_keeps_the_data(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = SqliteStore(db)
    store.save_record({"id": "acct_1", "name": "One", "subscriptions": [], "grants": []})
    store.close()
    for _ in range(3):
        store = SqliteStore(db)
        assert store.schema_version == len(MIGRATIONS)
        assert set(store.load_records()) == {"acct_1"}
        store.close()
    assert _versions(db) == list(range(1, len(MIGRATIONS) + 1))


def test_an_old_database_is_migrated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "state.db"
    old = SqliteStore(db)  # a database written by the current release ...
    old.save_record({"id": "acct_old", "name": "Old", "subscriptions": [], "grants": []})
    old.close()
    runs: list[int] = []

    def next_version(database: sqlite_utils.Database) -> None:  # ... meets the next release
        runs.append(1)
        database.execute("ALTER TABLE accounts ADD COLUMN plan_hint TEXT")

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*MIGRATIONS, next_version])
    for _ in range(2):
        store = SqliteStore(db)
        assert store.schema_version == len(MIGRATIONS) + 1
        assert set(store.load_records()) == {"acct_old"}
        store.close()
    assert runs == [1]  # applied on the first open only (a second ALTER would fail)
    assert _versions(db) == list(range(1, len(MIGRATIONS) + 2))


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            SqliteStore(db).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _versions(db) == list(range(1, len(MIGRATIONS) + 1))


def _serve(catalog: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", "--catalog", str(catalog), "--db", str(db),
         "--port", "0", "--management-port", "0", "--ofrep-port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    SqliteStore(db).close()
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO plangate_schema VALUES (?, datetime('now'))", (newer,))
    with pytest.raises(StoreError, match=f"schema version {newer}"):
        SqliteStore(db)
    run = _serve(copy_catalog(tmp_path), db)
    assert run.returncode == 1
    assert f"schema version {newer}" in run.stderr and "Traceback" not in run.stderr
    assert _versions(db)[-1] == newer  # left as it was


def test_a_file_that_is_not_a_database_is_refused_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a SQLite database, just some text " * 100)
    run = _serve(copy_catalog(tmp_path), db)
    assert run.returncode == 1
    assert str(db) in run.stderr and "Traceback" not in run.stderr


# -- evaluation reads memory only (design §1) ------------------------------------------------


def test_evaluations_send_no_sql_to_the_store(tmp_path: Path) -> None:
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "s.db") as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_sql"), timeout=5)
        statements: list[str] = []

        def observe(sql: str) -> None:
            # only what serves requests (the loop, the store pool): background work (the
            # outbox) may use the store
            if threading.current_thread().name.startswith(("plangate-loop", "plangate-store")):
                statements.append(sql)

        # observe every statement SQLite executes on the sidecar's connection
        sidecar.store._conn.set_trace_callback(observe)
        try:
            for account in ("acct_acme", "acct_globex", "acct_sql", "acct_unknown", "user_ann"):
                s.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=account), timeout=5)
                for feature in ("sso", "api-calls", "seats", "monthly-active-users"):
                    s.evaluation.Evaluate(
                        pb.EvaluateRequest(account_id=account, feature=feature), timeout=5
                    )
            assert statements == []
            # the observation works: a usage report does reach SQLite
            report = pb.UsageReport(account_id="acct_acme", feature="api-calls")
            s.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
            assert any("usage" in sql for sql in statements)
        finally:
            sidecar.store._conn.set_trace_callback(None)


def test_evaluation_answers_while_the_database_is_locked(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with in_process(copy_catalog(tmp_path), db) as sidecar, Stubs(f"127.0.0.1:{sidecar.port}") as s:
        s.evaluation.Evaluate(pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5)
        # another process takes the write lock (waiting out a background write of the
        # sidecar's own, such as the lifecycle scheduler's watermark) and holds it
        locker = sqlite3.connect(db, isolation_level=None, timeout=10)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            for _ in range(50):
                res = s.evaluation.Evaluate(
                    pb.EvaluateRequest(account_id="acct_acme", feature="api-calls"), timeout=2
                )
                assert res.has_access and res.metering.used == 0
                assert (
                    s.evaluation.EvaluateAll(
                        pb.EvaluateAllRequest(account_id="acct_globex"), timeout=2
                    )
                    .resolutions["sso"]
                    .as_boolean
                )
            assert time.monotonic() - started < 5  # 100 evaluations; no lock wait at all
            report = pb.UsageReport(
                account_id="acct_acme", feature="api-calls", idempotency_key="r1"
            )
            with pytest.raises(grpc.RpcError) as info:
                s.usage.Report(pb.ReportRequest(reports=[report]), timeout=1)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # the write waits
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # the waiting write goes through once the lock is released; a retry is a duplicate
        wait_for(
            lambda: (
                s.evaluation.Evaluate(
                    pb.EvaluateRequest(account_id="acct_acme", feature="api-calls"), timeout=2
                ).metering.used
                == 1
            ),
            timeout=10,
        )
        again = s.usage.Report(pb.ReportRequest(reports=[report]), timeout=5).results[0]
        assert again.status == pb.ReportResult.STATUS_DUPLICATE and again.usage == 1
