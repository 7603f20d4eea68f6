#!/usr/bin/env bash
# Check the README's test command on a fresh machine: debootstrap a new Debian 12 (or Ubuntu)
# root, put a clean clone of this repository in it, chroot in and run `scripts/test.sh`
# exactly as the README says, as root. Then run `scripts/setup.sh --test` again (it must
# install nothing) and list the services left enabled and the ports listening.
#
#   sudo scripts/verify-fresh-debian.sh [options] [-- pytest arguments]
#     --suite S        bookworm (default) or noble (Ubuntu 24.04; main + universe)
#     --mirror URL     package mirror (default: the Debian mirror in this machine's apt
#                      sources, else http://deb.debian.org/debian; archive.ubuntu.com for noble)
#     --target DIR     where the new root goes (default /srv/gateway-verify-S; must not exist)
#     --overlay PATH   also copy PATH from this work tree over the clone (repeatable; to try
#                      uncommitted changes)
#     --ca-file FILE   trust FILE (PEM) in the new root too, as a company would install its
#                      TLS proxy's CA; scripts/setup.sh makes pip and npm use the system store
#     --keep           keep the root afterwards (it is unmounted either way)
#     --no-browser     deselect the tests that start Chromium (those using a selenium browser
#                      fixture). Implied by --suite noble: Ubuntu's Chromium is a snap, and snapd
#                      cannot run in a chroot (scripts/setup.sh then says it did not install it)
#
# Needs root, ~3 GB of disk and network access to the mirror, PyPI and the npm registry. The
# chroot shares this machine's network: the tests bind 127.0.0.1 on free ports only.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

suite=bookworm mirror="" target="" keep=false no_browser=false overlays=() ca_files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --overlay) overlays+=("$2"); shift 2 ;;
    --ca-file) ca_files+=("$2"); shift 2 ;;
    --keep) keep=true; shift ;;
    --no-browser) no_browser=true; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, mount and chroot need it)" >&2; exit 2; }
target=${target:-/srv/gateway-verify-$suite}
[ -e "$target" ] && { echo "$target exists; remove it or pass --target" >&2; exit 2; }

debootstrap_args=()
case "$suite" in
  bookworm)
    if [ -z "$mirror" ]; then
      # The Debian mirror this machine already uses (deb822 or one-line sources).
      mirror=$(grep -rhE '^[^#]*https?://' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
      mirror=${mirror:-http://deb.debian.org/debian}
    fi
    security=${mirror%/debian*}/debian-security
    sources="deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main" ;;
  noble)
    mirror=${mirror:-http://archive.ubuntu.com/ubuntu}
    no_browser=true
    debootstrap_args+=(--components=main,universe)
    # Debian has no Ubuntu archive keyring package: without the key, the Release files cannot
    # be verified (say so instead of silently trusting them).
    if [ -r /usr/share/keyrings/ubuntu-archive-keyring.gpg ]; then
      debootstrap_args+=(--keyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg)
    else
      echo "warning: no Ubuntu archive keyring here; debootstrap runs with --no-check-gpg" >&2
      debootstrap_args+=(--no-check-gpg)
    fi
    sources="deb $mirror noble main universe
deb $mirror noble-updates main universe
deb $mirror noble-security main universe" ;;
  *) echo "unsupported suite $suite (bookworm or noble)" >&2; exit 2 ;;
esac
script=/usr/share/debootstrap/scripts/$suite
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
[ -e "$script" ] || script=/usr/share/debootstrap/scripts/gutsy  # Ubuntu's generic script

mounted=()
cleanup() {
  # Anything still running in the chroot (e.g. a test server) would keep the mounts busy.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$target" ] && kill "$pid" 2>/dev/null || true
  done
  sleep 1
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  if ! $keep && [ -d "$target" ]; then rm -rf --one-file-system "$target"; fi
}
trap cleanup EXIT

started=$(date +%s)
echo "==> debootstrap $suite from $mirror into $target"
log=${TMPDIR:-/tmp}/gateway-verify-$suite.debootstrap.log
debootstrap "${debootstrap_args[@]}" "$suite" "$target" "$mirror" "$script" >"$log" 2>&1 \
  || { tail -n 20 "$log"; exit 1; }
echo "$sources" > "$target/etc/apt/sources.list"
cp /etc/resolv.conf "$target/etc/resolv.conf"
for ca in "${ca_files[@]}"; do
  mkdir -p "$target/usr/local/share/ca-certificates"
  cp "$ca" "$target/usr/local/share/ca-certificates/$(basename "${ca%.*}").crt"
done
for fs in proc sys dev dev/pts dev/shm; do
  case "$fs" in
    proc) mount -t proc proc "$target/proc" ;;
    sys) mount -t sysfs sys "$target/sys" ;;
    dev) mount --bind /dev "$target/dev" ;;
    dev/pts) mount -t devpts devpts "$target/dev/pts" ;;
    dev/shm) mount -t tmpfs -o mode=1777 shm "$target/dev/shm" ;;  # Chromium needs it
  esac
  mounted+=("$target/$fs")
