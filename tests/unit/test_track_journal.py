"""The track journal's file stays bounded: acknowledged entries are compacted away (design §21)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.journal import COMPACT_LINES, FIRST_SIZE, TrackJournal


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


def test_lines_after_a_run_of_zero_bytes_are_still_replayed(tmp_path: Path) -> None:
    """Zero bytes end a line: the preallocated rest of the file, or a page a machine crash
    never wrote, must not swallow the whole lines after it (decision 2103)."""
    path = tmp_path / "j"
    first = TrackJournal(str(path))
    first.append(1, _report(1))
    first.append(2, _report(2))
    first.close()
    one, two = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(one + b"\0" * 4096 + two + b"\0" * 100)
    again = TrackJournal(str(path))
    try:
        assert [r.idempotency_key for _, r in again.unacknowledged()] == ["k1", "k2"]
    finally:
        again.close()


def test_a_journal_outgrowing_its_first_size_keeps_every_report(tmp_path: Path) -> None:
    """Unacknowledged reports past the preallocated size (a long sidecar outage) grow the
    file instead of failing `track`; all of them are replayed."""
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    count = 3 * FIRST_SIZE // len(_report(1).SerializeToString())  # several doublings
    for n in range(1, count + 1):
        journal.append(n, _report(n))
    assert path.stat().st_size > FIRST_SIZE
    journal.close()
    again = TrackJournal(str(path))
    try:
        replay = again.unacknowledged()
        assert [n for n, _ in replay] == list(range(1, count + 1))
        assert replay[-1][1].idempotency_key == f"k{count}"
    finally:
        again.close()


APP = """
import os, signal, sys
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.journal import TrackJournal

journal = TrackJournal(sys.argv[1])
for n in range(1, 501):
    journal.append(n, pb.UsageReport(account_id="a", feature="f", idempotency_key=f"k{n}"))
journal.acknowledge(range(1, 101))
os.kill(os.getpid(), signal.SIGKILL)  # no close, no fsync: only what the kernel holds
"""


def test_what_append_returned_survives_sigkill(tmp_path: Path) -> None:
    """`append` copies into a shared mapping of the file (decision 2103): a process killed
    right after still leaves every appended line and acknowledgement in the file."""
    path = tmp_path / "j"
    app = subprocess.run([sys.executable, "-c", APP, str(path)], timeout=60, check=False)
    assert app.returncode == -signal.SIGKILL
    again = TrackJournal(str(path))
    try:
        assert [n for n, _ in again.unacknowledged()] == list(range(101, 501))
    finally:
        again.close()


def test_everything_acknowledged_empties_the_file_back_to_its_first_size(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    try:
        count = 2 * FIRST_SIZE // len(_report(1).SerializeToString())
        for n in range(1, count + 1):
            journal.append(n, _report(n))
        journal.acknowledge(range(1, count + 1))
        assert path.stat().st_size == FIRST_SIZE
        assert path.read_bytes().strip(b"\0") == b""
        journal.append(count + 1, _report(count + 1))  # the emptied file takes new lines
    finally:
        journal.close()
    again = TrackJournal(str(path))
    try:
        assert [n for n, _ in again.unacknowledged()] == [count + 1]
    finally:
        again.close()


def test_without_posix_fallocate_the_zeros_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS has no `posix_fallocate`: the journal preallocates by writing zeros instead."""
    monkeypatch.delattr(os, "posix_fallocate")
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    try:
        count = 2 * FIRST_SIZE // len(_report(1).SerializeToString())  # grows once at least
        for n in range(1, count + 1):
            journal.append(n, _report(n))
        size = path.stat().st_size
        assert size >= 2 * FIRST_SIZE
        assert os.stat(path).st_blocks * 512 >= size  # real blocks, not a sparse file
    finally:
        journal.close()
    again = TrackJournal(str(path))
    try:
        assert len(again.unacknowledged()) == count
    finally:
        again.close()


def test_events_are_journaled_beside_reports_and_come_back_as_events(tmp_path: Path) -> None:
    """An event (design §16) is replayed as the very same event: its `(source, id)` is what
    makes the replay a duplicate rather than a second count."""
    path = tmp_path / "j"
    journal = TrackJournal(str(path))
    event = pb.Event(specversion="1.0", id="e-1", source="app", type="llm.completion")
    event.data.update({"tokens": 12})
    journal.append(1, _report(1))
    journal.append(2, event)
    journal.append(3, _report(3))
    journal.acknowledge([1])
    journal.close()
    again = TrackJournal(str(path))
    try:
        (n2, replayed), (n3, report) = again.unacknowledged()
        assert (n2, n3) == (2, 3)
        assert isinstance(replayed, pb.Event) and replayed == event
        assert isinstance(report, pb.UsageReport) and report.idempotency_key == "k3"
    finally:
        again.close()
