#!/bin/sh
# Entrypoint of the CryptoSpreadEdge image.
#
#   cse-entrypoint <cse arguments...>   load the env-file secrets, then exec `cse <arguments>`
#   cse-entrypoint --healthcheck        GET the running worker's /health (the port it recorded
#                                       at start), else `cse <worker> --check`
#
# CSE_ENV_FILES is a colon-separated list of KEY=VALUE files, typically Docker secrets such
# as /run/secrets/rebalance_env or /run/secrets/arbitrage_env. Their CSE_* variables are
# exported unless the variable is already set: the service's own `environment:` wins, so
# an operator can override one value without re-creating the secret. Blank lines and
# `#` comments are skipped, a trailing ` # comment` and surrounding quotes are stripped
# (the same rules as `cse dev up --env-file`). A line that is not CSE_NAME=value stops the
# container with the file and line number: bad configuration never starts a worker.
set -eu

STATE_FILE=${CSE_WORKER_STATE_FILE:-/tmp/cse-worker}
PORT_FILE=${CSE_HEALTH_PORT_FILE:-/tmp/cse-worker.port}

# The healthcheck runs every few seconds in every task: a worker that recorded its health
# port is probed with one bare socket (no env files, no settings, ~10 ms of CPU instead of
# ~0.5 s for `cse <worker> --check`, which is what a busy node starves).
PROBE='
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
        s.settimeout(3)
        s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head = s.recv(64)
except (OSError, ValueError) as exc:
    sys.exit(f"unhealthy: /health on port {sys.argv[1]}: {exc}")
sys.exit(0 if head[9:12] == b"200" else f"unhealthy: {head[:40]!r}")
'
if [ "${1:-}" = "--healthcheck" ] && [ -s "$PORT_FILE" ]; then
  exec python3 -I -S -c "$PROBE" "$(cat "$PORT_FILE")"
fi

load_env_file() {
  file=$1
  [ -r "$file" ] || { echo "cse-entrypoint: CSE_ENV_FILES names $file, which cannot be read" >&2; exit 2; }
  n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=$(printf '%s' "$line" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*}
    if [ "$key" = "$line" ] || ! printf '%s' "$key" | grep -Eq '^CSE_[A-Z0-9_]+$'; then
      echo "cse-entrypoint: $file:$n: expected CSE_NAME=value" >&2
      exit 2
    fi
    value=${line#*=}
    value=${value%% #*}
    value=$(printf '%s' "$value" | sed -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//")
    if eval "[ -z \"\${$key+set}\" ]"; then
      export "$key=$value"
    fi
  done < "$file"
}

if [ -n "${CSE_ENV_FILES:-}" ]; then
  set -f
  old_ifs=$IFS
  IFS=:
  for env_file in $CSE_ENV_FILES; do
    IFS=$old_ifs
    [ -z "$env_file" ] || load_env_file "$env_file"
    IFS=:
  done
  IFS=$old_ifs
  set +f
fi

if [ "${1:-}" = "--healthcheck" ]; then
  worker=${CSE_WORKER:-}
  [ -n "$worker" ] || worker=$(cat "$STATE_FILE" 2>/dev/null || true)
  [ -n "$worker" ] || { echo "cse-entrypoint: no worker recorded in $STATE_FILE" >&2; exit 1; }
  exec cse "$worker" --check
fi

case ${1:-} in
  main | rebalancer | arbitrage | monitor)
    printf '%s\n' "$1" > "$STATE_FILE" 2>/dev/null || true
    # the worker writes its bound health port there once it listens (shared/lifecycle.py)
    rm -f "$PORT_FILE" 2>/dev/null || true
    export CSE_HEALTH_PORT_FILE="$PORT_FILE" ;;
esac
exec cse "$@"
