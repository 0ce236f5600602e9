//! Eviction quality: hit ratio of every policy on a Zipf(0.99) trace over 100 000 keys with a
//! cache of 10 000 keys (10% of the key space), next to exact LRU computed on the same trace.
//! A miss is followed by a SET, like a cache-aside client. The cache size is enforced with the
//! map's `max_keys` so that the figure measures the policy, not table fragmentation.
//!
//! Two clocks: one request per millisecond (access times are kept with 8 s granularity, so the
//! engine sees 8000 requests per tick) and one request per second (8 requests per tick), which
//! separates sampling error from clock granularity.
//!
//! Run: `cargo bench -p tessera-engine --bench eviction`

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use tessera_engine::{Command, EngineConfig, EvictionPolicy, Expiry, MapOption, Reply, Shard};

const KEYS: u64 = 100_000;
const CACHE: u64 = 10_000;
const REQUESTS: usize = 1_000_000;
const NOW: u64 = 1_700_000_000_000;

fn trace() -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(42);
    let zipf = Zipf::new(KEYS, 0.99).expect("valid zipf");
    (0..REQUESTS)
        .map(|_| zipf.sample(&mut rng) as u64 - 1)
        .collect()
}

fn exact_lru(trace: &[u64]) -> f64 {
    let mut last: HashMap<u64, usize> = HashMap::new();
    let mut by_time: BTreeMap<usize, u64> = BTreeMap::new();
    let mut hits = 0u64;
    for (t, &k) in trace.iter().enumerate() {
        if let Some(old) = last.insert(k, t) {
            by_time.remove(&old);
            hits += 1;
        } else if last.len() as u64 > CACHE {
            if let Some((_, victim)) = by_time.pop_first() {
                last.remove(&victim);
            }
        }
        by_time.insert(t, k);
    }
    hits as f64 / trace.len() as f64
}

fn engine(trace: &[u64], policy: EvictionPolicy, step_ms: u64) -> f64 {
    let mut shard = Shard::new(EngineConfig::default());
    let map = Bytes::from_static(b"cache");
    let option = |o| Command::DmConfigSet {
        map: map.clone(),
        option: o,
    };
    shard.execute(option(MapOption::MaxKeys(CACHE)), NOW);
    shard.execute(option(MapOption::Eviction(policy)), NOW);
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|k| Bytes::from(format!("key:{k}").into_bytes()))
        .collect();
    let value = Bytes::from_static(b"v");
    // Volatile policies only evict keys with a TTL: give every key one far in the future.
    let expiry = Expiry::In(1 << 40);
    let mut hits = 0u64;
    for (i, &k) in trace.iter().enumerate() {
        let now = NOW + i as u64 * step_ms;
        let key = keys[k as usize].clone();
        let get = Command::DmGet {
            map: map.clone(),
            key: key.clone(),
        };
        if let Reply::Bulk(_) = shard.execute(get, now) {
            hits += 1;
        } else {
            let put = Command::DmPut {
                map: map.clone(),
                key,
                value: value.clone(),
                expiry,
                cond: tessera_engine::Cond::Always,
            };
            let r = shard.execute(put, now);
            assert!(
                !r.is_error() || policy == EvictionPolicy::NoEviction,
                "{r:?}"
            );
        }
    }
    hits as f64 / trace.len() as f64
}

fn main() {
    let trace = trace();
    println!(
        "Zipf(0.99), {KEYS} keys, cache {CACHE} keys, {REQUESTS} requests (first request included)"
    );
    println!("exact LRU: {:.4}", exact_lru(&trace));
    for policy in EvictionPolicy::ALL {
        let fast = engine(&trace, policy, 1);
        let slow = engine(&trace, policy, 1000);
        println!(
            "{:<14} hit ratio {:.4} (1 req/ms)  {:.4} (1 req/s)",
            policy.name(),
            fast,
            slow
        );
    }
}
