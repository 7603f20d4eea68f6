#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12+ / Ubuntu 24.04+ machine, run as root or as a sudoer.
#   scripts/setup.sh          Python 3.11+ and .venv only (enough for `gateway demo`)
#   scripts/setup.sh --test   plus what the tests use: redis-server, chromium + chromedriver,
#                             php + simplesamlphp, xmlsec1, Apache httpd with
#                             mod_auth_openidc and mod_auth_mellon (benchmark anchors),
#                             Node.js + npm and the npm `oidc-provider` test IdP
# System packages come from the distribution (apt-get); Python packages from PyPI into .venv;
# the test IdP from npm into tests/support/oidc_provider/node_modules. Nothing else is changed,
# and services that the installed packages enable (Apache for simplesamlphp, the system
# redis-server) are disabled again: the tests start their own servers on free ports.
# PYTHON=/path/to/python3.x picks another interpreter (then no Python packages are installed).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "==> $*"; }
die() { echo "scripts/setup.sh: $*" >&2; exit 1; }

with_test=false
no_chromium=""  # set with the reason when Chromium cannot be installed
case "${1:-}" in
  --test) with_test=true ;;
  "") ;;
  *) die "unknown argument '$1' (usage: scripts/setup.sh [--test])" ;;
esac

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "root is needed to run: $*
  run this script as root, or install sudo, or install the packages yourself"
  fi
}

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

os_id=unknown
# shellcheck disable=SC1091
[ -r /etc/os-release ] && os_id=$(. /etc/os-release && echo "${ID:-unknown} ${ID_LIKE:-}")

# --- which system packages --------------------------------------------------------------
packages=(ca-certificates)
[ -z "${PYTHON:-}" ] && packages+=(python3 python3-venv)
if $with_test; then
  packages+=(redis-server php-cli php-xml php-mbstring simplesamlphp xmlsec1)
  # The anchors benchmark (tests/bench/anchors.py) runs its own Apache instances on free
  # ports; the system apache2.service is disabled again like simplesamlphp's (see below).
  packages+=(apache2 libapache2-mod-auth-openidc libapache2-mod-auth-mellon)
  # LemonLDAP::NG, the second OIDC + SAML IdP (tests/support/lemonldap.py): its portal, Lasso, and
  # the modules the portal loads at start-up that Debian lists only as Recommends. Crypt::JWT:
  # the OpenID Provider of LemonLDAP::NG 2.18 (Ubuntu 24.04) needs it; 2.16 (Debian 12) does not.
  packages+=(liblemonldap-ng-portal-perl liblasso-perl libgd-securityimage-perl
    libimage-magick-perl libxml-simple-perl libstring-random-perl libio-string-perl
    libcrypt-jwt-perl)
  case "$os_id" in
    # Ubuntu ships Chromium only as a snap; these transitional packages install it (and
    # /usr/bin/chromedriver) through snapd, which a normal Ubuntu machine runs. Without a
    # running snapd (a container or chroot) their install "succeeds" but leaves wrappers that
    # point at a missing snap, so say so instead: the browser tests will then fail.
    *ubuntu*)
      if { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
        :
      elif [ -S /run/snapd.socket ]; then
        packages+=(chromium-browser chromium-chromedriver)
      else
        no_chromium="Chromium was NOT installed: Ubuntu ships it only as a snap and snapd is not
  running here (a container or chroot?). The tests that start Chromium will fail until
  'chromium' and 'chromedriver' are on PATH: on a machine that runs snapd, run this again."
      fi ;;
    *) packages+=(chromium chromium-driver) ;;
  esac
  # Keep a Node.js that is already there (e.g. from NodeSource); otherwise the distribution's.
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${packages[@]}"; do is_installed "$pkg" || missing+=("$pkg"); done
else
  echo "scripts/setup.sh: not a Debian/Ubuntu system ($os_id); install the equivalents of" \
    "${packages[*]} yourself" >&2
fi

