#!/usr/bin/env bash
# The standard benchmark suite (docs/benchmarks.md, performance.md): installs redis-server and
# memcached if missing, builds tesserad and tessera-bench in release mode, starts tesserad,
# redis-server (--save '' --appendonly no) and memcached on loopback ports, runs every
# measurement of performance.md the current build supports (P1-P11 and P13; P12 does not apply:
# Tessera takes no snapshots), writes the results (Markdown tables with the
# exact commands, JSON, SVG plots) to $OUT and into the `suite` section of docs/benchmarks.md,
# and stops the servers it started by their pids (also on error or Ctrl-C).
#
# If tesserad does not start, Tessera is reported as unavailable and the peers are still
# measured. Every run is bounded by a duration; the whole suite takes about
# ROUNDS x (WARMUP + DURATION) x 3 targets x 8 measurements (about 10 minutes by default).
# The harness's own generator-vs-redis-benchmark check is bench/vs-redis-benchmark.sh.
#
# Environment (defaults):
#   OUT=target/bench-suite/<UTC date>   where results go
#   ROUNDS=5        alternating rounds per target (performance.md: at least 5)
#   DURATION=3s     measured time per round;  WARMUP=1s  warm-up per round
#   KEYS=100000     key space (preloaded) for throughput/latency runs
#   MEMORY_KEYS=1000000   keys loaded for bytes-per-item (performance.md uses 10M)
#   RATE=           open-loop rate of P6 (default: half of Redis's closed-loop rate in P1 of
#                   this run, i.e. below Redis's saturation on this machine at this moment)
#   SKIP_BUILD=1    use existing release binaries
#   ONLY=           measurements to run, e.g. ONLY="P13" or ONLY="P1 P5" (ids as in the output;
#                   P2 covers P2-16/P2-64, P5 both pipelines, P8 is P8/P9, YCSB is YCSB-A);
#                   empty: all. A partial run leaves docs/benchmarks.md alone (results in $OUT).
#   P13_ROUNDS=15 P13_IDLE=5s P13_SPIN= P13_SPREAD=   P13's rounds, no-load measurement,
#                   runtime.spin_before_park_us of its servers, one CPU per node (see P13 below)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

