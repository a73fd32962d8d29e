"""Faults of the SQLite files that once went unnoticed (issue 22, item 4; decision 1340): a
deleted write-ahead log, I/O errors, a damaged file, a file copied over in place, a read-only
filesystem, a stale log beside a replaced file. Each is met on real files by a real sidecar:
writes are refused with UNAVAILABLE and a message naming the file and what to do, `/readyz`
is 503 while it lasts, and nothing acknowledged is lost.

I/O errors come from a real ext4 filesystem in a loop-mounted file, shut down with
EXT4_IOC_SHUTDOWN (every read and write then fails with EIO until it is unmounted: this machine
has no device mapper, so errors that come and go, as with dm-flakey, cannot be made here).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store.base import StoreError
from plangate.sidecar.store.sqlite import SqliteStore
from support.filesystem import ext4_filesystem, remount, shut_down, small_filesystem
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, in_process, wait_for
from test_store_faults import evaluates, readyz, refused, report

pytestmark = pytest.mark.slow


def used(s: Stubs) -> float:
    """api-calls counted for acct_acme this period, as the sidecar serves it."""
    res = s.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_acme", feature="api-calls"), timeout=5
    )
    return float(res.metering.used)


def test_a_deleted_write_ahead_log_refuses_writes_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), db).start()
    try:
        with Stubs(sidecar.target) as s:
            for i in range(20):
                assert report(s, f"before-{i}").status == pb.ReportResult.STATUS_APPLIED
            (tmp_path / "state.db-wal").unlink()
            for i in range(5):  # acknowledged, these would live only in the unlinked log
                error = refused(s, f"after-{i}")
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                assert "state.db-wal was deleted" in (error.details() or "")
            status, detail = readyz(sidecar.management_port)
            assert status == 503 and "state.db-wal was deleted" in detail["store_error"]
            assert evaluates(s)
        sidecar.restart()  # kill -9: what the log held was copied into the file when noticed
        with Stubs(sidecar.target) as s:
            assert used(s) == 20
            assert readyz(sidecar.management_port)[0] == 200
    finally:
        sidecar.kill()


def _unreadable(message: str) -> bool:
    """SQLite reports a failing disk as an I/O error, or as a damaged file when a read failed."""
    return "state.db" in message and ("I/O error" in message or "cannot be read" in message)


def test_io_errors_keep_the_sidecar_unready_and_its_writes_refused(tmp_path: Path) -> None:
    with ext4_filesystem(tmp_path / "fs", "32M") as fs:
        catalog = copy_catalog(tmp_path / "catalog")
        with in_process(catalog, fs / "state.db") as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
            assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
            assert readyz(sc.management_port)[0] == 200
            shut_down(fs)
            for i in range(3):
                error = refused(s, f"failing-{i}")
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                assert _unreadable(error.details() or "")
            for _ in range(5):  # each poll writes a page: none may clear the fault
                status, detail = readyz(sc.management_port)
                assert status == 503 and _unreadable(detail["store_error"])
            assert evaluates(s)
            error = refused(s, "still-failing")
            assert error.code() is grpc.StatusCode.UNAVAILABLE


def _damage(db: Path, table: str) -> None:
    """Overwrite every page at the root of `table` and its indexes with garbage."""
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [
        r
        for (r,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = ?", (table,))
    ]
    conn.close()
    assert not (db.parent / f"{db.name}-wal").exists()  # all of it is in the file
    with db.open("r+b") as f:
        for root in roots:
            f.seek((root - 1) * page)
            f.write(b"\xa5" * page)


def test_a_damaged_database_is_not_ready_with_a_reason_and_refuses_writes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    catalog = copy_catalog(tmp_path)
    with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
    _damage(db, "outbox")
    with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        status, detail = readyz(sc.management_port)
        assert status == 503, detail
        assert "state.db is damaged" in detail["store_error"]
        assert "restore the file from a backup" in detail["store_error"]
        error = refused(s, "after")  # its pages are whole, but the file is not
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "is damaged" in (error.details() or "")
        assert evaluates(s)


def test_a_database_copied_over_in_place_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    other = tmp_path / "other" / "state.db"
    other.parent.mkdir()
    catalog = copy_catalog(tmp_path)
    with in_process(catalog, other) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert report(s, "elsewhere").status == pb.ReportResult.STATUS_APPLIED
    with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
        inode = db.stat().st_ino
        shutil.copyfile(other, db)  # `cp other.db state.db`: same inode, new content
        assert db.stat().st_ino == inode
        for i in range(3):
            error = refused(s, f"after-{i}")
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "written by another program" in (error.details() or "")
        status, detail = readyz(sc.management_port)
        assert status == 503 and "written by another program" in detail["store_error"]


@pytest.mark.parametrize("stop", ["crash", "clean"])
def test_a_read_only_filesystem_serves_unready_and_recovers_once_writable(
    tmp_path: Path, stop: str
) -> None:
    with small_filesystem(tmp_path / "fs", "16m") as fs:
        sidecar = SubprocessSidecar(copy_catalog(tmp_path / "catalog"), fs / "state.db")
        try:
            sidecar.start()
            with Stubs(sidecar.target) as s:
                assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
            if stop == "crash":
                sidecar.kill()
                assert (fs / "state.db-wal").exists()
            else:
                assert sidecar.terminate() == 0
                assert not (fs / "state.db-wal").exists()
            remount(fs, "ro")
            sidecar.start()  # the same answer after either stop: serving, not ready
            with Stubs(sidecar.target) as s:
                status, detail = readyz(sidecar.management_port)
                assert status == 503 and "state.db" in detail["store_error"]
                assert "writable" in detail["store_error"]
                assert used(s) == 1  # evaluations read what is there
                error = refused(s, "read-only")
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                remount(fs, "rw")
                wait_for(lambda: readyz(sidecar.management_port)[0] == 200, timeout=15)
                assert report(s, "after").status == pb.ReportResult.STATUS_APPLIED
                assert report(s, "before").status == pb.ReportResult.STATUS_DUPLICATE
            sidecar.restart()
            with Stubs(sidecar.target) as s:
                assert used(s) == 2
        finally:
            sidecar.kill()
            remount(fs, "rw")


def test_a_stale_write_ahead_log_beside_a_replaced_file_is_named(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    catalog = copy_catalog(tmp_path)
    sidecar = SubprocessSidecar(catalog, db).start()
    try:
        assert sidecar.terminate() == 0  # the schema is in the file; the next log is small
        sidecar.start()
        with Stubs(sidecar.target) as s:
            for i in range(300):
                report(s, f"k-{i}", unique=f"user-{i:04d}-" + "x" * 300)
        sidecar.kill()  # leaves state.db-wal
    finally:
        sidecar.kill()
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)  # e.g. an unrelated backup restored over it
    conn.executescript(
        "CREATE TABLE t(x); "
        + "".join("INSERT INTO t VALUES (randomblob(900));" for _ in range(200))
    )
    conn.close()
    os.replace(other, db)
    with pytest.raises(StoreError) as info:
        SqliteStore(db)
    message = str(info.value)
    assert f"{db}-wal" in message and "move" in message, message
    assert (tmp_path / "state.db-wal").stat().st_size > 0  # still there, not written into it
    start = subprocess.run(
        [sys.executable, "-m", "plangate.sidecar.cli.main", "serve", "--catalog", str(catalog),
         "--db", str(db), "--port", "0", "--management-port", "0", "--ofrep-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert start.returncode == 1 and f"{db}-wal" in start.stderr, start.stderr
