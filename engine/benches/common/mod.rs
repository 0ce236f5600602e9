//! The data set shared by `getset` and `getset_paired`: 1M keys of 16 bytes with 32-byte
//! values, loaded into an engine shard (a 4 GiB budget that is set but not reached, and
//! `allkeys-lru`, so writes pay for the budget checks and reads for the LRU bookkeeping) and
//! into a `std::collections::HashMap<Vec<u8>, Vec<u8>>`.

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

/// The loaded data set.
pub struct Loaded {
    pub keys: Vec<Bytes>,
    pub values: Vec<Bytes>,
    pub shard: Shard,
    pub map: HashMap<Vec<u8>, Vec<u8>>,
}

pub fn load() -> Loaded {
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|i| Bytes::from(format!("key:{i:012}").into_bytes()))
        .collect();
    let values: Vec<Bytes> = (0..KEYS)
        .map(|i| Bytes::from(format!("value:{i:026}").into_bytes()))
        .collect();
    assert_eq!(keys[0].len(), 16);
    assert_eq!(values[0].len(), 32);
    let mut shard = Shard::new(EngineConfig {
        maxmemory_bytes: 4 << 30,
        maxmemory_policy: EvictionPolicy::AllkeysLru,
        ..EngineConfig::default()
    });
    for i in 0..KEYS {
        let r = shard.execute(set_cmd(keys[i].clone(), values[i].clone()), NOW);
        assert_eq!(r, Reply::Ok);
    }
    let mut map = HashMap::new();
    for i in 0..KEYS {
        map.insert(keys[i].to_vec(), values[i].to_vec());
    }
    Loaded {
        keys,
        values,
        shard,
        map,
    }
}
