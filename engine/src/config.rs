//! Engine configuration: every limit of a shard as a documented field with its default, the
//! eviction policies, and the per-map (DMap) settings.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

const DEFAULT_MAP_NAME_LEN: usize = crate::DEFAULT_MAP.len();

/// What a shard does when a write would take it over `maxmemory_bytes`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Never evict: writes that need memory fail with `-OOM`.
    #[default]
    #[serde(rename = "noeviction", alias = "none")]
    NoEviction,
    /// Evict the least recently used key (sampled approximation, like Redis).
    AllkeysLru,
    /// Like `AllkeysLru` among keys that have a TTL only.
    VolatileLru,
    /// Evict the least frequently used key (Redis's logarithmic 8-bit counter with decay).
    AllkeysLfu,
    /// Among keys with a TTL, evict the one that expires soonest (sampled).
    VolatileTtl,
    /// SIEVE (Zhang et al., NSDI 2024): a hand sweeps entries in insertion order, clearing
    /// "visited" bits and evicting the first unvisited entry.
    AllkeysSieve,
}

impl EvictionPolicy {
    /// All policies, in a stable order (for benchmarks and tests).
    pub const ALL: [EvictionPolicy; 6] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::AllkeysLru,
        EvictionPolicy::VolatileLru,
        EvictionPolicy::AllkeysLfu,
        EvictionPolicy::VolatileTtl,
        EvictionPolicy::AllkeysSieve,
    ];

    /// Parses a Redis policy name (`noeviction`, `allkeys-lru`, ...), case-insensitively.
    /// The DMap short names `none`, `lru`, `lfu`, `sieve` are accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "noeviction" | "none" | "no-eviction" => EvictionPolicy::NoEviction,
            "allkeys-lru" | "lru" => EvictionPolicy::AllkeysLru,
            "volatile-lru" => EvictionPolicy::VolatileLru,
            "allkeys-lfu" | "lfu" => EvictionPolicy::AllkeysLfu,
            "volatile-ttl" => EvictionPolicy::VolatileTtl,
            "allkeys-sieve" | "sieve" => EvictionPolicy::AllkeysSieve,
            _ => return None,
        })
    }

    /// The Redis-style name (`CONFIG GET maxmemory-policy`).
    pub fn name(&self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllkeysLfu => "allkeys-lfu",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
            EvictionPolicy::AllkeysSieve => "allkeys-sieve",
        }
    }

    /// True when only keys with a TTL may be evicted.
    pub fn volatile_only(&self) -> bool {
        matches!(
            self,
            EvictionPolicy::VolatileLru | EvictionPolicy::VolatileTtl
        )
    }
}

/// Per-map (DMap) settings, Olric's eviction settings. All zero means "no limit".
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MapConfig {
    /// Default TTL in milliseconds applied to writes that give none. Default 0 (no TTL).
    pub ttl_ms: u64,
    /// A key not read or written for this many milliseconds is treated as expired (Olric's
    /// MaxIdleDuration). Access times are kept with 8-second granularity (the access clock
    /// shares a 32-bit word with the LFU counter, see `arena`): idleness counts from the end of
    /// the 8 s unit of the last access, so a key may live up to 8 s longer than this, never
    /// shorter. Default 0 (off).
    pub max_idle_ms: u64,
    /// Maximum number of keys of this map on this shard; a write of a new key beyond it evicts
    /// one by `eviction` (or fails with `-OOM` under `noeviction`). Default 0 (no limit).
    pub max_keys: u64,
    /// Maximum live bytes (keys, values, metadata) of this map on this shard; enforced like
    /// `max_keys`. Default 0 (no limit).
    pub max_bytes: u64,
    /// Policy used when `max_keys` or `max_bytes` is reached. Default `allkeys-lru`.
    pub eviction: Option<EvictionPolicy>,
    /// Number of keys sampled per eviction for the sampled policies; 0 uses the shard's
    /// `lru_samples`. Default 0.
    pub lru_samples: usize,
}

impl MapConfig {
    /// The policy for per-map limits.
    pub fn policy(&self) -> EvictionPolicy {
        self.eviction.unwrap_or(EvictionPolicy::AllkeysLru)
    }
}

