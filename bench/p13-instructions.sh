#!/usr/bin/env bash
# P13 by instruction counts: the user-space instructions tesserad executes per request on a
# single node and on one node of a 3-node cluster serving the same load shape (a cluster-aware
# client), counted by valgrind's callgrind. Instruction counts do not move with the machine's
# load, so this answers "what does clustering add per request" without the scheduling noise
# of the CPU-time figure in bench/suite.sh's P13 (on a 2-core machine shared with builds the
# single node's CPU/op moved by 40% between consecutive runs). What it does not see: kernel
# work (syscalls, TCP), cache misses, and anything else that costs time without instructions.
#
# One server at a time runs under callgrind (about 50x slower), pinned to CPU 0 with the other
# servers; the client runs on CPU 1:
#   1. `tesserad --cores 1` under callgrind; preload KEYS keys, warm up, zero the counters,
#      LOAD_S seconds of load (CONNS connections x PIPELINE), dump; then IDLE_S seconds with no
#      load, dump: its background instructions per second (ticks, timers).
#   2. three `tesserad --cluster --cores 1`, node VG_NODE under callgrind (node 0 is the seed
#      and, as the oldest member, the coordinator; the default 1 is a plain member); the
#      client gets 3 x CONNS connections spread over the masters (CONNS per node, as the single
#      node had), each sending only its master's keys; the same dumps.
# Requests per dump are the node's own `total_commands_processed` difference (INFO), so the
# other nodes' share does not matter. With the server this slow every read finds a full
# pipeline, in both runs alike: the per-read costs (syscalls, wakeups) are spread over
# PIPELINE requests in both.
#
# Idle spinning is excluded by default (SPIN=0 sets `runtime.spin_before_park_us = 0` for all
# servers: a spin loop's instructions scale with idle time, not with requests); SPIN=50 counts
# it as the default config would.
#
# Environment (defaults): OUT=target/p13-instructions/<UTC date>, KEYS=100000, CONNS=16,
# PIPELINE=16, LOAD_S=15, IDLE_S=5, VG_NODE=1, SPIN=0, SKIP_BUILD=1 to use existing release
# binaries. Writes $OUT/results.md (and the callgrind dumps and annotations) and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/target/p13-instructions/$(date -u +%Y%m%dT%H%M%SZ)}
KEYS=${KEYS:-100000}
CONNS=${CONNS:-16}
PIPELINE=${PIPELINE:-16}
LOAD_S=${LOAD_S:-15}
IDLE_S=${IDLE_S:-5}
VG_NODE=${VG_NODE:-1}
SPIN=${SPIN:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/tessera-bench
TESSERAD=$TARGET_DIR/release/tesserad
mkdir -p "$OUT"
for tool in valgrind callgrind_control python3; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -p tessera-tools --bin tessera-bench --bin tesserad
fi
case $VG_NODE in 0 | 1 | 2) ;; *) echo "VG_NODE must be 0, 1 or 2" >&2; exit 1 ;; esac

CONFIG=$OUT/tesserad.toml
printf '[runtime]\nspin_before_park_us = %s\n' "$SPIN" >"$CONFIG"
PIN_SERVER=(); PIN_CLIENT=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_CLIENT=(--pin-cores 1)
fi

PIDS=()
stop_all() {
  # A cluster member drains its slots on the first signal; the second stops it at once.
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap stop_all EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# field PORT FIELD CMD...: one `name:value` field of a command's bulk reply (INFO, CLUSTER
# INFO), or nothing.
field() {
  python3 - "$@" <<'PY'
import socket, sys
port, name, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args))
data = b""
while True:
    if data.startswith(b"$"):
        head, _, rest = data.partition(b"\r\n")
        if len(rest) >= int(head[1:]):
            break
    elif data.startswith(b"-"):
        break
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for line in data.decode(errors="replace").splitlines():
    if line.startswith(name + ":"):
        print(line.split(":", 1)[1].strip())
