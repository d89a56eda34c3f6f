#!/usr/bin/env bash
# Regenerates the screenshots docs/portal.md shows: the portal's browser test (a real
# plane on SQLite, Debian's chromium) saves each page it checks into docs/images/portal.
set -euo pipefail
cd "$(dirname "$0")/.."
export PPOS_PORTAL_SCREENSHOTS=docs/images/portal
.venv/bin/python -m pytest tests/portal/test_browser.py -k sqlite -q
ls -l "$PPOS_PORTAL_SCREENSHOTS"
