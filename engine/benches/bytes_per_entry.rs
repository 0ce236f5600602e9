//! Bytes per entry at 1M and 10M entries (16-byte keys, 32-byte values, no TTL): the engine's
//! own accounting (`used_memory_bytes`) and the growth of the process RSS, next to
//! `std::collections::HashMap<Vec<u8>, Vec<u8>>` measured the same way.
//!
//! Run: `cargo bench -p tessera-engine --bench bytes_per_entry` (or `-- engine 1000000` for one
//! measurement).

use std::collections::HashMap;

use bytes::Bytes;
use tessera_engine::{Command, Cond, EngineConfig, Expiry, Reply, SetKind, Shard};

const NOW: u64 = 1_700_000_000_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 32;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value:{i:026}").into_bytes()
}

fn engine(n: usize) {
    let rss0 = rss_bytes();
    let mut shard = Shard::new(EngineConfig::default());
    for i in 0..n {
        let c = Command::Set {
            key: Bytes::from(key(i)),
            value: Bytes::from(value(i)),
            cond: Cond::Always,
            get: false,
            expiry: Expiry::Default,
            kind: SetKind::Set,
        };
        assert_eq!(shard.execute(c, NOW), Reply::Ok);
    }
    let rss = rss_bytes().saturating_sub(rss0);
    let s = shard.stats();
    let payload = (KEY_BYTES + VALUE_BYTES) as f64;
    let per = s.used_memory_bytes as f64 / n as f64;
    let per_rss = rss as f64 / n as f64;
    println!(
        "engine  n={n:>9}: accounted {:>6.1} B/entry (overhead {:>5.1}), RSS {:>6.1} B/entry (overhead {:>5.1})",
        per,
        per - payload,
        per_rss,
        per_rss - payload
    );
    drop(shard);
}

fn hashmap(n: usize) {
    let rss0 = rss_bytes();
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for i in 0..n {
        map.insert(key(i), value(i));
    }
    let rss = rss_bytes().saturating_sub(rss0);
    let per_rss = rss as f64 / n as f64;
    println!(
        "HashMap n={n:>9}: RSS {:>6.1} B/entry (overhead {:>5.1})",
        per_rss,
        per_rss - (KEY_BYTES + VALUE_BYTES) as f64
    );
    drop(map);
}

/// Without arguments: runs every measurement in its own child process (so that one
/// measurement's freed memory cannot hide another's). `engine N` or `hashmap N`: one measurement.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args
        .iter()
        .find(|a| a.as_str() == "engine" || a.as_str() == "hashmap");
    let n = args.iter().find_map(|a| a.parse::<usize>().ok());
    match (which.map(String::as_str), n) {
        (Some("engine"), Some(n)) => engine(n),
        (Some("hashmap"), Some(n)) => hashmap(n),
        _ => {
            let exe = std::env::current_exe().expect("own path");
            for n in [1_000_000usize, 10_000_000] {
                for what in ["engine", "hashmap"] {
                    let status = std::process::Command::new(&exe)
                        .arg(what)
                        .arg(n.to_string())
                        .status()
                        .expect("child runs");
                    assert!(status.success());
                }
            }
        }
    }
}
