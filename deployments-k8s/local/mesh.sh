#!/usr/bin/env bash
# A local vwire mesh in network namespaces, no Kubernetes: three nodes on one underlay (a bridge),
# a registry, an nsmgr and a kernel forwarder per node, endpoints and clients in "pods" (network
# namespaces of their own), for the ways a vWire is built. Every client runs on node 1:
#   k2k        Kernel2Kernel, IP payload, endpoint on node 1
#   k2k-eth    Kernel2Kernel, Ethernet payload, endpoint on node 1
#   k2wg2k     Kernel2Wireguard2Kernel, IP payload, endpoint on node 2
#   k2vx2k     Kernel2Vxlan2Kernel, Ethernet payload, endpoint on node 2
#   k2vx2k-ip  Kernel2Vxlan2Kernel, IP payload, endpoint on node 3, whose forwarder offers VXLAN
#              only (NSM_REMOTE_MECHANISMS=VXLAN), as on a node without WireGuard
# The service of k2k has a second endpoint, k2k-2, on node 1: kill the one in use and the client
# heals to the other.
# Clients and endpoints pass their network namespaces to the forwarders as descriptors over the
# unix sockets, as in a cluster; the forwarders open no namespace named by path.
# The mesh is secure: at start it makes a trust domain of its own (cmd-local-ca, its CA in
# $VWIRE_DEMO_DIR/ca) and gives every process an X.509 SVID (spiffe://vwire.local/<process name>)
# in files; every hop speaks mutual TLS and signs its tokens with its SVID's key. MESH_INSECURE=1
# runs it without identities instead. With SPIFFE_ENDPOINT_SOCKET set (a SPIRE agent's Workload
# API), every process takes its identity from there instead: the agent's entries name them.
# MESH_TOKEN_LIFETIME (e.g. 10s) sets every process's NSM_MAX_TOKEN_LIFETIME: frequent refreshes.
# MESH_PROMETHEUS=1 makes every process serve its metrics for Prometheus (PROMETHEUS=true) on a
# port of its own on its namespace's loopback, written in $VWIRE_DEMO_DIR/run/NAME.metrics as
# "NETNS 127.0.0.1:PORT" (NETNS - for the host's namespace).
# MESH_OPEN_TELEMETRY_ENDPOINT (e.g. unix:///tmp/otlp.sock, which every namespace reaches) makes
# every process export its traces and metrics there (NSM_OPEN_TELEMETRY_ENDPOINT); OTEL_BSP_* and
# OTEL_TRACES_SAMPLER* are passed on as they are set.
#
#   mesh.sh up      build the binaries, start everything, wait for every client's vWire
#   mesh.sh check   ping each endpoint from its client across the vWire
#   mesh.sh down    stop everything and remove every namespace, interface and file it made
#   mesh.sh kill NAME      kill one process (forwarder1, nsmgr2, nse-k2k, ...) as a crash would
#   mesh.sh restart NAME   kill one process and start it again as it was started
#   mesh.sh names   list every process of the mesh by the name kill and restart take
#   mesh.sh rotate  give every process a new SVID; each takes it without a restart
#   mesh.sh demo    up, check, down; down also runs when up or check fails
#
# Needs root and Go; installs iproute2 and ping (iputils-ping) with apt-get when missing. Everything it makes is named vw-*; its files
# live in $VWIRE_DEMO_DIR (default /tmp/vwire-demo). MESH_LOG_LEVEL=TRACE logs every chain element.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${VWIRE_DEMO_DIR:-/tmp/vwire-demo}
bin=$dir/bin
run=$dir/run

