#!/usr/bin/env bash
# README command 2: set up .venv and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
# Shared-mode tests start a throwaway PostgreSQL from the server binaries (tests/support/postgres.py).
postgres_binaries() {
  if [ -n "${PLANGATE_PG_BINDIR:-}" ]; then [ -x "$PLANGATE_PG_BINDIR/initdb" ]; return; fi
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}
postgres_binaries || echo "NOTE: PostgreSQL server binaries not found" \
  "(${PLANGATE_PG_BINDIR:-/usr/lib/postgresql/*/bin}/initdb): the shared-mode tests" \
  "(PostgreSQL store, change feed) will be SKIPPED. Install them: apt-get install postgresql"
# The console's browser tests are a check of their own (scripts/browser-check.sh).
exec python -m pytest tests -q --ignore=tests/browser "$@"
