//! The data set shared by `getset`, `getset_paired` and `getset_steady`: 1M keys of 16 bytes
//! with 32-byte values, loaded into an engine shard (a 4 GiB budget that is set but not
//! reached, and `allkeys-lru`, so writes pay for the budget checks and reads for the LRU
//! bookkeeping) and into a `std::collections::HashMap<Vec<u8>, Vec<u8>>`.
//!
//! Keys and values are handed to the engine the way the network layer hands them over: as
//! `Bytes` slices of one buffer (`net/src/resp/parse.rs` slices every argument out of the
//! request's frame), so the owned key of a `Command` costs a reference count on one shared,
//! cache-hot buffer header. The HashMap side reads the same bytes at the same addresses.
//! (Until 2026-12-01 each key and value was a `Bytes` of its own: cloning one for a command
//! incremented and later decremented a reference count in a separate, cold heap block per key,
//! a cache miss and two locked instructions per key that only the engine side paid and that
//! no server request pays; docs/benchmarks.md has the measurement.)

use std::collections::HashMap;

use bytes::Bytes;
use tessera_engine::{Command, Cond, EngineConfig, EvictionPolicy, Expiry, Reply, SetKind, Shard};

pub const KEYS: usize = 1_000_000;
pub const NOW: u64 = 1_700_000_000_000;

/// Next index of a cheap deterministic sequence (an LCG), so lookups are not sequential.
pub fn lcg(state: &mut u64) -> usize {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 33) as usize) % KEYS
}

pub fn set_cmd(k: Bytes, v: Bytes) -> Command {
    Command::Set {
        key: k,
        value: v,
        cond: Cond::Always,
        get: false,
        expiry: Expiry::Default,
        kind: SetKind::Set,
    }
}

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 32;

/// Key `i` is `keys[i * KEY_LEN..][..KEY_LEN]`, value `i` is `values[i * VALUE_LEN..][..VALUE_LEN]`.
pub struct Data {
    keys: Bytes,
    values: Bytes,
}

impl Data {
    /// Key `i` as an owned `Bytes` for a command (a slice of the one key buffer).
    #[inline]
    pub fn key(&self, i: usize) -> Bytes {
        self.keys.slice(i * KEY_LEN..(i + 1) * KEY_LEN)
    }

    /// The bytes of key `i` (the HashMap side).
    #[inline]
    pub fn key_ref(&self, i: usize) -> &[u8] {
        &self.keys[i * KEY_LEN..(i + 1) * KEY_LEN]
    }

    /// Value `i` as an owned `Bytes` for a command.
    #[inline]
    pub fn value(&self, i: usize) -> Bytes {
        self.values.slice(i * VALUE_LEN..(i + 1) * VALUE_LEN)
    }

    /// The bytes of value `i` (the HashMap side).
    #[inline]
    pub fn value_ref(&self, i: usize) -> &[u8] {
        &self.values[i * VALUE_LEN..(i + 1) * VALUE_LEN]
    }
}

/// The loaded data set.
pub struct Loaded {
    pub data: Data,
    pub shard: Shard,
    pub map: HashMap<Vec<u8>, Vec<u8>>,
}

pub fn load() -> Loaded {
    let mut keys = Vec::with_capacity(KEYS * KEY_LEN);
    let mut values = Vec::with_capacity(KEYS * VALUE_LEN);
    for i in 0..KEYS {
        keys.extend_from_slice(format!("key:{i:012}").as_bytes());
        values.extend_from_slice(format!("value:{i:026}").as_bytes());
    }
    assert_eq!(keys.len(), KEYS * KEY_LEN);
    assert_eq!(values.len(), KEYS * VALUE_LEN);
    let data = Data {
        keys: Bytes::from(keys),
        values: Bytes::from(values),
    };
    let mut shard = Shard::new(EngineConfig {
        maxmemory_bytes: 4 << 30,
        maxmemory_policy: EvictionPolicy::AllkeysLru,
        ..EngineConfig::default()
    });
    for i in 0..KEYS {
        let r = shard.execute(set_cmd(data.key(i), data.value(i)), NOW);
        assert_eq!(r, Reply::Ok);
    }
    let mut map = HashMap::new();
    for i in 0..KEYS {
        map.insert(data.key_ref(i).to_vec(), data.value_ref(i).to_vec());
    }
    Loaded { data, shard, map }
}
