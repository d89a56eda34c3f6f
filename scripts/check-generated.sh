#!/usr/bin/env bash
# Generate a fresh copy of gen/ elsewhere and fail when it differs from gen/ (which
# this never rewrites: tests or a plane may be importing from it meanwhile).
set -euo pipefail
cd "$(dirname "$0")/.."
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
.venv/bin/python scripts/gen_protos.py --out "$fresh" >/dev/null
if ! diff -r -q -x __pycache__ "$fresh/ppos" gen/ppos >&2; then
  echo "gen/ is stale: run 'make gen' and commit the result" >&2
  exit 1
fi
if [ -n "$(git status --porcelain -- gen)" ]; then
  echo "gen/ differs from what is committed: commit it" >&2
  git status --short -- gen >&2
  exit 1
fi
echo "gen/ matches protos/"
