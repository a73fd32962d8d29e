"""Keeping the served catalog in step with its file.

The parent directory is watched, not the file: editors replace files (write a temp file,
rename it over the original) and Kubernetes swaps a ConfigMap by re-pointing a `..data`
symlink, and both break a watch on the file itself. Only events that concern the catalog
are acted on (its path, its current symlink target, the ConfigMap's `..` entries): a log
file or the SQLite database beside the catalog writes all the time and must cost nothing.
An idle timeout is the safety net for a missed event; it costs one `stat` while the file
is unchanged.

A change is loaded only once the file has settled (size, mtime and inode unchanged for
`settle_seconds`), so a file caught mid-write (`cp` and many editors truncate it first) is
never served: see docs/decisions/0400-catalog-settle-and-bounds.md. A change that cannot
be loaded is rejected: the last good catalog keeps serving and `on_error` says why (log,
`/readyz`, a metric); when the file is put back to the served content, `on_restored`
clears that. Nothing a file holds, and no error, ends the watching thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from ..catalog import Catalog, CatalogError, parse_catalog
from ..catalog.source import DEFAULT_MAX_BYTES, Stopped, read_text, version_of

log = logging.getLogger("plangate.sync")

Signature = tuple[int, ...]
"""What `stat` says about the file (inode, size, mtime, ctime), or (-errno,) if it cannot."""


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap swap changes the inode
    except OSError as exc:
        return (-(exc.errno or 1),)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CatalogWatcher:
    def __init__(
        self,
        path: str | Path,
        current: Callable[[], str],
        apply: Callable[[Catalog], object],
        on_error: Callable[[str], None],
        on_restored: Callable[[], None],
        poll_seconds: float = 2.0,
        settle_seconds: float = 0.2,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = Path(path).absolute()
        self._current = current  # version now served
        self._apply = apply
        self._on_error = on_error
        self._on_restored = on_restored
        self._poll = poll_seconds
        self._settle = settle_seconds
        self._max_bytes = max_bytes
        self._stop = threading.Event()
        self._seen: Signature | None = None  # the file as last read (or found unreadable)
        self._failed: str | None = None  # what was last reported: a version or an error text
        self.checks = 0  # times the file was looked at (tests assert neighbours cause none)
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- watching ----------------------------------------------------------------------------

    def _run(self) -> None:
        """Watch until stopped. Whatever fails (a watched directory vanishing, a bug, a
        callback raising) is logged once and watching starts again after one poll interval;
        meanwhile the file is still checked on every interval, so its loss is reported."""
        failed = ""
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as exc:
                if repr(exc) != failed:
                    failed = repr(exc)
                    log.exception("catalog watch of %s failed; retrying", self.path)
                if self._stop.wait(self._poll):
                    return
                with contextlib.suppress(Exception):  # check() logged whatever it met
                    self.check()

    def _directories(self) -> tuple[Path, ...]:
        """The catalog's directory, and its symlink target's when that lies elsewhere."""
        home = self.path.parent
        target = Path(os.path.realpath(self.path)).parent
        if target == home or target.is_relative_to(home) or not target.is_dir():
            return (home,)
        return (home, target)

    def _watch(self) -> None:
        directories = self._directories()
        for _changes in watchfiles.watch(
            *directories,
            recursive=False,
            debounce=50,
            step=20,
            stop_event=self._stop,
            rust_timeout=int(self._poll * 1000),
            yield_on_timeout=True,
            raise_interrupt=False,
            watch_filter=self.concerns,  # others are dropped before they wake us (or log)
        ):
            self.check()  # a change that concerns the catalog, or the idle timeout
            if self._directories() != directories:
                return  # the symlink now points into another directory: watch that one

    def concerns(self, _change: watchfiles.Change, changed: str) -> bool:
        """Whether a changed path is the catalog, its current symlink target, or one of the
        `..data` / `..2026_...` entries Kubernetes swaps in the catalog's directory."""
        path = Path(changed)
        if path == self.path:
            return True
        if path.parent == self.path.parent and path.name.startswith(".."):
            return True
        return path == Path(os.path.realpath(self.path))

    # -- loading -----------------------------------------------------------------------------

    def check(self) -> None:
        """Load the file if it changed; keep the last good catalog if it cannot be loaded."""
        self.checks += 1
        try:
            self._check()
        except Exception as exc:  # a surprise must not end sync: report it as a rejection
            key = f"{type(exc).__name__}: {exc}"
            if key != self._failed:
                log.exception("unexpected error loading catalog %s", self.path)
            self._reject(key, f"{self.path}: cannot load catalog ({key})")

    def _settled(self) -> Signature | None:
        """The file's signature once it stopped changing for the settle time (None: stopping).
        A file unchanged since it was last read is settled at once, so a poll costs a stat."""
        last = signature(self.path)
        while last != self._seen:
            if self._stop.wait(self._settle):
                return None
            now = signature(self.path)
            if now == last:
                break
            last = now
        return last

    def _check(self) -> None:
        settled = self._settled()
        if settled is None or settled == self._seen:
            return
        try:
            text = read_text(self.path, self._max_bytes)
        except CatalogError as exc:
            self._seen = settled
            self._reject(str(exc), self._still_serving(str(exc)))
            return
        if signature(self.path) != settled:
            return  # written again while read: the event that follows brings it back here
        self._seen = settled
        version = version_of(text)
        if version == self._current():
            if self._failed is not None:
                log.info("catalog %s is back to the served version %s", self.path, version)
                self._failed = None
                self._on_restored()
            return
        if version == self._failed:
            return
        try:
            catalog = parse_catalog(text, str(self.path), self._stop)
            if self._stop.is_set():
                return  # stopping: a catalog read meanwhile is not applied
            self._apply(catalog)
        except Stopped:
            return
        except (CatalogError, ValueError) as exc:
            self._reject(version, self._still_serving(f"{exc}"))
            return
        self._failed = None

    def _still_serving(self, reason: str) -> str:
        return (
            f"{reason}\n(still serving catalog version {self._current()}; "
            "fix the file and save it again)"
        )

    def _reject(self, key: str, message: str) -> None:
        """Report a rejected change once per distinct cause (not on every poll)."""
        if key == self._failed:
            return
        self._failed = key
        log.error("catalog change rejected: %s", message)
        self._on_error(message)
