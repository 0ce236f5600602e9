#!/usr/bin/env bash
# Server-side measurements of tesserad against redis-server in the same run (issue 3).
#
# For each round (ROUNDS, default 3) and each server (alternating):
#  - CPU per op: server pinned to CPU 0 (tesserad --cores 1 under taskset -c 0; redis-server
#    under taskset -c 0), redis-benchmark pinned to CPU 1, GET/SET at pipeline 1, 16, 64;
#    utime+stime of the server from /proc/PID/stat before/after, divided by requests.
#  - throughput with 2 executors (redis-server unpinned) and redis-benchmark --threads 2, P=1.
#  - single-connection round trip: redis-benchmark -c 1 -P 1 GET, reported as us/op.
#  - idle CPU: 100 idle connections for IDLE_S seconds, server CPU% of one core.
# Prints one CSV line per measurement: server,measure,pipeline,value.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
ROUNDS="${ROUNDS:-3}"
N="${N:-200000}"
IDLE_S="${IDLE_S:-10}"
cargo build --release -q -p tessera-tools --bin tesserad
bin="${CARGO_TARGET_DIR:-$here/target}/release/tesserad"
hz="$(getconf CLK_TCK)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
cpu_ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_server() { # kind cores pin -> sets PID PORT
    PORT="$(free_port)"
    case "$1" in
        tessera) taskset -c "$3" "$bin" --port "$PORT" --cores "$2" --log-level warn & ;;
        redis) taskset -c "$3" redis-server --port "$PORT" --save '' --appendonly no --daemonize no --loglevel warning >/dev/null & ;;
    esac
    PID=$!
    pids+=("$PID")
    for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_server() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; }

rps() { # port args... -> requests per second, mean over the tests run
    timeout 300 redis-benchmark -p "$1" "${@:2}" -q --csv | awk -F, 'NR > 1 { gsub(/"/, "", $2); s += $2; n++ } END { if (n) printf "%.0f", s / n }'
}

for round in $(seq "$ROUNDS"); do
    for kind in tessera redis; do
        # CPU per op, 1 executor on CPU 0, client on CPU 1
        start_server "$kind" 1 0
        redis-benchmark -p "$PORT" -t set -n 100000 -r 100000 -d 32 -q >/dev/null
        for p in 1 16 64; do
            n=$((N * (p == 1 ? 1 : 5)))
            before="$(cpu_ticks "$PID")"
            r="$(timeout 300 taskset -c 1 redis-benchmark -p "$PORT" -t get,set -n "$n" -r 100000 -d 32 -c 50 -P "$p" -q --csv | wc -l)"
            after="$(cpu_ticks "$PID")"
            ops=$((2 * n))
            echo "$kind,cpu_us_per_op,$p,$(awk -v a="$after" -v b="$before" -v hz="$hz" -v ops="$ops" 'BEGIN { printf "%.3f", (a - b) / hz * 1e6 / ops }')"
            [ "$r" -ge 2 ] || echo "$kind,error,$p,benchmark-failed"
            if [ "$p" = 64 ]; then
                echo "$kind,get_rps_1core,64,$(timeout 300 taskset -c 1 redis-benchmark -p "$PORT" -t get -n "$((N * 5))" -r 100000 -d 32 -c 50 -P 64 -q --csv | tail -1 | cut -d, -f2 | tr -d '"')"
            fi
        done
        # single-connection round trip
        r="$(timeout 300 taskset -c 1 redis-benchmark -p "$PORT" -t get -n 50000 -c 1 -P 1 -q --csv | tail -1 | cut -d, -f2 | tr -d '"')"
        echo "$kind,rtt_us,1,$(awk -v r="$r" 'BEGIN { printf "%.1f", 1e6 / r }')"
        stop_server
        # throughput with 2 executors, --threads 2, P=1
        start_server "$kind" 2 0-1
        echo "$kind,rps_2cores_threads2,1,$(rps "$PORT" -t get,set -n "$N" -r 100000 -d 32 -c 50 --threads 2 -P 1)"
        # idle CPU, 100 idle connections
        python3 - "$PORT" "$IDLE_S" <<'PY' &
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
time.sleep(secs + 2)
PY
        holder=$!
        sleep 1
        before="$(cpu_ticks "$PID")"
        sleep "$IDLE_S"
        after="$(cpu_ticks "$PID")"
        echo "$kind,idle_cpu_pct,0,$(awk -v a="$after" -v b="$before" -v hz="$hz" -v s="$IDLE_S" 'BEGIN { printf "%.2f", (a - b) / hz / s * 100 }')"
        wait "$holder" || true
        stop_server
    done
done