PY
}
info() { field "$1" "$2" INFO all; }
wait_ping() { # port pid: bounded wait until the server answers
  for _ in $(seq 600); do
    kill -0 "$2" 2>/dev/null || return 1
    [ -n "$(info "$1" total_commands_processed 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  return 1
}
# settled PORT...: every node reports state ok, 3 primaries and the same epoch.
settled() {
  local epochs=()
  for p in "$@"; do
    [ "$(field "$p" cluster_state CLUSTER INFO 2>/dev/null)" = ok ] || return 1
    [ "$(field "$p" cluster_size CLUSTER INFO 2>/dev/null)" = 3 ] || return 1
    epochs+=("$(field "$p" cluster_current_epoch CLUSTER INFO)")
  done
  [ "$(printf '%s\n' "${epochs[@]}" | sort -u | wc -l)" = 1 ]
}
load() { # seconds target: closed-loop load, no warm-up
  local secs=$1; shift
  "$BENCH" run -t "$1" -c "$LOAD_CONNS" -P "$PIPELINE" -d "${secs}s" -w 0s --keys "$KEYS" \
    --mix get=9,set=1 -v 32 --no-progress "${PIN_CLIENT[@]}" >>"$OUT/client.log" 2>&1 ||
    { echo "the client failed (see $OUT/client.log)" >&2; exit 1; }
}
# measure NAME VG_PID VG_PORT TARGET: zero, load, dump; zero, idle, dump. Appends a row
# (name, requests, load dump, idle dump).
ROWS=()
measure() {
  local name=$1 pid=$2 port=$3 target=$4
  load 2 "$target" # warm-up (the engine's tables, the allocator)
  callgrind_control -z "$pid" >/dev/null 2>&1
  local c0; c0=$(info "$port" total_commands_processed)
  load "$LOAD_S" "$target"
  local c1; c1=$(info "$port" total_commands_processed)
  callgrind_control -d "$pid" >/dev/null 2>&1
  local load_file; load_file=$(ls -t "$OUT/$name".out.* | head -1)
  callgrind_control -z "$pid" >/dev/null 2>&1
  sleep "$IDLE_S"
  callgrind_control -d "$pid" >/dev/null 2>&1
  local idle_file; idle_file=$(ls -t "$OUT/$name".out.* | head -1)
  local reqs=$((c1 - c0))
  ROWS+=("$name $reqs $load_file $idle_file")
  printf '%s: %s requests\n' "$name" "$reqs" >&2
}

LOAD_AVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%F %H:%M')
VG=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no --dump-instr=no)

# 1. single node under callgrind
PORT=$(free_port)
"${PIN_SERVER[@]}" env TESSERA_CONFIG="$CONFIG" "${VG[@]}" --callgrind-out-file="$OUT/single.out" \
  "$TESSERAD" --bind 127.0.0.1 --port "$PORT" --cores 1 --log-level warn >"$OUT/single.log" 2>&1 &
SPID=$!; PIDS+=("$SPID")
wait_ping "$PORT" "$SPID" || { echo "single node did not start (see $OUT/single.log)" >&2; exit 1; }
LOAD_CONNS=$CONNS
"$BENCH" run -t "127.0.0.1:$PORT" -c "$CONNS" -P "$PIPELINE" -d 1s -w 0s --keys "$KEYS" \
  --preload "$KEYS" -v 32 --mix get=1 --no-progress "${PIN_CLIENT[@]}" >>"$OUT/client.log" 2>&1 ||
  { echo "preload failed (see $OUT/client.log)" >&2; exit 1; }
measure single "$SPID" "$PORT" "single=127.0.0.1:$PORT"
stop_all

# 2. three cluster nodes, node VG_NODE under callgrind
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
C_PORTS=(); C_CPORTS=(); VPID=
for i in 0 1 2; do C_PORTS+=("$(free_port)"); C_CPORTS+=("$(free_port)"); done
for i in 0 1 2; do
  pre=("${PIN_SERVER[@]}" env TESSERA_CONFIG="$CONFIG" TESSERA_CLUSTER_SECRET="$SECRET")
  [ "$i" = "$VG_NODE" ] && pre+=("${VG[@]}" --callgrind-out-file="$OUT/cluster.out")
  "${pre[@]}" "$TESSERAD" --bind 127.0.0.1 --port "${C_PORTS[$i]}" --cores 1 --cluster \
    --cluster-port "${C_CPORTS[$i]}" --seeds "127.0.0.1:${C_CPORTS[0]}" --log-level warn \
    >"$OUT/cluster-$i.log" 2>&1 &
  PIDS+=("$!"); [ "$i" = "$VG_NODE" ] && VPID=$!
  wait_ping "${C_PORTS[$i]}" "$!" || { echo "cluster node $i did not start" >&2; exit 1; }
