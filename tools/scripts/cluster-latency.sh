#!/usr/bin/env bash
# Two cluster latency measurements (docs/benchmarks.md, cluster section), Tessera against itself:
#
# 1. proxy: the cost of a proxy hop. 2 nodes (1 core each, `routing = "proxy"`), tessera-bench
#    `compare` in alternating rounds against node A with plain keys (the share owned by B is
#    forwarded over the peer link) and with `?route=cluster` (every request to its owner, no hop):
#    open loop at RATE (latency percentiles) and closed loop (throughput).
# 2. migration: p99.9 before versus during a join. 3 nodes (1 core each, redirect routing)
#    preloaded with KEYS keys; tessera-bench runs open loop at RATE through `?route=cluster`
#    with an HdrHistogram interval log (100 ms); a 4th node starts, and the script records when
#    it started and when every node routes by one 4-node table with nothing migrating. The log is
#    cut into a steady window (before the start) and the join window (start to stable), and
#    the percentiles of each window are computed from the merged interval histograms.
#    Repeated REPEATS times; -MOVED/-ASK during the window are counted (they are errors to a
#    client that does not refresh its slot map, which tessera-bench does not).
#
# 3. leave: p99.9 of the nodes that receive a leaving node's slots, before versus during the
#    leave. 3 nodes preloaded with KEYS keys; tessera-bench runs open loop at RATE through
#    `?route=cluster` with the slot map of those 3 nodes (so no connection goes to the node
#    that leaves); a 4th node joins (2 s in) and, 8 s after the join is stable, gets SIGTERM:
#    it drains its slots back to the 3 and exits. Steady window: the 7 s before the SIGTERM
#    (4-node table: the requests for the 4th node's slots get a quick -MOVED from their old
#    owner, in both windows alike); leave window: SIGTERM to the process's exit.
#
#   tools/scripts/cluster-latency.sh [proxy|migration|leave|all]      (default all)
#
# Servers under `taskset -c 0`, the client on CPU 1 (as bench/suite.sh). Environment (defaults):
# TARGET_DIR (cargo's target dir; binaries must be built: cargo build --release -p tessera-tools),
# BASE=28000 (ports BASE.., cluster ports BASE+100..), ROUNDS=5, DURATION=3s, PROXY_RATE=4000,
# KEYS=300000, RATE=4000, REPEATS=3, STABLE_TIMEOUT=120 (s), OUT=/tmp/tessera-cluster-latency.<random>,
# MIG_CONFIG (extra `[cluster]` lines for the migration nodes, e.g.
# "migration_turn_ops_max = 1000000"). After each join the migration counters of every node
# (INFO shards: calls into the migrations, their longest, those over 1 ms, the timer's pauses)
# are printed when the server has them. PROBE=1: from the 4th node's start, for 4 s, PING every
# node every 2 ms on one connection each and sample the nodes' schedstat (time on CPU, time
# runnable but waiting for the CPU) every 20 ms (tools/scripts/node-probe.py, on CPU 1), then
# print a 100 ms timeline: per node, PINGs answered / slowest PING ms / run ms / wait ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
bin="$TARGET_DIR/release/tesserad"
bench="$TARGET_DIR/release/tessera-bench"
base="${BASE:-28000}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-3s}"
PROXY_RATE="${PROXY_RATE:-4000}"
KEYS="${KEYS:-300000}"
RATE="${RATE:-4000}"
REPEATS="${REPEATS:-3}"
OUT="${OUT:-$(mktemp -d -t tessera-cluster-latency.XXXXXX)}"
mkdir -p "$OUT"
for b in "$bin" "$bench"; do [ -x "$b" ] || { echo "missing $b (cargo build --release -p tessera-tools)" >&2; exit 1; }; done
PIN_SERVER=(); PIN_CLIENT=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_CLIENT=(--pin-cores 1)
fi

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
start() { # index config
  "${PIN_SERVER[@]}" "$bin" --bind 127.0.0.1 --port $((base + $1)) --cores 1 --cluster \
    --cluster-port $((base + 100 + $1)) --seeds "127.0.0.1:$((base + 100))" --cluster-secret bench \
    --config "$2" --maxmemory 0 --log-level warn 2>>"$OUT/node$1.log" &
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
  [ "$(printf '%s\n' "$first" | grep -A1 '^migrating_to$' | grep -v '^migrating_to$' | grep -v '^--$' | grep -c .)" = 0 ] || return 1
  [ "$(printf '%s\n' "$first" | grep -A1 '^node$' | grep -v '^node$' | grep -v '^--$' | sort -u | wc -l)" = "$want" ]
}
wait_stable() {
  local want="$1"; shift
  local end=$((SECONDS + ${STABLE_TIMEOUT:-120}))
  while [ "$SECONDS" -lt "$end" ]; do stable "$want" "$@" && return 0; sleep 0.02; done
  echo "not stable after ${STABLE_TIMEOUT:-120} s (cluster.routingtable of port $1):" >&2
  redis-cli --raw -p "$1" cluster.routingtable | grep -A1 migrating_to | sort | uniq -c >&2
  return 1
}
dbsize() { redis-cli -p "$1" dbsize; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

proxy() {
  cat >"$OUT/proxy.toml" <<TOML
[cluster]
member_count_quorum = 2
first_plan_delay_ms = 1000
routing = "proxy"
TOML
  start 0 "$OUT/proxy.toml"; start 1 "$OUT/proxy.toml"
  wait_stable 2 "$base" $((base + 1))
  echo "== proxy hop: 2 nodes, load average $(load)"
  local keys=100000
  # Preload through the cluster-aware path, then read the share of keys node B owns: with
  # uniform keys it is the share of plain requests node A forwards.
  "$bench" run -t "127.0.0.1:$base?route=cluster" --preload "$keys" --keys "$keys" -v 32 -d 1s -r 1000 \
    --no-progress "${PIN_CLIENT[@]}" >/dev/null
  local a b; a=$(dbsize "$base"); b=$(dbsize $((base + 1)))
  awk -v a="$a" -v b="$b" 'BEGIN { printf "keys on A %d, on B %d: proxied share of plain requests %.1f%%\n", a, b, 100 * b / (a + b) }'
  local common=(-t "plain=127.0.0.1:$base" -t "cluster=127.0.0.1:$base?route=cluster" --rounds "$ROUNDS"
    -w 1s -d "$DURATION" --keys "$keys" -v 32 --no-progress -c 50 -P 1 --mix get=9,set=1 "${PIN_CLIENT[@]}")
  echo "-- open loop at $PROXY_RATE req/s"
  echo "$bench compare ${common[*]} --rate $PROXY_RATE --arrival poisson" | sed "s|$TARGET_DIR/|target/|"
  "$bench" compare "${common[@]}" --rate "$PROXY_RATE" --arrival poisson --json "$OUT/proxy-open.json" | tail -n +2
  echo "-- closed loop"
  echo "$bench compare ${common[*]}" | sed "s|$TARGET_DIR/|target/|"
  "$bench" compare "${common[@]}" --json "$OUT/proxy-closed.json" | tail -n +2
  echo "load average at the end $(load)"
  stop_all
}

# Percentiles of the steady window (the 7 s before t0) and of the window [t0, t1] (named
# $4) from the interval histograms of an HdrHistogram log.
windows() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import base64, struct, sys, zlib, math
path, t0, t1, label = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def decode(b64):
    raw = base64.b64decode(b64)
    cookie, n = struct.unpack(">ii", raw[:8])
    d = zlib.decompress(raw[8:8 + n])
    _, plen, _, sig, lowest, _, _ = struct.unpack(">iiiiqqd", d[:40])
    p = d[40:40 + plen]
    counts, i, idx = {}, 0, 0
    while i < len(p):
        v, shift = 0, 0
        for k in range(9):
            byte = p[i]; i += 1
            if k == 8:
                v |= byte << shift; break
            v |= (byte & 0x7F) << shift; shift += 7
            if not byte & 0x80: break
        v = (v >> 1) ^ -(v & 1)
        if v < 0: idx += -v
        else:
            if v: counts[idx] = counts.get(idx, 0) + v
            idx += 1
    mag = math.ceil(math.log2(2 * 10 ** sig)); half_mag = mag - 1; half = 1 << half_mag
    unit = int(math.floor(math.log2(lowest)))
    out = {}
    for idx, c in counts.items():
        bi = (idx >> half_mag) - 1; sbi = (idx & (half - 1)) + half
        if bi < 0: sbi -= half; bi = 0
        lo = sbi << (bi + unit)
        out[lo + (1 << (bi + unit)) - 1] = out.get(lo + (1 << (bi + unit)) - 1, 0) + c
    return out
basetime, rows = None, []
for line in open(path):
    if line.startswith("#[BaseTime:"): basetime = float(line.split()[1])
    elif line.startswith("Tag=") or (line[:1].isdigit()):
        f = line.strip().split(",")
        if f[0].startswith("Tag="): f = f[1:]
        rows.append((float(f[0]), float(f[1]), decode(f[3])))
a, b = t0 - basetime, t1 - basetime
def pct(sel):
    h = {}
    for _, _, d in sel:
        for v, c in d.items(): h[v] = h.get(v, 0) + c
    tot = sum(h.values()); res = [tot]
    for q in (50, 99, 99.9):
        want, acc = max(1, math.ceil(q / 100 * tot)), 0
        for v in sorted(h):
            acc += h[v]
            if acc >= want: res.append(v / 1000); break
    return res
# Steady: intervals wholly in [a-7s, a); join: intervals overlapping [a, b].
steady = [r for r in rows if r[0] >= a - 7 and r[0] + r[1] <= a]
join = [r for r in rows if r[0] < b and r[0] + r[1] > a]
for name, sel in (("steady", steady), (label, join)):
    if not sel:
        print(f"{name}: no intervals"); continue
    n, p50, p99, p999 = pct(sel)
    print(f"{name}: {n} requests in {len({r[0] for r in sel})} intervals, p50 {p50:.1f} us, p99 {p99:.1f} us, p99.9 {p999:.1f} us")
PY
}

