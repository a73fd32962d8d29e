"""`plangate diff` (design §6.1 impact review): offline, over the declared accounts of the
files and the accounts stored in `--db`, every decision a catalog change alters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from plangate.sidecar.store.sqlite import SqliteStore

OLD = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: integer
    plans:
      - name: Free
        entitlements: {seats: 2}
      - name: Pro
        entitlements: {sso: true, seats: 10}
accounts:
  - id: acct_file
    subscriptions: [{plan: pro}]
"""
NEW = OLD.replace("{seats: 2}", "{seats: 3}").replace("{sso: true, seats: 10}", "{seats: 10}")


def _diff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "plangate.sidecar.cli.main", "diff", *args],
        capture_output=True, text=True, timeout=60, env=clean, cwd=cwd,
    )  # fmt: skip


def test_diff_lists_each_changed_decision_of_declared_and_stored_accounts(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    db = tmp_path / "state.db"
    store = SqliteStore(db)
    sub = {"id": "db-s", "plan": "free", "starts_at": "2026-01-01T00:00:00Z", "members": []}
    store.save_record({"id": "acct_db", "subscriptions": [sub], "overrides": {}, "grants": []})
    store.close()
    run = _diff(str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), "--db", str(db))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "acct_db  seats: 2 → 3",
        "acct_file  sso: True → False (no access)",
    ]
    assert "2 decision(s) of 2 account(s) change" in run.stderr
    # without --db, where `serve` would find no store: the declared accounts only
    alone = _diff(str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), cwd=tmp_path)
    assert alone.stdout.splitlines() == ["acct_file  sso: True → False (no access)"]
    # the same catalog twice: nothing changes
    same = _diff(str(tmp_path / "old.yaml"), str(tmp_path / "old.yaml"), "--db", str(db))
    assert (same.returncode, same.stdout) == (0, "")


def test_a_new_catalog_the_stored_accounts_do_not_fit_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(OLD.replace("- name: Free", "- name: Basic"))
    db = tmp_path / "state.db"
    store = SqliteStore(db)
    sub = {"id": "db-s", "plan": "free", "members": []}
    store.save_record({"id": "acct_db", "subscriptions": [sub], "overrides": {}, "grants": []})
    store.close()
    run = _diff(str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), "--db", str(db))
    assert run.returncode == 1
    assert "stored account 'acct_db' does not fit this catalog" in run.stderr
    assert "Traceback" not in run.stderr