# Each topology is a client and its endpoint: name, service, payload, the endpoint's node, and
# the prefixes the endpoint hands addresses out from (every vWire is dual stack).
topologies=(
  "k2k       icmp-k2k       IP       1 172.16.1.0/24,fd00:16:1::/64"
  "k2k-eth   icmp-k2k-eth   ETHERNET 1 172.16.2.0/24,fd00:16:2::/64"
  "k2wg2k    icmp-k2wg2k    IP       2 172.16.3.0/24,fd00:16:3::/64"
  "k2vx2k    icmp-k2vx2k    ETHERNET 2 172.16.4.0/24,fd00:16:4::/64"
  "k2vx2k-ip icmp-k2vx2k-ip IP       3 172.16.5.0/24,fd00:16:5::/64"
)
# Endpoints without a client of their own, the same fields.
spares=(
  "k2k-2     icmp-k2k       IP       1 172.16.1.0/24,fd00:16:1::/64"
)
# The tunnels each node's forwarder offers and accepts.
mechanisms=(WIREGUARD,VXLAN WIREGUARD,VXLAN VXLAN)

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
die() { log "error: $*" >&2; exit 1; }

need() {
  [ "$(id -u)" = 0 ] || die "run as root: it makes network namespaces"
  [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null || die "go is missing: install Go 1.26 (https://go.dev/dl) and put it on PATH"
  # What the mesh runs besides Go, installed from Debian's packages when missing.
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v ping >/dev/null || missing+=(iputils-ping)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them; install them by hand"
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      die "could not install ${missing[*]} with apt-get"
  fi
}

build() {
  mkdir -p "$bin"
  log "building the binaries into $bin"
  for cmd in cmd-local-ca cmd-registry-memory cmd-nsmgr cmd-forwarder-kernel cmd-nse-icmp-responder cmd-nsc cmd-vwctl; do
    (cd "$root/$cmd" && go build -o "$bin/$cmd" .)
  done
}

# start NAME NETNS CMD [VAR=VALUE...]: runs a binary in the background, in a namespace or not.
start() {
  local name=$1 netns=$2 cmd=$3
  shift 3
  local prefix=()
  [ "$netns" = - ] || prefix=(ip netns exec "$netns")
  printf '%q ' "$name" "$netns" "$cmd" "$@" >"$run/$name.args"
  local identity=NSM_IDENTITY_DIR="$dir/id/$name"
  [ -z "${MESH_INSECURE:-}" ] || identity=NSM_INSECURE=true
  [ -z "${SPIFFE_ENDPOINT_SOCKET:-}" ] || identity=SPIFFE_ENDPOINT_SOCKET="$SPIFFE_ENDPOINT_SOCKET"
  local lifetime=()
  [ -z "${MESH_TOKEN_LIFETIME:-}" ] || lifetime=(NSM_MAX_TOKEN_LIFETIME="$MESH_TOKEN_LIFETIME")
  local metrics=() # a port of its own, kept across restarts; $run/NAME.metrics says where: "NETNS ADDRESS"
  if [ -n "${MESH_PROMETHEUS:-}" ]; then
    [ -f "$run/$name.metrics" ] || echo "$netns 127.0.0.1:$((9400 + $(cat "$run"/*.metrics 2>/dev/null | wc -l)))" >"$run/$name.metrics"
    metrics=(PROMETHEUS=true NSM_PROMETHEUS_LISTEN_ON="$(cut -d' ' -f2 "$run/$name.metrics")")
  fi
  local otlp=()
  if [ -n "${MESH_OPEN_TELEMETRY_ENDPOINT:-}" ]; then
    otlp=(NSM_OPEN_TELEMETRY_ENDPOINT="$MESH_OPEN_TELEMETRY_ENDPOINT")
    while IFS= read -r kv; do otlp+=("$kv"); done < <(env | grep -E '^OTEL_(BSP_|TRACES_SAMPLER)' || true)
  fi
  env -i PATH="$PATH" NSM_LOG_LEVEL=${MESH_LOG_LEVEL:-INFO} "$identity" "${lifetime[@]}" "${metrics[@]}" "${otlp[@]}" "$@" "${prefix[@]}" "$bin/$cmd" >>"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

# crash NAME: kills a process of the mesh at once, as a crash would; the mesh is to heal by itself.
crash() {
  local name=$1
  [ -f "$run/$name.args" ] || die "no process named $name; see $run/*.pid"
  local pid
  pid=$(cat "$run/$name.pid")
  kill -KILL "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.01; done
  log "killed $name"
}

# restart NAME: crash, then start it again as it was started.
restart() {
  crash "$1"
  eval "start $(cat "$run/$1.args")"
  log "restarted $1"
}

# wait_for FILE: waits until a socket exists (a server is up).
wait_for() {
  for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  die "$1 did not appear; see the logs in $run"
}

# operators: who sees every connection of the nsmgrs and forwarders (MonitorConnections): the
# identity identities issues to cmd-vwctl ($VWIRE_DEMO_DIR/bin/cmd-vwctl connections).
operators=spiffe://vwire.local/vwctl

# names: every process of the mesh, by the name start gives it.
names() {
  echo registry
  for n in $(seq ${#mechanisms[@]}); do echo "nsmgr$n forwarder$n"; done
  for t in "${topologies[@]}" "${spares[@]}"; do read -r name _ <<<"$t"; echo "nse-$name"; done
  for t in "${topologies[@]}"; do read -r name _ <<<"$t"; echo "nsc-$name"; done
}

# identities: writes an SVID for every process (a new one each time: a rotation), making the
# mesh's trust domain the first time.
identities() {
  [ -z "${MESH_INSECURE:-}${SPIFFE_ENDPOINT_SOCKET:-}" ] || return 0
  local issue=() name
  for name in $(names); do issue+=("$name=$dir/id/$name"); done
  issue+=("vwctl=$dir/id/vwctl") # the operator's: cmd-vwctl reads it by default; see operators
  env -i PATH="$PATH" NSM_LOG_LEVEL=WARN NSM_CA_DIR="$dir/ca" NSM_TRUST_DOMAIN=vwire.local \
    NSM_ISSUE="$(IFS=,; echo "${issue[*]}")" "$bin/cmd-local-ca" || die "could not write the mesh's SVIDs"
}

up() {
  need
  [ ! -d "$run" ] || die "$run exists: a mesh is up (mesh.sh down first)"
  build
  mkdir -p "$run"
  if [ -n "${SPIFFE_ENDPOINT_SOCKET:-}" ]; then
    log "every process takes its identity from the Workload API at $SPIFFE_ENDPOINT_SOCKET"
  elif [ -z "${MESH_INSECURE:-}" ]; then
    identities
    log "made the trust domain vwire.local ($dir/ca) and an SVID for each process ($dir/id)"
  else
    log "MESH_INSECURE is set: no identities, plain gRPC"
  fi
  log "making ${#mechanisms[@]} nodes on one underlay (a bridge in vw-underlay)"
  ip netns add vw-underlay
  ip -n vw-underlay link add vw-br type bridge
  ip -n vw-underlay link set vw-br up
  for n in $(seq ${#mechanisms[@]}); do
    ip netns add "vw-node$n"
    ip -n "vw-node$n" link set lo up
    ip link add "vw-under$n" netns "vw-node$n" type veth peer name "vw-port$n" netns vw-underlay
    ip -n vw-underlay link set "vw-port$n" master vw-br up
    ip -n "vw-node$n" addr add "10.200.0.$n/24" dev "vw-under$n"
    ip -n "vw-node$n" link set "vw-under$n" up
  done

  log "starting the registry, and an nsmgr and a forwarder per node"
  start registry - cmd-registry-memory NSM_LISTEN_ON="unix://$run/registry.sock"
  wait_for "$run/registry.sock"
  for n in $(seq ${#mechanisms[@]}); do
    start "nsmgr$n" - cmd-nsmgr NSM_NAME="nsmgr-$n" NSM_MONITOR_OPERATORS="$operators" NSM_LISTEN_ON="unix://$run/nsmgr$n.sock" NSM_REGISTRY_URL="unix://$run/registry.sock"
    wait_for "$run/nsmgr$n.sock"
    start "forwarder$n" "vw-node$n" cmd-forwarder-kernel NSM_NAME="forwarder-$n" NSM_MONITOR_OPERATORS="$operators" NSM_LISTEN_ON="unix://$run/forwarder$n.sock" \
      NSM_CONNECT_TO="unix://$run/nsmgr$n.sock" NSM_TUNNEL_IP="10.200.0.$n" NSM_REMOTE_MECHANISMS="${mechanisms[n-1]}"
    wait_for "$run/forwarder$n.sock"
  done

  for t in "${topologies[@]}" "${spares[@]}"; do
    read -r name service payload node cidr <<<"$t"
    ip netns add "vw-nse-$name"; ip -n "vw-nse-$name" link set lo up
    start "nse-$name" "vw-nse-$name" cmd-nse-icmp-responder NSM_NAME="nse-$name" NSM_SERVICE_NAMES="$service" \
      NSM_PAYLOAD="$payload" NSM_CIDR_PREFIX="$cidr" NSM_LISTEN_ON="unix://$run/nse-$name.sock" \
      NSM_CONNECT_TO="unix://$run/nsmgr$node.sock"
    wait_for "$run/nse-$name.sock"
  done
  for t in "${topologies[@]}"; do
    read -r name service payload node cidr <<<"$t"
    ip netns add "vw-nsc-$name"; ip -n "vw-nsc-$name" link set lo up
    start "nsc-$name" "vw-nsc-$name" cmd-nsc NSM_NAME="nsc-$name" NSM_NETWORK_SERVICES="kernel://$service/nsm-1" \
      NSM_CONNECT_TO="unix://$run/nsmgr1.sock"
  done
  for t in "${topologies[@]}"; do
    read -r name _ <<<"$t"
    for _ in $(seq 300); do ip -n "vw-nsc-$name" link show nsm-1 >/dev/null 2>&1 && break; sleep 0.05; done
    ip -n "vw-nsc-$name" link show nsm-1 >/dev/null 2>&1 || die "client $name has no vWire; see $run/nsc-$name.log"
    log "$name: the client has its vWire nsm-1: $(ip -n "vw-nsc-$name" -brief addr show nsm-1 | awk '{print $3, $4}')"
  done
}

# peers NETNS: the endpoint's addresses across the client's vWire nsm-1, one per family: the
# destinations of its routes.
peers() {
  ip -n "$1" -4 route show dev nsm-1 | awk 'NR == 1 {print $1}'
  ip -n "$1" -6 route show dev nsm-1 | awk '$1 !~ /^fe80/ {print $1; exit}'
}

check() {
  local failed=0 name ip
  for t in "${topologies[@]}"; do
    read -r name _ <<<"$t"
    for ip in $(peers "vw-nsc-$name"); do
      if ip netns exec "vw-nsc-$name" ping -c 3 -i 0.2 -W 2 "$ip" >"$run/ping-$name.log" 2>&1; then
        log "$name: ping $ip across the vWire: $(grep -o '[0-9]* received' "$run/ping-$name.log")"
      else
        log "$name: ping $ip FAILED; see $run/ping-$name.log and $run/*.log"
        failed=1
      fi
    done
  done
  return $failed
}

# alive PID: the process runs; gone, or a zombie nobody has reaped yet, holds nothing any more.
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# stop GLOB: asks the processes whose pid files match to stop, waits, then kills what is left.
stop() {
  local f pid
  for f in $1; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true; done
  for f in $1; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

down() {
  if [ -d "$run" ]; then
    # Clients first, so that every vWire is closed through the mesh while it still runs.
    log "stopping the clients, the endpoints, the forwarders, the nsmgrs and the registry"
    for group in "nsc-*" "nse-*" "forwarder*" "nsmgr*" "registry"; do stop "$run/$group.pid"; done
  fi
  log "removing the namespaces and files"
  for ns in $(ip netns list | awk '{print $1}' | grep '^vw-' || true); do ip netns del "$ns"; done
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  check) check ;;
  down) down ;;
  kill) crash "${2:?which process? e.g. nse-k2k}" ;;
  restart) restart "${2:?which process? e.g. forwarder1}" ;;
  names) names ;;
  rotate) identities; log "wrote a new SVID for every process" ;;
  demo)
    trap down EXIT
    up
    check
    ;;
  *) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
