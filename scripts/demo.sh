#!/usr/bin/env bash
# One command: set up and run the demo (gateway + demo IdPs + LMS simulators on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/gateway demo "$@"