done
ok=0
for _ in $(seq 600); do settled "${C_PORTS[@]}" && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || { echo "the cluster did not settle in 60 s (logs in $OUT)" >&2; exit 1; }
LOAD_CONNS=$((3 * CONNS))
CT="cluster=127.0.0.1:${C_PORTS[0]}?route=cluster"
"$BENCH" run -t "$CT" -c "$LOAD_CONNS" -P "$PIPELINE" -d 1s -w 0s --keys "$KEYS" \
  --preload "$KEYS" -v 32 --mix get=1 --no-progress "${PIN_CLIENT[@]}" >>"$OUT/client.log" 2>&1 ||
  { echo "preload failed (see $OUT/client.log)" >&2; exit 1; }
measure cluster "$VPID" "${C_PORTS[$VG_NODE]}" "$CT"
stop_all

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git diff --quiet 2>/dev/null || echo "+changes")
HEADER="## P13 by instruction counts (bench/p13-instructions.sh, $STARTED UTC, commit $COMMIT$DIRTY)

KEYS=$KEYS CONNS=$CONNS (per node) PIPELINE=$PIPELINE LOAD_S=$LOAD_S IDLE_S=$IDLE_S VG_NODE=$VG_NODE SPIN=$SPIN; GET/SET 90/10, 32-byte values; load average at start $LOAD_AVG_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)."
python3 - "$LOAD_S" "$IDLE_S" "$HEADER" "${ROWS[@]}" >"$OUT/results.md" <<'PY'
import collections, sys

def costs(path):
    """Self and inclusive Ir per function of a callgrind dump (uncompressed names)."""
    own, incl = collections.Counter(), collections.Counter()
    fn, callee = None, None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn, callee = line[3:], None
        elif line.startswith("cfn="):
            callee = line[4:]
        elif line.startswith("calls="):
            pass
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) < 2 or fn is None:
                continue
            v = int(parts[1])
            if callee is not None:
                # The line after calls= is the call's inclusive cost; a function calling
                # itself (recursion) is not counted twice.
                if callee != fn:
                    incl[fn] += v
                callee = None
            else:
                own[fn] += v
                incl[fn] += v
    return own, incl

load_s, idle_s, header = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
# Every client connection's task (read, parse, route, execute, encode, write): the request path.
CONN = "tessera_net::conn::serve::{{closure}}"
rows = {}
for r in sys.argv[4:]:
    name, reqs, load, idle = r.split()
    own, incl = costs(load)
    idle_own, _ = costs(idle)
    rows[name] = dict(reqs=int(reqs), own=own, total=sum(own.values()),
                      conn=incl[CONN], idle_rate=sum(idle_own.values()) / idle_s)
print(header)
print()
print("| server | requests | Ir per request, whole process | Ir per request in the connection tasks | idle Ir/s |")
print("|---|---|---|---|---|")
for name, r in rows.items():
    n = r["reqs"] or float("nan")
    print(f"| {name} | {r['reqs']} | {r['total'] / n:.0f} | {r['conn'] / n:.0f} | {r['idle_rate']:.0f} |")
print()
if {"single", "cluster"} <= rows.keys() and rows["single"]["reqs"] and rows["cluster"]["reqs"]:
    s, c = rows["single"], rows["cluster"]
    sp, cp = s["conn"] / s["reqs"], c["conn"] / c["reqs"]
    st, ct = s["total"] / s["reqs"], c["total"] / c["reqs"]
    print(f"**Request path: single Ir/request / cluster node Ir/request = {sp / cp:.3f}** (the "
          f"cluster adds {cp - sp:.0f} instructions per request, {(cp / sp - 1) * 100:.1f}%). "
          f"Whole process: {st / ct:.3f} ({ct - st:+.0f} per request); the difference to the "
          f"request path is time-driven work (timers, membership, the executor's idle loop), "
          f"which under callgrind's ~50x slowdown falls on ~50x fewer requests than at full "
          f"speed: the idle Ir/s column is its rate with no load.")
    print()
    print("Functions whose own Ir per request differ most (cluster - single), whole process:")
    print()
    print("| Ir/request single | cluster | difference | function |")
    print("|---|---|---|---|")
    diffs = []
    for f in set(s["own"]) | set(c["own"]):
        a, b = s["own"][f] / s["reqs"], c["own"][f] / c["reqs"]
        diffs.append((b - a, a, b, f))
    diffs.sort(key=lambda d: -abs(d[0]))
    for d, a, b, f in diffs[:15]:
        print(f"| {a:.1f} | {b:.1f} | {d:+.1f} | `{f[:90]}` |")
PY
cat "$OUT/results.md"
