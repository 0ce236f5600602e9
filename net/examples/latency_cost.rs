//! What the admin port's latency histograms cost on the data path, per read batch and per
//! request: `BatchTimer::begin`, one `note` per request, `end` (two clock reads, a bucket
//! index, single-writer relaxed atomic adds). Compare with a loop that does nothing.
//!
//! `cargo run --release -p tessera-net --example latency_cost`

use std::hint::black_box;
use std::time::Instant;

use tessera_net::admin::{BatchTimer, Latency};
use tessera_net::commands::lookup;

fn main() {
    let latency = Latency::default();
    let get = lookup(b"get").expect("get is a command");
    let set = lookup(b"set").expect("set is a command");
    let mut timer = BatchTimer::default();
    for batch in [1usize, 16, 64] {
        let rounds = 2_000_000 / batch;
        // Warm up.
        for _ in 0..1000 {
            timer.begin();
            for i in 0..batch {
                timer.note(if i % 2 == 0 { get } else { set });
            }
            timer.end(&latency);
        }
        let t = Instant::now();
        for _ in 0..rounds {
            timer.begin();
            for i in 0..batch {
                timer.note(black_box(if i % 2 == 0 { get } else { set }));
            }
            timer.end(black_box(&latency));
        }
        let ns = t.elapsed().as_nanos() as f64;
        println!(
            "batch of {batch:>2}: {:>6.1} ns per batch, {:>5.1} ns per request",
            ns / rounds as f64,
            ns / (rounds * batch) as f64
        );
    }
}
