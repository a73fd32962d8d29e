"""`plangate diff OLD NEW [--db ...]`: the impact of a catalog change, offline (design §6.1).

Both catalogs are served, as the sidecar would serve them, over the accounts and usage stored
in `--db` (by default the store `serve` would use, if it exists) next to each file's
declared accounts; no server is involved.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .. import settings


def add_diff(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="list the accounts whose decisions a catalog change would alter",
        description="Evaluate every feature for every declared and stored account under OLD "
        "and NEW and print each decision that differs (exit 0 either way; 1 on an error).",
    )
    p.add_argument("old", help="the catalog as it is")
    p.add_argument("new", help="the proposed catalog")
    p.add_argument(
        "--db",
        help="the sidecar's store (file path or postgresql:// URL); default: what `serve` "
        "uses (PLANGATE_DB, else ./plangate.db) when it exists",
    )
    p.add_argument(
        "--environment",
        default=settings.value_of("environment", os.environ),
        help="the environment of --db [PLANGATE_ENVIRONMENT]",
    )
    p.set_defaults(func=diff)


def diff(args: argparse.Namespace) -> int:
    from ..catalog import CatalogError, load_catalog
    from ..runtime.live.state import LiveState, utcnow
    from ..runtime.serve.impact import catalog_impact
    from ..store import StoreError, open_store
    from ..store.sqlite import SqliteStore

    try:
        old, new = load_catalog(args.old), load_catalog(args.new)
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 1
    db = _store_of(args.db)
    print(
        f"plangate diff: accounts declared in the files and stored in {db}"
        if db
        else "plangate diff: no store found (--db, PLANGATE_DB, ./plangate.db): declared "
        "accounts only",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as empty:
        try:
            store = open_store(db, args.environment) if db else SqliteStore(Path(empty) / "none.db")
        except (StoreError, OSError) as exc:
            print(f"plangate diff: {exc}", file=sys.stderr)
            return 1
        try:
            before, after = LiveState(old, store), LiveState(new, store)
        except ValueError as exc:  # a stored account the new catalog cannot serve
            print(f"plangate diff: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()
        changes = catalog_impact(before.snapshot, after.snapshot, utcnow())
    for c in changes:
        print(f"{c.account}  {c.feature}: {c.before} → {c.after}")
    accounts = len({c.account for c in changes})
    print(f"{len(changes)} decision(s) of {accounts} account(s) change", file=sys.stderr)
    return 0


def _store_of(given: str | None) -> str | None:
    """The store to read: `--db` as given (a missing file is an error there), else the one
    `serve` would use if it exists, so a diff next to a running demo sees its accounts."""
    if given:
        if "://" not in given and not Path(given).exists():
            raise SystemExit(f"plangate diff: no store at {given}")
        return given
    default: str = settings.value_of("db", os.environ)
    return default if "://" in default or Path(default).exists() else None
