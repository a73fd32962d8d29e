"""The track journal: usage that survives an application crash (`track_journal=PATH`, design §21).

`track` appends each report to a file before it returns — one `write` to a file opened for
appending, which no crash of the application can undo once it returned — and the sender
thread appends an acknowledgement line for every batch the sidecar answered. When the
application starts again, the provider reads the file and sends what was never acknowledged
with the very same reports (so the same idempotency keys: a report the sidecar stored just
before the crash is answered "duplicate", never counted twice).

- fsync is batched: a background thread syncs at most `fsync_interval` (10 ms) after a write,
  which bounds what a *machine* crash could lose without paying an fsync per `track`.
- Each line is `<crc32 hex> <json>\\n`, so a torn or damaged line is recognised; it is skipped
  with a warning, never a crash. The file is rewritten on open (only the unacknowledged
  reports), so new lines never follow a torn one.
- Bounded: when every report is acknowledged the file is truncated; and once it holds at least
  `COMPACT_LINES` lines of which at most half are unacknowledged reports, the background
  thread rewrites it with only those (a new file, fsynced, renamed over the old, so a crash
  mid-way leaves one of the two whole). `track` only waits for the rename, never an fsync:
  lines written meanwhile are copied to the new file under the lock.
- One process per journal: an exclusive `flock` on `PATH.lock`; a second provider fails to
  initialise with an error naming the file.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from openfeature.exception import ProviderFatalError
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

log = logging.getLogger("plangate.provider")

COMPACT_LINES = 1000


def _line(body: str) -> bytes:
    data = body.encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


class TrackJournal:
    def __init__(self, path: str, fsync_interval: float = 0.01) -> None:
        self.path = Path(path)
        self._interval = fsync_interval
        self._lock_fd = _exclusive(self.path)
        self._lock = threading.Lock()
        self._live: dict[int, bytes] = {}  # entry number -> its line, not acknowledged yet
        self._lines = 0
        self._dirty = threading.Event()
        self._closed = False
        self._compact_due = False
        self._tail: list[bytes] | None = None  # lines written while a compaction copies the file
        try:
            self._live = _read(self.path)
            self.last = max(self._live, default=0)
            self._fd = self._rewrite()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._syncer = threading.Thread(
            target=self._sync_loop, name="plangate-journal", daemon=True
        )
        self._syncer.start()

    def unacknowledged(self) -> list[tuple[int, pb.UsageReport]]:
        """The reports a previous process wrote and the sidecar never acknowledged, in order."""
        out = []
        for n, line in sorted(self._live.items()):
            body = json.loads(line[9:])
            out.append((n, pb.UsageReport.FromString(base64.b64decode(body["r"]))))
        return out

    def append(self, n: int, report: pb.UsageReport) -> None:
        """Write entry `n` (called by `track`; returns once the line is in the file)."""
        encoded = base64.b64encode(report.SerializeToString()).decode()
        line = _line(f'{{"n":{n},"r":"{encoded}"}}')
        with self._lock:
            os.write(self._fd, line)
            self._live[n] = line
            self._lines += 1
            if self._tail is not None:
                self._tail.append(line)
        if not self._dirty.is_set():
            self._dirty.set()

    def acknowledge(self, numbers: Iterable[int]) -> None:
        """The sidecar answered these entries: they are never sent again."""
        done = list(numbers)
        line = _line(json.dumps({"a": done}, separators=(",", ":")))
        with self._lock:
            if self._closed:
                return
            for n in done:
                self._live.pop(n, None)
            if not self._live and self._tail is None:
                os.ftruncate(self._fd, 0)  # nothing left to replay: nothing to keep
                self._lines = 0
            else:
                os.write(self._fd, line)
                self._lines += 1
                if self._tail is not None:
                    self._tail.append(line)
                elif self._lines >= COMPACT_LINES and len(self._live) * 2 <= self._lines:
                    self._compact_due = True
        self._dirty.set()

    def close(self) -> None:
        """Sync, compact what is acknowledged away and release the file for the next process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._rewrite())
            os.close(self._fd)
        self._dirty.set()
        self._syncer.join(1)
        os.close(self._lock_fd)

    def _rewrite(self) -> int:
        """A fresh file with only the unacknowledged reports, renamed over the journal; returns
        a descriptor for appending to it. Called with `_lock` held (or before any thread)."""
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as out:
            for _, line in sorted(self._live.items()):
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        _sync_dir(self.path.parent)
        self._lines = len(self._live)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            started = time.monotonic()
            snapshot: list[bytes] | None = None
            with self._lock:
                if self._closed:
                    return
                fd = self._fd
                if self._compact_due:
                    self._compact_due = False
                    snapshot = [line for _, line in sorted(self._live.items())]
                    self._tail = []
            # Not under the lock: `track` must not wait for the disk.
            with contextlib.suppress(OSError):
                os.fsync(fd)
            if snapshot is not None:
                self._compact(snapshot)
            # the next fsync starts at most `interval` after this one started
            time.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def _compact(self, snapshot: list[bytes]) -> None:
        """Write the unacknowledged reports to a new file and sync it outside the lock; then,
        under it, add the lines written meanwhile and rename it over the journal."""
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, b"".join(snapshot))
        os.fsync(fd)
        with self._lock:
            tail, self._tail = self._tail or [], None
            if self._closed:  # `close` rewrites the journal itself
                os.close(fd)
                tmp.unlink()
                return
            os.write(fd, b"".join(tail))
            os.replace(tmp, self.path)
            old, self._fd = self._fd, fd
            self._lines = len(snapshot) + len(tail)
        os.close(old)
        _sync_dir(self.path.parent)
        self._dirty.set()  # the tail's lines


def _exclusive(path: Path) -> int:
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ProviderFatalError(f"track_journal {path}: cannot open {lock}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProviderFatalError(
            f"track_journal {path} is in use by another process (one process per journal; "
            "give each process its own file)"
        ) from None
    return fd


def _read(path: Path) -> dict[int, bytes]:
    """Entry number -> line of every report not acknowledged; damaged lines skipped, warned."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    live: dict[int, bytes] = {}
    bad = 0
    for raw in data.splitlines(keepends=True):
        body = _checked(raw)
        if body is None:
            bad += 1
            continue
        if "r" in body:
            live[int(body["n"])] = raw
        else:
            for n in body.get("a", ()):
                live.pop(int(n), None)
    if bad:
        log.warning(
            "track_journal %s: skipped %d damaged line(s) (a write cut short by a crash?)",
            path,
            bad,
        )
    return live


def _checked(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n") or len(raw) < 10 or raw[8:9] != b" ":
        return None
    data = raw[9:-1]
    try:
        if int(raw[:8], 16) != zlib.crc32(data):
            return None
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
