"""`plangate diff OLD NEW [--db ...]`: the impact of a catalog change, offline (design §6.1).

Both catalogs are served, as the sidecar would serve them, over the accounts and usage stored
in `--db` (none without it) next to each file's declared accounts; no server is involved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..catalog import CatalogError, load_catalog
from ..runtime.impact import catalog_impact
from ..runtime.state import LiveState, utcnow
from ..store import StoreError, open_store
from ..store.sqlite import SqliteStore


def add_diff(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="list the accounts whose decisions a catalog change would alter",
        description="Evaluate every feature for every declared and stored account under OLD "
        "and NEW and print each decision that differs (exit 0 either way; 1 on an error).",
    )
    p.add_argument("old", help="the catalog as it is")
    p.add_argument("new", help="the proposed catalog")
    p.add_argument("--db", help="the sidecar's store (file path or postgresql:// URL)")
    p.add_argument("--environment", default="default", help="the environment of --db")
    p.set_defaults(func=diff)


def diff(args: argparse.Namespace) -> int:
    try:
        old, new = load_catalog(args.old), load_catalog(args.new)
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as empty:
        try:
            store = (
                open_store(args.db, args.environment)
                if args.db
                else SqliteStore(Path(empty) / "none.db")
            )
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
