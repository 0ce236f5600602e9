#!/usr/bin/env bash
# Starts N tesserad cluster nodes on loopback and stops them all on Ctrl-C.
#
#   tools/run-cluster.sh [N]          # default 3 nodes
#
# Node i (0-based) listens for clients on BASE_PORT+i and for peers/gossip on
# CLUSTER_BASE_PORT+i; every node is seeded with node 0. Environment:
#   BASE_PORT (7000), CLUSTER_BASE_PORT (17000), CORES (1 per node), LOG_LEVEL (info),
#   TESSERAD (a tesserad binary; default: build the release one with cargo),
#   TESSERA_CLUSTER_SECRET (default: a random one for this run), LOG_DIR (default: a temp dir),
#   SPIN_US (runtime.spin_before_park_us of every node; default: 0 when the nodes share CPUs,
#   N x CORES > the CPUs here, so an idle node parks instead of holding a CPU another node has
#   work for; else the server's default. Ignored when TESSERA_CONFIG names a config file).
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-3}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 64 ]; then
  echo "usage: $0 [N]   (1 <= N <= 64)" >&2
  exit 2
fi
base="${BASE_PORT:-7000}"
cbase="${CLUSTER_BASE_PORT:-17000}"
cores="${CORES:-1}"
level="${LOG_LEVEL:-info}"
secret="${TESSERA_CLUSTER_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
logs="${LOG_DIR:-$(mktemp -d -t tessera-cluster.XXXXXX)}"
mkdir -p "$logs"

bin="${TESSERAD:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet -p tessera-tools --bin tesserad
  bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/tesserad"
fi

spin="${SPIN_US:-}"
if [ -z "$spin" ] && [ $((n * cores)) -gt "$(nproc)" ]; then spin=0; fi
config_env=()
if [ -n "$spin" ] && [ -z "${TESSERA_CONFIG:-}" ]; then
  printf '[runtime]\nspin_before_park_us = %s\n' "$spin" >"$logs/tesserad.toml"
  config_env=(TESSERA_CONFIG="$logs/tesserad.toml")
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} nodes ..."
  # A cluster member drains its slots on the first signal; the whole cluster is stopping, so
  # the second signal stops each node at once.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs in $logs"
}
trap stop INT TERM EXIT

for ((i = 0; i < n; i++)); do
  env "${config_env[@]}" TESSERA_CLUSTER_SECRET="$secret" "$bin" \
    --bind 127.0.0.1 --port $((base + i)) --cores "$cores" \
    --cluster --cluster-port $((cbase + i)) --seeds "127.0.0.1:$cbase" \
    --log-level "$level" >"$logs/node$i.log" 2>&1 &
  pids+=("$!")
done

# Wait (bounded) until node 0 answers and reports a table.
ok=0
for _ in $(seq 1 100); do
  if command -v redis-cli >/dev/null 2>&1; then
    if redis-cli -p "$base" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then ok=1; break; fi
  elif (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null; then
    ok=1; break
  fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a node exited; see $logs" >&2; exit 1; }
  done
  sleep 0.1
done
[ "$ok" = 1 ] || echo "warning: node 0 is not ready after 10 s; see $logs" >&2

echo "Tessera cluster of $n nodes (client ports $base..$((base + n - 1)), cluster ports $cbase..$((cbase + n - 1)))"
echo "  connect:   redis-cli -c -p $base"
echo "  members:   redis-cli -p $base cluster.members"
echo "  slots:     redis-cli -p $base cluster slots"
echo "  logs:      $logs"
[ -n "$spin" ] && [ -z "${TESSERA_CONFIG:-}" ] && echo "  runtime.spin_before_park_us = $spin (nodes share CPUs: SPIN_US overrides)"
echo "Ctrl-C stops every node."
wait
