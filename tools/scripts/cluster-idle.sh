#!/usr/bin/env bash
# Idle cost of cluster nodes (docs/benchmarks.md, cluster section): starts N nodes with
# tools/run-cluster.sh (1 core each, loopback), waits until every node routes by one table
# with nothing migrating, lets them settle SETTLE seconds, then reads each node's CPU time
# (utime + stime from /proc/<pid>/stat) over IDLE seconds with no client traffic and prints it
# as a percentage of one core per node. With CALLGRIND=1, node 1 (a member that is not the
# coordinator) and node 0 (the coordinator) instead run under `valgrind --tool=callgrind` and
# the instruction counts of the idle window are printed per second (callgrind_control -z at
# the window's start, -d at its end).
#
#   tools/scripts/cluster-idle.sh          N=3 IDLE=30 SETTLE=5 BASE=27400 TESSERAD=<binary>
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${N:-3}"; idle="${IDLE:-30}"; settle="${SETTLE:-5}"; base="${BASE:-27400}"
bin="${TESSERAD:?TESSERAD=<tesserad binary>}"
dir="$(mktemp -d -t tessera-idle.XXXXXX)"
wrap="$bin"
if [ -n "${CALLGRIND:-}" ]; then
  wrap="$dir/tesserad-wrapped"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.%%p "%s" "$@"\n' "$dir" "$bin" >"$wrap"
  chmod +x "$wrap"
fi
BASE_PORT=$base CLUSTER_BASE_PORT=$((base + 100)) LOG_LEVEL=warn LOG_DIR="$dir" TESSERAD="$wrap" \
  tools/run-cluster.sh "$n" >"$dir/run.out" 2>&1 &
rc=$!
# (run-cluster.sh stops its nodes on TERM; a background job ignores INT.)
trap 'kill -TERM $rc 2>/dev/null || true; wait $rc 2>/dev/null || true' EXIT
ports=(); for ((i = 0; i < n; i++)); do ports+=($((base + i))); done
stable() {
  local first="" t
  for p in "${ports[@]}"; do
    t="$(redis-cli --raw -p "$p" cluster.routingtable 2>/dev/null)" || return 1
    [ -n "$t" ] || return 1
    [ -n "$first" ] || first="$t"
    [ "$t" = "$first" ] || return 1
  done
  [ "$(printf '%s\n' "$first" | grep -A1 '^migrating_to$' | grep -v '^migrating_to$' | grep -v '^--$' | grep -c .)" = 0 ] || return 1
  [ "$(printf '%s\n' "$first" | grep -A1 '^node$' | grep -v '^node$' | grep -v '^--$' | sort -u | wc -l)" = "$n" ]
}
for _ in $(seq 1 600); do stable && break; sleep 0.2; done
stable || { echo "cluster not stable" >&2; exit 1; }
sleep "$settle"
# Node pids: the processes listening on the client ports.
pids=()
for p in "${ports[@]}"; do
  pids+=("$(ss -ltnpH "sport = :$p" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)")
done
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
if [ -n "${CALLGRIND:-}" ]; then
  for pid in "${pids[@]}"; do callgrind_control -z "$pid" >/dev/null; done
  sleep "$idle"
  for i in "${!pids[@]}"; do
    callgrind_control -d "idle" "${pids[$i]}" >/dev/null
  done
  sleep 1
  for i in "${!pids[@]}"; do
    f=$(ls -t "$dir"/callgrind."${pids[$i]}"* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    echo "node $i (pid ${pids[$i]}): $ir instructions in $idle s ($((ir / idle)) per s); $f"
  done
else
  before=(); for pid in "${pids[@]}"; do before+=("$(cpu "$pid")"); done
  t0=$(date +%s.%N)
  sleep "$idle"
  t1=$(date +%s.%N)
  for i in "${!pids[@]}"; do
    after=$(cpu "${pids[$i]}")
    awk -v b="${before[$i]}" -v a="$after" -v t0="$t0" -v t1="$t1" -v i="$i" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "node %d: %.2f s CPU in %.1f s idle = %.2f %% of one core\n", i, (a - b) / hz, t1 - t0, 100 * (a - b) / hz / (t1 - t0) }'
  done
fi
echo "load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $dir"
