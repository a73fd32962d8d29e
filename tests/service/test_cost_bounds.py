"""Inputs with a cost bound, over real gRPC against a real sidecar (issue 22 items 3, 6, 8;
docs/operating.md "Input bounds"): each answers INVALID_ARGUMENT (or a REJECTED report)
with a message saying what to change, and changes nothing."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_value
from plangate.sidecar.catalog.source import MAX_VALUE_BYTES
from support.sidecar import Stubs

APPLIED, REJECTED = pb.ReportResult.STATUS_APPLIED, pb.ReportResult.STATUS_REJECTED


def stamp(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


def refused(call: object, *args: object) -> str:
    """The details of an INVALID_ARGUMENT answer of `call(*args)`."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, timeout=30)  # type: ignore[operator]
        if not isinstance(result, pb.HistoryResponse):
            list(result)  # a stream: its status comes with the first read
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details() or ""


def new_account(stubs: Stubs, account_id: str) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="pro"), timeout=5
    )


def history_request(start: datetime | int, end: datetime | int, window: str) -> pb.HistoryRequest:
    """`start`/`end` as datetimes, or as raw Timestamp seconds (times datetime cannot hold)."""
    request = pb.HistoryRequest(account_id="acct_bounds", feature="api-calls", window=window)
    for name, at in (("from", start), ("to", end)):
        field = getattr(request, name)
        if isinstance(at, datetime):
            field.CopyFrom(stamp(at))
        else:
            field.seconds = at
    return request


def test_history_refuses_a_range_of_too_many_windows_before_building_them(stubs: Stubs) -> None:
    new_account(stubs, "acct_bounds")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # 100 years of hours: 876,576 windows, refused by arithmetic; main built them all first
    # (1,000 years took 1.5 GB). The sidecar runs in this process: its allocations are traced.
    tracemalloc.start()
    try:
        details = refused(
            stubs.usage.History, history_request(start, start.replace(year=2126), "hour")
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"refusing the range took {peak} bytes"
    assert "the range holds 876576 hour windows; at most 10000" in details
    assert "narrow the range or use a wider window" in details
    # the same range in days is too long as well, one within the bound answers
    assert "day windows" in refused(
        stubs.usage.History, history_request(start, start.replace(year=3026), "day")
    )
    points = stubs.usage.History(
        history_request(start, start + timedelta(days=400), "hour"), timeout=30
    ).points
    assert len(points) == 9600


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # ends in year 9999's last hour: main answered INTERNAL (a date past datetime.max)
        (datetime(9999, 12, 31, 22, tzinfo=UTC), datetime(9999, 12, 31, 23, 30, tzinfo=UTC)),
        (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, 2, tzinfo=UTC)),
        (-(10**12), 0),  # not a time at all
    ],
)
def test_history_and_export_refuse_times_out_of_range(
    stubs: Stubs, start: datetime | int, end: datetime | int
) -> None:
    new_account(stubs, "acct_bounds")
    details = refused(stubs.usage.History, history_request(start, end, "hour"))
    assert "from" in details or "to" in details
    export = pb.ExportRequest()
    for name, at in (("from", start), ("to", end)):
        if isinstance(at, datetime):
            getattr(export, name).CopyFrom(stamp(at))
        else:
            getattr(export, name).seconds = at
    details = refused(stubs.usage.Export, export)
    assert "between 1900 and 9000" in details or "is not a valid time" in details


@pytest.mark.parametrize("token", [str(2**63), "9" * 40, "²"])
def test_a_page_token_that_no_page_gave_is_invalid_argument(stubs: Stubs, token: str) -> None:
    assert "page_token" in refused(
        stubs.admin.ListAuditLog, pb.ListAuditLogRequest(page_token=token)
    )
    assert "page_token" in refused(
        stubs.admin.ListDeliveries, pb.ListDeliveriesRequest(page_token=token)
    )
    # the largest seq is still a token
    stubs.admin.ListAuditLog(pb.ListAuditLogRequest(page_token=str(2**63 - 1)), timeout=5)


def test_a_report_dated_far_ahead_is_refused(stubs: Stubs) -> None:
    """Main counted a report dated 10 years ahead in that future period."""
    new_account(stubs, "acct_future")
    now = datetime.now(UTC)
    ahead = now + timedelta(days=3650)
    batch = [
        pb.UsageReport(account_id="acct_future", feature="api-calls", amount=3),
        pb.UsageReport(
            account_id="acct_future", feature="api-calls", amount=7, timestamp=stamp(ahead)
        ),
        # a minute of clock skew is fine
        pb.UsageReport(
            account_id="acct_future",
            feature="api-calls",
            amount=1,
            timestamp=stamp(now + timedelta(minutes=1)),
        ),
    ]
    results = stubs.usage.Report(pb.ReportRequest(reports=batch), timeout=5).results
    assert [r.status for r in results] == [APPLIED, REJECTED, APPLIED]
    assert "ahead of the sidecar's clock" in results[1].message
    assert "--max-report-ahead-seconds" in results[1].message
    # nothing counted in that future period
    history = stubs.usage.History(
        pb.HistoryRequest(
            account_id="acct_future",
            feature="api-calls",
            window="period",
            **{"from": stamp(ahead), "to": stamp(ahead + timedelta(hours=1))},
        ),
        timeout=10,
    )
    assert [p.usage for p in history.points] == [0]


def test_an_admin_value_larger_than_the_bound_is_refused(stubs: Stubs) -> None:
    new_account(stubs, "acct_bigvalue")
    value = to_value({"blob": "x" * MAX_VALUE_BYTES})
    details = refused(
        stubs.admin.SetOverride,
        pb.SetOverrideRequest(account_id="acct_bigvalue", feature="theme", value=value),
    )
    assert f"at most {MAX_VALUE_BYTES}" in details
    assert "xxxxxxxx" not in details
    account = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_bigvalue"), timeout=5)
    assert list(account.overrides) == []
