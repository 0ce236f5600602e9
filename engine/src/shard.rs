//! `Shard`: one core's keyspace (all its maps) and the semantics of every data command:
//! lazy expiry, versions, the memory budget and eviction, the active expiry cycle, compaction
//! steps, statistics.

use bytes::Bytes;

use crate::arena::{ACCESS_UNIT_MS, VERSION_MAX};
use crate::command::{Command, Cond, ExpireCond, Expiry, SetKind};
use crate::config::{EngineConfig, EvictionPolicy, MapConfig};
use crate::error::CommandError;
use crate::evict::{lfu_decayed, lfu_incremented, score, Rng, LFU_INIT};
use crate::glob::Glob;
use crate::map::{Handle, Layout, Map, MapStats, Meta};
use crate::maps::Maps;
use crate::number::{incr_by_float, parse_i64};
use crate::reply::Reply;
use crate::slot::Slot;
use crate::DEFAULT_MAP;

/// Low bits of a version that hold a counter; the high bits hold the write time in ms.
pub const VERSION_COUNTER_BITS: u32 = 20;

/// What one call of the active expiry cycle did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Keys with a deadline that were examined.
    pub sampled: usize,
    /// Keys deleted because they had expired.
    pub expired: usize,
    /// Sampling rounds run (a new round runs while more than 25% of a sample expired).
    pub rounds: usize,
    /// True when the budget ran out while rounds were still finding many expired keys.
    pub budget_exhausted: bool,
}

/// What one compaction step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of live entries copied out of tables being compacted.
    pub bytes_moved: usize,
    /// Entries copied.
    pub entries_moved: usize,
    /// Tables freed.
    pub tables_freed: usize,
    /// Bytes returned to the allocator by freed tables.
    pub bytes_freed: usize,
    /// Bytes of entries walked, live or dead (what the budget bounds; at least `bytes_moved`).
    pub bytes_walked: usize,
    /// True when some table still waits for compaction.
    pub more: bool,
}

/// Counters and gauges of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Keys in all maps.
    pub keys: u64,
    /// Keys with a TTL in all maps.
    pub keys_with_ttl: u64,
    /// Keys in the default map (DBSIZE).
    pub default_map_keys: u64,
    /// Maps present.
    pub maps: u64,
    /// Bytes accounted against `maxmemory`.
    pub used_memory_bytes: u64,
    /// Bytes of live entries in tables (keys, values, per-entry metadata) and out-of-line
    /// values.
    pub live_bytes: u64,
    /// Bytes of dead entry versions still in tables (reclaimed by compaction).
    pub garbage_bytes: u64,
    /// Bytes of arena tables as allocated.
    pub table_bytes: u64,
    /// Bytes of the index as allocated.
    pub index_bytes: u64,
    /// The budget; 0 = unlimited.
    pub maxmemory_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
}

/// A resumable position of `Shard::scan_slot` (maps in name order, then index buckets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotCursor {
    map: Bytes,
    generation: u32,
    bucket: usize,
}

/// One entry as a migration or replication stream carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    pub map: Bytes,
    pub key: Bytes,
    pub value: Bytes,
    /// The entry's version (versions only grow; the higher one wins).
    pub version: u64,
    /// Absolute deadline in ms; 0 = none.
    pub expire_at_ms: u64,
}

/// One shard: owned by one core, `Send`, never shared.
#[derive(Debug)]
pub struct Shard {
    config: EngineConfig,
    maps: Maps,
    last_version: u64,
    rng: Rng,
    evicted_keys: u64,
    expired_keys: u64,
    /// Sum of the maps' `accounted` bytes: the memory in use, kept up to date by `sync` so that
    /// a write's budget check is O(1) whatever the number of maps.
    mem_total: u64,
    /// When `Some`, evicted `(map, key)` pairs are recorded here (for models and replication).
    eviction_log: Option<Vec<(Bytes, Bytes)>>,
    /// When `Some`, keys the shard removes on its own (evicted, or expired when found by a
    /// lookup or the active expiry cycle) are recorded here, for a slot migration to tee as
    /// deletes (`record_removals`). `None` (the default) costs one branch per such removal.
    removal_log: Option<Vec<(Bytes, Bytes)>>,
}

/// A resumable position of `Shard::drop_slot_step`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotDropCursor {
    map: Bytes,
    bucket: usize,
}

/// A write's deadline: absolute, or an `Expiry` still to resolve against the map's config
/// (with the command name for the error text).
#[derive(Clone, Copy, Debug)]
enum Deadline {
    At(u64),
    Resolve(Expiry, &'static str),
}

impl Deadline {
    fn resolve(self, map_cfg: &MapConfig, now_ms: u64) -> Result<u64, CommandError> {
        match self {
            Deadline::At(at) => Ok(at),
            Deadline::Resolve(expiry, cmd) => Shard::deadline(expiry, None, map_cfg, now_ms, cmd),
        }
    }
}

/// The LFU settings an access needs, copied out of the config so that they can be used while a
/// map is borrowed.
#[derive(Clone, Copy, Debug)]
struct LfuParams {
    log_factor: u32,
    decay_minutes: u32,
    /// The shard's policy is LFU.
    shard_lfu: bool,
}

impl LfuParams {
    /// True when an access must update the LFU counter: the shard's policy or the map's own
    /// policy (for its `max_keys` / `max_bytes`) is LFU. No other policy reads the counter, so
    /// the others skip its random draw and arithmetic; as in Redis, counters are then not
    /// maintained until an LFU policy is set (Redis reinterprets its `lru` field instead).
    fn counts(self, map_cfg: &MapConfig) -> bool {
        self.shard_lfu || map_cfg.eviction == Some(EvictionPolicy::AllkeysLfu)
    }

