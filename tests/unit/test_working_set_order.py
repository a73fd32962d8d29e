"""The working set's bookkeeping (design §19): order of use, pins, unknown ids, counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from plangate.sidecar.runtime.live.working_set import LOAD_BUCKETS, WorkingSet

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_least_recently_used_go_first_and_a_hit_moves_an_id_last() -> None:
    ws = WorkingSet(3)
    for account_id in ("a", "b", "c", "d"):
        ws.add(account_id)
    assert ws.has("a")  # a hit: now the most recently used
    assert ws.victims() == ["b"]
    assert not ws.has("b") and len(ws) == 3


def test_pinned_ids_are_never_victims_and_unknown_ids_are_not_held() -> None:
    ws = WorkingSet(1)
    ws.add("a")
    ws.add("ghost", known=False)
    ws.pin(["a"])
    ws.pin(["a"])
    assert ws.victims() == ["ghost"]
    ws.add("b")
    ws.pin(["b"])
    assert ws.victims() == []  # over capacity while both are in use
    ws.unpin(["a", "b"])
    assert ws.pinned("a")  # pinned twice, released once
    ws.unpin(["a"])
    assert ws.victims() == ["a"]
    assert ws.held == 1 and ws.holds("b") and not ws.holds("ghost")


def test_counters_are_indexed_by_scope() -> None:
    ws = WorkingSet(2)
    ws.note_counters([("acct:a", "api", T0), ("acct:a", "seats", T0), ("sub:s", "api", T0)])
    assert ws.drop_scope("acct:a") == {("acct:a", "api", T0), ("acct:a", "seats", T0)}
    assert ws.drop_scope("acct:a") == set()


def test_load_times_fill_cumulative_buckets() -> None:
    ws = WorkingSet(2)
    ws.stats.loaded(0.0003)
    ws.stats.loaded(0.02)
    assert ws.stats.loads == 2
    assert ws.stats.load_buckets[0] == 1
    assert ws.stats.load_buckets[-1] == 2
    assert len(ws.stats.load_buckets) == len(LOAD_BUCKETS)


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="--max-accounts"):
        WorkingSet(0)
