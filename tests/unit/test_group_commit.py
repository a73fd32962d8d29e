"""Group commit (`runtime.group_commit`): concurrent batches share one `apply` call, and every
caller still gets exactly its own results, in order, or the group's error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from plangate.sidecar.runtime.writes.group_commit import GroupCommit


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


def test_batches_submitted_for_later_share_a_group_and_each_future_gets_its_results() -> None:
    """`submit_later` (a Consume on the event loop): the caller does not wait; batches queued
    while a group runs form the next group, and a failing batch fails only its future."""
    calls: list[list[int]] = []
    running, release = threading.Event(), threading.Event()

    def apply(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            running.set()
            assert release.wait(5)
        if 13 in items:
            raise ValueError("13 is refused")
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(apply)
    with ThreadPoolExecutor(2) as pool:
        first = group.submit_later([1], pool)
        assert running.wait(5)  # the drainer is inside apply([1])
        later = [group.submit_later([i, i + 1], pool) for i in (2, 4, 6)]
        bad = group.submit_later([13], pool)
        alone = pool.submit(group.submit, [8])  # a waiting caller takes turns with the drainer
        release.set()
        assert first.result(5) == [10]
        assert [f.result(5) for f in later] == [[20, 30], [40, 50], [60, 70]]
        with pytest.raises(ValueError, match="13 is refused"):
            bad.result(5)
        assert alone.result(5) == [80]
    assert calls[1][:7] == [2, 3, 4, 5, 6, 7, 13]  # one group in arrival order...
    assert [2, 3] in calls and [13] in calls  # ...run again one batch each: 13 failed alone
    assert group.isolated == 1


def test_submit_later_on_a_shut_down_executor_fails_the_future() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: items)
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        group.submit_later([1], pool).result(5)
    with ThreadPoolExecutor(1) as fresh:  # nothing is left stuck behind it
        assert group.submit_later([2], fresh).result(5) == [2]


def test_the_drainer_never_runs_beside_a_waiting_callers_group() -> None:
    """One transaction at a time: a batch for later, queued while a `submit` leader is
    inside `apply`, runs after it, not beside it."""
    inside, most = 0, 0
    leading, release = threading.Event(), threading.Event()
    lock = threading.Lock()

    def apply(items: list[int]) -> list[int]:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        if items == [1]:
            leading.set()
            assert release.wait(5)
        with lock:
            inside -= 1
        return items

    group: GroupCommit[int, int] = GroupCommit(apply)
    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(group.submit, [1])
        assert leading.wait(5)
        later = group.submit_later([2], pool)
        time.sleep(0.05)  # room for a drainer that did not wait its turn to call apply
        release.set()
        assert leader.result(5) == [1] and later.result(5) == [2]
    assert most == 1