OUT=${OUT:-$ROOT/target/bench-suite/$(date -u +%Y%m%dT%H%M%SZ)}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
KEYS=${KEYS:-100000}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}
RATE=${RATE:-}
ONLY=${ONLY:-}
[ -n "$ONLY" ] && NO_DOC=1
want() { [ -z "$ONLY" ] || [[ " ${ONLY//,/ } " == *" $1 "* ]]; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/tessera-bench
TESSERAD=$TARGET_DIR/release/tesserad
mkdir -p "$OUT"
RESULTS=$OUT/results.md
STARTED=$(date -u '+%F %H:%M')

log() { printf '%s\n' "$*" >&2; }

# --- 1. install peers -------------------------------------------------------------------
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- 2. build ---------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release -p tessera-tools --bin tessera-bench
  cargo build --release -p tessera-tools --bin tesserad || log "tesserad did not build"
fi

# --- 3. servers (stopped by pid on exit) --------------------------------------------------
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port pid -> 0 when listening
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# Servers run on core 0 and the client on core 1 where the machine has 2+ cores (P1).
PIN_SERVER=(); PIN_CLIENT=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_CLIENT=(--pin-cores 1)
fi

start() { # name port cmd... ; sets $STARTED_PID or returns 1
  local name=$1 port=$2; shift 2
  "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if wait_port "$port" "$pid"; then STARTED_PID=$pid; return 0; fi
  log "$name did not start (see $OUT/$name.log)"; return 1
}

REDIS_PORT=$(free_port)
start redis "$REDIS_PORT" "${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
  --save '' --appendonly no
REDIS_PID=$STARTED_PID
MC_PORT=$(free_port)
# One worker thread (-t 1), as the server pinned to one CPU; its default 4 threads would only
# preempt each other there.
start memcached "$MC_PORT" "${PIN_SERVER[@]}" memcached -p "$MC_PORT" -l 127.0.0.1 -U 0 -m 4096 -t 1 -u "$(id -un)"
MC_PID=$STARTED_PID
T1_PORT=$(free_port)
TESSERA=0
if [ -x "$TESSERAD" ] && start tesserad-1 "$T1_PORT" "${PIN_SERVER[@]}" "$TESSERAD" --port "$T1_PORT" --cores 1; then
  T1_PID=$STARTED_PID; TESSERA=1
else
  log "Tessera is unavailable: measuring the peers only"
fi
# Two executors (P4, P5, P10): not pinned by taskset, tesserad pins one executor per CPU.
TESSERA2=0
if [ $TESSERA = 1 ]; then
  T2_PORT=$(free_port)
  if start tesserad-2 "$T2_PORT" "$TESSERAD" --port "$T2_PORT" --cores 2; then
    T2_PID=$STARTED_PID; TESSERA2=1
  fi
fi

# --- 4. measurements ----------------------------------------------------------------------
{
  echo "# Tessera standard suite, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)."
  echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "**The machine is shared with other engineers' builds and was loaded during the run**, so"
  echo "absolute figures (throughput, latency, CPU per op) are inflated and move between rounds;"
  echo "only the ratios within one table, measured in alternating rounds of this run, mean something."
  echo "Peers: redis-server $(redis-server --version | cut -d' ' -f3 | cut -d= -f2) (\`--save '' --appendonly no\`), memcached $(memcached -V | cut -d' ' -f2) (\`-t 1\` when pinned to CPU 0)."
  echo "Tessera: $([ $TESSERA = 1 ] && echo "\`tesserad --cores 1\` under \`taskset -c 0\` (P1-P3, P6, P7, P11, YCSB), \`tesserad --cores 2\` (P4, P5, P10)" || echo unavailable)."
  echo "Servers of P1-P3, P6, P7, P11 and YCSB A are pinned to CPU 0 and the client to CPU 1."
  echo "Every table: $ROUNDS alternating rounds per target (A B A B ...), medians (min-max); ratios are to the first row."
  echo "Columns \"read hits %\" and \"errors\" check the run itself (keys preloaded, no error replies);"
  echo "\"cross-core %\" is tesserad's own count of operations that hopped to another core."
  echo
} >"$RESULTS"

COMMON=(-w "$WARMUP" -d "$DURATION" --keys "$KEYS" --preload "$KEYS" -v 32 --no-progress)
targets() { # which: resp | all -> -t ... and --server-pid list
  local which=$1; T=(); P=()
  if [ $TESSERA = 1 ]; then T+=(-t "tessera=127.0.0.1:$T1_PORT"); P+=("$T1_PID"); fi
  T+=(-t "redis=127.0.0.1:$REDIS_PORT"); P+=("$REDIS_PID")
  if [ "$which" = all ]; then T+=(-t "memcached=memcache://127.0.0.1:$MC_PORT"); P+=("$MC_PID"); fi
}

show() { # a command line as the document shows it: paths relative to the repository and $OUT
  echo "$*" | sed -e "s|$OUT/|\$OUT/|g" -e "s|$TARGET_DIR/|target/|g" -e "s|$ROOT/||g"
}
measure() { # id title which args...
  local id=$1 title=$2 which=$3; shift 3
  targets "$which"
  measure_with "$id" "$title" "$@"
}
measure_with() { # id title args... (targets in T, pids in P)
  local id=$1 title=$2; shift 2
  local pids; pids=$(IFS=,; echo "${P[*]}")
  local cmd=("$BENCH" compare "${T[@]}" --server-pid "$pids" --rounds "$ROUNDS" "${COMMON[@]}" "$@"
             --json "$OUT/$id.json" --plot-dir "$OUT/$id" --hdr-log-dir "$OUT/$id/hlog")
  log "[$id] $title"
  {
    echo "## $id: $title"
    echo
    echo '```'
    show "${cmd[@]}"
    echo '```'
    echo
    if "${cmd[@]}" >"$OUT/$id.txt" 2>"$OUT/$id.err"; then
      tail -n +2 "$OUT/$id.txt"
      echo
      echo "Plots: [$id/latency-percentiles.svg]($id/latency-percentiles.svg), [$id/timeline.svg]($id/timeline.svg)"
    else
      echo "FAILED: $(tail -3 "$OUT/$id.err")"
    fi
    echo
  } >>"$RESULTS"
}

