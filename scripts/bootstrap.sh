#!/usr/bin/env bash
# Set up everything CryptoSpreadEdge needs on a Debian/Ubuntu machine, idempotently:
#   - system packages: redis-server and victoria-metrics (the embedded stack's Redis and
#     time-series store); for the tests shellcheck, nginx, prometheus (promtool),
#     prometheus-alertmanager (amtool and a real Alertmanager), the docker
#     client and chromium; python3-venv when the interpreter lacks venv;
#   - the virtual environment at .venv/ with the project and its dev/test extras.
# Needs root or sudo only when a system package is missing. Re-running is cheap: the project
# is reinstalled only when pyproject.toml, setup.py or shared/_alloc.c changed.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv
STAMP="$VENV/.bootstrap-stamp"
# shellcheck disable=SC2034  # what step 1 installs when missing; each has its check below
APT_PACKAGES=(redis-server victoria-metrics shellcheck nginx prometheus prometheus-alertmanager docker.io)

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand (Debian packages)"
  log "installing system packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. System packages.
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || missing+=(victoria-metrics)
# tests/deploy: shellcheck, `nginx -t`, `promtool check config`, `docker stack config`
# (the docker.io client; its engine is not needed and not started by the tests).
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# tests/integration/tooling/test_alert_delivery.py: Prometheus -> Alertmanager -> a webhook.
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
# tests/integration/workers/test_api.py renders the status page in headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# 2. A Python >= 3.11 with venv.
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { apt_install python3 python3-venv; PYTHON=python3; }
# The allocation kernel (shared/_alloc.c) is compiled at install: a C compiler and Python's headers.
command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
if ! "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  apt_install python3-dev
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

# 3. The project and its dependencies, when pyproject.toml or the compiled kernel's source changed.
want=$(cat pyproject.toml setup.py shared/_alloc.c | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  log "installing the project into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev,test]'
  echo "$want" > "$STAMP"
fi
log "ready: $VENV/bin/cse"
