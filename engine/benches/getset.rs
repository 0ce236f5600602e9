//! GET and SET at 1M keys (16-byte keys, 32-byte values) through the engine's full command path
//! (`Shard::execute`, owned `Bytes` replies, LRU bookkeeping, memory budget checks), next to
//! `std::collections::HashMap<Vec<u8>, Vec<u8>>` in the same run.
//!
//! Run: `cargo bench -p tessera-engine --bench getset -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashMap;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use tessera_engine::{Command, Cond, EngineConfig, EvictionPolicy, Expiry, Reply, SetKind, Shard};

const KEYS: usize = 1_000_000;
const NOW: u64 = 1_700_000_000_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:012}").into_bytes())
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value:{i:026}").into_bytes())
}

/// A cheap deterministic sequence of indexes (an LCG), so lookups are not sequential.
struct Walk(u64);

impl Walk {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % KEYS
    }
}

fn set_cmd(k: Bytes, v: Bytes) -> Command {
    Command::Set {
        key: k,
        value: v,
        cond: Cond::Always,
        get: false,
        expiry: Expiry::Default,
        kind: SetKind::Set,
    }
}

fn bench(crit: &mut Criterion) {
    let keys: Vec<Bytes> = (0..KEYS).map(key).collect();
    let values: Vec<Bytes> = (0..KEYS).map(value).collect();
    assert_eq!(keys[0].len(), 16);
    assert_eq!(values[0].len(), 32);

    // The engine pays for its budget checks and LRU bookkeeping: a budget that is set (but not
    // reached) and an evicting policy.
    let mut shard = Shard::new(EngineConfig {
        maxmemory_bytes: 4 << 30,
        maxmemory_policy: EvictionPolicy::AllkeysLru,
        ..EngineConfig::default()
    });
    for i in 0..KEYS {
        let r = shard.execute(set_cmd(keys[i].clone(), values[i].clone()), NOW);
        assert_eq!(r, Reply::Ok);
    }
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for i in 0..KEYS {
        map.insert(keys[i].to_vec(), values[i].to_vec());
    }

    let mut group = crit.benchmark_group("1M keys, 16 B keys, 32 B values");
    let mut walk = Walk(1);
    group.bench_function("engine GET (Shard::execute, owned reply)", |b| {
        b.iter(|| {
            let i = walk.next();
            let r = shard.execute(
                Command::Get {
                    key: keys[i].clone(),
                },
                NOW,
            );
            black_box(r)
        });
    });
    let mut walk = Walk(1);
    group.bench_function("HashMap get (borrowed)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.get(&keys[i][..]).map(Vec::len))
        });
    });
    let mut walk = Walk(1);
    group.bench_function("HashMap get + copy into Bytes (owned, like a reply)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.get(&keys[i][..]).map(|v| Bytes::copy_from_slice(v)))
        });
    });
    let mut walk = Walk(2);
    group.bench_function("engine SET overwrite (Shard::execute)", |b| {
        b.iter(|| {
            let i = walk.next();
            let r = shard.execute(set_cmd(keys[i].clone(), values[i].clone()), NOW);
            black_box(r)
        });
    });
    let mut walk = Walk(2);
    group.bench_function("HashMap insert overwrite (key and value to Vec)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.insert(keys[i].to_vec(), values[i].to_vec()))
        });
    });
    let mut walk = Walk(3);
    group.bench_function("engine SET overwrite + compact_step(256 B)", |b| {
        b.iter(|| {
            let i = walk.next();
            shard.execute(set_cmd(keys[i].clone(), values[i].clone()), NOW);
            black_box(shard.compact_step(256))
        });
    });
    group.finish();
    let s = shard.stats();
    eprintln!(
        "engine after the run: keys {} used_memory {} B ({:.1} B/key)",
        s.keys,
        s.used_memory_bytes,
        s.used_memory_bytes as f64 / s.keys as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
