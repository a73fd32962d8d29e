"""Keeping the served catalog in step with its file.

The parent directory is watched, not the file: editors replace files (write a temp file,
rename it over the original) and Kubernetes swaps a ConfigMap by re-pointing a `..data`
symlink, and both break a watch on the file itself. Every event, and every idle timeout
as a safety net, re-reads the file and compares content hashes, so spurious events cost
one read and a missed event costs at most one timeout.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from ..catalog import Catalog, CatalogError, load_catalog

log = logging.getLogger("plangate.sync")

_UNREADABLE = "(unreadable)"  # `_failed_version` while the file cannot be read


class CatalogWatcher:
    def __init__(
        self,
        path: str | Path,
        current: Callable[[], str],
        apply: Callable[[Catalog], object],
        on_error: Callable[[str], None],
        poll_seconds: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self._current = current  # version now served
        self._apply = apply
        self._on_error = on_error
        self._poll_ms = int(poll_seconds * 1000)
        self._stop = threading.Event()
        self._failed_version: str | None = None
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        directory = self.path.absolute().parent
        for _changes in watchfiles.watch(
            directory,
            recursive=False,
            debounce=50,
            step=20,
            stop_event=self._stop,
            rust_timeout=self._poll_ms,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            self.check()

    def check(self) -> None:
        """Load the file if its content changed; keep the last good catalog if it is broken."""
        try:
            # read as the loader does (newlines normalised), so the hash is the catalog's version
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            if self._failed_version != _UNREADABLE:  # report once, not on every poll
                self._failed_version = _UNREADABLE
                self._report(
                    f"{self.path}: cannot read catalog ({exc}); still serving version {self._current()}"
                )
            return
        version = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        if version == self._current() or version == self._failed_version:
            return
        try:
            catalog = load_catalog(self.path)
            self._apply(catalog)
        except (CatalogError, ValueError) as exc:
            self._failed_version = version
            self._report(
                f"{exc}\n(still serving catalog version {self._current()}; fix the file and save it again)"
            )
            return
        self._failed_version = None

    def _report(self, message: str) -> None:
        log.error("catalog change rejected: %s", message)
        self._on_error(message)
