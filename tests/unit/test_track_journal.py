"""The track journal's file stays bounded: acknowledged entries are compacted away (design §21)."""

from __future__ import annotations

from pathlib import Path

from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.journal import COMPACT_LINES, TrackJournal


def _report(n: int) -> pb.UsageReport:
    return pb.UsageReport(account_id="a", feature="f", amount=1, idempotency_key=f"k{n}")


def test_acknowledged_entries_are_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    most = 0
    for n in range(1, 20 * COMPACT_LINES + 1):
        journal.append(n, _report(n))
        if n % 10 == 0:
            journal.acknowledge(range(n - 9, n + 1))
        most = max(most, path.read_bytes().count(b"\n")) if n % 100 == 0 else most
    journal.append(10**6, _report(10**6))  # one left undelivered
    journal.close()
    assert most <= 2 * COMPACT_LINES
    again = TrackJournal(str(path))
    try:
        assert [n for n, _ in again.unacknowledged()] == [10**6]
        assert again.unacknowledged()[0][1].idempotency_key == f"k{10**6}"
    finally:
        again.close()