/// Configuration of one shard's engine. Every limit is a field here.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Memory budget of one shard in bytes (arena tables as allocated, index, out-of-line
    /// values, per-map structures); 0 = unlimited. Default 0.
    pub maxmemory_bytes: u64,
    /// Eviction policy when a write would exceed `maxmemory_bytes`. Default `noeviction`.
    pub maxmemory_policy: EvictionPolicy,
    /// Largest key in bytes; longer keys get `-ERR key exceeds maximum allowed size`.
    /// Default 64 KiB.
    pub key_bytes_max: usize,
    /// Longest map (DMap) name in bytes; longer names get
    /// `-ERR map name exceeds maximum allowed size`. Default 256.
    pub map_name_bytes_max: usize,
    /// Largest value in bytes (also the limit for APPEND/SETRANGE results). Default 16 MiB.
    pub value_bytes_max: usize,
    /// Size of the first arena table of a map in bytes; each new table doubles up to
    /// `table_bytes_max`. Default 4 KiB.
    pub table_bytes_min: usize,
    /// Largest arena table in bytes. Values of at least `table_bytes_max / 4` bytes are stored
    /// out of line. Default 1 MiB. Must be at least `table_bytes_min` and at most 16 MiB.
    /// It also sets the size limit of one map on one shard: the index stores a location in 32
    /// bits (table id and offset), so a map can have at most `min(65536, 2^32 /
    /// table_bytes_max rounded up to a power of two)` tables at once (4096 tables, 4 GiB, with
    /// the default); a write past it gets `-ERR map is full on this shard` and changes nothing.
    pub table_bytes_max: usize,
    /// A table whose garbage is at least this fraction of its used bytes is compacted.
    /// Default 0.5. Must be in (0, 1]. While a map's garbage is at least this fraction of its
    /// table bytes, each write also compacts a little (moving at most twice, and walking at
    /// most 8 times, its own size plus 24 bytes); at a ratio of at least 5/12 that returns
    /// memory at least as fast as the writes use it (see `Shard::store_inner`).
    pub compaction_garbage_ratio: f64,
    /// Keys sampled per eviction round for the sampled policies (Redis `maxmemory-samples`).
    /// Default 5. Must be 1..=64.
    pub lru_samples: usize,
    /// Redis's `lfu-log-factor`. Default 10.
    pub lfu_log_factor: u32,
    /// Redis's `lfu-decay-time` in minutes. Default 1.
    pub lfu_decay_minutes: u32,
    /// Keys sampled per round of the active expiry cycle (Redis's 20). Default 20.
    pub active_expire_samples: usize,
    /// Seed of the shard's pseudo-random generator (sampling, RANDOMKEY, lock tokens).
    /// Default 0x7e55e7a.
    pub seed: u64,
    /// Largest COUNT a SCAN/DM.SCAN call honours, and the most keys KEYS returns (past it KEYS
    /// replies with an error pointing to SCAN). Default 10 000 000.
    pub scan_keys_max: usize,
    /// Testing knob: every key of every map gets the same hash, so each lookup must tell
    /// colliding keys apart by comparing stored keys. Never set it in production. Default false.
    pub colliding_hash_for_tests: bool,
    /// Per-map settings applied to all maps without an entry in `maps`.
    pub map_defaults: MapConfig,
    /// Per-map settings by map name.
    pub maps: BTreeMap<String, MapConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            maxmemory_bytes: 0,
            maxmemory_policy: EvictionPolicy::NoEviction,
            key_bytes_max: 64 * 1024,
            map_name_bytes_max: 256,
            value_bytes_max: 16 * 1024 * 1024,
            table_bytes_min: 4 * 1024,
            table_bytes_max: 1024 * 1024,
            compaction_garbage_ratio: 0.5,
            lru_samples: 5,
            lfu_log_factor: 10,
            lfu_decay_minutes: 1,
            active_expire_samples: 20,
            seed: 0x07e5_5e7a,
            scan_keys_max: 10_000_000,
            colliding_hash_for_tests: false,
            map_defaults: MapConfig::default(),
            maps: BTreeMap::new(),
        }
    }
}

/// A configuration that cannot be used, with the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("engine config field `{field}`: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { field, reason })
}

impl EngineConfig {
    /// Checks every field's constraints.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_bytes_max == 0 {
            return invalid("key_bytes_max", "must be at least 1");
        }
        if self.key_bytes_max > 512 * 1024 * 1024 {
            return invalid("key_bytes_max", "must be at most 512 MiB");
        }
        if self.map_name_bytes_max < DEFAULT_MAP_NAME_LEN {
            return invalid("map_name_bytes_max", "must fit the name `default`");
        }
        if self.value_bytes_max > 1 << 32 {
            return invalid("value_bytes_max", "must be at most 4 GiB");
        }
        if self.table_bytes_min < 256 {
            return invalid("table_bytes_min", "must be at least 256");
        }
        if self.table_bytes_max < self.table_bytes_min {
            return invalid("table_bytes_max", "must be at least table_bytes_min");
        }
        if self.table_bytes_max > 1 << 24 {
            return invalid("table_bytes_max", "must be at most 16 MiB");
        }
        if !(self.compaction_garbage_ratio > 0.0 && self.compaction_garbage_ratio <= 1.0) {
            return invalid("compaction_garbage_ratio", "must be in (0, 1]");
        }
        if self.lru_samples == 0 || self.lru_samples > 64 {
            return invalid("lru_samples", "must be in 1..=64");
        }
        if self.active_expire_samples == 0 {
            return invalid("active_expire_samples", "must be at least 1");
        }
        if self.scan_keys_max == 0 {
            return invalid("scan_keys_max", "must be at least 1");
        }
        for m in std::iter::once(&self.map_defaults).chain(self.maps.values()) {
            if m.lru_samples > 64 {
                return invalid("maps.lru_samples", "must be in 0..=64");
            }
        }
        Ok(())
    }

    /// The settings of map `name`.
    pub fn map_config(&self, name: &[u8]) -> MapConfig {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.maps.get(n))
            .unwrap_or(&self.map_defaults)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn policy_names_round_trip() {
        for p in EvictionPolicy::ALL {
            assert_eq!(EvictionPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(
            EvictionPolicy::parse("ALLKEYS-LRU"),
            Some(EvictionPolicy::AllkeysLru)
        );
        assert_eq!(EvictionPolicy::parse("bogus"), None);
    }

    #[test]
    fn invalid_fields_are_reported() {
        let c = EngineConfig {
            lru_samples: 0,
            ..EngineConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "lru_samples",
                ..
            })
        ));
        let c = EngineConfig {
            table_bytes_max: 100,
            ..EngineConfig::default()
        };
        assert!(c.validate().is_err());
        let c = EngineConfig {
            compaction_garbage_ratio: f64::NAN,
            ..EngineConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
