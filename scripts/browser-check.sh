#!/usr/bin/env bash
# The console in a real browser (design §12): Debian's chromium, driven through chromedriver by
# Selenium, against a real sidecar. A slow check of its own, so `scripts/test.sh` leaves
# tests/browser out. Screenshots of every page land in tests/browser/artifacts/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
for tool in chromium chromedriver; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool not found: apt-get install -y --no-install-recommends chromium chromium-driver" >&2
    exit 1
  }
done
exec python -m pytest tests/browser -q "$@"
