//! Runs a decoded sequence of operations against the engine and its `HashMap` model
//! (`tessera_engine::model`), under every eviction policy, tiny budgets and the colliding
//! hasher, and aborts on the first difference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_engine::model::{check, Op, Setup};
use tessera_engine::EvictionPolicy;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let policy = EvictionPolicy::ALL[usize::from(head) % EvictionPolicy::ALL.len()];
    let maxmemory_bytes = [0, 12_000, 24_000][usize::from(head >> 3) % 3];
    let setup = Setup {
        policy,
        maxmemory_bytes,
        colliding_hash: head & 0x80 != 0,
        max_idle_ms: if head & 0x40 != 0 { 10_000 } else { 0 },
    };
    if let Err(e) = check(&Op::decode(rest), setup) {
        panic!("{setup:?}: {e}");
    }
});
