//! GET and SET at 1M keys (16-byte keys, 32-byte values), engine vs
//! `std::collections::HashMap<Vec<u8>, Vec<u8>>`, measured in alternating batches.
//!
//! `getset` runs each case for seconds on its own, so on a machine shared with other work the
//! engine and the HashMap rows see different interference and their ratio moves by 2-3x between
//! runs. Here each round times one batch of engine operations and one batch of HashMap
//! operations a few milliseconds apart; the figure reported is the median over rounds of the
//! per-round ratio, next to the median times per operation. The engine side is the same as in
//! `getset`: `Shard::execute` with owned replies, a 4 GiB budget (set, not reached) and
//! `allkeys-lru`; keys and values are slices of one buffer, as the network layer passes them
//! (benches/common).
//!
//! Each side draws its own batch of random keys, and the side that goes first alternates
//! between rounds, so that neither side runs on keys the other has just brought into the
//! cache. (Until 2026-12-01 the HashMap ran the engine's batch, the same keys in the same
//! order, right after it; measured, that saved the HashMap side at most 3%, so it is not why
//! this bench and `getset` disagreed on the HashMap's time: see docs/benchmarks.md.)
//!
//! Run: `cargo bench -p tessera-engine --bench getset_paired` (optional argument: rounds,
//! default 200; each round is 2 x 2 batches of 20 000 operations).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_engine::Command;

mod common;
use common::{lcg, set_cmd, Loaded, NOW};

const BATCH: usize = 20_000;

/// `n` indexes of a cheap deterministic sequence, so lookups are not sequential.
fn walk(seed: u64, n: usize) -> Vec<usize> {
    let mut s = seed;
    (0..n).map(|_| lcg(&mut s)).collect()
}

fn per_op(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9 / BATCH as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let Loaded {
        data,
        mut shard,
        mut map,
    } = common::load();

    // (engine ns/op, HashMap ns/op, ratio) per round, for GET and for SET.
    let mut get = (Vec::new(), Vec::new(), Vec::new());
    let mut set = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Four batches of their own per round: a side never runs on keys the other side has
        // just brought into the cache (see the doc comment), and the order of the two sides
        // alternates between rounds.
        let seed = 4 * round as u64;
        let (get_e, get_h) = (walk(seed + 1, BATCH), walk(seed + 2, BATCH));
        let (set_e, set_h) = (walk(seed + 3, BATCH), walk(seed + 4, BATCH));
        let engine_first = round % 2 == 0;

        let mut engine_get = || {
            let t = Instant::now();
            for &i in &get_e {
                black_box(shard.execute(Command::Get { key: data.key(i) }, NOW));
            }
            per_op(t.elapsed())
        };
        let hash_get = || {
            let t = Instant::now();
            for &i in &get_h {
                black_box(map.get(data.key_ref(i)).map(|v| Bytes::copy_from_slice(v)));
            }
            per_op(t.elapsed())
        };
        let (engine, hash) = if engine_first {
            let e = engine_get();
            (e, hash_get())
        } else {
            let h = hash_get();
            (engine_get(), h)
        };
        get.0.push(engine);
        get.1.push(hash);
        get.2.push(engine / hash);

        let mut engine_set = || {
            let t = Instant::now();
            for &i in &set_e {
                black_box(shard.execute(set_cmd(data.key(i), data.value(i)), NOW));
            }
            per_op(t.elapsed())
        };
        let mut hash_set = || {
            let t = Instant::now();
            for &i in &set_h {
                black_box(map.insert(data.key_ref(i).to_vec(), data.value_ref(i).to_vec()));
            }
            per_op(t.elapsed())
        };
        let (engine, hash) = if engine_first {
            let e = engine_set();
            (e, hash_set())
        } else {
            let h = hash_set();
            (engine_set(), h)
        };
        set.0.push(engine);
        set.1.push(hash);
        set.2.push(engine / hash);
    }
    println!("{rounds} rounds of {BATCH} operations per side, medians over rounds:");
    println!(
        "| operation | engine (ns/op) | HashMap (ns/op) | ratio (median of per-round ratios) |"
    );
    println!("|---|---|---|---|");
    for (name, (e, h, r)) in [
        ("GET vs `get` + copy into `Bytes`", &mut get),
        (
            "SET overwrite vs `insert(k.to_vec(), v.to_vec())`",
            &mut set,
        ),
    ] {
        let mut lo_hi = r.clone();
        lo_hi.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}x (quartiles {:.2}-{:.2}) |",
            median(e),
            median(h),
            median(r),
            lo_hi[lo_hi.len() / 4],
            lo_hi[lo_hi.len() * 3 / 4]
        );
    }
    let s = shard.stats();
    eprintln!(
        "engine after the run: keys {} used_memory {} B",
        s.keys, s.used_memory_bytes
    );
}
