//! GET and SET at 1M keys (16-byte keys, 32-byte values) through the engine's full command path
//! (`Shard::execute`, owned `Bytes` replies, LRU bookkeeping, memory budget checks), next to
//! `std::collections::HashMap<Vec<u8>, Vec<u8>>` in the same run.
//!
//! Run: `cargo bench -p tessera-engine --bench getset -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use tessera_engine::Command;

mod common;
use common::{lcg, set_cmd, Loaded, NOW};

/// A cheap deterministic sequence of indexes, so lookups are not sequential.
struct Walk(u64);

impl Walk {
    fn next(&mut self) -> usize {
        lcg(&mut self.0)
    }
}

fn bench(crit: &mut Criterion) {
    let Loaded {
        data,
        mut shard,
        mut map,
    } = common::load();

    let mut group = crit.benchmark_group("1M keys, 16 B keys, 32 B values");
    let mut walk = Walk(1);
    group.bench_function("engine GET (Shard::execute, owned reply)", |b| {
        b.iter(|| {
            let i = walk.next();
            let r = shard.execute(Command::Get { key: data.key(i) }, NOW);
            black_box(r)
        });
    });
    let mut walk = Walk(1);
    group.bench_function("HashMap get (borrowed)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.get(data.key_ref(i)).map(Vec::len))
        });
    });
    let mut walk = Walk(1);
    group.bench_function("HashMap get + copy into Bytes (owned, like a reply)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.get(data.key_ref(i)).map(|v| Bytes::copy_from_slice(v)))
        });
    });
    let mut walk = Walk(2);
    group.bench_function("engine SET overwrite (Shard::execute)", |b| {
        b.iter(|| {
            let i = walk.next();
            let r = shard.execute(set_cmd(data.key(i), data.value(i)), NOW);
            black_box(r)
        });
    });
    let mut walk = Walk(2);
    group.bench_function("HashMap insert overwrite (key and value to Vec)", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(map.insert(data.key_ref(i).to_vec(), data.value_ref(i).to_vec()))
        });
    });
    let mut walk = Walk(3);
    group.bench_function("engine SET overwrite + compact_step(256 B)", |b| {
        b.iter(|| {
            let i = walk.next();
            shard.execute(set_cmd(data.key(i), data.value(i)), NOW);
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
