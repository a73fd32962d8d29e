"""The track journal: usage that survives an application crash (`track_journal=PATH`, design §21).

`track` appends each report to a file before it returns — a copy into a shared memory
mapping of the file (the kernel's page cache: what is copied there survives the process's
death, SIGKILL included, exactly as a `write` would) — and the sender thread appends an
acknowledgement line for every batch the sidecar answered. The copy is no system call and does
not release the GIL, so `track` costs a few microseconds more than without a journal
(decision 2103); the file is preallocated (`posix_fallocate`, so a full disk is an error when
it grows, never a SIGBUS on a page) and grown by doubling, and the unused rest is zeros. When the
application starts again, the provider reads the file and sends what was never acknowledged
with the very same reports (so the same idempotency keys: a report the sidecar stored just
before the crash is answered "duplicate", never counted twice).

- fsync is batched: a background thread syncs at most `fsync_interval` (10 ms) after a write,
  which bounds what a *machine* crash could lose without paying an fsync per `track`.
- Each line is `<crc32 hex> <json>\\n`, so a torn or damaged line is recognised; it is skipped
  with a warning, never a crash; zero bytes (the preallocated rest, or a page a machine crash
  lost) separate lines too. The file is rewritten on open (only the unacknowledged reports),
  so new lines never follow a torn one.
- Bounded: when every report is acknowledged the file is zeroed (and shrunk back to its first
  size); and once it holds at least `COMPACT_LINES` lines of which at most half are
  unacknowledged reports, the background thread rewrites it with only those (a new file, fsynced, renamed over the old, so a crash
  mid-way leaves one of the two whole). `track` only waits for the rename, never an fsync:
  lines written meanwhile are copied to the new file under the lock.
- Tracking events (design §16) are journaled the same way (`"e"` instead of `"r"`), with
  their `(source, id)`, so a replayed event is a duplicate too, never counted twice.
- One process per journal: an exclusive `flock` on `PATH.lock`; a second provider fails to
  initialise with an error naming the file.
"""

from __future__ import annotations

import binascii
import contextlib
import fcntl
import json
import logging
import mmap
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
FIRST_SIZE = 1 << 18
"""Bytes preallocated for a journal (about 1,800 reports); doubled whenever it fills up."""


