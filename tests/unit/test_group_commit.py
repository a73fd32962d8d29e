"""Group commit (`runtime.group_commit`): concurrent batches share one `apply` call, and every
caller still gets exactly its own results, in order, or the group's error."""

from __future__ import annotations

import threading
import time

import pytest
from plangate.sidecar.runtime.group_commit import GroupCommit


def test_a_lone_caller_runs_at_once_and_gets_its_results() -> None:
    calls: list[list[int]] = []

    def apply(items: list[int]) -> list[int]:
        calls.append(items)
        return [i * 10 for i in items]

    group = GroupCommit(apply)
    assert group.submit([1, 2, 3]) == [10, 20, 30]
    assert calls == [[1, 2, 3]]
    assert group.groups == 1


def test_concurrent_callers_share_calls_and_each_gets_its_own_results() -> None:
    calls: list[list[tuple[int, int]]] = []

    def apply(items: list[tuple[int, int]]) -> list[str]:
        calls.append(items)
        time.sleep(0.01)  # a transaction's worth of time, during which others queue up
        return [f"{caller}:{n}" for caller, n in items]

    group = GroupCommit(apply)
    results: dict[int, list[str]] = {}

    def caller(c: int) -> None:
        results[c] = group.submit([(c, n) for n in range(c % 3 + 1)])

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {c: [f"{c}:{n}" for n in range(c % 3 + 1)] for c in range(24)}
    assert len(calls) < 24  # grouped
    assert group.grouped > 0
    for items in calls:  # a caller's batch is never split or reordered
        callers = [c for c, _ in items]
        assert all(callers.count(c) == c % 3 + 1 for c in set(callers))


class DatabaseAway(ConnectionError):
    pass


def _grouped_run(
    group: GroupCommit[int, int], gate: threading.Event, callers: range
) -> dict[int, object]:
    """Caller 0 leads and waits at `gate` while the others queue into one group."""
    outcomes: dict[int, object] = {}

    def caller(i: int) -> None:
        try:
            outcomes[i] = group.submit([i])
        except Exception as exc:
            outcomes[i] = str(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in callers]
    threads[0].start()
    time.sleep(0.05)
    for t in threads[1:]:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    return outcomes


def test_a_shared_error_fails_every_caller_of_its_group_at_once() -> None:
    gate = threading.Event()
    fail = threading.Event()
    fail.set()
    calls: list[list[int]] = []

    def apply(items: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(items)
        if fail.is_set() and 0 not in items:
            raise DatabaseAway("database away")
        return items

    group = GroupCommit(apply, shared_errors=(DatabaseAway,))
    outcomes = _grouped_run(group, gate, range(6))
    # 0 succeeds alone; 1..5 were queued together and fail together, with no retries
    assert outcomes == {0: [0], **dict.fromkeys(range(1, 6), "database away")}
    assert sorted(map(sorted, calls)) == [[0], [1, 2, 3, 4, 5]]
    fail.clear()
    assert group.submit([7]) == [7]


def test_a_request_that_fails_the_group_fails_alone() -> None:
    gate = threading.Event()
    calls: list[list[int]] = []

    def apply(items: list[int]) -> list[int]:
        gate.wait(5)
        calls.append(items)
        if 3 in items:
            raise ValueError("text the database refuses")
        return [i * 10 for i in items]

    group = GroupCommit(apply, shared_errors=(DatabaseAway,))
    outcomes = _grouped_run(group, gate, range(8))
    assert outcomes == {
        **{i: [i * 10] for i in range(8) if i != 3},
        3: "text the database refuses",
    }
    assert group.isolated == 1
    assert [1, 2, 3, 4, 5, 6, 7] in [sorted(c) for c in calls]  # they did share one first


def test_a_batch_larger_than_the_group_limit_still_runs() -> None:
    group = GroupCommit[int, int](lambda items: list(items), max_items=2)
    assert group.submit(list(range(5))) == list(range(5))


def test_apply_must_return_one_result_per_item() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        group.submit([1, 2, 3])