migration_once() { # repeat-number
  local r=$1
  cat >"$OUT/mig.toml" <<TOML
[cluster]
member_count_quorum = 3
first_plan_delay_ms = 1000
${MIG_CONFIG:-}
TOML
  for i in 0 1 2; do start $i "$OUT/mig.toml"; done
  wait_stable 3 "$base" $((base + 1)) $((base + 2))
  "$bench" run -t "127.0.0.1:$base?route=cluster" --preload "$KEYS" --keys "$KEYS" -v 100 -d 1s -r 1000 \
    -c 24 --no-progress "${PIN_CLIENT[@]}" >/dev/null
  local total=$(( $(dbsize $base) + $(dbsize $((base + 1))) + $(dbsize $((base + 2))) ))
  local hlog="$OUT/mig$r.hlog"
  # 8 s steady, then the join; the run lasts 20 s in all (the join takes 1-3 s here).
  "$bench" run -t "127.0.0.1:$base?route=cluster" --keys "$KEYS" -v 100 -c 24 -P 1 --mix get=9,set=1 \
    --rate "$RATE" --arrival poisson -w 1s -d 20s --interval 100ms --hdr-log "$hlog" \
    --json "$OUT/mig$r.json" --no-progress "${PIN_CLIENT[@]}" >"$OUT/mig$r.txt" 2>&1 &
  local bpid=$!
  sleep 9
  local t0; t0=$(now)
  start 3 "$OUT/mig.toml"
  local ppid=""
  if [ -n "${PROBE:-}" ]; then
    local pin=(); [ ${#PIN_SERVER[@]} -gt 0 ] && pin=(taskset -c 1)
    "${pin[@]}" python3 tools/scripts/node-probe.py "$base,$((base + 1)),$((base + 2)),$((base + 3))" 4 \
      "$OUT/probe$r" "$(IFS=,; echo "${pids[*]}")" &
    ppid=$!
  fi
  wait_stable 4 "$base" $((base + 1)) $((base + 2)) $((base + 3))
  local t1; t1=$(now)
  wait "$bpid"
  local moved; moved=$(dbsize $((base + 3)))
  echo "repeat $r: $total keys, join moved $moved keys, start to stable $(echo "$t1 - $t0" | bc) s, load average $(load)"
  echo "$t0 $t1" >"$OUT/mig$r.window"
  for i in 0 1 2 3; do
    # One line per core: coreN:field=value,...
    redis-cli -p $((base + i)) INFO shards 2>/dev/null | tr -d '\r' | tr ',' '\n' |
      awk -v n="$i" '/^migration_(calls|us_total|us_max|calls_over_1ms|turns_cut|keys_dropped|pauses|pause_us_total)=/ { s = s " " $0 }
        END { if (s != "") print "  node " n ":" s }'
  done
  if [ -n "$ppid" ]; then
    wait "$ppid"
    python3 - "$OUT/probe$r" "$t0" "$t1" <<'PY'
import sys, collections
out, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
bins = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(out + ".ping"):
    port, t, ms = line.split()
    bins[int((float(t) - t0) * 10)][int(port)].append(float(ms))
ports = sorted({p for b in bins.values() for p in b})
rows = [[float(x) for x in l.split()] for l in open(out + ".sched")]
cpu = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0.0]))
for a, b in zip(rows, rows[1:]):
    if len(a) != len(b):
        continue
    for i in range((len(a) - 1) // 2):
        c = cpu[int((b[0] - t0) * 10)][i]
        c[0] += (b[1 + 2 * i] - a[1 + 2 * i]) / 1e6
        c[1] += (b[2 + 2 * i] - a[2 + 2 * i]) / 1e6
print(f"  probe (from the 4th node's start; stable at {t1 - t0:.2f} s): ms, then per node pings/slowest ms/run ms/wait ms")
for k in range(0, min(40, int((t1 - t0) * 10) + 6)):
    cells = []
    for i, p in enumerate(ports):
        v = bins[k][p]
        c = cpu[k][i]
        cells.append(f"{len(v):3d}/{max(v) if v else 0:6.1f}/{c[0]:4.1f}/{c[1]:5.1f}")
    print(f"  {k * 100:5d} " + "  ".join(cells))
PY
  fi
  windows "$hlog" "$t0" "$t1" join
  # Error replies per interval are not in the log: these are whole-run counts, including the
  # -MOVED of the slots the new node took, for the rest of the run after the join.
  python3 - "$OUT/mig$r.json" <<'PY'
import json, sys
for row in json.load(open(sys.argv[1]))["summary"]:
    print(f"  whole run {row['command']}: {row['count']} requests, errors {row['errors']}, redirects {row.get('redirects', '-')}")
PY
  stop_all
}

