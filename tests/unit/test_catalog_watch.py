"""The catalog watcher on its own: no callback failure ends it (decision 0400).

`tests/service/test_sidecar_sync.py` covers the watcher inside a running sidecar; here the
callbacks are plain functions, so one can fail the way a bug in the sidecar would.
"""

from __future__ import annotations

from pathlib import Path

from plangate.sidecar.catalog import Catalog, load_catalog
from plangate.sidecar.sync.catalog_watch import CatalogWatcher
from support.sidecar import EXAMPLE_CATALOG, copy_catalog, wait_for

EXAMPLE = EXAMPLE_CATALOG.read_text()
FIRST = EXAMPLE.replace("execution-concurrency: 10\n", "execution-concurrency: 11\n")
SECOND = EXAMPLE.replace("execution-concurrency: 10\n", "execution-concurrency: 12\n")
assert FIRST != EXAMPLE != SECOND


class Sink:
    """Callbacks that fail on their first call, as a bug in the sidecar's would."""

    def __init__(self, catalog: Path) -> None:
        self.served: list[Catalog] = [load_catalog(catalog)]
        self.errors: list[str] = []
        self.applies = 0

    def current(self) -> str:
        return self.served[-1].version

    def apply(self, catalog: Catalog) -> None:
        self.applies += 1
        if self.applies == 1:
            raise RuntimeError("boom in apply")
        self.served.append(catalog)

    def on_error(self, message: str) -> None:
        self.errors.append(message)
        if len(self.errors) == 1:
            raise RuntimeError("boom in on_error")


def test_failing_callbacks_do_not_end_watching(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path)
    sink = Sink(catalog)
    watcher = CatalogWatcher(
        catalog,
        current=sink.current,
        apply=sink.apply,
        on_error=sink.on_error,
        on_restored=lambda: None,
        poll_seconds=0.3,
        settle_seconds=0.05,
    )
    watcher.start()
    try:
        catalog.write_text(FIRST)  # apply raises, then on_error raises while reporting it
        wait_for(lambda: sink.errors, timeout=5)
        assert "RuntimeError: boom in apply" in sink.errors[0]
        catalog.write_text(SECOND)
        wait_for(lambda: len(sink.served) == 2, timeout=5)
        assert sink.served[-1].plans["pro"].entitlements["execution-concurrency"] == 12
        assert len(sink.errors) == 1  # the failure was reported once, not on every poll
    finally:
        watcher.stop()
