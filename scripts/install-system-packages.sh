#!/bin/sh
# Installs the Debian packages some tests need and pip cannot provide, only when missing.
#
#   prometheus   the Prometheus server and promtool (tests/deploy: config, rules, live scrape)
#   chromium     headless browser + chromedriver (tests/serve/test_dashboard.py loads the page)
#
# Fast and idempotent: when every command is already on PATH it exits at once, and it runs
# `apt-get update` only when a package is actually missing. Without root or apt it prints the
# command to run instead and exits non-zero.
set -eu

# command -> Debian package that provides it
NEEDED="prometheus:prometheus promtool:prometheus chromium:chromium chromedriver:chromium-driver"

missing=""
for pair in $NEEDED; do
  cmd="${pair%%:*}"
  pkg="${pair#*:}"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
  fi
done
missing="${missing# }"

if [ -z "$missing" ]; then
  exit 0
fi

install_cmd="apt-get update && apt-get install -y --no-install-recommends $missing"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "pinpipe: missing system packages: $missing (no apt-get on this machine)." >&2
  echo "Install them with your package manager so that 'prometheus' and 'promtool' are on PATH." >&2
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "pinpipe: missing system packages: $missing" >&2
    echo "Run as root:  sudo sh -c '$install_cmd'" >&2
    exit 1
  fi
else
  SUDO=""
fi

echo "pinpipe: installing system packages: $missing"
# --no-install-recommends keeps the install small; the Debian prometheus package's service is
# not started here (no systemd in containers; pinpipe's tests start their own server).
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing

for pair in $NEEDED; do
  cmd="${pair%%:*}"
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "pinpipe: '$cmd' is still not on PATH after installing $missing" >&2
    exit 1
  }
done
echo "pinpipe: system packages ready: $missing"
