"""Faults of the SQLite file while a real sidecar serves: the database deleted or replaced, the
disk full, the file read-only. Writes are refused with a status and a message a person can act
on (never UNKNOWN, never a silent loss), `/readyz` says not-ready while it lasts, evaluations
go on from memory, and a full disk recovers without a restart once space is freed.

Disk full and read-only use a real small filesystem (a tmpfs mounted for the test; it needs
root, and the cases skip with that reason without it) and the immutable attribute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store.sqlite import SqliteStore
from support.filesystem import fill, small_filesystem
from support.sidecar import Stubs, copy_catalog, in_process, wait_for


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def report(s: Stubs, key: str, unique: str = "") -> pb.ReportResult:
    feature = "monthly-active-users" if unique else "api-calls"
    r = pb.UsageReport(
        account_id="acct_acme", feature=feature, idempotency_key=key, unique_key=unique
    )
    results: pb.ReportResult = s.usage.Report(pb.ReportRequest(reports=[r]), timeout=10).results[0]
    return results


def refused(s: Stubs, key: str, unique: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        report(s, key, unique)
    assert info.value.code() is not grpc.StatusCode.UNKNOWN
    return info.value


def evaluates(s: Stubs) -> bool:
    res = s.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
    )
    return bool(res.has_access)


def test_a_deleted_database_refuses_writes_and_is_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with in_process(copy_catalog(tmp_path), db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
        assert readyz(sc.management_port)[0] == 200
        db.unlink()
        for i in range(5):  # none of these may be acknowledged: they would be lost
            error = refused(s, f"after-{i}")
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "was deleted" in (error.details() or "")
            assert "Restore the file" in (error.details() or "")
        with pytest.raises(grpc.RpcError) as info:
            s.usage.Consume(pb.ConsumeRequest(account_id="acct_acme", feature="api-calls"))
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        status, detail = readyz(sc.management_port)
        assert status == 503 and "was deleted" in detail["store_error"]
        assert evaluates(s)  # evaluations answer from memory


def test_a_replaced_database_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with in_process(copy_catalog(tmp_path), db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
        shutil.copyfile(db, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", db)  # e.g. a restore over the running sidecar's file
        error = refused(s, "after")
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "replaced by another file" in (error.details() or "")
        assert readyz(sc.management_port)[0] == 503


def test_a_full_disk_is_resource_exhausted_and_recovers_when_space_is_freed(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs", "4m") as fs:
        catalog = copy_catalog(tmp_path / "catalog")
        with in_process(catalog, fs / "state.db") as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
            assert report(s, "first").status == pb.ReportResult.STATUS_APPLIED
            filler = fill(fs)
            error = None
            for i in range(200):  # the WAL has some room left; new unique keys need pages
                try:
                    report(s, f"full-{i}", unique=f"user-{i:04d}-" + "x" * 200)
                except grpc.RpcError as exc:
                    error = exc
                    break
            assert error is not None, "the disk never filled up"
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "is full" in (error.details() or "") and "Free space" in (error.details() or "")
            status, detail = readyz(sc.management_port)
            assert status == 503 and "is full" in detail["store_error"]
            assert evaluates(s)
            filler.unlink()
            wait_for(lambda: readyz(sc.management_port)[0] == 200, timeout=10)
            again = report(s, f"full-{i}", unique=f"user-{i:04d}-" + "x" * 200)
            assert again.status == pb.ReportResult.STATUS_APPLIED  # nothing of it was kept


def test_a_sidecar_started_on_a_read_only_database_is_not_ready(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", "8m") as fs:
        db = fs / "state.db"
        catalog = copy_catalog(tmp_path / "catalog")
        with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
            assert report(s, "before").status == pb.ReportResult.STATUS_APPLIED
        subprocess.run(["chattr", "+i", str(db)], check=True)  # root ignores chmod
        try:
            opened = SqliteStore(db)  # unready from the moment it opens, before any write
            try:
                assert "cannot be written" in (opened.health() or "")
                now = datetime.now(UTC)  # a transaction that writes nothing commits, but
                assert opened.claim_deliveries(now, now, 5) == []  # proves nothing
                assert "cannot be written" in (opened.health() or "")
            finally:
                opened.close()
            with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
                status, detail = readyz(sc.management_port)
                assert status == 503 and "cannot be written" in detail["store_error"]
                assert evaluates(s)
                error = refused(s, "read-only")
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                assert "writable" in (error.details() or "")
                # the first report was kept: a retry is a duplicate
                metering = s.evaluation.Evaluate(
                    pb.EvaluateRequest(account_id="acct_acme", feature="api-calls"), timeout=5
                ).metering
                assert metering.used == 1
        finally:
            subprocess.run(["chattr", "-i", str(db)], check=False)
