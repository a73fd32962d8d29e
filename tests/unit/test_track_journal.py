"""The track journal's file stays bounded: acknowledged entries are compacted away (design §21)."""

from __future__ import annotations

import time
from pathlib import Path

from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.journal import COMPACT_LINES, TrackJournal


def _report(n: int) -> pb.UsageReport:
    return pb.UsageReport(account_id="a", feature="f", amount=1, idempotency_key=f"k{n}")


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_acknowledged_entries_are_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    kept = []  # never acknowledged: the file can never be simply emptied
    for n in range(1, 20 * COMPACT_LINES + 1):
        journal.append(n, _report(n))
        if n % 10 == 0:
            batch = range(n - 9, n + 1)
            kept += [k for k in batch if k % 50 == 0]
            journal.acknowledge(k for k in batch if k % 50)
    # compaction runs on the journal's own thread: poll, generously
    deadline = time.monotonic() + 30
    while _lines(path) > 2 * COMPACT_LINES and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lines(path) <= 2 * COMPACT_LINES
    journal.close()
    again = TrackJournal(str(path))
    try:
        replay = again.unacknowledged()
        assert [n for n, _ in replay] == kept
        assert replay[0][1].idempotency_key == f"k{kept[0]}"
        assert _lines(path) == len(kept)  # rewritten on open: only what is left
    finally:
        again.close()
