//! `Map`: the entries of one map (DMap) on one shard, and their metadata.
//!
//! Storage interface used by the shard's command semantics: find by key (hash + stored-key
//! comparison), read value, write a new version, change metadata, remove, ordered scan with a
//! stable cursor. Time and versions are parameters.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::MapConfig;

/// Metadata of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Absolute expiry deadline in ms since the epoch; 0 = none.
    pub expire_at_ms: u64,
    /// Ordered version (hybrid: write time in the high bits, a counter in the low 20).
    pub version: u64,
    /// Last access time in ms (coarse: 1 s granularity).
    pub access_ms: u64,
    /// Redis's logarithmic LFU counter.
    pub lfu: u8,
    /// SIEVE's visited bit.
    pub visited: bool,
}

impl Meta {
    /// Write time in ms, recovered from the version.
    pub fn write_ms(&self) -> u64 {
        self.version >> crate::shard::VERSION_COUNTER_BITS
    }
}

#[derive(Clone, Debug)]
struct Entry {
    value: Bytes,
    meta: Meta,
}

/// Bytes an entry is charged beyond its key and value.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Per-map statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
}

/// One map's entries on one shard.
#[derive(Debug)]
pub struct Map {
    entries: BTreeMap<(u64, Bytes), Entry>,
    volatile: usize,
    live_bytes: u64,
    pub config: MapConfig,
    pub stats: MapStats,
}

fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key) >> 8
}

impl Map {
    pub fn new(config: MapConfig) -> Map {
        Map {
            entries: BTreeMap::new(),
            volatile: 0,
            live_bytes: 0,
            config,
            stats: MapStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    /// Bytes of live entries (keys, values, per-entry overhead).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes this map holds allocated.
    pub fn memory_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes one entry of these sizes is charged.
    pub fn entry_cost(key_len: usize, value_len: usize) -> u64 {
        (key_len + value_len) as u64 + ENTRY_OVERHEAD_BYTES
    }

    fn k(key: &[u8]) -> (u64, Bytes) {
        (hash(key), Bytes::copy_from_slice(key))
    }

    pub fn meta(&self, key: &[u8]) -> Option<Meta> {
        self.entries.get(&Self::k(key)).map(|e| e.meta)
    }

    pub fn value(&self, key: &[u8]) -> Option<Bytes> {
        self.entries.get(&Self::k(key)).map(|e| e.value.clone())
    }

    pub fn meta_mut(&mut self, key: &[u8]) -> Option<&mut Meta> {
        self.entries.get_mut(&Self::k(key)).map(|e| &mut e.meta)
    }

    /// Writes a new version of `key`.
    pub fn put(&mut self, key: &[u8], value: Bytes, meta: Meta) {
        self.remove(key);
        self.live_bytes += Self::entry_cost(key.len(), value.len());
        if meta.expire_at_ms != 0 {
            self.volatile += 1;
        }
        self.entries.insert(Self::k(key), Entry { value, meta });
    }

    /// Changes the deadline (and version) of an existing key; false when absent.
    pub fn set_expire(&mut self, key: &[u8], expire_at_ms: u64, version: u64) -> bool {
        let Some(e) = self.entries.get_mut(&Self::k(key)) else {
            return false;
        };
        match (e.meta.expire_at_ms != 0, expire_at_ms != 0) {
            (false, true) => self.volatile += 1,
            (true, false) => self.volatile -= 1,
            _ => {}
        }
        e.meta.expire_at_ms = expire_at_ms;
        e.meta.version = version;
        true
    }

    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(&Self::k(key)) {
            Some(e) => {
                self.live_bytes -= Self::entry_cost(key.len(), e.value.len());
                if e.meta.expire_at_ms != 0 {
                    self.volatile -= 1;
                }
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.volatile = 0;
        self.live_bytes = 0;
    }

    /// Visits entries from `cursor` in cursor order until `count` were visited; returns the
    /// next cursor (0 when done). Every key present for the whole scan is visited once at least.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &Meta)) -> u64 {
        let mut last = None;
        for (seen, ((h, k), e)) in self.entries.range((cursor, Bytes::new())..).enumerate() {
            if seen >= count && Some(*h) != last {
                return *h;
            }
            f(k, &e.meta);
            last = Some(*h);
        }
        0
    }

    /// The `n`-th key in cursor order (for RANDOMKEY and sampling).
    pub fn nth_key(&self, n: usize) -> Option<(Bytes, Meta)> {
        self.entries
            .iter()
            .nth(n)
            .map(|((_, k), e)| (k.clone(), e.meta))
    }
}
