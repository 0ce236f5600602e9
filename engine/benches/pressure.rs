//! Writes under a full memory budget: 2M SETs of random keys from 1M (16-byte keys, 32-byte
//! values) into a shard with `maxmemory` 16 MiB, per evicting policy, without any background
//! `compact_step`: does eviction plus the amortized compaction on writes keep up (no `-OOM`,
//! used memory within the budget), and how much of the budget holds live data?
//!
//! Run: `cargo bench -p tessera-engine --bench pressure`

use bytes::Bytes;
use tessera_engine::{Command, Cond, EngineConfig, EvictionPolicy, Expiry, SetKind, Shard};

const BUDGET: u64 = 16 << 20;
const WRITES: u64 = 2_000_000;
const KEYS: u64 = 1_000_000;

fn main() {
    println!("maxmemory {BUDGET} B, {WRITES} SETs of random keys from {KEYS}, 32-byte values");
    for policy in [
        EvictionPolicy::AllkeysLru,
        EvictionPolicy::AllkeysLfu,
        EvictionPolicy::AllkeysSieve,
    ] {
        let mut shard = Shard::new(EngineConfig {
            maxmemory_bytes: BUDGET,
            maxmemory_policy: policy,
            ..EngineConfig::default()
        });
        let mut x: u64 = 1;
        let mut ooms = 0u64;
        let mut peak = 0u64;
        let value = Bytes::from(vec![b'v'; 32]);
        for i in 0..WRITES {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let key = Bytes::from(format!("key:{:012}", (x >> 33) % KEYS).into_bytes());
            let set = Command::Set {
                key,
                value: value.clone(),
                cond: Cond::Always,
                get: false,
                expiry: Expiry::Default,
                kind: SetKind::Set,
            };
            if shard.execute(set, 1_700_000_000_000 + i).is_error() {
                ooms += 1;
            }
            if i % 1024 == 0 {
                peak = peak.max(shard.stats().used_memory_bytes);
            }
        }
        let s = shard.stats();
        println!(
            "{:<14} keys held {:>7}  used {:>8} B (peak {:>8})  tables {:>8} B  index {:>7} B  live {:>8} B  garbage {:>7} B  evicted {:>7}  OOM replies {}",
            policy.name(),
            s.keys,
            s.used_memory_bytes,
            peak,
            s.table_bytes,
            s.index_bytes,
            s.live_bytes,
            s.garbage_bytes,
            s.evicted_keys,
            ooms
        );
    }
}
