"""The gRPC edge's one mapping (design §15): each domain error has its status; anything
else is INTERNAL (never UNKNOWN), logged once with its traceback."""

from __future__ import annotations

import logging

import grpc
import pytest
from plangate.sidecar.engine import UsageRejected
from plangate.sidecar.runtime.edits.records import AdminError, Declared, NotFound
from plangate.sidecar.server.errors import BadRequest, status_of
from plangate.sidecar.store.errors import StoreConflict, StoreUnavailable


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no such account"), grpc.StatusCode.NOT_FOUND),
        (Declared("declared in the file"), grpc.StatusCode.FAILED_PRECONDITION),
        (AdminError("bad plan"), grpc.StatusCode.INVALID_ARGUMENT),
        (BadRequest("id is required"), grpc.StatusCode.INVALID_ARGUMENT),
        (UsageRejected("unknown feature"), grpc.StatusCode.INVALID_ARGUMENT),
        (StoreUnavailable("database away"), grpc.StatusCode.UNAVAILABLE),
        (StoreConflict("changed first"), grpc.StatusCode.ABORTED),
    ],
)
def test_domain_errors_carry_their_status_and_message(
    error: Exception, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert status_of(error, "Call") == (code, f"Call: {error}")
    assert caplog.records == []  # an expected refusal is not a server error


def test_anything_else_is_internal_and_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        dict[str, int]()["missing"]
    except KeyError as exc:
        with caplog.at_level(logging.ERROR):
            code, message = status_of(exc, "EvaluateAll")
    assert code is grpc.StatusCode.INTERNAL
    assert "missing" not in message and "log" in message  # details stay in the log
    [record] = caplog.records
    assert record.exc_info is not None and "EvaluateAll" in record.getMessage()
