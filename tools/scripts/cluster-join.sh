#!/usr/bin/env bash
# Measures a join and a graceful leave: 3 tesserad nodes (1 core each, proxy routing) loaded with
# redis-benchmark through node 0, then a 4th node joins (time until every node routes by one table with no
# slot migrating) and one node leaves on SIGTERM (time until it exits). Prints keys moved and
# keys/s. Nodes on 127.0.0.1, client ports BASE..BASE+3, cluster ports BASE+100..BASE+103.
#
#   tools/scripts/cluster-join.sh [KEYS]      (default 1000000; values of VALUE_BYTES=100)
#
# TESSERAD (default: the release binary, built if missing), BASE (24700), LOG_LEVEL (warn; the
# nodes' logs stay in the temp dir printed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
keys="${1:-1000000}"
base="${BASE:-24700}"
vbytes="${VALUE_BYTES:-100}"
bin="${TESSERAD:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet -p tessera-tools --bin tesserad
  bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/tesserad"
fi
dir="$(mktemp -d -t tessera-join.XXXXXX)"
cat >"$dir/c.toml" <<TOML
[cluster]
member_count_quorum = 3
first_plan_delay_ms = 1000
# The load goes through one node and is forwarded: redis-benchmark --cluster would put each
# connection's keys under one hash tag (a few huge slots); this spreads them over all slots.
routing = "proxy"
TOML
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() {
  "$bin" --bind 127.0.0.1 --port $((base + $1)) --cores 1 --cluster --cluster-port $((base + 100 + $1)) \
    --seeds "127.0.0.1:$((base + 100))" --cluster-secret bench --config "$dir/c.toml" \
    --maxmemory 0 --log-level "${LOG_LEVEL:-warn}" 2>"$dir/node$1.log" &
  pids+=("$!")
}
now() { date +%s.%N; }
# Stable: every given node reports the same routing table, with N owners and nothing migrating.
stable() {
  local want="$1"; shift
  local first="" t
  for p in "$@"; do
    t="$(redis-cli --raw -p "$p" cluster.routingtable 2>/dev/null)" || return 1
    [ -n "$first" ] || first="$t"
    [ "$t" = "$first" ] || return 1
  done
  # migrating_to values are empty lines when nothing moves.
  [ "$(printf '%s\n' "$first" | grep -A1 '^migrating_to$' | grep -v '^migrating_to$' | grep -v '^--$' | grep -c .)" = 0 ] || return 1
  [ "$(printf '%s\n' "$first" | grep -A1 '^node$' | grep -v '^node$' | grep -v '^--$' | sort -u | wc -l)" = "$want" ]
}
wait_stable() {
  local want="$1"; shift
  for _ in $(seq 1 6000); do stable "$want" "$@" && return 0; sleep 0.05; done
  echo "not stable" >&2; return 1
}
dbsize() { redis-cli -p "$1" dbsize; }

for i in 0 1 2; do start $i; done
wait_stable 3 $((base)) $((base + 1)) $((base + 2))
redis-benchmark -h 127.0.0.1 -p "$base" -t set -n "$keys" -r "$keys" -d "$vbytes" -P 16 -c 50 -q >/dev/null
total=$(( $(dbsize $base) + $(dbsize $((base + 1))) + $(dbsize $((base + 2))) ))
echo "loaded: $total keys of $vbytes bytes on 3 nodes"

t0=$(now)
start 3
wait_stable 4 $base $((base + 1)) $((base + 2)) $((base + 3))
t1=$(now)
moved=$(dbsize $((base + 3)))
echo "after join: keys per node $(for i in 0 1 2 3; do printf '%s ' "$(dbsize $((base + i)))"; done)"
echo "after join: slots per node $(redis-cli --raw -p "$base" cluster.members | grep -A1 '^slots$' | grep -v -e '^slots$' -e '^--$' | tr '\n' ' ')"
awk -v s="$(echo "$t1 - $t0" | bc)" -v m="$moved" 'BEGIN { printf "join: %d keys moved to the new node in %.2f s (%.0f keys/s, from process start)\n", m, s, m / s }'

before=$(dbsize $((base + 1)))
t0=$(now)
kill -TERM "${pids[1]}"
wait "${pids[1]}" || true
t1=$(now)
after=$(( $(dbsize $base) + $(dbsize $((base + 2))) + $(dbsize $((base + 3))) ))
awk -v s="$(echo "$t1 - $t0" | bc)" -v m="$before" 'BEGIN { printf "leave: %d keys moved away in %.2f s (%.0f keys/s, SIGTERM to exit)\n", m, s, m / s }'
echo "keys before: $total, after join and leave: $after"
[ "$after" = "$total" ] || { echo "KEYS LOST" >&2; exit 1; }
echo "logs in $dir"
