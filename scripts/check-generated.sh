#!/usr/bin/env bash
# Regenerate gen/ and fail when it differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python scripts/gen_protos.py >/dev/null
if ! git diff --quiet --exit-code -- gen || [ -n "$(git status --porcelain -- gen)" ]; then
  echo "gen/ is stale: run 'make gen' and commit the result" >&2
  git status --short -- gen >&2
  git diff --stat -- gen >&2
  exit 1
fi
echo "gen/ matches protos/"
