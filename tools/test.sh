#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# redis-server/redis-benchmark/redis-cli/memcached/redis-py are peers for integration tests and
# benchmarks; tmux drives the CLI's REPL tests through a terminal.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# redis-py's RedisCluster (tests/cluster_clients.rs): Debian's package, for the system python3.
python3 -c 'import redis.cluster' >/dev/null 2>&1 ||
  /usr/bin/python3 -c 'import redis.cluster' >/dev/null 2>&1 || need+=(python3-redis)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
cargo test --workspace --locked "$@"
