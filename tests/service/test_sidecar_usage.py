"""Usage over gRPC (design §5): batched reports, idempotency, atomic Consume, durability."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_value
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog

APPLIED = pb.ReportResult.STATUS_APPLIED
DUPLICATE = pb.ReportResult.STATUS_DUPLICATE
REJECTED = pb.ReportResult.STATUS_REJECTED


def new_account(stubs: Stubs, account_id: str, plan: str = "free") -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan=plan), timeout=5
    )


def used(stubs: Stubs, account_id: str, feature: str) -> float:
    res = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )
    assert res.error_code == "", res.error_message
    return float(res.metering.used)


def report(**fields: Any) -> pb.UsageReport:
    return pb.UsageReport(**fields)


def test_a_batch_gets_one_result_per_report_in_order(stubs: Stubs) -> None:
    new_account(stubs, "acct_batch", plan="pro")
    batch = [
        report(account_id="acct_batch", feature="api-calls", amount=5),
        report(account_id="acct_batch", feature="no-such-feature"),
        report(account_id="acct_batch", feature="api-calls", amount=2.5),
        report(account_id="acct_batch", feature="sso"),
        report(account_id="acct_nobody", feature="api-calls"),
        report(account_id="acct_batch", feature="monthly-active-users"),
        report(account_id="acct_batch", feature="monthly-active-users", unique_key="u1"),
        report(account_id="acct_batch", feature="monthly-active-users", unique_key="u2"),
        report(account_id="acct_batch", feature="monthly-active-users", unique_key="u1"),
        report(account_id="acct_batch", feature="seats", amount=3),  # gauge: set
        report(account_id="acct_batch", feature="seats", amount=2),
        report(account_id="acct_batch", feature="api-calls", amount=-100),  # refund, floor 0
        report(account_id="acct_batch", feature="api-calls", amount=float("nan")),
        report(account_id="", feature="api-calls"),
        report(account_id="acct_batch", feature="exports", unique_key="x"),
    ]
    results = stubs.usage.Report(pb.ReportRequest(reports=batch), timeout=5).results
    assert len(results) == len(batch)
    got = [(r.status, r.usage) for r in results]
    assert got == [
        (APPLIED, 5),
        (REJECTED, 0),
        (APPLIED, 7.5),
        (REJECTED, 0),
        (REJECTED, 0),
        (REJECTED, 0),
        (APPLIED, 1),
        (APPLIED, 2),
        (APPLIED, 2),  # u1 again: still two distinct users
        (APPLIED, 3),
        (APPLIED, 2),
        (APPLIED, 0),
        (REJECTED, 0),
        (REJECTED, 0),
        (REJECTED, 0),
    ]
    messages = [r.message for r in results]
    assert "unknown feature 'no-such-feature'" in messages[1]
    assert "sso" in messages[3] and "metered" in messages[3]
    assert "unknown account 'acct_nobody'" in messages[4]
    assert "unique_key" in messages[5]
    assert "finite" in messages[12]
    assert "account" in messages[13]
    assert "unique_key" in messages[14]
    assert all(m == "" for r, m in zip(results, messages, strict=True) if r.status == APPLIED)
    assert all(r.HasField("period_start") for r in results if r.status == APPLIED)
    assert used(stubs, "acct_batch", "api-calls") == 0
    assert used(stubs, "acct_batch", "monthly-active-users") == 2
    assert used(stubs, "acct_batch", "seats") == 2


def test_an_empty_or_oversized_batch_is_invalid(stubs: Stubs) -> None:
    for reports in ([], [report(account_id="acct_acme", feature="exports")] * 10_001):
        with pytest.raises(grpc.RpcError) as info:
            stubs.usage.Report(pb.ReportRequest(reports=reports), timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert used(stubs, "acct_acme", "exports") == 0


def test_retrying_a_batch_changes_nothing(stubs: Stubs) -> None:
    new_account(stubs, "acct_retry", plan="pro")
    batch = pb.ReportRequest(
        reports=[
            report(account_id="acct_retry", feature="api-calls", amount=10, idempotency_key="b1-0"),
            report(account_id="acct_retry", feature="api-calls", amount=20, idempotency_key="b1-1"),
            report(
                account_id="acct_retry",
                feature="monthly-active-users",
                unique_key="ann",
                idempotency_key="b1-2",
            ),
            report(account_id="acct_retry", feature="seats", amount=4, idempotency_key="b1-3"),
        ]
    )
    first = stubs.usage.Report(batch, timeout=5).results
    assert [r.status for r in first] == [APPLIED] * 4
    assert [r.usage for r in first] == [10, 30, 1, 4]
    for _ in range(3):
        again = stubs.usage.Report(batch, timeout=5).results
        assert [r.status for r in again] == [DUPLICATE] * 4
        assert [r.usage for r in again] == [r.usage for r in first]  # the original results
        assert [r.period_start for r in again] == [r.period_start for r in first]
    assert used(stubs, "acct_retry", "api-calls") == 30
    assert used(stubs, "acct_retry", "monthly-active-users") == 1
    assert used(stubs, "acct_retry", "seats") == 4
    # a batch mixing new and seen keys applies only the new ones
    mixed = pb.ReportRequest(
        reports=[
            report(account_id="acct_retry", feature="api-calls", amount=10, idempotency_key="b1-0"),
            report(account_id="acct_retry", feature="api-calls", amount=1, idempotency_key="b2-0"),
        ]
    )
    results = stubs.usage.Report(mixed, timeout=5).results
    assert [(r.status, r.usage) for r in results] == [(DUPLICATE, 10), (APPLIED, 31)]
    assert used(stubs, "acct_retry", "api-calls") == 31


def test_consume_grants_then_denies_at_a_hard_limit(stubs: Stubs) -> None:
    new_account(stubs, "acct_consume")  # Free: exports 5 per day, hard
    grants = [
        stubs.usage.Consume(
            pb.ConsumeRequest(account_id="acct_consume", feature="exports", amount=2), timeout=5
        )
        for _ in range(3)
    ]
    assert [(g.granted, g.usage) for g in grants] == [(True, 2), (True, 4), (False, 4)]
    assert grants[2].denial == "usage_limit_reached"
    assert grants[2].resolution.metering.used == 4 and grants[2].resolution.metering.remaining == 1
    last = stubs.usage.Consume(
        pb.ConsumeRequest(account_id="acct_consume", feature="exports", idempotency_key="c1"),
        timeout=5,
    )
    assert (last.granted, last.usage, last.duplicate) == (True, 5, False)
    denied = stubs.usage.Consume(
        pb.ConsumeRequest(account_id="acct_consume", feature="exports"), timeout=5
    )
    assert (denied.granted, denied.usage, denied.denial) == (False, 5, "usage_limit_reached")
    retry = stubs.usage.Consume(
        pb.ConsumeRequest(account_id="acct_consume", feature="exports", idempotency_key="c1"),
        timeout=5,
    )
    assert (retry.granted, retry.usage, retry.duplicate) == (True, 5, True)
    too_big = stubs.usage.Consume(
        pb.ConsumeRequest(account_id="acct_consume", feature="exports", amount=6), timeout=5
    )
    assert (too_big.granted, too_big.denial) == (False, "requested_exceeds_limit")
    assert used(stubs, "acct_consume", "exports") == 5


def test_consume_allows_overage_up_to_a_soft_limits_cap(stubs: Stubs) -> None:
    new_account(stubs, "acct_soft")
    soft = to_value({"limit": 10, "soft": True, "overage_cap": 5})
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(account_id="acct_soft", feature="api-calls", value=soft), timeout=5
    )
    request = pb.ConsumeRequest(account_id="acct_soft", feature="api-calls", amount=4)
    outcomes = [stubs.usage.Consume(request, timeout=5) for _ in range(5)]
    assert [(o.granted, o.usage) for o in outcomes] == [
        (True, 4),
        (True, 8),
        (True, 12),  # 2 over the limit, within the cap of 5
        (False, 12),  # 16 would be 6 over
        (False, 12),
    ]
    metering = outcomes[2].resolution.metering
    assert (metering.limit, metering.overage, metering.soft_limit) == (10, 2, True)
    assert outcomes[3].denial == "usage_limit_reached"


def test_consume_refuses_what_it_cannot_check(stubs: Stubs) -> None:
    cases = [
        pb.ConsumeRequest(account_id="acct_consume", feature="sso"),
        pb.ConsumeRequest(account_id="acct_consume", feature="nope"),
        pb.ConsumeRequest(account_id="acct_nobody", feature="exports"),
        pb.ConsumeRequest(account_id="", feature="exports"),
        pb.ConsumeRequest(account_id="acct_consume", feature="exports", amount=-1),
        pb.ConsumeRequest(account_id="acct_consume", feature="exports", amount=float("inf")),
    ]
    before = used(stubs, "acct_consume", "exports")
    for request in cases:
        with pytest.raises(grpc.RpcError) as info:
            stubs.usage.Consume(request, timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, request
        assert info.value.details(), request
    assert used(stubs, "acct_consume", "exports") == before


def test_concurrent_consumers_never_pass_a_hard_limit(sidecar: Any, stubs: Stubs) -> None:
    new_account(stubs, "acct_race")  # Free: api-calls 1000, hard
    threads, per_thread = 16, 70  # 1120 attempts for 1000 units
    granted = [0] * threads
    denied = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def consumer(i: int) -> None:
        try:
            with Stubs(f"127.0.0.1:{sidecar.port}") as own:  # one channel per consumer
                request = pb.ConsumeRequest(account_id="acct_race", feature="api-calls")
                start.wait()
                for _ in range(per_thread):
                    if own.usage.Consume(request, timeout=30).granted:
                        granted[i] += 1
                    else:
                        denied[i] += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=consumer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    assert sum(granted) == 1000
    assert sum(denied) == threads * per_thread - 1000
    assert used(stubs, "acct_race", "api-calls") == 1000


def test_acknowledged_reports_survive_kill_9(tmp_path: Path) -> None:
    sidecar = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "state.db").start()
    try:
        with Stubs(sidecar.target) as s:
            new_account(s, "acct_durable", plan="pro")
        batches = [
            pb.ReportRequest(
                reports=[
                    report(
                        account_id="acct_durable",
                        feature="api-calls",
                        amount=b + 1,
                        idempotency_key=f"durable-{b}-{i}",
                    )
                    for i in range(10)
                ]
            )
            for b in range(30)
        ]  # 300 reports; batch b adds 10 * (b + 1)
        total = sum(10 * (b + 1) for b in range(30))
        acknowledged: list[int] = []
        stop_sending = threading.Event()

        def send() -> None:
            with Stubs(sidecar.target) as s:
                for b, batch in enumerate(batches):
                    if stop_sending.is_set():
                        return
                    try:
                        results = s.usage.Report(batch, timeout=5).results
                    except grpc.RpcError:
                        return  # the sidecar died under us: not acknowledged
                    assert all(r.status == APPLIED for r in results)
                    acknowledged.append(b)

        sender = threading.Thread(target=send)
        sender.start()
        while len(acknowledged) < 12 and sender.is_alive():
            sender.join(0.001)
        sidecar.kill()  # SIGKILL in the middle of the stream of reports
        stop_sending.set()
        sender.join()
        assert len(acknowledged) >= 12
        acked = sum(10 * (b + 1) for b in acknowledged)

        sidecar.restart()
        with Stubs(sidecar.target) as s:
            after_crash = used(s, "acct_durable", "api-calls")
            in_flight = 10 * (
                len(acknowledged) + 1
            )  # the one batch that may have landed unanswered
            assert acked <= after_crash <= acked + in_flight
            # clients retry everything: acknowledged batches are duplicates, the rest applies once
            for b, batch in enumerate(batches):
                statuses = {r.status for r in s.usage.Report(batch, timeout=5).results}
                if b in acknowledged:
                    assert statuses == {DUPLICATE}, b
            assert used(s, "acct_durable", "api-calls") == total
            # and a second full retry after another kill -9 changes nothing
        sidecar.restart()
        with Stubs(sidecar.target) as s:
            assert used(s, "acct_durable", "api-calls") == total
            for batch in batches:
                statuses = {r.status for r in s.usage.Report(batch, timeout=5).results}
                assert statuses == {DUPLICATE}
            assert used(s, "acct_durable", "api-calls") == total
    finally:
        sidecar.kill()


def test_extreme_values_are_refused_or_clamped_never_crash(stubs: Stubs) -> None:
    new_account(stubs, "acct_extreme", plan="pro")
    # a time so late its period would end after year 9999
    late = timestamp_pb2.Timestamp(seconds=253402300799)  # 9999-12-31T23:59:59Z
    with pytest.raises(grpc.RpcError) as info:
        stubs.usage.Report(
            pb.ReportRequest(
                reports=[
                    report(account_id="acct_extreme", feature="api-calls"),
                    report(account_id="acct_extreme", feature="api-calls", timestamp=late),
                ]
            ),
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reports[1].timestamp" in (info.value.details() or "")
    assert used(stubs, "acct_extreme", "api-calls") == 0  # the whole batch was refused
    # a counter that would overflow to infinity refuses the report that would do it
    big = report(account_id="acct_extreme", feature="exports", amount=1e308)
    results = stubs.usage.Report(pb.ReportRequest(reports=[big, big]), timeout=5).results
    assert [(r.status, r.usage) for r in results] == [(APPLIED, 1e308), (REJECTED, 1e308)]
    assert "out of range" in results[1].message
    assert used(stubs, "acct_extreme", "exports") == 1e308
    # a limit beyond int64 still resolves as an integer (the largest one)
    stubs.admin.CreateGrant(
        pb.CreateGrantRequest(account_id="acct_extreme", feature="seats", value=to_value(1e300)),
        timeout=5,
    )
    seats = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_extreme", feature="seats"), timeout=5
    )
    assert seats.as_integer == 2**63 - 1 and seats.metering.limit == 1e300
    everything = stubs.evaluation.EvaluateAll(
        pb.EvaluateAllRequest(account_id="acct_extreme"), timeout=5
    )
    assert everything.error_code == "" and everything.resolutions["exports"].has_access is False
