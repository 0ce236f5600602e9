#!/usr/bin/env bash
# What the per-core background tick (active expiry + compaction, issue 3 item 5) adds to tail
# latency: the same open-loop workload against tesserad with the tick ON (defaults) and OFF,
# in alternating rounds (on off on off ...), a fresh server per round.
#
# OFF = `[net] expire_budget_keys = 0`, `compact_budget_bytes = 0` (both budgets zero: a tick
# does no work) and `background_tick_ms = 60000` (the largest allowed interval, so the task
# barely wakes). Lazy expiry (a read of an expired key deletes it) works in both.
#
# Per round and config:
#  - taskset -c $SERVER_CPU tesserad --cores 1 --config {on,off}.toml
#  - taskset -c $CLIENT_CPU tessera-bench run: preload $KEYS keys with TTL $TTL_MS (so they
#    expire early in the measured window: active expiry has work), then an open loop at $RATE
#    req/s (Poisson arrivals), $CONNS connections, mix $MIX over the same keys, SETs with the
#    same TTL (overwrites: compaction has garbage), latency from intended send time.
#  - after the run: INFO shards (expired_active, compacted_bytes, keys, garbage_bytes,
#    used_memory), the server's RSS and its CPU time (utime+stime over its whole life:
#    preload + run; the ON-OFF difference is what the ticks cost in CPU).
# Prints one CSV line per round, then medians (min-max) per config and the ON/OFF ratios.
# Results (JSON per round, CSV) are kept in $OUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
ROUNDS="${ROUNDS:-5}"
KEYS="${KEYS:-200000}"
TTL_MS="${TTL_MS:-3000}"
RATE="${RATE:-8000}"
CONNS="${CONNS:-50}"
MIX="${MIX:-get=1,set=1}"
VALUE="${VALUE:-128}"
DURATION="${DURATION:-15s}"
WARMUP="${WARMUP:-1s}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PORT="${PORT:-27101}"
OUT="${OUT:-$(mktemp -d /tmp/bg-impact.XXXXXX)}"
mkdir -p "$OUT"
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p tessera-tools --bin tesserad --bin tessera-bench
fi
bin="${CARGO_TARGET_DIR:-$here/target}/release"
hz="$(getconf CLK_TCK)"

# ON_CONFIG: TOML for the ON side (default: empty = the defaults), to try other budgets.
printf '%b\n' "${ON_CONFIG:-}" >"$OUT/on.toml"
cat >"$OUT/off.toml" <<'EOF'
[net]
background_tick_ms = 60000
expire_budget_keys = 0
compact_budget_bytes = 0
EOF

PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true; }
trap cleanup EXIT

info_field() { # text field -> sum over cores
    awk -v f="$2" 'BEGIN { RS = "[\r\n,]+"; FS = "=" } $1 == f || $1 ~ (":" f "$") { s += $2 } END { print s + 0 }' <<<"$1"
}

csv="$OUT/rounds.csv"
echo "config,round,p50_us,p99_us,p999_us,max_us,throughput,unsent,expired_active,expired_keys,compacted_bytes,keys,garbage_bytes,used_memory,bg_ticks,bg_tick_us_total,bg_tick_us_max,rss_bytes,server_cpu_s" | tee "$csv"
for round in $(seq "$ROUNDS"); do
    for cfg in on off; do
        taskset -c "$SERVER_CPU" "$bin/tesserad" --port "$PORT" --cores 1 --config "$OUT/$cfg.toml" --log-level warn &
        PID=$!
        for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
        timeout 600 taskset -c "$CLIENT_CPU" "$bin/tessera-bench" run -t "127.0.0.1:$PORT" \
            -c "$CONNS" --pin-cores "$CLIENT_CPU" --rate "$RATE" --arrival poisson \
            --mix "$MIX" -k "$KEYS" --preload "$KEYS" --ttl-ms "$TTL_MS" -v "$VALUE" \
            -w "$WARMUP" -d "$DURATION" --no-progress --json "$OUT/$cfg.$round.json" >/dev/null
        info="$(redis-cli -p "$PORT" INFO shards)"
        rss=$(($(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status") * 1024))
        cpu="$(awk -v hz="$hz" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); printf "%.2f", (f[12] + f[13]) / hz }' "/proc/$PID/stat")"
        kill -TERM "$PID"
        wait "$PID" 2>/dev/null || true
        PID=""
        lat="$(python3 - "$OUT/$cfg.$round.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = next(s for s in r["summary"] if s["command"] == "ALL")
l = a["latency"]
print(f'{l["p50_us"]:.1f},{l["p99_us"]:.1f},{l["p999_us"]:.1f},{l["max_us"]:.1f},{a["throughput"]:.0f},{r["unsent"]}')
PY
)"
        row="$cfg,$round,$lat"
        for f in expired_active expired_keys compacted_bytes keys garbage_bytes used_memory bg_ticks bg_tick_us_total bg_tick_us_max; do
            row="$row,$(info_field "$info" "$f")"
        done
        echo "$row,$rss,$cpu" | tee -a "$csv"
    done
done

python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cols = ["p50_us", "p99_us", "p999_us", "max_us", "throughput", "expired_active",
        "compacted_bytes", "keys", "garbage_bytes", "used_memory", "bg_ticks", "bg_tick_us_total",
        "bg_tick_us_max", "rss_bytes", "server_cpu_s"]
med = {}
print()
print("| config | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for cfg in ("on", "off"):
    cells = []
    for c in cols:
        v = [float(r[c]) for r in rows if r["config"] == cfg]
        m = statistics.median(v)
        med[(cfg, c)] = m
        cells.append(f"{m:.0f} ({min(v):.0f}-{max(v):.0f})" if m >= 100 else
                     f"{m:.1f} ({min(v):.1f}-{max(v):.1f})")
    print(f"| {cfg} | " + " | ".join(cells) + " |")
print()
for c in ("p50_us", "p99_us", "p999_us", "max_us"):
    off = med[("off", c)]
    print(f"ON/OFF {c}: {med[('on', c)] / off:.3f}" if off else f"ON/OFF {c}: n/a")
PY
echo "results in $OUT"
