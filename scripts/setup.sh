#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine with Python 3.11+.
#   scripts/setup.sh          Python environment only (enough for `gateway demo`)
#   scripts/setup.sh --test   plus what the tests use: redis-server, chromium, php + simplesamlphp,
#                             xmlsec1, Node.js + the npm `oidc-provider` test IdP
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=false
[ "${1:-}" = "--test" ] && with_test=true

sudo_cmd=""
if [ "$(id -u)" != "0" ]; then sudo_cmd="sudo"; fi

if $with_test; then
  packages=(redis-server chromium chromium-driver php-cli php-xml php-mbstring simplesamlphp xmlsec1)
  command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
  missing=()
  for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing system packages: ${missing[*]}"
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if $with_test; then
  .venv/bin/python -m pip install -q -e '.[test]'
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "Node.js $node_major found; the test OpenID provider (npm oidc-provider 9) needs Node.js 20 or newer" >&2
    exit 1
  fi
  if [ ! -d tests/support/oidc_provider/node_modules ]; then
    echo "==> installing the npm oidc-provider test IdP"
    (cd tests/support/oidc_provider && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
