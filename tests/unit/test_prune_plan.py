"""Housekeeping's cut-offs (design §14): what a pass at a given instant may remove."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.runtime.jobs.housekeeping import prune_plan

CATALOG = parse_catalog(
    """\
products:
  - name: Acme
    features:
      - {name: Calls, type: metered, reset: monthly}
      - {name: Builds, type: metered, reset: hourly}
      - {name: Seats, type: metered, aggregation: gauge, reset: never}
"""
)
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_cutoffs_follow_retention_and_each_features_longest_period() -> None:
    plan = prune_plan(CATALOG, NOW, history_days=400, audit_days=90)
    assert plan.idempotency_before == NOW - timedelta(days=7)
    assert plan.audit_before == NOW - timedelta(days=90)  # `--audit-days`, design §12
    assert plan.tombstones_before == NOW - timedelta(days=7)
    assert plan.deliveries_before == NOW - timedelta(days=30)
    assert plan.usage_before["calls"] == NOW - timedelta(days=400 + 31)
    assert plan.usage_before["builds"] == NOW - timedelta(days=400, hours=1)
    assert plan.marks_before["calls"] == NOW - timedelta(days=7 + 31)
    assert plan.usage_default == NOW - timedelta(days=400 + 366)  # features no longer declared
    assert plan.history_before == NOW - timedelta(days=400)  # hourly buckets (design §6.2)


def test_a_period_still_running_or_recently_ended_is_never_pruned() -> None:
    plan = prune_plan(CATALOG, NOW, history_days=0, audit_days=400)
    # the longest month that can still be running started at most 31 days ago
    assert not plan.prunes_counter("calls", NOW - timedelta(days=31))
    assert plan.prunes_counter("calls", NOW - timedelta(days=31, seconds=1))
    # a feature that never resets has one period for ever
    assert not plan.prunes_counter("seats", datetime(1970, 1, 1, tzinfo=UTC))
    assert not plan.prunes_counter("gone", NOW - timedelta(days=366))
    assert plan.prunes_counter("gone", NOW - timedelta(days=367))
