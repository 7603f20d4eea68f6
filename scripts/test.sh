#!/usr/bin/env bash
# One command: set up everything the tests need, lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
echo "==> ruff";  .venv/bin/ruff check gateway tests
echo "==> mypy";  .venv/bin/mypy gateway
echo "==> pytest"
exec .venv/bin/pytest "$@"
