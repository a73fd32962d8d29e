"""The SQLite store's files as the operating system shows them, and its faults in words an
operator can act on (decision records 0203 and 1340).

A running sidecar writes through open descriptors, so a file deleted, replaced or overwritten
behind its back would swallow every write acknowledged from then on. One `stat` of the
database and one of its write-ahead log before each COMMIT notices it: the database must be
the same inode, unwritten since the store's own last commit (only the store's checkpoints
write it while it runs), and the log the same inode too.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from .errors import StoreFull, StoreUnavailable

_TRANSIENT = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
"""Faults that end by themselves (another process holds the lock): not a reason to be unready."""

_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""Faults no retry heals: the file must be restored."""

_READ_ONLY = (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
"""Faults that may need a new connection once they are over (SQLite opens a file it cannot
write read-only, and stays so)."""


def code(exc: sqlite3.Error) -> int:
    """The primary SQLite result code of `exc` (extended codes carry it in the low byte)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def transient(exc: sqlite3.Error) -> bool:
    return code(exc) in _TRANSIENT


def damaged(exc: sqlite3.Error) -> bool:
    return code(exc) in _DAMAGED


def read_only(exc: sqlite3.Error) -> bool:
    return code(exc) in _READ_ONLY


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Files:
    """What the store's files looked like after its own last write."""

    main: tuple[int, int] | None  # (device, inode) of the database; None if there is none
    written: tuple[int, int]  # (mtime in ns, size) of the database
    wal: tuple[int, int] | None  # (device, inode) of the write-ahead log; None if there is none


def look(path: str) -> Files:
    main, wal = _stat(path), _stat(f"{path}-wal")
    return Files(
        main=(main.st_dev, main.st_ino) if main else None,
        written=(main.st_mtime_ns, main.st_size) if main else (0, 0),
        wal=(wal.st_dev, wal.st_ino) if wal else None,
    )


def intruded(path: str, known: Files) -> str | None:
    """Why `path` no longer holds what the store wrote (None if it does). Each answer refuses
    writes until a restart: they would be lost, or mixed into another file."""
    if known.main is None:
        return None
    now = look(path)
    if now.main != known.main:
        what = "deleted" if now.main is None else "replaced by another file"
        return (
            f"the database file {path} was {what} while the sidecar was running; writes "
            "are refused because they would be lost. Restore the file (or move the new one away) "
            "and restart the sidecar"
        )
    if known.wal is not None and now.wal != known.wal:
        what = "deleted" if now.wal is None else "replaced by another file"
        return (
            f"the write-ahead log {path}-wal was {what} while the sidecar was running; writes "
            "are refused because they would be lost. What was acknowledged before is kept: the "
            "sidecar copies what the log held into the database file when it notices (and at a "
            "graceful stop). Restart the sidecar"
        )
    if now.written != known.written:
        return (
            f"the database file {path} was written by another program while the sidecar was "
            "running (e.g. copied over in place); writes are refused because they would be "
            "mixed into that content. Stop the sidecar, put the right file in place (with no "
            "-wal or -shm file next to it if it is a copy), and start it again"
        )
    return None


def described(path: str, exc: sqlite3.Error) -> StoreUnavailable | None:
    """`exc` in words an operator can act on, or None if it is not a fault of the file."""
    c = code(exc)
    if c in _TRANSIENT:
        return StoreUnavailable(f"{path} is locked by another process: {exc}")
    if c == sqlite3.SQLITE_FULL:
        return StoreFull(
            f"the disk holding {path} is full ({exc}); nothing was recorded. Free space "
            "on that filesystem: writes resume by themselves, and a retry is safe"
        )
    if c == sqlite3.SQLITE_READONLY:
        message = (
            f"{path} cannot be written ({exc}); make the file, its -wal and -shm files "
            "and its directory writable and the filesystem read-write: writes resume by "
            "themselves once they are"
        )
    elif c == sqlite3.SQLITE_IOERR:
        message = (
            f"I/O error writing {path} ({exc}); check the disk and the filesystem "
            "(kernel log, mount state); writes resume by themselves once it works again"
        )
    elif c == sqlite3.SQLITE_CANTOPEN:
        message = (
            f"{path} cannot be opened ({exc}); check that the file and its directory exist "
            "and are writable (SQLite keeps -wal and -shm files next to it)"
        )
    elif c in _DAMAGED:
        message = damage(path, exc)  # opening, `damage(..., opening=True)` says more
    else:
        return None
    return StoreUnavailable(message)


def damage(path: str, exc: BaseException, *, opening: bool = False) -> str:
    """A damaged (or unreadable) database: no retry heals it, so writes stay refused until a
    restart. Opening, a write-ahead log left by a crash is replayed onto whatever file is at
    `path`, so one beside a replaced or restored file is the usual cause; it is named."""
    message = (
        f"{path} is damaged or cannot be read ({exc}); writes are refused until it is "
        "repaired. Check the disk (kernel log), stop the sidecar and restore the file from a "
        "backup"
    )
    return message + (log_hint(path) if opening else "")


def log_hint(path: str) -> str:
    """What to do about a write-ahead log beside `path` if it may not belong to it: a log left
    by a crash is replayed onto whatever file is at `path` when the database is opened."""
    if not has_log(path):
        return ""
    return (
        f". {path}-wal (a write-ahead log left by a crash) is replayed onto it: if {path} "
        "was replaced or restored while that log was there, the log belongs to the old file — "
        f"move {path}-wal and {path}-shm away (or put the old file back with them) and start "
        "again"
    )


def read_only_filesystem(path: str) -> bool:
    """Whether the filesystem holding `path` is mounted read-only."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return bool(st.f_flag & os.ST_RDONLY)


def writable(path: str) -> bool:
    """Whether the database, its -wal and -shm files (those there) and its directory can be
    written now (a read-only mount and an immutable file both say no, also to root)."""
    directory = os.path.dirname(os.path.abspath(path))
    wanted = [directory, path, *(f"{path}{s}" for s in ("-wal", "-shm") if _stat(f"{path}{s}"))]
    return all(os.access(p, os.W_OK) for p in wanted)


def has_log(path: str) -> bool:
    """Whether a non-empty write-ahead log lies beside `path` (its content is not in the file)."""
    wal = _stat(f"{path}-wal")
    return wal is not None and wal.st_size > 0
