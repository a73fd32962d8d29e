#!/usr/bin/env bash
# README command 1: set up .venv and run the sidecar on the example catalog (state in ./plangate.db).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
cat <<'HELP'
PlanGate sidecar starting on the example catalog (examples/catalog.yaml).
In another terminal, from this directory:
  .venv/bin/plangate check acct_acme sso                  # boolean: Pro has SSO
  .venv/bin/plangate check acct_acme api-calls --requested 5
  .venv/bin/plangate usage report acct_acme api-calls 5   # record usage
  curl -s localhost:8014/readyz                           # health detail
  open http://127.0.0.1:8014/console/ in a browser        # the web console (read-only)
  curl -s -X POST localhost:8016/ofrep/v1/evaluate/flags/sso \
       -H 'content-type: application/json' -d '{"context":{"targetingKey":"acct_acme"}}'
Stop with Ctrl-C.
HELP
exec plangate serve --catalog examples/catalog.yaml "$@"