# Services enabled now: systemd units, or init scripts where there is no systemd (e.g. a
# container). Whatever the install below adds is disabled again.
enabled_services() {
  if command -v systemctl >/dev/null 2>&1; then
    systemctl list-unit-files --type=service,timer --state=enabled --no-legend 2>/dev/null \
      | awk '{print $1}' | grep -v '@' || true
  else
    # shellcheck disable=SC2012
    ls /etc/rc[2-5].d/ 2>/dev/null | sed -n 's/^S[0-9]*//p' | sed 's/$/.init/' || true
  fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install: ${missing[*]}"
  before=$(enabled_services | sort -u)
  # A policy-rc.d that answers 101 stops maintainer scripts from starting daemons (Apache on
  # port 80, the system Redis on 6379) while they are installed. An existing one is left alone.
  own_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\n# scripts/setup.sh: no daemon starts while it installs packages\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    own_policy=true
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  say "installing system packages: ${missing[*]}"
  apt_log=$(mktemp)
  if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
         && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
              --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"; } >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    die "apt-get could not install: ${missing[*]} (full output: $apt_log)"
  fi
  rm -f "$apt_log"
  after=$(enabled_services | sort -u)
  for service in $(comm -13 <(echo "$before") <(echo "$after")); do
    case "$service" in
      *.init)
        say "disabling init script ${service%.init} (installed as a dependency; not needed)"
        as_root update-rc.d "${service%.init}" disable >/dev/null 2>&1 || true ;;
      *)
        say "disabling $service (installed as a dependency; not needed)"
        as_root systemctl disable --quiet "$service"
        # Stop it too if it did start (e.g. under an existing policy-rc.d that allowed it).
        [ -d /run/systemd/system ] && as_root systemctl stop "$service" 2>/dev/null || true ;;
    esac
  done
  if $own_policy; then as_root rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# --- Python 3.11+ and .venv ---------------------------------------------------------------
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || die "$python not found (set PYTHON=/path/to/python3.11+)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$python" -V 2>&1) is too old: Python 3.11 or newer is needed (Debian 12 and Ubuntu 24.04 have it; or set PYTHON=)"

# Downloads (pip, npm) trust the system's CA store, as Debian's own pip does, so a company
# TLS proxy whose CA is installed system-wide (update-ca-certificates) works too.
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  export NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
fi

# A .venv left half-made (e.g. created before python3-venv was installed) has no pip: redo it.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  say "creating .venv with $("$python" -V 2>&1)"
  "$python" -m venv --clear .venv \
    || die "could not create .venv; on Debian/Ubuntu install python3-venv (this script does, as root)"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# lxml and xmlsec each link their own libxml2: the constraints pin a pair built on the same one.
if $with_test; then
  say "installing the gateway and its test tools into .venv"
  .venv/bin/python -m pip install -q -c constraints/lxml-xmlsec.txt -e '.[test]'
else
  say "installing the gateway into .venv"
  .venv/bin/python -m pip install -q -c constraints/lxml-xmlsec.txt -e .
fi

# --- the test OpenID provider (npm oidc-provider) -------------------------------------------
if $with_test; then
  op_dir=tests/support/oidc_provider
  wanted=$(sed -n 's/.*"node": *">=\([0-9]*\).*/\1/p' "$op_dir/package.json")
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt "${wanted:-18}" ]; then
    die "Node.js $(node --version) is too old for the test OpenID provider (needs ${wanted:-18} or newer, see $op_dir/package.json)"
  fi
  # Reinstall when package-lock.json changed since the last `npm ci` (e.g. a new pin).
  stamp="$op_dir/node_modules/.gateway-lock.sha256"
  lock_sum=$(sha256sum "$op_dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    say "installing the npm oidc-provider test IdP (npm ci, Node.js $(node --version))"
    (cd "$op_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" > "$stamp"
  fi
fi
[ -z "$no_chromium" ] || echo "scripts/setup.sh: warning: $no_chromium" >&2
say "set-up complete"
