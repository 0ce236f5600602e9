"""redis-py's RedisCluster against a Tessera cluster (run by tests/cluster_clients.rs).

Usage: python3 cluster_clients.py PORT. Exits non-zero (an AssertionError or a redis error)
on any mismatch; prints "redis-py cluster ok" and counts on success.
"""

import sys

from redis.cluster import RedisCluster

port = int(sys.argv[1])
rc = RedisCluster(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)

# The client learnt the slot map: three primaries, all 16384 slots covered.
nodes = rc.get_primaries()
assert len(nodes) == 3, f"primaries: {nodes}"
slots = rc.nodes_manager.slots_cache
assert len(slots) == 16384 and all(slots.get(s) for s in range(16384)), len(slots)

keys = [f"py:{i}" for i in range(1000)]
for i, k in enumerate(keys):
    assert rc.set(k, f"v{i}") is True, k
for i, k in enumerate(keys):
    got = rc.get(k)
    assert got == f"v{i}", (k, got)

# The keys really are spread over all three nodes (each node holds some).
per_node = [
    rc.execute_command("DBSIZE", target_nodes=n) for n in rc.get_primaries()
]
assert all(c > 0 for c in per_node) and sum(per_node) >= 1000, per_node

# MGET across slots, split per slot by the client.
values = rc.mget_nonatomic(keys + ["py:missing"])
assert values[:-1] == [f"v{i}" for i in range(1000)], values[:5]
assert values[-1] is None

# Pipeline: commands grouped per node, answers back in order.
pipe = rc.pipeline()
for i in range(200):
    pipe.set(f"pp:{i}", i, ex=500)
for i in range(200):
    pipe.get(f"pp:{i}")
out = pipe.execute()
assert out[:200] == [True] * 200, out[:200]
assert out[200:] == [str(i) for i in range(200)], out[200:210]

# TTLs.
for i in range(0, 200, 17):
    ttl = rc.ttl(f"pp:{i}")
    assert 490 <= ttl <= 500, (i, ttl)
assert rc.ttl("py:0") == -1
assert rc.expire("py:0", 100) is True
assert 90 <= rc.ttl("py:0") <= 100
assert rc.persist("py:0") is True and rc.ttl("py:0") == -1

# Hash tags keep keys in one slot: a multi-key command on them goes to one node.
assert rc.mset({"{user7}a": "1", "{user7}b": "2"}) is True
assert rc.mget("{user7}a", "{user7}b") == ["1", "2"]

# DELETE across slots (split per slot by the client) and EXISTS.
assert rc.exists(*keys) == 1000
assert rc.delete(*keys) == 1000
assert rc.exists(*keys) == 0
assert rc.get("py:5") is None
assert rc.delete(*[f"pp:{i}" for i in range(200)]) == 200

# Cluster introspection redis-py parses.
assert rc.cluster_keyslot("py:1") == rc.keyslot("py:1")
info = rc.cluster_info(target_nodes=RedisCluster.RANDOM)
assert info["cluster_state"] == "ok", info

print(f"redis-py cluster ok: per-node counts {per_node}")
