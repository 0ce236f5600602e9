//! GET and SET at 1M keys (16-byte keys, 32-byte values) in the steady state of an
//! overwrite-only load, for instruction counts (callgrind) rather than wall clock.
//!
//! `getset` under callgrind runs a few hundred thousand SETs after the load, too few for the
//! map's garbage to reach `compaction_garbage_ratio` (about 1M overwrites of the 1M keys): its
//! SET figure leaves out the amortised compaction that every SET pays afterwards. This binary
//! loads the data set of `getset` (benches/common), overwrites `PRE` random keys (default
//! 1 500 000, past the point where writes compact), and then runs four measured loops of `N`
//! operations each (default 100 000), each in its own function so that callgrind can collect
//! exactly one of them:
//!
//! ```text
//! cargo bench -p tessera-engine --bench getset_steady --no-run
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='getset_steady::engine_set' --toggle-collect='getset_steady::hash_insert' \
//!   --toggle-collect='getset_steady::engine_get' --toggle-collect='getset_steady::hash_get' \
//!   target/release/deps/getset_steady-HASH [PRE [N]]
//! callgrind_annotate --inclusive=yes callgrind.out.PID | grep getset_steady::
//! ```
//!
//! and divide each function's inclusive count by `N`. Without valgrind it prints the time per
//! operation of each loop (one run; not a substitute for `getset`'s statistics).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use tessera_engine::Command;

mod common;
use common::{lcg, set_cmd, Data, Loaded, NOW};

#[inline(never)]
fn engine_set(shard: &mut tessera_engine::Shard, data: &Data, idx: &[usize]) {
    for &i in idx {
        black_box(shard.execute(set_cmd(data.key(i), data.value(i)), NOW));
    }
}

/// The unmeasured overwrites before the measured loops (a function of its own so that
/// callgrind's collection of `engine_set` leaves them out; its body differs from
/// `engine_set`'s, which keeps the compiler from merging the two identical functions into
/// one, as it did once).
#[inline(never)]
fn warm_set(shard: &mut tessera_engine::Shard, data: &Data, idx: &[usize]) {
    for &i in idx {
        let r = shard.execute(set_cmd(data.key(i), data.value(i)), NOW);
        assert_eq!(r, tessera_engine::Reply::Ok);
    }
}

#[inline(never)]
fn hash_insert(map: &mut std::collections::HashMap<Vec<u8>, Vec<u8>>, data: &Data, idx: &[usize]) {
    for &i in idx {
        black_box(map.insert(data.key_ref(i).to_vec(), data.value_ref(i).to_vec()));
    }
}

#[inline(never)]
fn engine_get(shard: &mut tessera_engine::Shard, data: &Data, idx: &[usize]) {
    for &i in idx {
        black_box(shard.execute(Command::Get { key: data.key(i) }, NOW));
    }
}

#[inline(never)]
fn hash_get(map: &std::collections::HashMap<Vec<u8>, Vec<u8>>, data: &Data, idx: &[usize]) {
    for &i in idx {
        black_box(map.get(data.key_ref(i)).map(|v| Bytes::copy_from_slice(v)));
    }
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let pre = args.next().unwrap_or(1_500_000);
    let n = args.next().unwrap_or(100_000);
    let Loaded {
        data,
        mut shard,
        mut map,
    } = common::load();
    let mut s = 7u64;
    let warm: Vec<usize> = (0..pre).map(|_| lcg(&mut s)).collect();
    warm_set(&mut shard, &data, &warm);
    let before = shard.stats();
    let idx: Vec<usize> = (0..n).map(|_| lcg(&mut s)).collect();
    let per_op = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let t = Instant::now();
    engine_set(&mut shard, &data, &idx);
    let e_set = per_op(t);
    let t = Instant::now();
    hash_insert(&mut map, &data, &idx);
    let h_set = per_op(t);
    let t = Instant::now();
    engine_get(&mut shard, &data, &idx);
    let e_get = per_op(t);
    let t = Instant::now();
    hash_get(&map, &data, &idx);
    let h_get = per_op(t);
    let after = shard.stats();
    println!("{pre} overwrites before, {n} measured operations per loop");
    println!("engine SET {e_set:.0} ns/op, HashMap insert {h_set:.0} ns/op");
    println!("engine GET {e_get:.0} ns/op, HashMap get + copy {h_get:.0} ns/op");
    println!(
        "garbage before the measured SETs {} B, after {} B; table bytes {} -> {}",
        before.garbage_bytes, after.garbage_bytes, before.table_bytes, after.table_bytes
    );
}