leave_once() { # repeat-number
  local r=$1
  cat >"$OUT/leave.toml" <<TOML
[cluster]
member_count_quorum = 3
first_plan_delay_ms = 1000
${MIG_CONFIG:-}
TOML
  for i in 0 1 2; do start $i "$OUT/leave.toml"; done
  wait_stable 3 "$base" $((base + 1)) $((base + 2))
  "$bench" run -t "127.0.0.1:$base?route=cluster" --preload "$KEYS" --keys "$KEYS" -v 100 -d 1s -r 1000 \
    -c 24 --no-progress "${PIN_CLIENT[@]}" >/dev/null
  local hlog="$OUT/leave$r.hlog"
  # The bench's slot map has the 3 nodes only: none of its connections goes to the leaver.
  "$bench" run -t "127.0.0.1:$base?route=cluster" --keys "$KEYS" -v 100 -c 24 -P 1 --mix get=9,set=1 \
    --rate "$RATE" --arrival poisson -w 1s -d 26s --interval 100ms --hdr-log "$hlog" \
    --json "$OUT/leave$r.json" --no-progress "${PIN_CLIENT[@]}" >"$OUT/leave$r.txt" 2>&1 &
  local bpid=$!
  sleep 3
  start 3 "$OUT/leave.toml"
  local leaver=${pids[3]}
  wait_stable 4 "$base" $((base + 1)) $((base + 2)) $((base + 3))
  sleep 8
  local moved; moved=$(dbsize $((base + 3)))
  local t0; t0=$(now)
  kill -TERM "$leaver"
  local waited=0
  while kill -0 "$leaver" 2>/dev/null && [ "$waited" -lt 6000 ]; do sleep 0.005; waited=$((waited + 1)); done
  local t1; t1=$(now)
  wait_stable 3 "$base" $((base + 1)) $((base + 2))
  wait "$bpid"
  local total=$(( $(dbsize $base) + $(dbsize $((base + 1))) + $(dbsize $((base + 2))) ))
  echo "repeat $r: leave moved $moved keys, SIGTERM to exit $(echo "$t1 - $t0" | bc) s, keys after $total, load average $(load)"
  for i in 0 1 2; do
    redis-cli -p $((base + i)) INFO shards 2>/dev/null | tr -d '\r' | tr ',' '\n' |
      awk -v n="$i" '/^migration_(calls|us_total|us_max|calls_over_1ms|pauses|pause_us_total)=/ { s = s " " $0 }
        END { if (s != "") print "  node " n ":" s }'
  done
  windows "$hlog" "$t0" "$t1" leave
  python3 - "$OUT/leave$r.json" <<'PY'
import json, sys
for row in json.load(open(sys.argv[1]))["summary"]:
    print(f"  whole run {row['command']}: {row['count']} requests, errors {row['errors']}, redirects {row.get('redirects', '-')}")
PY
  stop_all
}

case "$what" in
  proxy) proxy ;;
  migration) for r in $(seq 1 "$REPEATS"); do migration_once "$r"; done ;;
  leave) for r in $(seq 1 "$REPEATS"); do leave_once "$r"; done ;;
  all) proxy; for r in $(seq 1 "$REPEATS"); do migration_once "$r"; leave_once "$r"; done ;;
  *) echo "usage: $0 [proxy|migration|leave|all]" >&2; exit 2 ;;
esac
echo "results in $OUT"