    /// The counter after an access at `now_ms` (decayed, then incremented by chance), or the
    /// stored one unchanged when no policy in force reads it (`counts` from `counts`).
    fn touched(self, counts: bool, lfu: u8, access_ms: u64, now_ms: u64, rng: &mut Rng) -> u8 {
        if !counts {
            return lfu;
        }
        lfu_incremented(
            lfu_decayed(lfu, access_ms, now_ms, self.decay_minutes),
            self.log_factor,
            rng,
        )
    }
}

/// `now + ms`, capped at `i64::MAX` (deadlines are reported as signed Redis integers).
fn deadline_after(now_ms: u64, ms: u64) -> u64 {
    now_ms.saturating_add(ms).min(i64::MAX as u64)
}

fn access_floor(ms: u64) -> u64 {
    ms - ms % ACCESS_UNIT_MS
}

impl Shard {
    /// A shard with `config` (call `EngineConfig::validate` first; invalid limits are clamped).
    pub fn new(config: EngineConfig) -> Shard {
        let rng = Rng::new(config.seed);
        Shard {
            config,
            maps: Maps::default(),
            last_version: 0,
            mem_total: 0,
            rng,
            evicted_keys: 0,
            expired_keys: 0,
            eviction_log: None,
            removal_log: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sets the memory budget in bytes (0 = unlimited).
    pub fn set_maxmemory(&mut self, bytes: u64) {
        self.config.maxmemory_bytes = bytes;
        let cap = self.table_cap();
        for m in self.maps.values_mut() {
            m.set_table_cap(cap);
        }
    }

    /// Largest new table: `table_bytes_max`, or a sixteenth of a small memory budget.
    fn table_cap(&self) -> usize {
        match self.config.maxmemory_bytes {
            0 => self.config.table_bytes_max,
            max => usize::try_from(max / 16).unwrap_or(usize::MAX),
        }
    }

    /// Sets the shard-wide eviction policy.
    pub fn set_eviction_policy(&mut self, policy: EvictionPolicy) {
        self.config.maxmemory_policy = policy;
    }

    /// Starts (`true`) or stops recording evicted keys; see `take_evicted`.
    pub fn record_evictions(&mut self, on: bool) {
        self.eviction_log = if on { Some(Vec::new()) } else { None };
    }

    /// The `(map, key)` pairs evicted since the last call (when recording).
    pub fn take_evicted(&mut self) -> Vec<(Bytes, Bytes)> {
        self.eviction_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Starts (`true`) or stops recording the keys the shard removes on its own: evicted by
    /// the memory policy, or deleted as expired (lazily by a lookup, or by `active_expire`).
    /// Keys deleted or overwritten by commands are not recorded. Starting when already on
    /// keeps what was recorded. See `take_removed`.
    pub fn record_removals(&mut self, on: bool) {
        match (on, self.removal_log.is_some()) {
            (true, false) => self.removal_log = Some(Vec::new()),
            (false, true) => self.removal_log = None,
            _ => {}
        }
    }

    /// True when removals were recorded since the last `take_removed`.
    pub fn has_removed(&self) -> bool {
        self.removal_log.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// The `(map, key)` pairs removed on the shard's own since the last call, in order (when
    /// recording; see `record_removals`).
    pub fn take_removed(&mut self) -> Vec<(Bytes, Bytes)> {
        self.removal_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Bytes accounted against `maxmemory`.
    pub fn used_memory(&self) -> u64 {
        debug_assert_eq!(
            self.mem_total,
            self.maps.values().map(Map::memory_bytes).sum::<u64>(),
            "memory accounting drifted"
        );
        self.mem_total
    }

    /// Brings the shard's memory total up to date with map `name` after a change.
    fn sync(&mut self, name: &[u8]) {
        if let Some(m) = self.maps.get_mut(name) {
            Self::sync_map(&mut self.mem_total, m);
        }
    }

    /// `sync` of a map already at hand (borrows only the total, so a caller holding the map
    /// does not look its name up again). Every change of a map's memory is followed by this
    /// (or `sync`) before the command returns: `execute` does not sync after the fact.
    fn sync_map(mem_total: &mut u64, m: &mut Map) {
        let now = m.memory_bytes();
        *mem_total = *mem_total - m.accounted + now;
        m.accounted = now;
    }

    /// Debug check after every command: each map's `accounted` is its memory and the total is
    /// their sum (i.e. no change of memory went without a `sync`).
    fn accounting_is_exact(&self) -> bool {
        self.maps.values().all(|m| m.accounted == m.memory_bytes())
            && self.mem_total == self.maps.values().map(|m| m.accounted).sum::<u64>()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> ShardStats {
        let mut s = ShardStats {
            maps: self.maps.len() as u64,
            used_memory_bytes: self.used_memory(),
            maxmemory_bytes: self.config.maxmemory_bytes,
            evicted_keys: self.evicted_keys,
            expired_keys: self.expired_keys,
            ..ShardStats::default()
        };
        for (name, m) in self.maps.iter() {
            s.keys += m.len() as u64;
            s.keys_with_ttl += m.volatile_len() as u64;
            s.live_bytes += m.live_bytes();
            s.garbage_bytes += m.garbage_bytes();
            s.table_bytes += m.table_bytes();
            s.index_bytes += m.index_bytes();
            s.hits += m.stats.hits;
            s.misses += m.stats.misses;
            if name.as_ref() == DEFAULT_MAP {
                s.default_map_keys = m.len() as u64;
            }
        }
        s
    }

    /// Statistics of one map (None when the map does not exist on this shard).
    pub fn map_stats(&self, map: &[u8]) -> Option<(u64, u64, MapStats)> {
        self.maps
            .get(map)
            .map(|m| (m.len() as u64, m.memory_bytes(), m.stats))
    }

    /// Version of a key for WATCH (None when absent/expired). Versions only grow.
    pub fn key_version(&mut self, map: &[u8], key: &[u8], now_ms: u64) -> Option<u64> {
        let v = self.lookup(map, key, now_ms, false).map(|m| m.version);
        self.sync(map);
        v
    }

    fn next_version(&mut self, now_ms: u64) -> u64 {
        Self::bump_version(&mut self.last_version, now_ms)
    }

    /// `next_version` on the field alone (for callers holding a map).
    /// Versions stay at most `VERSION_MAX` (2^63 - 1; the stored word's top bit is the entry's
    /// dead mark, see `arena`): the time part is capped at the year 2248 and a version that
    /// would pass the limit stays at it (only reachable when a peer sent `VERSION_MAX`).
    fn bump_version(last_version: &mut u64, now_ms: u64) -> u64 {
        let v = ((now_ms.min(VERSION_MAX >> VERSION_COUNTER_BITS)) << VERSION_COUNTER_BITS)
            .max(*last_version + 1)
            .min(VERSION_MAX);
        *last_version = v;
        v
    }

    fn layout(&self) -> Layout {
        Layout {
            table_bytes_min: self.config.table_bytes_min,
            table_bytes_max: self.config.table_bytes_max,
            outline_bytes_min: (self.config.table_bytes_max / 4).max(64),
            colliding_hash: self.config.colliding_hash_for_tests,
        }
    }

    /// Keys of `slot` in all maps of this shard.
    pub fn slot_key_count(&self, slot: Slot) -> u64 {
        self.maps.values().map(|m| m.slot_len(slot) as u64).sum()
    }

    /// Up to `count` keys of `slot` in `map`, from `cursor` (0 to start); returns the next
    /// cursor (0 when done). Bounded work per call; never scans other slots.
    pub fn slot_keys(
        &self,
        map: &[u8],
        slot: Slot,
        cursor: usize,
        count: usize,
    ) -> (usize, Vec<Bytes>) {
        self.maps
            .get(map)
            .map_or((0, Vec::new()), |m| m.slot_keys(slot, cursor, count))
    }

    /// Appends up to `max` entries of `slot` (all maps) from `cursor` to `out`; returns the next
    /// cursor, or `None` when the slot is done. Every key present in the slot for the whole
    /// scan is returned at least once (a rehash of a slot's index restarts that map's part);
    /// keys written or deleted meanwhile may or may not be. Bounded work per call.
    pub fn scan_slot(
        &self,
        slot: Slot,
        cursor: &SlotCursor,
        max: usize,
        out: &mut Vec<SlotEntry>,
    ) -> Option<SlotCursor> {
        let max = max.max(1);
        let mut taken = 0;
        let start = std::ops::Bound::Included(&cursor.map[..]);
        for (name, m) in self.maps.range_from(start) {
            let same = *name == cursor.map;
            let (generation, bucket) = if same {
                (cursor.generation, cursor.bucket)
            } else {
                (m.slot_generation(slot), 0)
            };
            let next = m.slot_scan(slot, generation, bucket, max - taken, |k, v, meta| {
                out.push(SlotEntry {
                    map: name.clone(),
                    key: Bytes::copy_from_slice(k),
                    value: v,
                    version: meta.version,
                    expire_at_ms: meta.expire_at_ms,
                });
                taken += 1;
            });
            if let Some((generation, bucket)) = next {
                return Some(SlotCursor {
                    map: name.clone(),
                    generation,
                    bucket,
                });
            }
            if taken >= max {
                // Continue with the next map (or finish) on the next call.
                let next_map = self
                    .maps
                    .range_from(std::ops::Bound::Excluded(&name[..]))
                    .next()
                    .map(|(n, m)| (n.clone(), m.slot_generation(slot)));
                return next_map.map(|(map, generation)| SlotCursor {
                    map,
                    generation,
                    bucket: 0,
                });
            }
        }
        None
    }

    /// Writes `key` with a given version (migration, replication): a no-op returning
    /// `Ok(false)` when the stored version is already at least `version`. Later local writes
    /// get larger versions. A version above `VERSION_MAX` (2^63 - 1) is refused with an
    /// error and changes nothing.
    pub fn put_versioned(
        &mut self,
        map: &[u8],
        key: &[u8],
        value: Bytes,
        expire_at_ms: u64,
        version: u64,
        now_ms: u64,
    ) -> Result<bool, CommandError> {
        if version > VERSION_MAX {
            return Err(CommandError::Other(format!(
                "version {version} out of range (at most 2^63 - 1)"
            )));
        }
        if let Some(m) = self.maps.get(map).and_then(|m| m.meta(key)) {
            if m.version >= version {
                return Ok(false);
            }
        }
        self.check_map_name(map)?;
        self.check_key(key)?;
        self.check_value_len(value.len() as u64)?;
        self.make_room(map, key, value.len(), expire_at_ms != 0, now_ms)?;
        self.last_version = self.last_version.max(version);
        let m = self.map_entry(map);
        let meta = Meta {
            expire_at_ms,
            version,
            access_ms: access_floor(now_ms),
            lfu: LFU_INIT,
            visited: false,
        };
        let stored = m.put(key, value, meta, true);
        self.sync(map);
        if stored {
            Ok(true)
        } else {
            Err(CommandError::MapFull)
        }
    }

    /// Deletes `key` if its stored version is older than `version` (a migrated or replicated
    /// delete); true when something was removed. Later local writes get larger versions. A
    /// version above `VERSION_MAX` (2^63 - 1) is ignored (nothing removed).
    pub fn delete_versioned(&mut self, map: &[u8], key: &[u8], version: u64) -> bool {
        if version > VERSION_MAX {
            return false;
        }
        self.last_version = self.last_version.max(version);
        let older = self
            .maps
            .get(map)
            .and_then(|m| m.meta(key))
            .is_some_and(|m| m.version < version);
        older && self.remove(map, key)
    }

    /// Removes every key of `slot` in every map; returns how many.
    pub fn drop_slot(&mut self, slot: Slot) -> usize {
        let mut removed = 0;
        for name in self.map_names() {
            loop {
                // Walk the whole slot by cursor before removing: `slot_keys` examines a bounded
                // number of buckets per call, so once the first buckets are emptied a call from
                // 0 can return no keys while keys remain further on (the net cluster driver
                // found 6902 of 9216 keys left behind after a migration).
                let mut keys = Vec::new();
                let mut cursor = 0;
                loop {
                    let (next, mut batch) = self.slot_keys(&name, slot, cursor, 1024);
                    keys.append(&mut batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                if keys.is_empty() {
                    break;
                }
                for k in keys {
                    if self.remove(&name, &k) {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// One bounded step of dropping `slot` (every map): removes up to `keys_max` of its keys
    /// from `cursor` on (start with `SlotDropCursor::default()`, pass the same cursor back);
    /// returns how many it removed and whether the slot has no key left. At most 8 index walks of `keys_max * 4 + 64`
    /// buckets each per call, so a large slot is dropped over several calls without
    /// stalling its core. Keys added to the slot meanwhile are dropped too (a walk that ends
    /// with keys left starts that map again).
    pub fn drop_slot_step(
        &mut self,
        slot: Slot,
        cursor: &mut SlotDropCursor,
        keys_max: usize,
    ) -> (usize, bool) {
        let keys_max = keys_max.max(1);
        let mut removed = 0;
        for _ in 0..8 {
            // The first map at or after the cursor's that still has keys of the slot.
            let found = self
                .maps
                .range_from(std::ops::Bound::Included(&cursor.map[..]))
                .find(|(_, m)| m.slot_len(slot) > 0)
                .map(|(n, _)| n.clone());
            let Some(name) = found else {
                if self.slot_key_count(slot) == 0 {
                    return (removed, true);
                }
                // Keys in a map before the cursor's (created after the walk passed it).
                *cursor = SlotDropCursor::default();
                continue;
            };
            if name != cursor.map {
                cursor.map = name.clone();
                cursor.bucket = 0;
            }
            let (next, keys) = self.slot_keys(&name, slot, cursor.bucket, keys_max - removed);
            for k in keys {
                if self.remove(&name, &k) {
                    removed += 1;
                }
            }
            // Removing never rehashes a slot's index, so the bucket cursor stays valid; at
            // the end of the index, the map is walked again only if keys remain in it.
            cursor.bucket = next;
            if removed >= keys_max {
                return (removed, self.slot_key_count(slot) == 0);
            }
        }
        (removed, self.slot_key_count(slot) == 0)
    }

    /// Names of the maps present on this shard.
    pub fn map_names(&self) -> Vec<Bytes> {
        self.maps.keys().cloned().collect()
    }

    fn map_config(&self, name: &[u8]) -> MapConfig {
        self.config.map_config(name)
    }

    fn map_entry(&mut self, name: &[u8]) -> &mut Map {
        if !self.maps.contains_key(name) {
            let cfg = self.map_config(name);
            self.maps.insert(
                Bytes::copy_from_slice(name),
                Map::new(name, cfg, self.layout()),
            );
            let cap = self.table_cap();
            if let Some(m) = self.maps.get_mut(name) {
                m.set_table_cap(cap);
            }
            self.sync(name);
        }
        self.maps.get_mut(name).expect("inserted above")
    }

    fn is_expired(meta: &Meta, cfg: &MapConfig, now_ms: u64) -> bool {
        Self::is_expired_idle(meta, cfg.max_idle_ms, now_ms)
    }

    fn is_expired_idle(meta: &Meta, max_idle_ms: u64, now_ms: u64) -> bool {
        // Redis: a key is expired when now > deadline.
        (meta.expire_at_ms != 0 && now_ms > meta.expire_at_ms)
            // Access times are floored to `ACCESS_UNIT_MS` (8 s): count from the end of that
            // unit, so a key is never treated as idle early (at most 8 s late).
            || (max_idle_ms != 0
                && now_ms.saturating_sub(meta.access_ms + ACCESS_UNIT_MS - 1) > max_idle_ms)
    }

    /// Finds a live key, deleting it lazily when expired or idle; `touch` updates the access
    /// time and the LFU counter (reads and writes touch, metadata queries do not).
    fn lookup(&mut self, map: &[u8], key: &[u8], now_ms: u64, touch: bool) -> Option<Meta> {
        self.lookup_handle(map, key, now_ms, touch).map(|(_, m)| m)
    }

    fn lookup_handle(
        &mut self,
        map: &[u8],
        key: &[u8],
        now_ms: u64,
        touch: bool,
    ) -> Option<(Handle, Meta)> {
        let lfu = self.lfu_params();
        let m = self.maps.get_mut(map)?;
        Self::live_entry(
            m,
            map,
            key,
            now_ms,
            touch.then_some((&mut self.rng, lfu)),
            &mut self.expired_keys,
            &mut self.mem_total,
            &mut self.removal_log,
        )
    }

    fn lfu_params(&self) -> LfuParams {
        LfuParams {
            log_factor: self.config.lfu_log_factor,
            decay_minutes: self.config.lfu_decay_minutes,
            shard_lfu: self.config.maxmemory_policy == EvictionPolicy::AllkeysLfu,
        }
    }

    /// `lookup_handle` in a map at hand (so that a read looks the map's name up once):
    /// lazy expiry (counted in `expired_keys`, memory synced into `mem_total`), and with
    /// `touch = Some((rng, lfu))` the access-time and LFU update.
    #[allow(clippy::too_many_arguments)]
    fn live_entry(
        m: &mut Map,
        map: &[u8],
        key: &[u8],
        now_ms: u64,
        touch: Option<(&mut Rng, LfuParams)>,
        expired_keys: &mut u64,
        mem_total: &mut u64,
        removal_log: &mut Option<Vec<(Bytes, Bytes)>>,
    ) -> Option<(Handle, Meta)> {
        let (h, meta) = m.find(key)?;
        if Self::is_expired(&meta, &m.config, now_ms) {
            m.remove(key);
            m.stats.expirations += 1;
            *expired_keys += 1;
            if let Some(log) = removal_log.as_mut() {
                log.push((Bytes::copy_from_slice(map), Bytes::copy_from_slice(key)));
            }
            Self::sync_map(mem_total, m);
            return None;
        }
        if let Some((rng, params)) = touch {
            let access = access_floor(now_ms);
            let lfu = params.touched(
                params.counts(&m.config),
                meta.lfu,
                meta.access_ms,
                now_ms,
                rng,
            );
            m.touch_at(h, access, lfu);
            return Some((
                h,
                Meta {
                    access_ms: access,
                    lfu,
                    visited: true,
                    ..meta
                },
            ));
        }
        Some((h, meta))
    }

    /// A read (touching the key), counting a hit or a miss; one lookup of the map's name.
    fn read(&mut self, map: &[u8], key: &[u8], now_ms: u64) -> Option<(Bytes, Meta)> {
        self.read_counted(map, key, now_ms, true)
    }

    /// Reads without counting a hit or miss (read-modify-write commands).
    fn read_for_write(&mut self, map: &[u8], key: &[u8], now_ms: u64) -> Option<(Bytes, Meta)> {
        self.read_counted(map, key, now_ms, false)
    }

    fn read_counted(
        &mut self,
        map: &[u8],
        key: &[u8],
        now_ms: u64,
        count: bool,
    ) -> Option<(Bytes, Meta)> {
        let lfu = self.lfu_params();
        let m = self.maps.get_mut(map)?;
        let found = Self::live_entry(
            m,
            map,
            key,
            now_ms,
            Some((&mut self.rng, lfu)),
            &mut self.expired_keys,
            &mut self.mem_total,
            &mut self.removal_log,
        );
        if let Some((h, meta)) = found {
            if count {
                m.stats.hits += 1;
            }
            Some((m.value_at(h), meta))
        } else {
            if count {
                m.stats.misses += 1;
            }
            None
        }
    }

    fn check_map_name(&self, map: &[u8]) -> Result<(), CommandError> {
        if map.len() > self.config.map_name_bytes_max {
            return Err(CommandError::Other(
                "map name exceeds maximum allowed size".to_owned(),
            ));
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), CommandError> {
        if key.len() > self.config.key_bytes_max {
            return Err(CommandError::KeyTooLong);
        }
        Ok(())
    }

    fn check_value_len(&self, len: u64) -> Result<(), CommandError> {
        if len > self.config.value_bytes_max as u64 {
            return Err(CommandError::StringTooLong);
        }
        Ok(())
    }

    /// Resolves a write's expiry to an absolute deadline (0 = none).
    fn deadline(
        expiry: Expiry,
        old: Option<&Meta>,
        map_cfg: &MapConfig,
        now_ms: u64,
        cmd: &str,
    ) -> Result<u64, CommandError> {
        Ok(match expiry {
            Expiry::Default => {
                if map_cfg.ttl_ms == 0 {
                    0
                } else {
                    deadline_after(now_ms, map_cfg.ttl_ms)
                }
            }
            Expiry::Keep => old.map_or(0, |m| m.expire_at_ms),
            Expiry::Persist => 0,
            Expiry::In(ms) => {
                let at = (now_ms as i64)
                    .checked_add(ms as i64)
                    .filter(|&v| v > 0)
                    .ok_or_else(|| CommandError::InvalidExpireTime(cmd.to_owned()))?;
                at as u64
            }
            Expiry::At(at) => at,
        })
    }

    /// Makes room for a write of `key` (`value_len` bytes, with or without TTL) in `map`:
    /// per-map limits first, then the shard's budget, reclaiming garbage and evicting by
    /// policy. Fails with `-OOM` (having changed no data, though keys may have been evicted)
    /// when nothing more can be evicted.
    fn make_room(
        &mut self,
        map: &[u8],
        key: &[u8],
        value_len: usize,
        ttl: bool,
        now_ms: u64,
    ) -> Result<(), CommandError> {
        // Fast path (one map lookup): no per-map limits, and the write fits the budget even at
        // the largest growth it could cause.
        let max = self.config.maxmemory_bytes;
        if let Some(m) = self.maps.get_mut(map) {
            if Self::fits_far_from_limits(self.mem_total, m, max, key.len(), value_len, ttl) {
                return Ok(());
            }
        }
        // Per-map limits (live bytes and key count).
        for _ in 0..1_000_000 {
            let Some(m) = self.maps.get(map) else { break };
            if m.config.max_keys == 0 && m.config.max_bytes == 0 {
                break;
            }
            let new_cost = m.entry_cost(key.len(), value_len, ttl);
            let old = m.meta(key);
            let old_cost = old.map_or(0, |o| {
                m.entry_cost(
                    key.len(),
                    m.value_len(key).unwrap_or(0),
                    o.expire_at_ms != 0,
                )
            });
            let over_keys =
                m.config.max_keys != 0 && old.is_none() && m.len() as u64 >= m.config.max_keys;
            let live = m.live_bytes() + m.len() as u64 * crate::map::INDEX_ESTIMATE_BYTES;
            let over_bytes = m.config.max_bytes != 0
                && live.saturating_sub(old_cost) + new_cost > m.config.max_bytes;
            if !over_keys && !over_bytes {
                break;
            }
            let policy = m.config.policy();
            if policy == EvictionPolicy::NoEviction
                || !self.evict_one(Some(map), policy, map, &[key], now_ms)
            {
                return Err(CommandError::OutOfMemory);
            }
        }
        // The shard budget.
        if max == 0 {
            return Ok(());
        }
        let ratio = self.config.compaction_garbage_ratio;
        for _ in 0..1_000_000 {
            self.sync(map);
            let growth = self.maps.get(map).map_or_else(
                || (self.config.table_bytes_min + value_len + key.len()) as u64 + 2048,
                |m| m.write_growth(key, value_len, ttl),
            );
            if self.used_memory() + growth <= max {
                return Ok(());
            }
            // Reclaim garbage first, with a lower bar under pressure than in the background.
            if self.reclaim(ratio / 2.0) {
                continue;
            }
            let policy = self.config.maxmemory_policy;
            if policy == EvictionPolicy::NoEviction
                || !self.evict_one(None, policy, map, &[key], now_ms)
            {
                return Err(CommandError::OutOfMemory);
            }
        }
        Err(CommandError::OutOfMemory)
    }

    /// `make_room` for a whole batch of writes to `map` (MSET): the per-map limits and the
    /// shard's budget are checked for all pairs together, evicting (never a key of the batch)
    /// until all of them fit, so that the writes that follow cannot fail: either every pair
    /// is written or the command fails with `-OOM` having written none.
    fn make_room_batch(
        &mut self,
        map: &[u8],
        pairs: &[(Bytes, Bytes)],
        ttl: bool,
        now_ms: u64,
    ) -> Result<(), CommandError> {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        for _ in 0..1_000_000 {
            let Some(m) = self.maps.get(map) else { break };
            if m.config.max_keys == 0 && m.config.max_bytes == 0 {
                break;
            }
            // Distinct keys; a repeated key's last value is the one that stays.
            let mut seen = std::collections::HashSet::new();
            let (mut new_keys, mut new_cost, mut old_cost) = (0u64, 0u64, 0u64);
            for (k, v) in pairs.iter().rev() {
                if !seen.insert(k) {
                    continue;
                }
                new_cost += m.entry_cost(k.len(), v.len(), ttl);
                match m.meta(k) {
                    None => new_keys += 1,
                    Some(o) => {
                        old_cost +=
                            m.entry_cost(k.len(), m.value_len(k).unwrap_or(0), o.expire_at_ms != 0);
                    }
                }
            }
            let over_keys = m.config.max_keys != 0
                && new_keys > 0
                && m.len() as u64 + new_keys > m.config.max_keys;
            let live = m.live_bytes() + m.len() as u64 * crate::map::INDEX_ESTIMATE_BYTES;
            let over_bytes = m.config.max_bytes != 0
                && live.saturating_sub(old_cost) + new_cost > m.config.max_bytes;
            if !over_keys && !over_bytes {
                break;
            }
            let policy = m.config.policy();
            if policy == EvictionPolicy::NoEviction
                || !self.evict_one(Some(map), policy, map, &keys, now_ms)
            {
                return Err(CommandError::OutOfMemory);
            }
        }
        if let Some(m) = self.maps.get(map) {
            if m.batch_growth(pairs, ttl).1 > m.free_table_ids() {
                // Not enough table ids for the batch (see `Map::can_append`).
                return Err(CommandError::MapFull);
            }
        }
        let max = self.config.maxmemory_bytes;
        if max == 0 {
            return Ok(());
        }
        let ratio = self.config.compaction_garbage_ratio;
        for _ in 0..1_000_000 {
            self.sync(map);
            let growth = if let Some(m) = self.maps.get(map) {
                m.batch_growth(pairs, ttl).0
            } else {
                let probe = Map::new(map, self.map_config(map), self.layout());
                probe.batch_growth(pairs, ttl).0 + probe.memory_bytes() + 2048
            };
            if self.used_memory() + growth <= max {
                return Ok(());
            }
            if self.reclaim(ratio / 2.0) {
                continue;
            }
            let policy = self.config.maxmemory_policy;
            if policy == EvictionPolicy::NoEviction
                || !self.evict_one(None, policy, map, &keys, now_ms)
            {
                return Err(CommandError::OutOfMemory);
            }
        }
        Err(CommandError::OutOfMemory)
    }

    /// Compacts one whole table somewhere if one has at least `ratio` garbage; true if memory
    /// was freed.
    fn reclaim(&mut self, ratio: f64) -> bool {
        let before = self.used_memory();
        let Some(name) = self
            .maps
            .iter()
            .find(|(_, m)| m.needs_compaction(ratio))
            .map(|(n, _)| n.clone())
        else {
            return false;
        };
        if let Some(m) = self.maps.get_mut(&name) {
            for _ in 0..1_000_000 {
                // Whole tables, within one write: the copies allocated before the old table
                // is freed are checked by the caller's loop, which evicts if still over.
                let step = m.compact_step(usize::MAX, usize::MAX, ratio, u64::MAX);
                if step.tables_freed > 0 || step.blocked || !m.needs_compaction(ratio) {
                    break;
                }
            }
        }
        self.sync(&name);
        self.used_memory() < before
    }

    /// Evicts one key chosen by `policy` from `only` (or any map); never a key being written
    /// (`protect`, keys of `protect_map`). Returns false when nothing is evictable.
    fn evict_one(
        &mut self,
        only: Option<&[u8]>,
        policy: EvictionPolicy,
        protect_map: &[u8],
        protect: &[&[u8]],
        now_ms: u64,
    ) -> bool {
        let samples = self.config.lru_samples;
        let decay = self.config.lfu_decay_minutes;
        let names: Vec<Bytes> = match only {
            Some(n) => vec![Bytes::copy_from_slice(n)],
            None => self.maps.keys().cloned().collect(),
        };
        let mut best: Option<(u64, Bytes, Bytes)> = None;
        for name in names {
            let Some(m) = self.maps.get_mut(&name) else {
                continue;
            };
            let pool = if policy.volatile_only() {
                m.volatile_len()
            } else {
                m.len()
            };
            if pool == 0 {
                continue;
            }
            if policy == EvictionPolicy::AllkeysSieve {
                let sz = m.memory_bytes();
                // The key being written is never the victim: mark it visited and move on.
                let guarded = |k: &Bytes| {
                    name.as_ref() == protect_map && protect.iter().any(|p| k.as_ref() == *p)
                };
                let mut victim = m.sieve_victim();
                for _ in 0..protect.len() {
                    match &victim {
                        Some(k) if guarded(k) => {
                            m.set_visited(k);
                            victim = m.sieve_victim();
                        }
                        _ => break,
                    }
                }
                if let Some(k) = victim {
                    // The largest map's SIEVE victim goes.
                    let s = u64::MAX - sz;
                    let guarded = guarded(&k);
                    if !guarded && best.as_ref().map_or(true, |b| s < b.0) {
                        best = Some((s, name.clone(), k));
                    }
                }
                continue;
            }
            let n = if m.config.lru_samples > 0 && only.is_some() {
                m.config.lru_samples
            } else {
                samples
            };
            let candidates: Vec<(Bytes, Meta)> = if policy.volatile_only() {
                // The walk is bounded per call and may meet only garbage: walk on a little.
                let mut c = Vec::new();
                for _ in 0..64 {
                    c = m.sample_volatile(n);
                    if !c.is_empty() {
                        break;
                    }
                }
                c
            } else {
                (0..n)
                    .filter_map(|_| m.random_entry(&mut self.rng))
                    .collect()
            };
            for (k, meta) in candidates {
                if name.as_ref() == protect_map && protect.iter().any(|p| k.as_ref() == *p) {
                    continue;
                }
                let s = score(policy, &meta, now_ms, decay);
                if best.as_ref().map_or(true, |b| s < b.0) {
                    best = Some((s, name.clone(), k));
                }
            }
        }
        let Some((_, name, key)) = best else {
            return false;
        };
        if let Some(m) = self.maps.get_mut(&name) {
            if m.remove(&key) {
                m.stats.evictions += 1;
                self.evicted_keys += 1;
                self.sync(&name);
                if let Some(log) = self.removal_log.as_mut() {
                    log.push((name.clone(), key.clone()));
                }
                if let Some(log) = self.eviction_log.as_mut() {
                    log.push((name, key));
                }
                return true;
            }
        }
        false
    }

    /// Stores `value` under `key` after making room, with deadline `expire_at_ms`; the LFU
    /// counter and visited bit of the version replaced (if any) are kept.
    fn store(
        &mut self,
        map: &[u8],
        key: &[u8],
        value: Bytes,
        expire_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), CommandError> {
        self.store_inner(
            map,
            key,
            value,
            Deadline::At(expire_at_ms),
            now_ms,
            false,
            false,
        )
    }

    /// `room_made`: `make_room_batch` already made room for this write. `touch_old`: the
    /// write has not looked the key up first (plain SET, MSET): the one index probe of
    /// `Map::upsert` also does what the lookup would have done to the version replaced, i.e.
    /// Redis's `lookupKeyWrite`: an expired (or idle) old version counts as an expiration and
    /// is replaced as if absent; a live one counts as an access (LFU counter incremented,
    /// visited bit set). Otherwise the LFU counter and visited bit of the version replaced
    /// (if any) are kept.
    ///
    /// When the map exists and the write is far from every limit, the map's name is looked
    /// up once for the whole write (deadline, budget check, upsert, memory sync).
    #[allow(clippy::too_many_arguments)]
    fn store_inner(
        &mut self,
        map: &[u8],
        key: &[u8],
        value: Bytes,
        deadline: Deadline,
        now_ms: u64,
        touch_old: bool,
        room_made: bool,
    ) -> Result<(), CommandError> {
        let value_len = value.len();
        let max = self.config.maxmemory_bytes;
        let lfu_params = self.lfu_params();
        let (m, expire_at_ms) = 'found: {
            // The deadline is resolved before the size checks (Redis checks it first).
            let at = if let Some(m) = self.maps.get_mut(map) {
                let at = deadline.resolve(&m.config, now_ms)?;
                Self::check_write(&self.config, map, key, value_len)?;
                // `make_room`'s fast path, on the map at hand.
                if room_made
                    || Self::fits_far_from_limits(
                        self.mem_total,
                        m,
                        max,
                        key.len(),
                        value_len,
                        at != 0,
                    )
                {
                    break 'found (m, at);
                }
                at
            } else {
                let at = deadline.resolve(&self.map_config(map), now_ms)?;
                Self::check_write(&self.config, map, key, value_len)?;
                at
            };
            if !room_made {
                self.make_room(map, key, value_len, at != 0, now_ms)?;
            }
            self.map_entry(map);
            let Some(m) = self.maps.get_mut(map) else {
                return Err(CommandError::OutOfMemory);
            };
            (m, at)
        };
        let version = Self::bump_version(&mut self.last_version, now_ms);
        let ratio = self.config.compaction_garbage_ratio;
        let rng = &mut self.rng;
        let access = access_floor(now_ms);
        let meta = Meta {
            expire_at_ms,
            version,
            access_ms: access,
            lfu: LFU_INIT,
            visited: false,
        };
        let max_idle_ms = m.config.max_idle_ms;
        let mut expired_old = false;
        let lfu_counts = lfu_params.counts(&m.config);
        let stored = m.upsert(key, value, meta, |old| {
            if !touch_old {
                (old.lfu, old.visited)
            } else if Self::is_expired_idle(old, max_idle_ms, now_ms) {
                expired_old = true;
                (LFU_INIT, false)
            } else {
                let lfu = lfu_params.touched(lfu_counts, old.lfu, old.access_ms, now_ms, rng);
                (lfu, true)
            }
        });
        if stored.is_none() {
            // The map has no table id left (see `Map::can_append`): nothing was changed
            // (but a new map may have been created: its memory is synced).
            Self::sync_map(&mut self.mem_total, m);
            return Err(CommandError::MapFull);
        }
        if expired_old {
            m.stats.expirations += 1;
            self.expired_keys += 1;
        }
        // Amortized garbage collection: when a map carries much garbage (at least `ratio` of
        // its table bytes), each write compacts a little: it moves up to twice its own size
        // `s` (key + value + 24) of live entries, and walks at most 4 times that (8 s, live or
        // dead: walking a dead entry costs a parse, its dead mark saying it is garbage), so a
        // write's share of compaction is bounded whatever the table holds.
        // Break-even: a table of T bytes with garbage ratio g takes at most
        // T / 8s (walk-bounded) + (1 - g) T / 2s (move-bounded) steps and frees g T, so each
        // step (one write, adding at most s) frees at least 8 g s / (5 - 4 g) >= s when
        // g >= 5/12; tables qualify at g >= `compaction_garbage_ratio` (0.5 by default), so
        // writes return memory at least as fast as they use it, even without background
        // `compact_step` calls. (Bounded by moved bytes only, the bound was g >= 1/3, but
        // one write could walk a whole table.)
        // Also bounded by the memory budget: this step can stop mid-table, with its copies
        // allocated beside the old table.
        if m.garbage_pressure(ratio) {
            let grow_max = match self.config.maxmemory_bytes {
                0 => u64::MAX,
                max => max.saturating_sub(self.mem_total - m.accounted + m.memory_bytes()),
            };
            let moved = (2 * (key.len() + value_len + 24)).max(128);
            m.compact_step(moved, 4 * moved, ratio, grow_max);
        }
        Self::sync_map(&mut self.mem_total, m);
        Ok(())
    }

    /// The size checks of a write, in Redis's order.
    fn check_write(
        config: &EngineConfig,
        map: &[u8],
        key: &[u8],
        value_len: usize,
    ) -> Result<(), CommandError> {
        if map.len() > config.map_name_bytes_max {
            return Err(CommandError::Other(
                "map name exceeds maximum allowed size".to_owned(),
            ));
        }
        if key.len() > config.key_bytes_max {
            return Err(CommandError::KeyTooLong);
        }
        if value_len as u64 > config.value_bytes_max as u64 {
            return Err(CommandError::StringTooLong);
        }
        Ok(())
    }

    /// `make_room`'s fast path: true when `m` has no per-map limits and the write fits the
    /// budget even at the largest growth it could cause (so no eviction, reclaim or exact
    /// estimate is needed). `m` is already synced: every change of memory syncs on the spot.
    fn fits_far_from_limits(
        mem_total: u64,
        m: &mut Map,
        max: u64,
        key_len: usize,
        value_len: usize,
        ttl: bool,
    ) -> bool {
        if m.config.max_keys != 0 || m.config.max_bytes != 0 {
            return false;
        }
        debug_assert_eq!(m.accounted, m.memory_bytes(), "map synced before a write");
        max == 0 || mem_total + m.write_growth_bound(key_len, value_len, ttl) <= max
    }

    fn remove(&mut self, map: &[u8], key: &[u8]) -> bool {
        let Some(m) = self.maps.get_mut(map) else {
            return false;
        };
        let removed = m.remove(key);
        self.sync(map);
        removed
    }

    /// Sets (or with 0 removes) `key`'s deadline. Changing a deadline in place costs nothing,
    /// but giving a key its first deadline or taking its last away writes a new version (the
    /// entry's size changes by the 8-byte deadline): that write makes room under the budget
    /// first like any other, so under `noeviction` with nothing to reclaim it fails with -OOM
    /// and changes nothing (Redis, which rewrites no entry, never refuses EXPIRE for memory).
    fn set_expire(
        &mut self,
        map: &[u8],
        key: &[u8],
        expire_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), CommandError> {
        let Some(m) = self.maps.get(map) else {
            return Ok(());
        };
        let Some(meta) = m.meta(key) else {
            return Ok(());
        };
        if meta.expire_at_ms == 0 || expire_at_ms == 0 {
            let value_len = m.value_len(key).unwrap_or(0);
            self.make_room(map, key, value_len, expire_at_ms != 0, now_ms)?;
        }
        let version = self.next_version(now_ms);
        let written = self
            .maps
            .get_mut(map)
            .is_some_and(|m| m.set_expire(key, expire_at_ms, version));
        self.sync(map);
        if written {
            Ok(())
        } else {
            // The key was there (make_room never evicts it): the new version found no table.
            Err(CommandError::MapFull)
        }
    }

    /// Executes one command at time `now_ms`.
    pub fn execute(&mut self, command: Command, now_ms: u64) -> Reply {
        let reply = match self.run(command, now_ms) {
            Ok(r) => r,
            Err(e) => Reply::Error(e),
        };
        // Every change of a map's memory (writes, removals, lazy expiry, eviction,
        // compaction) synced the total where it happened; nothing is left to sync here.
        debug_assert!(self.accounting_is_exact(), "memory accounting drifted");
        reply
    }

    fn run(&mut self, command: Command, now: u64) -> Result<Reply, CommandError> {
        let d = DEFAULT_MAP;
        Ok(match command {
            Command::Get { key } => match self.read(d, &key, now) {
                Some((v, _)) => Reply::Bulk(v),
                None => Reply::Nil,
            },
            Command::Set {
                key,
                value,
                cond,
                get,
                expiry,
                kind,
            } => self.set(d, &key, value, cond, get, expiry, kind, now)?,
            Command::GetDel { key } => match self.read(d, &key, now) {
                Some((v, _)) => {
                    self.remove(d, &key);
                    Reply::Bulk(v)
                }
                None => Reply::Nil,
            },
            Command::GetEx { key, expiry } => {
                let deadline = match expiry {
                    Expiry::In(_) | Expiry::At(_) => Some(Self::deadline(
                        expiry,
                        None,
                        &MapConfig::default(),
                        now,
                        "getex",
                    )?),
                    Expiry::Persist => Some(0),
                    Expiry::Default | Expiry::Keep => None,
                };
                match self.read(d, &key, now) {
                    None => Reply::Nil,
                    Some((v, meta)) => {
                        match deadline {
                            Some(at) if at != 0 && at <= now => {
                                self.remove(d, &key);
                            }
                            Some(at) if at != meta.expire_at_ms => {
                                self.set_expire(d, &key, at, now)?;
                            }
                            _ => {}
                        }
                        Reply::Bulk(v)
                    }
                }
            }
            Command::MGet { keys } => Reply::Array(
                keys.iter()
                    .map(|k| match self.read(d, k, now) {
                        Some((v, _)) => Reply::Bulk(v),
                        None => Reply::Nil,
                    })
                    .collect(),
            ),
            Command::MSet { pairs, nx } => {
                for (k, v) in &pairs {
                    self.check_key(k)?;
                    self.check_value_len(v.len() as u64)?;
                }
                if nx
                    && pairs
                        .iter()
                        .any(|(k, _)| self.lookup(d, k, now, false).is_some())
                {
                    return Ok(Reply::Int(0));
                }
                let ttl = Self::deadline(Expiry::Default, None, &self.map_config(d), now, "mset")?;
                // Room for every pair first, so that an MSET that cannot fit changes nothing
                // (keys may have been evicted) and one that can is written whole.
                self.make_room_batch(d, &pairs, ttl != 0, now)?;
                for (k, v) in pairs {
                    // Each write as a plain SET's: one index probe, lookupKeyWrite's work.
                    self.store_inner(d, &k, v, Deadline::At(ttl), now, true, true)?;
                }
                if nx {
                    Reply::Int(1)
                } else {
                    Reply::Ok
                }
            }
            Command::Append { key, value } => {
                let old = self.read_for_write(d, &key, now);
                let (new, expire) = if let Some((v, meta)) = old {
                    self.check_value_len(v.len() as u64 + value.len() as u64)?;
                    let mut n = Vec::with_capacity(v.len() + value.len());
                    n.extend_from_slice(&v);
                    n.extend_from_slice(&value);
                    (Bytes::from(n), meta.expire_at_ms)
                } else {
                    {
                        let ttl = Self::deadline(
                            Expiry::Default,
                            None,
                            &self.map_config(d),
                            now,
                            "append",
                        )?;
                        (value, ttl)
                    }
                };
                let len = new.len() as i64;
                self.store(d, &key, new, expire, now)?;
                Reply::Int(len)
            }
            Command::StrLen { key } => {
                Reply::Int(self.read(d, &key, now).map_or(0, |(v, _)| v.len() as i64))
            }
            Command::GetRange { key, start, end } => {
                let v = self.read(d, &key, now).map(|(v, _)| v).unwrap_or_default();
                Reply::Bulk(get_range(&v, start, end))
            }
            Command::SetRange { key, offset, value } => {
                let old = self.read_for_write(d, &key, now);
                let Some((v, meta)) = old else {
                    if value.is_empty() {
                        return Ok(Reply::Int(0));
                    }
                    self.check_value_len(offset.saturating_add(value.len() as u64))?;
                    let mut n = vec![0u8; offset as usize + value.len()];
                    n[offset as usize..].copy_from_slice(&value);
                    let ttl = Self::deadline(
                        Expiry::Default,
                        None,
                        &self.map_config(d),
                        now,
                        "setrange",
                    )?;
                    let len = n.len() as i64;
                    self.store(d, &key, Bytes::from(n), ttl, now)?;
                    return Ok(Reply::Int(len));
                };
                if value.is_empty() {
                    return Ok(Reply::Int(v.len() as i64));
                }
                self.check_value_len(offset.saturating_add(value.len() as u64))?;
                let end = offset as usize + value.len();
                let mut n = Vec::with_capacity(end.max(v.len()));
                n.extend_from_slice(&v);
                if n.len() < end {
                    n.resize(end, 0);
                }
                n[offset as usize..end].copy_from_slice(&value);
                let len = n.len() as i64;
                self.store(d, &key, Bytes::from(n), meta.expire_at_ms, now)?;
                Reply::Int(len)
            }
            Command::IncrBy { key, delta } => Reply::Int(self.incr(d, &key, delta, now)?),
            Command::IncrByFloat { key, delta } => {
                Reply::Bulk(self.incr_float(d, &key, &delta, now)?)
            }
            Command::Del { keys } => Reply::Int(self.del(d, &keys, now)),
            Command::Exists { keys } => Reply::Int(
                keys.iter()
                    .filter(|k| self.lookup(d, k, now, false).is_some())
                    .count() as i64,
            ),
            Command::Touch { keys } => Reply::Int(
                keys.iter()
                    .filter(|k| self.lookup(d, k, now, true).is_some())
                    .count() as i64,
            ),
            Command::Type { key } => {
                if self.lookup(d, &key, now, false).is_some() {
                    Reply::simple("string")
                } else {
                    Reply::simple("none")
                }
            }
            Command::Expire {
                key,
                when,
                millis,
                absolute,
                cond,
            } => self.expire(&key, when, millis, absolute, cond, now)?,
            Command::Ttl { key, millis } => match self.lookup(d, &key, now, false) {
                None => Reply::Int(-2),
                Some(m) if m.expire_at_ms == 0 => Reply::Int(-1),
                Some(m) => {
                    let ttl = m.expire_at_ms.saturating_sub(now) as i64;
                    Reply::Int(if millis {
                        ttl
                    } else {
                        ttl.saturating_add(500) / 1000
                    })
                }
            },
            Command::ExpireTime { key, millis } => match self.lookup(d, &key, now, false) {
                None => Reply::Int(-2),
                Some(m) if m.expire_at_ms == 0 => Reply::Int(-1),
                Some(m) => {
                    let at = m.expire_at_ms as i64;
                    Reply::Int(if millis {
                        at
                    } else {
                        at.saturating_add(500) / 1000
                    })
                }
            },
            Command::Persist { key } => match self.lookup(d, &key, now, false) {
                Some(m) if m.expire_at_ms != 0 => {
                    self.set_expire(d, &key, 0, now)?;
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            },
            Command::Rename { from, to, nx } => {
                let Some((v, meta)) = self.read_for_write(d, &from, now) else {
                    return Err(CommandError::NoSuchKey);
                };
                if from == to {
                    return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
                }
                if nx && self.lookup(d, &to, now, false).is_some() {
                    return Ok(Reply::Int(0));
                }
                self.check_key(&to)?;
                self.store(d, &to, v, meta.expire_at_ms, now)?;
                self.remove(d, &from);
                if nx {
                    Reply::Int(1)
                } else {
                    Reply::Ok
                }
            }
            Command::MemoryUsage { key } => match self.lookup(d, &key, now, false) {
                Some(meta) => {
                    let cost = self.maps.get(d).map_or(0, |m| {
                        m.entry_cost(
                            key.len(),
                            m.value_len(&key).unwrap_or(0),
                            meta.expire_at_ms != 0,
                        )
                    });
                    Reply::Int(cost as i64)
                }
                None => Reply::Nil,
            },
            Command::Scan {
                cursor,
                pattern,
                count,
                type_filter,
            } => {
                let only_none = type_filter
                    .as_ref()
                    .is_some_and(|t| !t.eq_ignore_ascii_case(b"string"));
                let (next, mut keys) = self.scan(d, cursor, pattern.as_deref(), count, now);
                if only_none {
                    keys.clear();
                }
                scan_reply(next, keys)
            }
            Command::Keys { pattern } => {
                let glob = Glob::new(&pattern);
                let mut out = Vec::new();
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.scan_glob(d, cursor, &glob, 1024, now);
                    out.extend(keys.into_iter().map(Reply::Bulk));
                    if out.len() > self.config.scan_keys_max {
                        return Err(CommandError::Other(format!(
                            "KEYS would return more than scan_keys_max ({}) keys; use SCAN",
                            self.config.scan_keys_max
                        )));
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                Reply::Array(out)
            }
            Command::RandomKey => self.random_key(d, now).map_or(Reply::Nil, Reply::Bulk),
            Command::DbSize => Reply::Int(self.maps.get(d).map_or(0, Map::len) as i64),
            Command::Flush { all } => {
                if all {
                    self.maps.clear();
                    self.mem_total = 0;
                } else if let Some(m) = self.maps.get_mut(d) {
                    m.clear();
                    self.sync(d);
                }
                Reply::Ok
            }
            Command::DmPut {
                map,
                key,
                value,
                expiry,
                cond,
            } => {
                let exists = self.lookup(&map, &key, now, false);
                match (cond, exists.is_some()) {
                    (Cond::Nx, true) => return Err(CommandError::KeyFound),
                    (Cond::Xx, false) => return Err(CommandError::KeyNotFound),
                    _ => {}
                }
                let cfg = self.map_config(&map);
                let at = Self::deadline(expiry, exists.as_ref(), &cfg, now, "dm.put")?;
                self.store(&map, &key, value, at, now)?;
                Reply::Ok
            }
            Command::DmGet { map, key } => match self.read(&map, &key, now) {
                Some((v, _)) => Reply::Bulk(v),
                None => return Err(CommandError::KeyNotFound),
            },
            Command::DmGetEntry { map, key } => match self.read(&map, &key, now) {
                Some((v, m)) => Reply::Map(vec![
                    (Reply::simple("value"), Reply::Bulk(v)),
                    (Reply::simple("ttl"), Reply::Int(m.expire_at_ms as i64)),
                    (Reply::simple("timestamp"), Reply::Int(m.write_ms() as i64)),
                    (Reply::simple("last_access"), Reply::Int(m.access_ms as i64)),
                ]),
                None => return Err(CommandError::KeyNotFound),
            },
            Command::DmDel { map, keys } => Reply::Int(self.del(&map, &keys, now)),
            Command::DmExpire { map, key, ttl_ms } => {
                if self.lookup(&map, &key, now, false).is_none() {
                    return Err(CommandError::KeyNotFound);
                }
                self.set_expire(&map, &key, deadline_after(now, ttl_ms), now)?;
                Reply::Ok
            }
            Command::DmIncr { map, key, delta } => Reply::Int(self.incr(&map, &key, delta, now)?),
            Command::DmIncrByFloat { map, key, delta } => {
                Reply::Bulk(self.incr_float(&map, &key, &delta, now)?)
            }
            Command::DmGetPut {
                map,
                key,
                value,
                expiry,
            } => {
                let old = self.read_for_write(&map, &key, now);
                let cfg = self.map_config(&map);
                let at = Self::deadline(expiry, None, &cfg, now, "dm.getput")?;
                self.store(&map, &key, value, at, now)?;
                old.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v))
            }
            Command::DmCas {
                map,
                key,
                expected,
                new,
                expiry,
            } => {
                let old = self.read_for_write(&map, &key, now);
                let matches = match &old {
                    None => expected.is_empty(),
                    Some((v, _)) => !expected.is_empty() && *v == expected,
                };
                if !matches {
                    return Ok(Reply::Int(0));
                }
                let cfg = self.map_config(&map);
                let at = Self::deadline(expiry, None, &cfg, now, "dm.cas")?;
                self.store(&map, &key, new, at, now)?;
                Reply::Int(1)
            }
            Command::DmLock {
                map, key, lease_ms, ..
            } => {
                if self.lookup(&map, &key, now, false).is_some() {
                    return Err(CommandError::LockNotAcquired);
                }
                let token = format!("{:016x}", self.rng.next_u64());
                let at = lease_ms.map_or(0, |l| deadline_after(now, l));
                self.store(&map, &key, Bytes::from(token.clone().into_bytes()), at, now)?;
                Reply::Simple(Bytes::from(token.into_bytes()))
            }
            Command::DmUnlock { map, key, token } => match self.read_for_write(&map, &key, now) {
                Some((v, _)) if v == token => {
                    self.remove(&map, &key);
                    Reply::Ok
                }
                _ => return Err(CommandError::NoSuchLock),
            },
            Command::DmLockLease {
                map,
                key,
                token,
                lease_ms,
            } => match self.read_for_write(&map, &key, now) {
                Some((v, _)) if v == token => {
                    self.set_expire(&map, &key, deadline_after(now, lease_ms), now)?;
                    Reply::Ok
                }
                _ => return Err(CommandError::NoSuchLock),
            },
            Command::DmScan {
                map,
                cursor,
                pattern,
                count,
            } => {
                let (next, keys) = self.scan(&map, cursor, pattern.as_deref(), count, now);
                scan_reply(next, keys)
            }
            Command::DmDestroy { map } => {
                if let Some(m) = self.maps.remove(&map) {
                    self.mem_total -= m.accounted;
                }
                Reply::Ok
            }
            Command::DmStats { map: Some(map) } => self.map_stats_reply(&map),
            Command::DmStats { map: None } => {
                let names: Vec<Bytes> = self.maps.keys().cloned().collect();
                Reply::Map(
                    names
                        .into_iter()
                        .map(|n| {
                            let r = self.map_stats_reply(&n);
                            (Reply::Bulk(n), r)
                        })
                        .collect(),
                )
            }
            Command::DmConfigSet { map, option } => {
                self.check_map_name(&map)?;
                let m = self.map_entry(&map);
                option.apply(&mut m.config);
                let cfg = m.config.clone();
                let name = String::from_utf8_lossy(&map).into_owned();
                self.config.maps.insert(name, cfg);
                Reply::Ok
            }
        })
    }

    fn map_stats_reply(&self, map: &[u8]) -> Reply {
        let (len, bytes, s) = self.map_stats(map).unwrap_or_default();
        let f = |name: &'static str, v: u64| (Reply::simple(name), Reply::Int(v as i64));
        Reply::Map(vec![
            f("length", len),
            f("memory", bytes),
            f("hits", s.hits),
            f("misses", s.misses),
            f("evictions", s.evictions),
            f("expirations", s.expirations),
        ])
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        map: &[u8],
        key: &Bytes,
        value: Bytes,
        cond: Cond,
        get: bool,
        expiry: Expiry,
        kind: SetKind,
        now: u64,
    ) -> Result<Reply, CommandError> {
        if cond == Cond::Always
            && !get
            && expiry != Expiry::Keep
            && matches!(kind, SetKind::Set | SetKind::SetEx | SetKind::PSetEx)
        {
            // Nothing depends on the old version: one index probe does the whole write (and
            // `store_inner` resolves the deadline first, as below).
            let deadline = Deadline::Resolve(expiry, kind.name());
            self.store_inner(map, key, value, deadline, now, true, false)?;
            return Ok(Reply::Ok);
        }
        // The deadline is checked before anything else, as in Redis.
        let probe = match self.maps.get(map) {
            Some(m) => Self::deadline(expiry, None, &m.config, now, kind.name())?,
            None => Self::deadline(expiry, None, &self.map_config(map), now, kind.name())?,
        };
        let old = if get {
            self.read(map, key, now)
        } else {
            // A write counts as an access (Redis's lookupKeyWrite touches LRU/LFU too).
            self.lookup(map, key, now, true).map(|m| (Bytes::new(), m))
        };
        let found = old.is_some();
        let old_reply = || {
            old.as_ref()
                .map_or(Reply::Nil, |(v, _)| Reply::Bulk(v.clone()))
        };
        if (cond == Cond::Nx && found) || (cond == Cond::Xx && !found) {
            return Ok(match kind {
                SetKind::SetNx => Reply::Int(0),
                _ if get => old_reply(),
                _ => Reply::Nil,
            });
        }
        let at = match expiry {
            Expiry::Keep => old.as_ref().map_or(0, |(_, m)| m.expire_at_ms),
            _ => probe,
        };
        self.store(map, key, value, at, now)?;
        Ok(match kind {
            SetKind::SetNx => Reply::Int(1),
            SetKind::GetSet => old_reply(),
            _ if get => old_reply(),
            _ => Reply::Ok,
        })
    }

    fn incr(&mut self, map: &[u8], key: &[u8], delta: i64, now: u64) -> Result<i64, CommandError> {
        let old = self.read_for_write(map, key, now);
        let (cur, expire) = match &old {
            Some((v, m)) => (
                parse_i64(v).ok_or(CommandError::NotInteger)?,
                m.expire_at_ms,
            ),
            None => (
                0,
                Self::deadline(Expiry::Default, None, &self.map_config(map), now, "incr")?,
            ),
        };
        let new = cur.checked_add(delta).ok_or(CommandError::Overflow)?;
        self.store(
            map,
            key,
            Bytes::from(new.to_string().into_bytes()),
            expire,
            now,
        )?;
        Ok(new)
    }

    fn incr_float(
        &mut self,
        map: &[u8],
        key: &[u8],
        delta: &[u8],
        now: u64,
    ) -> Result<Bytes, CommandError> {
        let old = self.read_for_write(map, key, now);
        let (cur, expire) = match &old {
            Some((v, m)) => (v.clone(), m.expire_at_ms),
            None => (
                Bytes::from_static(b"0"),
                Self::deadline(
                    Expiry::Default,
                    None,
                    &self.map_config(map),
                    now,
                    "incrbyfloat",
                )?,
            ),
        };
        let new = Bytes::from(incr_by_float(&cur, delta)?);
        self.store(map, key, new.clone(), expire, now)?;
        Ok(new)
    }

    fn del(&mut self, map: &[u8], keys: &[Bytes], now: u64) -> i64 {
        let mut n = 0;
        for k in keys {
            if self.lookup(map, k, now, false).is_some() && self.remove(map, k) {
                n += 1;
            }
        }
        n
    }

    fn expire(
        &mut self,
        key: &[u8],
        when: i64,
        millis: bool,
        absolute: bool,
        cond: ExpireCond,
        now: u64,
    ) -> Result<Reply, CommandError> {
        let d = DEFAULT_MAP;
        let name = match (millis, absolute) {
            (false, false) => "expire",
            (true, false) => "pexpire",
            (false, true) => "expireat",
            (true, true) => "pexpireat",
        };
        let bad = || CommandError::InvalidExpireTime(name.to_owned());
        let mut when = when;
        if !millis {
            when = when.checked_mul(1000).ok_or_else(bad)?;
        }
        if !absolute {
            when = when.checked_add(now as i64).ok_or_else(bad)?;
        }
        let Some(meta) = self.lookup(d, key, now, false) else {
            return Ok(Reply::Int(0));
        };
        let cur = meta.expire_at_ms;
        let has = cur != 0;
        let cur_i = cur as i64;
        let refuse = match cond {
            ExpireCond::Always => false,
            ExpireCond::Nx => has,
            ExpireCond::Xx => !has,
            ExpireCond::Gt => !has || when <= cur_i,
            ExpireCond::Lt => has && when >= cur_i,
            ExpireCond::LtXx => !has || when >= cur_i,
        };
        if refuse {
            return Ok(Reply::Int(0));
        }
        if when <= now as i64 {
            self.remove(d, key);
        } else {
            self.set_expire(d, key, when as u64, now)?;
        }
        Ok(Reply::Int(1))
    }

    fn scan(
        &mut self,
        map: &[u8],
        cursor: u64,
        pattern: Option<&[u8]>,
        count: usize,
        now: u64,
    ) -> (u64, Vec<Bytes>) {
        let glob = Glob::new(pattern.unwrap_or(b"*"));
        self.scan_glob(map, cursor, &glob, count, now)
    }

    fn scan_glob(
        &mut self,
        map: &[u8],
        cursor: u64,
        glob: &Glob,
        count: usize,
        now: u64,
    ) -> (u64, Vec<Bytes>) {
        let Some(m) = self.maps.get(map) else {
            return (0, Vec::new());
        };
        let cfg = m.config.clone();
        let mut keys = Vec::new();
        let mut expired = Vec::new();
        let next = m.scan(cursor, count.min(self.config.scan_keys_max), |k, meta| {
            if Self::is_expired(meta, &cfg, now) {
                expired.push(Bytes::copy_from_slice(k));
            } else if glob.matches(k) {
                keys.push(Bytes::copy_from_slice(k));
            }
        });
        for k in expired {
            self.lookup(map, &k, now, false);
        }
        (next, keys)
    }

    fn random_key(&mut self, map: &[u8], now: u64) -> Option<Bytes> {
        for _ in 0..100 {
            let len = self.maps.get(map)?.len() as u64;
            if len == 0 {
                return None;
            }
            let (k, _) = self.maps.get(map)?.random_entry(&mut self.rng)?;
            if self.lookup(map, &k, now, false).is_some() {
                return Some(k);
            }
        }
        None
    }

    /// Redis's active expiry cycle, bounded by `work_budget` sampled keys; returns what it did.
    ///
    /// Per map with keys that have a TTL: take `active_expire_samples` of them (walking the
    /// TTL chain with a cursor, as Redis walks its expires dictionary), delete the expired,
    /// and repeat while more than 25% of the sample had expired.
    pub fn active_expire(&mut self, now_ms: u64, work_budget: usize) -> ExpireReport {
        let mut report = ExpireReport::default();
        let per_round = self.config.active_expire_samples;
        let names: Vec<Bytes> = self.maps.keys().cloned().collect();
        for name in names {
            while let Some(m) = self.maps.get_mut(&name) {
                if m.volatile_len() == 0 {
                    break;
                }
                let room = work_budget - report.sampled;
                if room == 0 {
                    report.budget_exhausted = true;
                    return report;
                }
                report.rounds += 1;
                let sample = m.sample_volatile(per_round.min(room));
                let sampled = sample.len();
                let mut expired = 0;
                for (k, _) in sample {
                    report.sampled += 1;
                    // Count what the lookup expired, not what it did not find.
                    let before = self.expired_keys;
                    self.lookup(&name, &k, now_ms, false);
                    if self.expired_keys != before {
                        expired += 1;
                        report.expired += 1;
                    }
                }
                self.sync(&name);
                // Repeat while more than 25% of the sample had expired (Redis's rule).
                if sampled == 0 || expired * 4 <= sampled {
                    break;
                }
            }
        }
        report
    }

    /// One bounded step of compaction: walks at most about `byte_budget` bytes of entries, live
    /// or dead (a dead entry costs an index lookup, so a table of dead entries is work too),
    /// and so moves at most that many; returns what it did. The step can stop mid-table and
    /// the next call continues there; it never allocates a head table for the moved copies
    /// past `maxmemory` (it stops before such a move and leaves it to a later step, or to
    /// a write's `make_room`, which finishes the table). Works on tables whose garbage is at
    /// least `compaction_garbage_ratio` of their used bytes, never on a head table.
    pub fn compact_step(&mut self, byte_budget: usize) -> CompactReport {
        let ratio = self.config.compaction_garbage_ratio;
        let mut report = CompactReport::default();
        let mut budget = byte_budget;
        let names: Vec<Bytes> = self.maps.keys().cloned().collect();
        for name in names {
            let Some(m) = self.maps.get_mut(&name) else {
                continue;
            };
            while budget > 0 && m.needs_compaction(ratio) {
                let grow_max = match self.config.maxmemory_bytes {
                    0 => u64::MAX,
                    max => max.saturating_sub(self.mem_total - m.accounted + m.memory_bytes()),
                };
                let step = m.compact_step(budget, budget, ratio, grow_max);
                report.bytes_moved += step.moved;
                report.entries_moved += step.entries;
                report.tables_freed += step.tables_freed;
                report.bytes_freed += step.bytes_freed;
                report.bytes_walked += step.walked;
                if step.blocked {
                    break;
                }
                // Every walked byte is charged (moved bytes are walked bytes); a step that
                // only freed a table costs 1.
                budget = budget.saturating_sub(step.walked.max(1));
            }
            self.sync(&name);
            if budget == 0 {
                break;
            }
        }
        report.more = self.maps.values().any(|m| m.needs_compaction(ratio));
        report
    }
}

fn scan_reply(next: u64, keys: Vec<Bytes>) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::from(next.to_string().into_bytes())),
        Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
    ])
}

/// GETRANGE's index arithmetic, exactly as Redis's `getrangeCommand`.
fn get_range(v: &Bytes, start: i64, end: i64) -> Bytes {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Bytes::new();
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if end < 0 {
        end = 0;
    }
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return Bytes::new();
    }
    v.slice(start as usize..=end as usize)
}

/// Read-only access for the cluster's migration stream (`tessera_cluster::store`): no access-time
/// touch, no lazy expiry, no hit or miss counted, so teeing a write changes nothing here.
impl Shard {
    /// The stored entry of `key` in `map`, expired or not (the caller compares `expire_at_ms`
    /// with its clock); None when absent.
    pub fn peek_entry(&self, map: &[u8], key: &[u8]) -> Option<SlotEntry> {
        let (name, m) = self.maps.get_key_value(map)?;
        let (h, meta) = m.find(key)?;
        Some(SlotEntry {
            map: name.clone(),
            key: Bytes::copy_from_slice(key),
            value: m.value_at(h),
            version: meta.version,
            expire_at_ms: meta.expire_at_ms,
        })
    }

    /// The highest version this shard has issued or received: no stored entry has a higher one.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }
}

#[cfg(test)]
mod lfu_tests {
    use super::*;
    use crate::command::MapOption;

    const NOW: u64 = 1_700_000_000_000;

    fn lfu_after_reads(shard: &mut Shard, map: &[u8], reads: usize) -> u8 {
        let put = |map: &[u8]| Command::DmPut {
            map: Bytes::copy_from_slice(map),
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expiry: Expiry::Default,
            cond: Cond::Always,
        };
        assert_eq!(shard.execute(put(map), NOW), Reply::Ok);
        for _ in 0..reads {
            let get = Command::DmGet {
                map: Bytes::copy_from_slice(map),
                key: Bytes::from_static(b"k"),
            };
            assert!(matches!(shard.execute(get, NOW), Reply::Bulk(_)));
        }
        shard.maps.get(map).and_then(|m| m.meta(b"k")).unwrap().lfu
    }

    /// Reads keep the LFU counter when the shard's or the map's policy is LFU, and skip it
    /// (the counter stays at its initial value) under any other policy.
    #[test]
    fn lfu_counter_is_kept_only_when_a_policy_reads_it() {
        let mut lru = Shard::new(EngineConfig {
            maxmemory_policy: EvictionPolicy::AllkeysLru,
            ..EngineConfig::default()
        });
        assert_eq!(lfu_after_reads(&mut lru, b"m", 500), LFU_INIT);

        let mut lfu = Shard::new(EngineConfig {
            maxmemory_policy: EvictionPolicy::AllkeysLfu,
            ..EngineConfig::default()
        });
        assert!(lfu_after_reads(&mut lfu, b"m", 500) > LFU_INIT + 2);

        // The shard evicts by LRU, but the map's own limit evicts by LFU.
        let mut per_map = Shard::new(EngineConfig {
            maxmemory_policy: EvictionPolicy::AllkeysLru,
            ..EngineConfig::default()
        });
        let set = Command::DmConfigSet {
            map: Bytes::from_static(b"m"),
            option: MapOption::Eviction(EvictionPolicy::AllkeysLfu),
        };
        assert_eq!(per_map.execute(set, NOW), Reply::Ok);
        assert!(lfu_after_reads(&mut per_map, b"m", 500) > LFU_INIT + 2);
        assert_eq!(lfu_after_reads(&mut per_map, b"other", 500), LFU_INIT);
    }
}
