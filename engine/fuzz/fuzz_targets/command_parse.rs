//! Splits the input into arguments on 0xFF bytes, parses them as a command and executes it on
//! a small shard: no input may panic or hang.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tessera_engine::{Command, EngineConfig, Shard};

fuzz_target!(|data: &[u8]| {
    let args: Vec<Bytes> = data
        .split(|&b| b == 0xFF)
        .map(Bytes::copy_from_slice)
        .collect();
    let mut shard = Shard::new(EngineConfig {
        maxmemory_bytes: 64 * 1024,
        value_bytes_max: 1 << 20,
        ..EngineConfig::default()
    });
    let now = 1_700_000_000_000;
    for prefix in [&b"SET"[..], b"DM.PUT"] {
        let seed = [Bytes::from_static(prefix), Bytes::from_static(b"m"), Bytes::from_static(b"k"), Bytes::from_static(b"v")];
        if let Ok(c) = Command::parse(&seed) {
            shard.execute(c, now);
        }
    }
    if let Ok(c) = Command::parse(&args) {
        let _ = c.keys();
        let _ = c.lock_wait_ms();
        shard.execute(c, now);
    }
});