want P1 && measure P1 "server CPU per op, GET/SET 90/10, pipeline 1, client on core 1" all \
  -c 50 -P 1 --mix get=9,set=1 "${PIN_CLIENT[@]}"
if want P7 && [ $TESSERA = 1 ] && [ -f "$OUT/P1.json" ]; then
  # 80% of the slowest of Tessera's P1 rounds: on a loaded machine the median is above what
  # Tessera sustains in some rounds, and a rate above capacity measures only the backlog.
  SAT=$(python3 -c 'import json,sys; print(int(0.8*json.load(open(sys.argv[1]))["targets"][0]["throughput"]["min"]))' "$OUT/P1.json")
  measure P7 "open loop at 80% of Tessera's slowest closed-loop round in P1 ($SAT req/s), GET/SET 90/10" resp \
    -c 50 -P 1 --mix get=9,set=1 --rate "$SAT" --arrival poisson "${PIN_CLIENT[@]}"
fi
want P2 && measure P2-16 "server CPU per op, GET/SET 90/10, pipeline 16" all -c 50 -P 16 --mix get=9,set=1 "${PIN_CLIENT[@]}"
want P2 && measure P2-64 "server CPU per op, GET/SET 90/10, pipeline 64" all -c 50 -P 64 --mix get=9,set=1 "${PIN_CLIENT[@]}"
want P3 && measure P3 "GET throughput, pipeline 64" all -c 50 -P 64 --mix get=1 "${PIN_CLIENT[@]}"
if [ -z "$RATE" ]; then
  RATE=$(python3 -c 'import json,sys
t=[t for t in json.load(open(sys.argv[1]))["targets"] if t["label"]=="redis"]
print(int(0.5*t[0]["throughput"]["median"]) if t else 20000)' "$OUT/P1.json" 2>/dev/null || echo 20000)
fi
want P6 && measure P6 "open loop at $RATE req/s (half of Redis's P1 rate), 50 connections, GET/SET 90/10 (latency from intended send time)" all \
  -c 50 -P 1 --mix get=9,set=1 --rate "$RATE" --arrival poisson "${PIN_CLIENT[@]}"
want P11 && measure P11 "single connection round trip, GET, pipeline 1" all -c 1 -P 1 --mix get=1 --workers 1 "${PIN_CLIENT[@]}"
want YCSB && measure YCSB-A "YCSB A (50/50 read/update, Zipf 0.99), pipeline 1" all -c 50 -P 1 --ycsb a "${PIN_CLIENT[@]}"

# P5: the hop tax on tesserad --cores 2: owner-routed connections (keys of the connection's own
# core only; tessera-bench learns the core from CLIENT INFO) against uniform keys (about half
# of them owned by the other core). The CPU/op ratio of the uniform row is the hop tax.
if ! want P5; then :
elif [ $TESSERA2 = 1 ]; then
  for p in 1 16; do
    T=(-t "owner-routed=127.0.0.1:$T2_PORT?route=owner" -t "uniform=127.0.0.1:$T2_PORT")
    P=("$T2_PID" "$T2_PID")
    measure_with P5-P$p "hop tax, tesserad --cores 2, GET/SET 90/10, pipeline $p: CPU/op ratio of uniform = the tax" \
      -c 50 -P "$p" --mix get=9,set=1
  done
else
  echo -e "## P5: hop tax\n\nNot measured: tesserad --cores 2 did not start.\n" >>"$RESULTS"
fi

if want P4; then
# P4: redis-benchmark --threads 2 against each RESP server, alternating rounds.
log "[P4] redis-benchmark --threads 2, pipeline 1"
{
  echo "## P4: redis-benchmark --threads 2, GET and SET, pipeline 1, tesserad --cores 2 (ops/s, median (min-max))"
  echo
  echo '```'
  echo "redis-benchmark -p PORT -t get,set -n 200000 -r $KEYS -d 32 -c 50 -P 1 --threads 2 -q --csv"
  echo '```'
  echo
  echo "| target | SET | GET |"
  echo "|---|---|---|"
} >>"$RESULTS"
T=()
[ $TESSERA2 = 1 ] && T+=(-t "tessera=127.0.0.1:$T2_PORT")
T+=(-t "redis=127.0.0.1:$REDIS_PORT")
declare -A RB
for r in $(seq "$ROUNDS"); do
  i=0
  while [ $i -lt ${#T[@]} ]; do
    label=${T[$((i+1))]%%=*}; port=${T[$((i+1))]##*:}
    out=$(redis-benchmark -p "$port" -t get,set -n 200000 -r "$KEYS" -d 32 -c 50 -P 1 --threads 2 -q --csv 2>/dev/null || true)
    RB[$label,SET]+="$(echo "$out" | grep '^"SET"' | cut -d'"' -f4) "
    RB[$label,GET]+="$(echo "$out" | grep '^"GET"' | cut -d'"' -f4) "
    i=$((i+2))
  done
done
med() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, a[1], a[NR]}'; }
i=0
while [ $i -lt ${#T[@]} ]; do
  label=${T[$((i+1))]%%=*}
  echo "| $label | $(med "${RB[$label,SET]}") | $(med "${RB[$label,GET]}") |" >>"$RESULTS"
  i=$((i+2))
done
echo >>"$RESULTS"
fi

if want P10; then
# P10: idle CPU with 100 idle connections (Tessera with 2 executors).
log "[P10] idle CPU, 100 idle connections"
T=(); P=()
if [ $TESSERA2 = 1 ]; then
  T+=(-t "tessera=127.0.0.1:$T2_PORT"); P+=("$T2_PID")
fi
T+=(-t "redis=127.0.0.1:$REDIS_PORT" -t "memcached=memcache://127.0.0.1:$MC_PORT"); P+=("$REDIS_PID" "$MC_PID")
pids=$(IFS=,; echo "${P[*]}")
cmd=("$BENCH" idle "${T[@]}" --server-pid "$pids" -c 100 -d 5s --json "$OUT/P10.json")
{
  echo "## P10: server CPU with 100 idle connections (tesserad --cores 2)"
  echo
  echo '```'
  show "${cmd[@]}"
  echo '```'
  echo
  if "${cmd[@]}" >"$OUT/P10.txt" 2>"$OUT/P10.err"; then cat "$OUT/P10.txt"; else echo "FAILED: $(tail -3 "$OUT/P10.err")"; fi
  echo
} >>"$RESULTS"
fi

if want P8; then
# P8/P9: bytes per item. Fresh servers so RSS growth is only the loaded keys.
log "[P8] memory, $MEMORY_KEYS keys with 16-byte values"
MR_PORT=$(free_port)
start redis-mem "$MR_PORT" redis-server --port "$MR_PORT" --bind 127.0.0.1 --save '' --appendonly no
MR_PID=$STARTED_PID
MM_PORT=$(free_port)
start memcached-mem "$MM_PORT" memcached -p "$MM_PORT" -l 127.0.0.1 -U 0 -m 8192 -u "$(id -un)"
MM_PID=$STARTED_PID
T=(); P=()
if [ $TESSERA = 1 ]; then
  TM_PORT=$(free_port)
  if start tesserad-mem "$TM_PORT" "$TESSERAD" --port "$TM_PORT" --cores 1; then
    T+=(-t "tessera=127.0.0.1:$TM_PORT"); P+=("$STARTED_PID")
  fi
fi
T+=(-t "redis=127.0.0.1:$MR_PORT" -t "memcached=memcache://127.0.0.1:$MM_PORT"); P+=("$MR_PID" "$MM_PID")
pids=$(IFS=,; echo "${P[*]}")
cmd=("$BENCH" memory "${T[@]}" --server-pid "$pids" --keys "$MEMORY_KEYS" -v 16 --key-prefix key: \
     -c 8 -P 64 --no-progress --json "$OUT/P8.json")
{
  echo "## P8/P9: RSS bytes per item, $MEMORY_KEYS keys \`key:N\` with 16-byte values"
  echo
  echo '```'
  show "${cmd[@]}"
  echo '```'
  echo
  if "${cmd[@]}" >"$OUT/P8.txt" 2>"$OUT/P8.err"; then cat "$OUT/P8.txt"; else echo "FAILED: $(tail -3 "$OUT/P8.err")"; fi
  echo
} >>"$RESULTS"
fi

if want P12; then
  echo -e "## P12: p99.9 during a snapshot\n\nNot applicable: Tessera takes no snapshots (no persistence).\n" >>"$RESULTS"
fi

# P13: a 3-node tesserad --cluster (1 executor each) against a single-node tesserad (1
# executor) started for P13 with the same settings, same workload, tessera-bench's
# cluster-aware mode (slot map from CLUSTER SLOTS, each connection sends only its master's
# keys; -MOVED/-ASK would show as errors). All servers share CPU 0 (taskset, as P1) and the
# client runs on CPU 1, so the cluster has the CPU budget of the single node: "cluster /
# single" is the cost of clustering at equal CPU, and "per node / single" (performance.md's
# figure, target >= 0.9 with a core per node) is about 1/3 here. The cluster's CPU/op is
# summed over its three processes, so "single CPU/op / cluster CPU/op" is the throughput each
# node would reach with a core of its own relative to a single node with one: the figure this
# 2-core machine can give for performance.md's target. CPU/op is taken over each round's
# measured window (warm-up excluded), and the figure is the median over rounds of the ratio
# within each round (single and cluster run back to back), so a drift of the machine's speed
# between rounds cancels out; the servers' CPU with no load (timers, membership, spinning) is
# measured first and reported beside it, with the ratio net of it.
# P13_ROUNDS (default 15) alternating rounds; P13_SPIN sets runtime.spin_before_park_us of all
# four servers (unset: the default, 50 us); P13_IDLE (default 5s) the no-load measurement.
# On a machine with 5+ cores set P13_SPREAD=1 to pin node i to CPU i+2.
if want P13; then
  P13_TITLE="3-node cluster, throughput per node / single node"
  P13_ROUNDS=${P13_ROUNDS:-15}
  P13_IDLE=${P13_IDLE:-5s}
  P13_ENV=()
  if [ -n "${P13_SPIN:-}" ]; then
    printf '[runtime]\nspin_before_park_us = %s\n' "$P13_SPIN" >"$OUT/p13.toml"
    P13_ENV=(TESSERA_CONFIG="$OUT/p13.toml")
  fi
  if [ $TESSERA = 1 ] && "$TESSERAD" --help 2>/dev/null | grep -q -- '--cluster'; then
    SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    C_PORTS=(); C_PIDS=(); C_OK=1
    S_PORT=$(free_port)
    if start p13-single "$S_PORT" "${PIN_SERVER[@]}" env "${P13_ENV[@]}" "$TESSERAD" \
        --bind 127.0.0.1 --port "$S_PORT" --cores 1 --log-level warn; then
      S_PID=$STARTED_PID
    else
      C_OK=0
    fi
    CP0=$(free_port)
    for i in 0 1 2; do
      port=$(free_port); [ $i = 0 ] && cport=$CP0 || cport=$(free_port)
      pin=("${PIN_SERVER[@]}")
      if [ -n "${P13_SPREAD:-}" ] && command -v taskset >/dev/null 2>&1; then pin=(taskset -c $((i + 2))); fi
      if start "cluster-$i" "$port" "${pin[@]}" env "${P13_ENV[@]}" TESSERA_CLUSTER_SECRET="$SECRET" "$TESSERAD" \
          --bind 127.0.0.1 --port "$port" --cores 1 --cluster --cluster-port "$cport" \
          --seeds "127.0.0.1:$CP0" --log-level warn; then
        C_PORTS+=("$port"); C_PIDS+=("$STARTED_PID")
      else
        C_OK=0
      fi
    done
    # Bounded wait until every node reports the same settled table (state ok, 3 primaries).
    settled() {
      python3 - "$@" <<'PY'
import socket, sys
seen = set()
for port in sys.argv[1:]:
    try:
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=2)
        s.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
        data = b""
        while data.count(b"\r\n") < 12:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        sys.exit(1)
    f = dict(l.split(":", 1) for l in data.decode(errors="replace").splitlines()[1:] if ":" in l)
    if f.get("cluster_state") != "ok" or f.get("cluster_size") != "3":
        sys.exit(1)
    seen.add(f.get("cluster_current_epoch"))
sys.exit(0 if len(seen) == 1 else 1)
PY
    }
    if [ $C_OK = 1 ]; then
      C_OK=0
      for _ in $(seq 300); do settled "${C_PORTS[@]}" && { C_OK=1; break; }; sleep 0.1; done
    fi
    if [ $C_OK = 1 ]; then
      T=(-t "single=127.0.0.1:$S_PORT" -t "cluster-3=127.0.0.1:${C_PORTS[0]}?route=cluster")
      # The cluster's CPU/op and RSS are the sums over its three processes.
      P=("$S_PID" "${C_PIDS[0]}+${C_PIDS[1]}+${C_PIDS[2]}")
      ROUNDS_SAVED=$ROUNDS; ROUNDS=$P13_ROUNDS
      measure_with P13 "$P13_TITLE (tesserad --cores 1 each, all on CPU 0${P13_SPIN:+, spin_before_park_us = $P13_SPIN}), GET/SET 90/10, 48 connections x pipeline 16" \
        -c 48 -P 16 --mix get=9,set=1 --idle "$P13_IDLE" "${PIN_CLIENT[@]}"
      ROUNDS=$ROUNDS_SAVED
      if [ -f "$OUT/P13.json" ]; then
        python3 - "$OUT/P13.json" >>"$RESULTS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = {x["label"]: x for x in d["targets"]}
single = t["single"]["throughput"]["median"]
cluster = t["cluster-3"]["throughput"]["median"]
print(f"Throughput medians: single {single:.0f} req/s, 3-node cluster {cluster:.0f} req/s; "
      f"cluster / single = {cluster / single:.2f}, per node / single = {cluster / 3 / single:.2f} "
      f"(performance.md's target >= 0.9 assumes a core per node; here all servers share CPU 0, so "
      f"per node is about 1/3 by construction). Cluster errors (-MOVED/-ASK count as "
      f"errors): {t['cluster-3']['errors']}.")
def spread(v):
    v = sorted(v)
    n = len(v)
    m = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return m, v[0], v[-1]
# Per round: single CPU/op / cluster CPU/op of the same round (back to back).
by = {}
for r in d["rounds"]:
    by.setdefault(r["round"], {})[r["target"]] = r
ratios, net = [], []
idle = [t["single"].get("server_idle_cpu_percent"), t["cluster-3"].get("server_idle_cpu_percent")]
for rr in by.values():
    s, c = rr.get(0), rr.get(1)
    if not s or not c or not s["server_cpu_per_op_us"] or not c["server_cpu_per_op_us"]:
        continue
    ratios.append(s["server_cpu_per_op_us"] / c["server_cpu_per_op_us"])
    if None not in idle:
        sn = s["server_cpu_per_op_us"] - idle[0] / 100 * 1e6 / s["throughput"]
        cn = c["server_cpu_per_op_us"] - idle[1] / 100 * 1e6 / c["throughput"]
        net.append(sn / cn)
def verdict(v):
    below = sum(1 for x in v if x < 0.9)
    m = spread(v)[0]
    if m < 0.9:
        return f"**0.9 not met**: the median is below it ({below} of {len(v)} rounds below 0.9)."
    if below:
        return f"The median meets 0.9; {below} of {len(v)} rounds are below it."
    return f"Every one of the {len(v)} rounds meets 0.9."
if ratios:
    sc = t["single"]["server_cpu_per_op_us"]
    cc = t["cluster-3"]["server_cpu_per_op_us"]
    m, lo, hi = spread(ratios)
    print()
    print(f"Server CPU per op over the measured windows (the cluster's three nodes summed), "
          f"medians over {len(ratios)} rounds: single {sc['median']:.2f} us ({sc['min']:.2f}-{sc['max']:.2f}), "
          f"cluster {cc['median']:.2f} us ({cc['min']:.2f}-{cc['max']:.2f}). "
          f"**Throughput per node at equal CPU = single CPU/op / cluster CPU/op of the same round: "
          f"median {m:.2f} ({lo:.2f}-{hi:.2f})** (target >= 0.9): what each node would serve with "
          f"a core of its own, as a single node would with one. {verdict(ratios)}")
    if net:
        m, lo, hi = spread(net)
        print()
        print(f"CPU with no load (timers, membership, spinning; counted in the figure above): "
              f"single {idle[0]:.2f}% of a core, cluster {idle[1]:.2f}% (three nodes). Net of it, "
              f"the same ratio is {m:.2f} ({lo:.2f}-{hi:.2f}). {verdict(net)}")
print()
PY
      fi
    else
      echo -e "## P13: $P13_TITLE\n\nNot measured: the 3-node cluster did not start or settle in 30 s (logs: \$OUT/cluster-*.log).\n" >>"$RESULTS"
    fi
  else
    echo -e "## P13: $P13_TITLE\n\nNot measured: tesserad is unavailable or has no cluster flags.\n" >>"$RESULTS"
  fi
fi

{
  echo
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
} >>"$RESULTS"

# --- write docs/benchmarks.md: its `suite` section becomes this run's results ------------------
# (NO_DOC=1 leaves the document alone.)
DOC=$ROOT/docs/benchmarks.md
if [ -z "${NO_DOC:-}" ] && [ -f "$DOC" ]; then
  {
    echo "<!-- section:suite -->"
    echo "## Standard suite (\`bench/suite.sh\`, $STARTED-$(date -u +%H:%M) UTC, ROUNDS=$ROUNDS DURATION=$DURATION)"
    echo
    # Links point at the copies of the percentile plots kept in docs/bench-plots/ (the
    # timelines, JSON and interval logs stay in $OUT).
    # Inside the document the run's title is this section's and its headings sit one level down.
    sed -E -e 's#^Plots: \[([^/]+)/latency-percentiles.svg\].*#Plot: [latency by percentile, all rounds](bench-plots/\1.svg)#' \
      -e '/^# Tessera standard suite/{N;d}' -e 's/^## /### /' "$RESULTS"
    echo "<!-- /section:suite -->"
  } >"$OUT/section.md"
  awk -v sec="$OUT/section.md" '
    BEGIN { while ((getline line < sec) > 0) text = text line "\n" }
    /<!-- section:suite -->/ { printf "%s", text; skip = 1; done = 1; next }
    /<!-- \/section:suite -->/ { skip = 0; next }
    !skip { print }
    END { if (!done) printf "\n%s", text }
  ' "$DOC" >"$OUT/benchmarks.md"
  cp "$OUT/benchmarks.md" "$DOC"
  rm -rf "$ROOT/docs/bench-plots"
  mkdir -p "$ROOT/docs/bench-plots"
  for f in "$OUT"/*/latency-percentiles.svg; do
    [ -f "$f" ] && cp "$f" "$ROOT/docs/bench-plots/$(basename "$(dirname "$f")").svg"
  done
  log "updated $DOC"
fi

log "results: $RESULTS"
cat "$RESULTS"
