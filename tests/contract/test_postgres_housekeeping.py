"""Shared mode prunes by one sidecar at a time (design §14): a sidecar that finds another one
pruning the environment skips its pass, and prunes again once that one is done."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from plangate.sidecar.store.base import PrunePlan
from plangate.sidecar.store.postgres import HOUSEKEEPING_LOCK, PostgresStore

EVER = datetime.min.replace(tzinfo=UTC)


def test_one_sidecar_at_a_time_prunes_an_environment(postgres_cluster: Any) -> None:
    env = f"hk-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(postgres_cluster.url(), env)
    other_env = PostgresStore(postgres_cluster.url(), f"{env}-other")
    plan = PrunePlan(datetime.now(UTC) + timedelta(seconds=2), EVER, EVER, {}, EVER, {}, EVER, EVER)
    try:
        with psycopg.connect(postgres_cluster.url()) as pruning:  # another sidecar, mid-pass
            pruning.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (HOUSEKEEPING_LOCK, env)
            )
            assert store.housekeep(plan) is None
            assert other_env.housekeep(plan) is not None  # environments prune independently
            pruning.rollback()
        removed = store.housekeep(plan)
        assert removed is not None and set(removed) >= {"idempotency_keys", "usage_rows"}
    finally:
        store.close()
        other_env.close()
