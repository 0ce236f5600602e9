#!/usr/bin/env bash
# Is the generator the bottleneck? Closed-loop throughput of tessera-bench against that of
# `redis-benchmark --threads 2` with identical settings (50 connections, the same pipeline
# depth, 32-byte values, random keys from 1M, SET then GET), against one redis-server that this
# script starts on a free loopback port and stops by pid. Alternating rounds; prints a Markdown
# table of medians (min-max) and the ratio tessera-bench / redis-benchmark.
#
# Environment: ROUNDS=3, PIPELINES="1 16", N1=150000 (requests per run at pipeline 1),
# NP=1000000 (requests per run when pipelined), BENCH=path to a release tessera-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
PIPELINES=${PIPELINES:-1 16}
N1=${N1:-150000}
NP=${NP:-1000000}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/tessera-bench}
[ -x "$BENCH" ] || cargo build --release -p tessera-tools --bin tessera-bench

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null || true; wait $RPID 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

med() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, a[1], a[NR]}'; }
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

echo "redis-server $(redis-server --version | cut -d' ' -f3 | cut -d= -f2), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo
echo "| pipeline | command | redis-benchmark --threads 2 ops/s | tessera-bench --workers 2 ops/s | ratio | tessera-bench CPU (cores) |"
echo "|---|---|---|---|---|---|"
for P in $PIPELINES; do
  N=$([ "$P" = 1 ] && echo "$N1" || echo "$NP")
  for cmd in set get; do
    RB=""; TB=""; CPU=""
    for _ in $(seq "$ROUNDS"); do
      r=$(redis-benchmark -p "$PORT" -t "$cmd" -n "$N" -r 1000000 -d 32 -c 50 -P "$P" --threads 2 -q --csv \
          | grep -i "^\"$cmd\"" | cut -d'"' -f4)
      RB+="$r "
      out=$("$BENCH" run -t "127.0.0.1:$PORT" -c 50 -P "$P" --workers 2 --mix "$cmd=1" --keys 1000000 \
            -v 32 -w 0s -n "$N" -d 60s --no-progress)
      TB+="$(echo "$out" | awk -v c="${cmd^^}" '$1==c {print $3}') "
      CPU+="$(echo "$out" | sed -n 's/.*= \([0-9.]*\) cores/\1/p') "
    done
    ratio=$(awk -v a="$(median "$TB")" -v b="$(median "$RB")" 'BEGIN {printf "%.2f", a/b}')
    echo "| $P | ${cmd^^} | $(med "$RB") | $(med "$TB") | $ratio | $(median "$CPU") |"
  done
done
echo
echo "redis-benchmark -p PORT -t CMD -n N -r 1000000 -d 32 -c 50 -P P --threads 2 -q --csv"
echo "$BENCH run -t 127.0.0.1:PORT -c 50 -P P --workers 2 --mix CMD=1 --keys 1000000 -v 32 -w 0s -n N -d 60s" | sed "s|$(pwd)/||"