done
# Ubuntu's base system already has ca-certificates (Debian's minimal one gets it from setup.sh,
# whose install runs this), so fold the copied CA into the system store as an admin would.
if [ "${#ca_files[@]}" -gt 0 ] && [ -x "$target/usr/sbin/update-ca-certificates" ]; then
  chroot "$target" /usr/sbin/update-ca-certificates >/dev/null
fi

echo "==> clean clone of $(git -C "$repo" rev-parse --short HEAD) into $target/root/gateway"
git clone -q "$repo" "$target/root/gateway"
for path in "${overlays[@]}"; do
  mkdir -p "$(dirname "$target/root/gateway/$path")"
  cp -a "$repo/$path" "$target/root/gateway/$path"
  echo "    overlay: $path"
done

in_root() {
  chroot "$target" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
pytest_env=()
if $no_browser; then
  # A pytest plugin outside the clone: it deselects (pytest counts them as "deselected") every
  # test that asks for a browser fixture, and lists them, so the report says what did not run.
  mkdir -p "$target/root/verify-plugins"
  cat > "$target/root/verify-plugins/deselect_browser.py" <<'PY'
import pytest

BROWSER_FIXTURES = {"chrome", "chromium", "tls_chrome"}
deselected: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser = [i for i in items if BROWSER_FIXTURES & set(getattr(i, "fixturenames", ()))]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [i for i in items if i not in browser]
        deselected.extend(i.nodeid for i in browser)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if deselected:
        terminalreporter.section(f"{len(deselected)} tests that start Chromium were deselected")
        for nodeid in deselected:
            terminalreporter.write_line(nodeid)
PY
  pytest_env=(PYTHONPATH=/root/verify-plugins PYTEST_ADDOPTS="-p deselect_browser")
fi
echo "==> $(in_root sh -c '. /etc/os-release; echo "$PRETTY_NAME"'): cd gateway && scripts/test.sh $*"
status=0
in_root "${pytest_env[@]}" bash -c 'cd /root/gateway && nice -n 19 scripts/test.sh "$@"' test.sh "$@" \
  || status=$?
echo "==> scripts/test.sh exited with $status after $(( $(date +%s) - started )) s (including debootstrap)"

echo "==> second run of scripts/setup.sh --test (must install nothing)"
in_root bash -c 'cd /root/gateway && scripts/setup.sh --test' || status=$?
echo "==> services enabled in the new root:"
in_root systemctl list-unit-files --type=service --state=enabled --no-legend | awk '{print "    " $1}'
for unit in apache2 redis-server; do
  if in_root systemctl is-enabled "$unit" >/dev/null 2>&1; then
    echo "FAIL: $unit is enabled"; status=1
  fi
done
echo "==> versions: $(in_root sh -c 'node --version; python3 -V; dpkg-query -W -f="\${Package} \${Version}\n" nodejs simplesamlphp redis-server chromium chromium-browser 2>/dev/null' | tr '\n' ' ')"
exit "$status"
