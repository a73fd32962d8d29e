"""Faults of the PostgreSQL server, as the SQLite store meets faults of its file
(`tests/service/test_store_faults.py`): a server that refuses writes gives `StoreUnavailable`
with what to do (never an unexpected error), `health()` reports it while it lasts, and it
clears by itself once writes are possible again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from plangate.sidecar.catalog import load_catalog
from plangate.sidecar.engine.usage import UsageReport
from plangate.sidecar.store.base import Status, UsageWrite
from plangate.sidecar.store.errors import StoreUnavailable
from plangate.sidecar.store.postgres import PostgresStore
from support.sidecar import EXAMPLE_CATALOG, wait_for

API_CALLS = load_catalog(EXAMPLE_CATALOG).features["api-calls"]
PERIOD = datetime(2026, 6, 1, tzinfo=UTC)


def _write(key: str) -> UsageWrite:
    return UsageWrite(
        "acct:a1", API_CALLS, PERIOD, UsageReport("a1", "api-calls", 1, idempotency_key=key)
    )


def test_a_read_only_server_refuses_writes_and_recovers(postgres_cluster: Any) -> None:
    name = f"ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

        def read_only(on: bool) -> None:  # as a standby or a read-only replica would be
            admin.execute(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

        store = PostgresStore(postgres_cluster.url(name), "ro")
        try:
            assert store.record_usage([_write("k1")])[0].status is Status.APPLIED
            assert store.health() is None
            read_only(True)
            with pytest.raises(StoreUnavailable, match=r"refuses writes.*point it at the primary"):
                store.record_usage([_write("k2")])
            store.load_counters()  # reads still work, and prove nothing about writes
            problem = store.health()
            assert problem is not None and "refuses writes" in problem
            read_only(False)
            wait_for(lambda: store.health() is None, timeout=10)
            assert store.record_usage([_write("k2")])[0].status is Status.APPLIED
            assert store.load_counters()[("acct:a1", "api-calls", PERIOD)] == 2.0
        finally:
            store.close()
