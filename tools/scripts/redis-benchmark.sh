#!/usr/bin/env bash
# Runs redis-benchmark against a freshly built release tesserad and fails on any error.
#
#   tools/scripts/redis-benchmark.sh            # set,get,incr,mset, 100000 requests
#   CORES=1 N=200000 tools/scripts/redis-benchmark.sh
#
# Installs redis-tools if redis-benchmark is missing, builds tesserad (release), starts it on a
# free loopback port, runs `redis-benchmark -p PORT -t set,get,incr,mset -n N -q`, checks every
# line is a result (no error text), and stops the server by its pid.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
N="${N:-100000}"
CORES="${CORES:-2}"
TESTS="${TESTS:-set,get,incr,mset}"

if ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "installing redis-tools (redis-benchmark)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq redis-tools >/dev/null
fi

cargo build --release -q -p tessera-tools --bin tesserad
target_dir="${CARGO_TARGET_DIR:-$here/target}"
bin="$target_dir/release/tesserad"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
log="$(mktemp)"
"$bin" --port "$port" --cores "$CORES" --log-level warn >"$log" 2>&1 &
pid=$!
cleanup() {
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 100); do
    if redis-cli -p "$port" PING >/dev/null 2>&1; then break; fi
    sleep 0.1
done
redis-cli -p "$port" PING | grep -q PONG || { echo "tesserad did not start:" >&2; cat "$log" >&2; exit 1; }

out="$(redis-benchmark -p "$port" -t "$TESTS" -n "$N" -q 2>&1)"
printf '%s\n' "$out" | tr '\r' '\n' | grep 'requests per second' || true
# redis-benchmark prints error replies and connection problems as text lines; every result line
# looks like "SET: 123.45 requests per second, p50=0.1 msec", progress lines (separated by CR)
# like "SET: rps=4.0 (overall: 4.0) avg_msec=1.0 (overall: 1.0)".
bad="$(printf '%s\n' "$out" | tr '\r' '\n' | grep -v '^\s*$' | grep -v 'requests per second' \
    | grep -Ev '^\s*[A-Z]+[^:]*: rps=[0-9.]+ \(overall: [-0-9.na]+\) avg_msec=' || true)"
if [ -n "$bad" ]; then
    echo "redis-benchmark reported errors:" >&2
    echo "$bad" >&2
    exit 1
fi
expected="$(echo "$TESTS" | tr ',' '\n' | wc -l)"
got="$(printf '%s\n' "$out" | tr '\r' '\n' | grep -c 'requests per second' || true)"
# mset is reported as "MSET (10 keys)"; each test yields one line.
if [ "$got" -lt "$expected" ]; then
    echo "expected $expected results, got $got" >&2
    exit 1
fi
# The server must still be healthy and stop cleanly on SIGTERM.
redis-cli -p "$port" PING | grep -q PONG
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "tesserad did not stop on SIGTERM" >&2; exit 1; fi
wait "$pid" && status=0 || status=$?
[ "$status" = 0 ] || { echo "tesserad exited with $status" >&2; exit 1; }
echo "ok: redis-benchmark $TESTS -n $N against tesserad --cores $CORES, zero errors"