def _line(body: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _size_for(used: int) -> int:
    """The mapping's size for a file holding `used` bytes: room for as much again."""
    size = FIRST_SIZE
    while size < 2 * used:
        size *= 2
    return size


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
            self._end = sum(len(line) for line in self._live.values())  # where the next goes
            self._map = _mapping(self._fd, self._end)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._syncer = threading.Thread(
            target=self._sync_loop, name="plangate-journal", daemon=True
        )
        self._syncer.start()

    def unacknowledged(self) -> list[tuple[int, pb.UsageReport | pb.Event]]:
        """The reports and events a previous process wrote and the sidecar never
        acknowledged, in order."""
        out: list[tuple[int, pb.UsageReport | pb.Event]] = []
        for n, line in sorted(self._live.items()):
            body = json.loads(line[9:])
            if "e" in body:
                out.append((n, pb.Event.FromString(binascii.a2b_base64(body["e"]))))
            else:
                out.append((n, pb.UsageReport.FromString(binascii.a2b_base64(body["r"]))))
        return out

    def append(self, n: int, message: pb.UsageReport | pb.Event) -> None:
        """Write entry `n` (called by `track`; returns once the line is in the page cache)."""
        encoded = binascii.b2a_base64(message.SerializeToString(), newline=False)
        kind = b"e" if isinstance(message, pb.Event) else b"r"
        line = _line(b'{"n":%d,"%s":"%s"}' % (n, kind, encoded))
        with self._lock:
            if self._closed:  # a `track` racing `shutdown`: the reporter drops it too
                return
            self._put(line)
            self._live[n] = line
            if self._tail is not None:
                self._tail.append(line)
        if not self._dirty.is_set():
            self._dirty.set()

    def acknowledge(self, numbers: Iterable[int]) -> None:
        """The sidecar answered these entries: they are never sent again."""
        done = list(numbers)
        line = _line(json.dumps({"a": done}, separators=(",", ":")).encode())
        with self._lock:
            if self._closed:
                return
            for n in done:
                self._live.pop(n, None)
            self._put(line)
            if not self._live and self._tail is None:
                self._empty()  # nothing left to replay: nothing to keep
            elif self._tail is not None:
                self._tail.append(line)
            elif self._due():
                self._compact_due = True
        self._dirty.set()

    def close(self) -> None:
        """Sync, compact what is acknowledged away and release the file for the next process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._map.close()
            os.close(self._rewrite())
            os.close(self._fd)
        self._dirty.set()
        self._syncer.join(1)
        os.close(self._lock_fd)

    def _put(self, line: bytes) -> None:
        """Copy `line` after the last one (`_lock` held). No system call unless the file is
        full: the copy lands in the page cache, which outlives this process."""
        start = self._end
        end = start + len(line)
        if end > len(self._map):
            old, self._map = self._map, _mapping(self._fd, end)
            old.close()
        self._map[start:end] = line
        self._end = end
        self._lines += 1

    def _due(self) -> bool:
        """Whether a compaction would at least halve the file (`_lock` held)."""
        return self._lines >= COMPACT_LINES and len(self._live) * 2 <= self._lines

    def _empty(self) -> None:
        """Zero the file and shrink it back to its first size (`_lock` held).

        Zeroed through the mapping, front to back, after the last acknowledgement was added:
        no allocation that a full disk could refuse, and a process killed half-way leaves
        a tail whose every report is followed by its acknowledgement."""
        self._map[: self._end] = bytes(self._end)
        if len(self._map) > FIRST_SIZE:
            old, self._map = self._map, mmap.mmap(self._fd, FIRST_SIZE)
            old.close()
            os.ftruncate(self._fd, FIRST_SIZE)
        self._end = 0
        self._lines = 0

    def _rewrite(self) -> int:
        """A fresh file with only the unacknowledged reports, renamed over the journal; returns
        a descriptor for it. Called with `_lock` held (or before any thread)."""
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as out:
            for _, line in sorted(self._live.items()):
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        _sync_dir(self.path.parent)
        self._lines = len(self._live)
        return os.open(self.path, os.O_RDWR)

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
            # Not under the lock: `track` must not wait for the disk. fsync also writes the
            # pages dirtied through the mapping.
            with contextlib.suppress(OSError):
                os.fsync(fd)
            if snapshot is not None:
                try:
                    self._compact(snapshot)
                except OSError as exc:  # a full disk: the journal stays as it is, whole
                    log.warning("track_journal %s: compaction failed: %s", self.path, exc)
                    with self._lock:
                        self._tail = None
            # the next fsync starts at most `interval` after this one started
            time.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def _compact(self, snapshot: list[bytes]) -> None:
        """Write the unacknowledged reports to a new file and sync it outside the lock; then,
        under it, add the lines written meanwhile and rename it over the journal."""
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            head = b"".join(snapshot)
            os.write(fd, head)
            os.fsync(fd)
            with self._lock:
                tail, self._tail = self._tail or [], None
                if self._closed:  # `close` rewrites the journal itself
                    raise _Abandoned
                rest = b"".join(tail)
                os.write(fd, rest)
                mapped = _mapping(fd, len(head) + len(rest))
                os.replace(tmp, self.path)
                old = self._fd, self._map
                self._fd, self._map = fd, mapped
                self._end = len(head) + len(rest)
                self._lines = len(snapshot) + len(tail)
                # what was acknowledged while this ran (no later acknowledgement may come)
                self._compact_due = self._due()
        except BaseException as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if isinstance(exc, _Abandoned):
                return
            raise
        old[1].close()
        os.close(old[0])
        _sync_dir(self.path.parent)
        self._dirty.set()  # the tail's lines


class _Abandoned(Exception):
    """`close` ran while a compaction copied the file."""


def _mapping(fd: int, used: int) -> mmap.mmap:
    """The file behind `fd` preallocated to `_size_for(used)` bytes and mapped shared (its
    first `used` bytes are lines, the rest zeros). Preallocated, not merely extended: a full
    disk fails here with an error, never later as a SIGBUS on a page `track` copies into."""
    size = _size_for(used)
    _preallocate(fd, size)
    return mmap.mmap(fd, size)


def _preallocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks (zeros past its end)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
        return
    have = os.fstat(fd).st_size  # macOS has no posix_fallocate: write the zeros
    if have < size:
        os.pwrite(fd, bytes(size - have), have)


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
    """Entry number -> line of every report not acknowledged; damaged lines skipped, warned.
    Zero bytes end a line too: the preallocated rest of the file, or a page a machine crash
    never wrote."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    live: dict[int, bytes] = {}
    bad = 0
    for chunk in data.split(b"\x00"):
        *whole, cut = chunk.split(b"\n")
        bad += bool(cut)  # no newline: a write cut short
        for raw in whole:
            body = _checked(raw)
            if body is None:
                bad += 1
            elif "r" in body or "e" in body:
                live[int(body["n"])] = raw + b"\n"
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
    if len(raw) < 9 or raw[8:9] != b" ":
        return None
    data = raw[9:]
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
