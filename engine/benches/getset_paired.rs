//! GET and SET at 1M keys (16-byte keys, 32-byte values), engine vs
//! `std::collections::HashMap<Vec<u8>, Vec<u8>>`, measured in alternating batches.
//!
//! `getset` runs each case for seconds on its own, so on a machine shared with other work the
//! engine and the HashMap rows see different interference and their ratio moves by 2-3x between
//! runs. Here each round times one batch of engine operations and then the same batch (same
//! keys, same order) on the HashMap, a few milliseconds apart; the figure reported is the median
//! over rounds of the per-round ratio, next to the median times per operation. The engine side
//! is the same as in `getset`: `Shard::execute` with owned replies, a 4 GiB budget (set, not
//! reached) and `allkeys-lru`.
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
        keys,
        values,
        mut shard,
        mut map,
    } = common::load();

    // (engine ns/op, HashMap ns/op, ratio) per round, for GET and for SET.
    let mut get = (Vec::new(), Vec::new(), Vec::new());
    let mut set = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let idx = walk(round as u64 + 1, BATCH);

        let t = Instant::now();
        for &i in &idx {
            let r = shard.execute(
                Command::Get {
                    key: keys[i].clone(),
                },
                NOW,
            );
            black_box(r);
        }
        let engine = per_op(t.elapsed());
        let t = Instant::now();
        for &i in &idx {
            black_box(map.get(&keys[i][..]).map(|v| Bytes::copy_from_slice(v)));
        }
        let hash = per_op(t.elapsed());
        get.0.push(engine);
        get.1.push(hash);
        get.2.push(engine / hash);

        let t = Instant::now();
        for &i in &idx {
            let r = shard.execute(set_cmd(keys[i].clone(), values[i].clone()), NOW);
            black_box(r);
        }
        let engine = per_op(t.elapsed());
        let t = Instant::now();
        for &i in &idx {
            black_box(map.insert(keys[i].to_vec(), values[i].to_vec()));
        }
        let hash = per_op(t.elapsed());
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
