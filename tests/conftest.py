"""Pure helpers shared by the catalog and engine unit tests (no servers, no I/O)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from plangate.sidecar.catalog import Catalog, parse_catalog
from support.sidecar import Stubs, copy_catalog, in_process
from support.usage import FakeUsage

# CI starts from nothing saved: a failing example found on one run must not decide the next
# clone's result (the seed and a reproduction blob are printed instead). Locally the example
# database keeps replaying a failure until it is fixed.
settings.register_profile("ci", database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
"""A fixed "now" for tests that do not care about the exact instant (a Monday, mid-month)."""


def build_catalog(text: str, file: str = "catalog.yaml") -> Catalog:
    """A catalog from an inline, indented YAML/JSON string."""
    return parse_catalog(textwrap.dedent(text), file)


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def make_catalog() -> Callable[..., Catalog]:
    return build_catalog


@pytest.fixture
def usage() -> FakeUsage:
    return FakeUsage()


@pytest.fixture(scope="session")
def postgres_cluster() -> object:  # yields a PostgresCluster
    """One throwaway PostgreSQL cluster (`support.postgres.PostgresCluster`) for the session's
    shared-mode tests; skipped, with the reason, when the server binaries are not installed."""
    from support.postgres import PostgresCluster, find_bindir, missing_reason

    reason = missing_reason()
    bindir = find_bindir()
    if reason or bindir is None:
        pytest.skip(reason or "PostgreSQL server binaries not found")
    with PostgresCluster(bindir) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One in-process sidecar on the example catalog per test module (a module may override it)."""
    d = tmp_path_factory.mktemp("sidecar")
    with in_process(copy_catalog(d), d / "state.db") as sc:
        yield sc


@pytest.fixture(scope="module")
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        yield s
