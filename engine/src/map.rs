//! `Map`: one map (DMap) on one shard: its arena tables, its u64 index partitioned by slot, its
//! out-of-line value slab, and the cursors that walk it (SCAN, compaction, the active expiry
//! sweep, the SIEVE hand).
//!
//! - Writes append a new version to the head table of one of two chains (entries with a TTL and
//!   entries without); the old version's bytes become garbage of their table.
//! - The index maps `xxh3_64(key, seed(map))` to a location packed into 4 bytes,
//!   `(table id << off_bits) | offset` (`Packed`; `off_bits` fits the table size); every
//!   lookup compares the stored key, so colliding hashes never alias two keys. The index is
//!   split per slot (one `HashTable` per slot that has keys), which gives per-slot key counts
//!   and bounded per-slot enumeration for free.
//! - A table whose last live entry goes away is freed at once; compaction copies the live
//!   entries of a table with enough garbage to the head of their chain and frees it. A head is
//!   never compacted.
//! - SCAN walks the index, slot by slot and bucket by bucket, like Redis walks its dict:
//!   compaction only rewrites locations in place, inserts and deletes never move other index
//!   entries, and a rehash of a slot's table bumps that slot's generation, which makes a scan
//!   restart that slot from its first bucket. So a key present for the whole scan is returned
//!   at least once whatever is written or compacted meanwhile, and the cursor only moves
//!   forward (slot, then bucket), so a scan ends.

use bytes::Bytes;
use hashbrown::HashTable;

use crate::arena::{
    entry_len, parse, Header, Parsed, Table, ACCESS_MASK, ACCESS_UNIT_MS, F_OUTLINE, F_TTL,
    F_VISITED,
};
use crate::config::MapConfig;
use crate::evict::Rng;
use crate::slot::{key_slot, Slot};
use crate::slot_pos::SlotPos;

/// Where an entry is, from `Map::find`, with the entry as parsed by the index probe (so reading
/// its value does not parse it again); valid until the map changes.
#[derive(Clone, Copy, Debug)]
pub struct Handle {
    loc: u64,
    parsed: Parsed,
}

/// What one `Map::compact_step` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStep {
    /// Bytes of live entries copied to a head table.
    pub moved: usize,
    /// Entries copied.
    pub entries: usize,
    /// Bytes of entries walked, live or dead (what `walk_budget` bounds).
    pub walked: usize,
    /// Tables freed (0 or 1).
    pub tables_freed: usize,
    /// Bytes returned to the allocator by the freed table.
    pub bytes_freed: usize,
    /// True when the step stopped before a move it could not make now: a new head table over
    /// `grow_max`, or no table id left. Calling again at once makes no progress.
    pub blocked: bool,
}

/// Metadata of one entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Absolute expiry deadline in ms since the epoch; 0 = none.
    pub expire_at_ms: u64,
    /// Ordered version (hybrid: write time in the high bits, a counter in the low 20).
    pub version: u64,
    /// Last access time in ms (coarse: a multiple of `ACCESS_UNIT_MS`, 8 s).
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

    /// `clock_t`: the latest access clock (in `ACCESS_UNIT_MS` units) the map has written,
    /// against which the stored clock (modulo 2^21) is made absolute again, the way Redis's
    /// `estimateObjectIdleTime` handles its wrapping 24-bit clock.
    fn from_header(h: &Header, clock_t: u64) -> Meta {
        let behind = u64::from((clock_t as u32).wrapping_sub(h.access_t) & ACCESS_MASK);
        Meta {
            expire_at_ms: h.expire_at_ms,
            version: h.version,
            access_ms: clock_t.saturating_sub(behind) * ACCESS_UNIT_MS,
            lfu: h.lfu,
            visited: h.flags & F_VISITED != 0,
        }
    }
}

/// Per-map statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
}

/// Table sizing and hashing of a map (from `EngineConfig`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub table_bytes_min: usize,
    pub table_bytes_max: usize,
    /// Values of at least this many bytes are stored out of line.
    pub outline_bytes_min: usize,
    /// Test mode: every key hashes to the same value.
    pub colliding_hash: bool,
}

/// SCAN cursor layout (56 bits): slot (14) | slot generation mod 1024 (10) | bucket (32).
const CURSOR_GEN_BITS: u32 = 10;
const CURSOR_BUCKET_BITS: u32 = 32;

/// Bytes charged per entry for its index slot: an upper estimate (hashbrown buckets of a 4-byte
/// location and a control byte are 11.4 bytes per entry at the load factor just after growth,
/// 7/16); used only for estimates, the real allocation is measured.
pub const INDEX_ESTIMATE_BYTES: u64 = 16;

#[derive(Debug)]
struct SlotIndex {
    slot: Slot,
    table: HashTable<Packed>,
    /// Bumped whenever `table` may rehash (grow or rehash in place).
    generation: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    seq: u64,
    off: usize,
}

/// A position where a live entry was found by a walk.
struct Found {
    id: u32,
    off: usize,
    parsed: Parsed,
}

/// One map's entries on one shard.
#[derive(Debug)]
pub struct Map {
    tables: Vec<Option<Table>>,
    free_ids: Vec<u32>,
    /// Table ids in increasing `seq`.
    order: Vec<u32>,
    next_seq: u64,
    /// Head table id per chain: 0 = without TTL, 1 = with TTL.
    heads: [Option<u32>; 2],
    next_size: [usize; 2],
    slab: Vec<Option<Bytes>>,
    slab_free: Vec<u32>,
    slab_bytes: u64,
    slots: Vec<SlotIndex>,
    slot_pos: SlotPos,
    len: usize,
    volatile: usize,
    live_bytes: u64,
    /// Bytes of dead entries still in tables (the sum of the tables' `used - live`).
    garbage: u64,
    table_bytes: u64,
    index_bytes: u64,
    layout: Layout,
    seed: u64,
    compacting: Option<(u32, usize)>,
    /// Largest new table right now (the layout's maximum, lowered under a small budget).
    table_cap: usize,
    sweep: Cursor,
    hand: Cursor,
    /// Bits of the offset in a packed index location (see `Packed`).
    off_bits: u32,
    /// Most tables this map can have at once (`table_ids_max(off_bits)`).
    table_ids_max: usize,
    /// Latest access clock (`ACCESS_UNIT_MS` units) written to an entry (entries store it
    /// modulo 2^21).
    clock_t: u64,
    pub config: MapConfig,
    pub stats: MapStats,
    /// `memory_bytes()` as last added to the shard's total (kept by the shard).
    pub(crate) accounted: u64,
}

/// An index slot: a location packed into 4 bytes, `(table id << off_bits) | offset`, so a
/// hashbrown bucket costs 5 bytes (4 + 1 control byte). `off_bits` is the map's
/// `offset_bits(table_bytes_max)`; the remaining `32 - off_bits` bits number the tables,
/// which caps a map's tables on one shard at 2^32 bytes (4 GiB) of table space (see
/// `table_ids_max`). A table larger than `table_bytes_max` (made for one entry bigger than
/// that) holds that one entry only, at offset 0, so every offset fits.
type Packed = u32;

/// Most tables a map can have at once whatever the table size (table ids are at most 16
/// bits).
const TABLE_IDS_MAX: usize = 1 << 16;

/// Largest table size a map uses whatever its layout says (`table_bytes_max`'s limit).
const TABLE_BYTES_LIMIT: usize = 1 << 24;

/// Bits of a table offset in a packed location: enough for every offset of a table of at
/// most `table_bytes_max` bytes.
fn offset_bits(table_bytes_max: usize) -> u32 {
    table_bytes_max.max(2).next_power_of_two().trailing_zeros()
}

/// Most tables a map whose locations use `off_bits` offset bits can have at once: the ids
/// that fit the other `32 - off_bits` bits, at most `TABLE_IDS_MAX`. With the default
/// 1 MiB tables, 4096 tables: 4 GiB of tables per map per shard.
pub fn table_ids_max(off_bits: u32) -> usize {
    TABLE_IDS_MAX.min(1 << (32 - off_bits))
}

/// A location in full: table id in the high 32 bits, offset in the low 32 (what `Handle`
/// carries); only the index stores the packed form.
fn loc(id: u32, off: usize) -> u64 {
    debug_assert!(u32::try_from(off).is_ok());
    (u64::from(id) << 32) | off as u64
}

fn loc_parts(l: u64) -> (u32, usize) {
    ((l >> 32) as u32, (l & 0xFFFF_FFFF) as usize)
}

fn pack(l: u64, off_bits: u32) -> Packed {
    let (id, off) = loc_parts(l);
    // Table ids are below `table_ids_max` and offsets below 2^off_bits (see `Packed`); a
    // location that does not fit would alias another entry.
    assert!(
        off >> off_bits == 0 && u64::from(id) << off_bits >> 32 == 0,
        "location fits 32 bits"
    );
    (id << off_bits) | off as u32
}

fn unpack(p: Packed, off_bits: u32) -> u64 {
    loc(p >> off_bits, (p & ((1 << off_bits) - 1)) as usize)
}

fn table(tables: &[Option<Table>], id: u32) -> &Table {
    tables[id as usize]
        .as_ref()
        .expect("index points at a live table")
}

fn parsed_at(tables: &[Option<Table>], l: u64) -> (&Table, Parsed) {
    let (id, off) = loc_parts(l);
    let t = table(tables, id);
    (t, parse(&t.data, off).expect("index points at an entry"))
}

/// `a == b` for the index probe's key comparison: keys of 8 to 16 bytes (the common size)
/// are compared as two overlapping 8-byte words, inline, instead of by a `memcmp` call.
#[inline]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        let word =
            |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

fn key_at(tables: &[Option<Table>], l: u64) -> &[u8] {
    let (t, p) = parsed_at(tables, l);
    p.key(&t.data)
}

impl Map {
    pub fn new(name: &[u8], config: MapConfig, mut layout: Layout) -> Map {
        // `EngineConfig::validate` refuses tables over 16 MiB; an unvalidated layout is clamped
        // so that every offset fits a packed index location.
        layout.table_bytes_max = layout.table_bytes_max.min(TABLE_BYTES_LIMIT);
        layout.table_bytes_min = layout.table_bytes_min.min(layout.table_bytes_max);
        Map {
            tables: Vec::new(),
            free_ids: Vec::new(),
            order: Vec::new(),
            next_seq: 1,
            heads: [None, None],
            next_size: [layout.table_bytes_min; 2],
            slab: Vec::new(),
            slab_free: Vec::new(),
            slab_bytes: 0,
            slots: Vec::new(),
            slot_pos: SlotPos::default(),
            len: 0,
            volatile: 0,
            live_bytes: 0,
            garbage: 0,
            table_bytes: 0,
            index_bytes: 0,
            layout,
            seed: xxhash_rust::xxh3::xxh3_64(name),
            compacting: None,
            table_cap: layout.table_bytes_max,
            sweep: Cursor::default(),
            hand: Cursor::default(),
            off_bits: offset_bits(layout.table_bytes_max),
            table_ids_max: table_ids_max(offset_bits(layout.table_bytes_max)),
            clock_t: 0,
            config,
            stats: MapStats::default(),
            accounted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn volatile_len(&self) -> usize {
        self.volatile
    }

    /// Bytes of live entries in tables (keys, values or slab ids, headers) plus out-of-line
    /// values.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes + self.slab_bytes
    }

    /// Bytes of garbage in tables.
    pub fn garbage_bytes(&self) -> u64 {
        debug_assert_eq!(
            self.garbage,
            self.tables
                .iter()
                .flatten()
                .map(|t| t.garbage() as u64)
                .sum::<u64>()
        );
        self.garbage
    }

    /// True when garbage is at least `ratio` of the table bytes in use and more than one
    /// table's worth: writes then do a little compaction themselves.
    pub fn garbage_pressure(&self, ratio: f64) -> bool {
        self.garbage > self.table_cap as u64
            && self.garbage as f64 >= ratio * (self.garbage + self.live_bytes) as f64
    }

    /// Allocated bytes of arena tables.
    pub fn table_bytes(&self) -> u64 {
        self.table_bytes
    }

    /// Allocated bytes of the index.
    pub fn index_bytes(&self) -> u64 {
        self.index_bytes
    }

    /// Every byte this map holds: tables as allocated, index, slab, bookkeeping vectors.
    pub fn memory_bytes(&self) -> u64 {
        let vecs = self.tables.capacity() * std::mem::size_of::<Option<Table>>()
            + (self.free_ids.capacity() + self.order.capacity() + self.slab_free.capacity()) * 4
            + self.slab.capacity() * std::mem::size_of::<Option<Bytes>>()
            + self.slots.capacity() * std::mem::size_of::<SlotIndex>()
            + self.slot_pos.allocation_size();
        self.table_bytes + self.index_bytes + self.slab_bytes + vecs as u64 + 256
    }

    /// Bytes an entry of these sizes occupies (table bytes plus an index estimate).
    pub fn entry_cost(&self, key_len: usize, value_len: usize, ttl: bool) -> u64 {
        let outline = value_len >= self.layout.outline_bytes_min;
        entry_len(key_len, value_len, ttl, outline) as u64
            + if outline { value_len as u64 } else { 0 }
            + INDEX_ESTIMATE_BYTES
    }

    /// Bytes of memory a write of this size would add now: a new table if the head lacks room
    /// (with what the `tables`/`order` vectors grow by: missing that let a PEXPIRE go 32 bytes
    /// over maxmemory, found by the model test), an out-of-line value, an index estimate.
    pub fn write_growth(&self, key: &[u8], value_len: usize, ttl: bool) -> u64 {
        let key_len = key.len();
        let outline = value_len >= self.layout.outline_bytes_min;
        let total = entry_len(key_len, value_len, ttl, outline);
        let chain = usize::from(ttl);
        let room = self.heads[chain].map_or(0, |id| table(&self.tables, id).room());
        let head_empty = self.heads[chain].is_some_and(|id| table(&self.tables, id).live == 0);
        let table_growth = if room >= total {
            0
        } else {
            // A full head with nothing live is freed when the new table comes.
            let freed = if head_empty {
                self.heads[chain].map_or(0, |id| table(&self.tables, id).allocated() as u64)
            } else {
                0
            };
            // The new table and what the `tables` and `order` vectors grow by.
            self.append_growth(chain, total).saturating_sub(freed)
        };
        let slab =
            if outline && self.slab_free.is_empty() && self.slab.len() == self.slab.capacity() {
                (self.slab.capacity().max(4) * std::mem::size_of::<Option<Bytes>>()) as u64
            } else {
                0
            };
        table_growth + if outline { value_len as u64 + slab } else { 0 } + self.index_growth(key)
    }

    /// An upper bound of `write_growth` that needs no index lookup: a new head table, the
    /// out-of-line value, and for the index the whole current index plus the bookkeeping a new
    /// slot could reallocate (no single insert grows the index by more). Used to skip the
    /// exact estimate when the budget is far away.
    pub fn write_growth_bound(&self, key_len: usize, value_len: usize, ttl: bool) -> u64 {
        let outline = value_len >= self.layout.outline_bytes_min;
        let total = entry_len(key_len, value_len, ttl, outline);
        let chain = usize::from(ttl);
        let table = self.next_size[chain].max(total) as u64
            + (self.tables.capacity().max(4) * std::mem::size_of::<Option<Table>>()) as u64
            + (self.order.capacity().max(4) * 4) as u64;
        let index = self.index_bytes
            + (self.slots.capacity().max(4) * std::mem::size_of::<SlotIndex>()) as u64
            + self.slot_pos.growth_bound(1)
            + 512;
        let slab = (self.slab.capacity().max(4) * std::mem::size_of::<Option<Bytes>>()) as u64;
        table + if outline { value_len as u64 + slab } else { 0 } + index
    }

    /// Bytes the index would grow by when `key` is inserted (exact for a slot table that
    /// doubles, an upper estimate for a new slot).
    fn index_growth(&self, key: &[u8]) -> u64 {
        let slot = key_slot(key);
        if let Some(p) = self.slot_pos.get(slot) {
            let t = &self.slots[p as usize].table;
            // Only an insert grows a full table (`upsert` reserves nothing for an overwrite);
            // whether the key exists is not looked up here, so for an existing key in a full
            // table this is an upper bound.
            if t.len() < t.capacity() {
                0
            } else {
                (t.allocation_size() as u64).max(64) + 64
            }
        } else {
            let vec_growth = if self.slots.len() == self.slots.capacity() {
                (self.slots.capacity().max(4) * std::mem::size_of::<SlotIndex>()) as u64
            } else {
                0
            };
            128 + vec_growth + self.slot_pos.growth_bound(1)
        }
    }

    /// Upper bound of the bytes of memory a batch of writes (MSET's pairs, in order, all
    /// with or all without a TTL) would add now, and of the table ids it would take: the
    /// appends are simulated against the head table's room and the table size sequence; the
    /// index is bounded by a new table for every slot table the batch could fill.
    pub fn batch_growth(&self, pairs: &[(Bytes, Bytes)], ttl: bool) -> (u64, usize) {
        let chain = usize::from(ttl);
        let mut room = self.heads[chain].map_or(0, |id| table(&self.tables, id).room());
        let mut next = self.next_size[chain];
        let (mut bytes, mut new_tables, mut slab_pushes) = (0u64, 0usize, 0usize);
        let mut per_slot: std::collections::HashMap<Slot, usize> = std::collections::HashMap::new();
        for (k, v) in pairs {
            let outline = v.len() >= self.layout.outline_bytes_min;
            let total = entry_len(k.len(), v.len(), ttl, outline);
            if room >= total {
                room -= total;
            } else {
                let size = next.max(total);
                bytes += size as u64;
                new_tables += 1;
                room = size - total;
                next = (next * 2).min(self.table_cap);
            }
            if outline {
                bytes += v.len() as u64;
                slab_pushes += 1;
            }
            *per_slot.entry(key_slot(k)).or_default() += 1;
        }
        // hashbrown's allocation for `n` items, generously: buckets for n * 8/7 rounded up to
        // a power of two, 5 bytes each (4-byte location and a control byte), plus alignment
        // and the trailing control group.
        let index_alloc = |n: usize| ((n * 8 / 7 + 1).next_power_of_two().max(4) * 5 + 64) as u64;
        let mut new_slots = 0;
        for (slot, n) in per_slot {
            if let Some(p) = self.slot_pos.get(slot) {
                let t = &self.slots[p as usize].table;
                // Upper bound: every pair counted as an insert.
                if t.len() + n >= t.capacity() {
                    bytes += index_alloc(t.len() + n + 1);
                }
            } else {
                new_slots += 1;
                bytes += index_alloc(n + 1) + 128;
            }
        }
        // Bookkeeping vectors that may reallocate (each at most doubles per push past its
        // capacity; bounded by the final length at twice the element size).
        let vec_growth = |len: usize, cap: usize, add: usize, elem: usize| -> u64 {
            if add == 0 || len + add <= cap {
                0
            } else {
                (2 * (len + add).max(4) * elem) as u64
            }
        };
        bytes += vec_growth(
            self.slots.len(),
            self.slots.capacity(),
            new_slots,
            std::mem::size_of::<SlotIndex>(),
        );
        bytes += self.slot_pos.growth_bound(new_slots);
        bytes += vec_growth(
            self.tables.len(),
            self.tables.capacity(),
            new_tables,
            std::mem::size_of::<Option<Table>>(),
        );
        bytes += vec_growth(self.order.len(), self.order.capacity(), new_tables, 4);
        bytes += vec_growth(
            self.slab.len(),
            self.slab.capacity(),
            slab_pushes,
            std::mem::size_of::<Option<Bytes>>(),
        );
        (bytes, new_tables)
    }

    /// Table ids still available to new tables.
    pub fn free_table_ids(&self) -> usize {
        self.free_ids.len() + self.table_ids_max.saturating_sub(self.tables.len())
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        if self.layout.colliding_hash {
            0x5EED
        } else {
            xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)
        }
    }

    /// Location of the current version of `key`.
    fn locate(&self, key: &[u8]) -> Option<u64> {
        self.locate_parsed(key).map(|(l, _)| l)
    }

    /// Location of the current version of `key` and the entry there as parsed for the key
    /// comparison of the index probe (one parse per lookup instead of one per use).
    #[inline]
    fn locate_parsed(&self, key: &[u8]) -> Option<(u64, Parsed)> {
        let bits = self.off_bits;
        let pos = self.slot_pos.get(key_slot(key))?;
        let tables = &self.tables;
        let mut hit = None;
        self.slots[pos as usize].table.find(self.hash(key), |&p| {
            let l = unpack(p, bits);
            let (t, pe) = parsed_at(tables, l);
            let same = key_eq(pe.key(&t.data), key);
            if same {
                hit = Some((l, pe));
            }
            same
        })?;
        hit
    }

    /// Decoded metadata of a stored header.
    fn meta_of(&self, h: &Header) -> Meta {
        Meta::from_header(h, self.clock_t)
    }

    /// The stored form of an access time (`ACCESS_UNIT_MS` units modulo 2^21); advances the
    /// map's clock.
    fn access_raw(&mut self, access_ms: u64) -> u32 {
        let t = access_ms / ACCESS_UNIT_MS;
        self.clock_t = self.clock_t.max(t);
        (t as u32) & ACCESS_MASK
    }

    fn parsed(&self, l: u64) -> (&Table, Parsed) {
        parsed_at(&self.tables, l)
    }

    fn value_of(&self, t: &Table, p: &Parsed) -> Bytes {
        if p.outline() {
            self.slab[p.slab_id(&t.data) as usize]
                .clone()
                .expect("slab entry of a live value")
        } else {
            Bytes::copy_from_slice(p.inline_value(&t.data))
        }
    }

    /// Finds `key`: a handle (valid until the next change of this map) and its metadata.
    pub fn find(&self, key: &[u8]) -> Option<(Handle, Meta)> {
        let (loc, parsed) = self.locate_parsed(key)?;
        Some((Handle { loc, parsed }, self.meta_of(&parsed.header)))
    }

    /// The value at a handle from `find` (the entry is not parsed again: the handle's table
    /// and offsets are still valid because the map has not changed since `find`; patching
    /// metadata in place with `touch_at` moves nothing).
    pub fn value_at(&self, h: Handle) -> Bytes {
        let (id, _) = loc_parts(h.loc);
        self.value_of(table(&self.tables, id), &h.parsed)
    }

    /// Updates access time, LFU counter and the visited bit in place at a handle.
    pub fn touch_at(&mut self, h: Handle, access_ms: u64, lfu: u8) {
        let (id, off) = loc_parts(h.loc);
        let access = self.access_raw(access_ms);
        if let Some(t) = self.tables[id as usize].as_mut() {
            t.set_lfu_access_visited(off, lfu, access);
        }
    }

    /// Sets the SIEVE visited bit of `key` (no-op when absent).
    pub fn set_visited(&mut self, key: &[u8]) {
        if let Some(l) = self.locate(key) {
            let (id, off) = loc_parts(l);
            if let Some(t) = self.tables[id as usize].as_mut() {
                t.set_visited(off, true);
            }
        }
    }

    pub fn meta(&self, key: &[u8]) -> Option<Meta> {
        let (_, p) = self.locate_parsed(key)?;
        Some(self.meta_of(&p.header))
    }

    pub fn value(&self, key: &[u8]) -> Option<Bytes> {
        let (l, p) = self.locate_parsed(key)?;
        Some(self.value_of(table(&self.tables, loc_parts(l).0), &p))
    }

    /// Value length of `key`.
    pub fn value_len(&self, key: &[u8]) -> Option<usize> {
        Some(self.locate_parsed(key)?.1.value_len)
    }

    /// Borrowing read of the value and metadata (no copy for inline values).
    pub fn with_value<R>(&self, key: &[u8], visit: impl FnOnce(&[u8], &Meta) -> R) -> Option<R> {
        let (at, p) = self.locate_parsed(key)?;
        let t = table(&self.tables, loc_parts(at).0);
        let meta = self.meta_of(&p.header);
        if p.outline() {
            let v = self.slab[p.slab_id(&t.data) as usize].as_ref()?;
            Some(visit(v, &meta))
        } else {
            Some(visit(p.inline_value(&t.data), &meta))
        }
    }

    /// Updates access time, LFU counter and the visited bit in place.
    pub fn touch(&mut self, key: &[u8], access_ms: u64, lfu: u8) {
        if let Some(l) = self.locate(key) {
            let (id, off) = loc_parts(l);
            let access = self.access_raw(access_ms);
            if let Some(t) = self.tables[id as usize].as_mut() {
                t.set_lfu_access_visited(off, lfu, access);
            }
        }
    }

    /// Caps the size of new tables (the shard lowers it when its memory budget is small, so
    /// that one table is never a large part of the budget).
    pub fn set_table_cap(&mut self, cap: usize) {
        self.table_cap = cap.clamp(self.layout.table_bytes_min, self.layout.table_bytes_max);
        for s in &mut self.next_size {
            *s = (*s).min(self.table_cap);
        }
    }

    fn alloc_table(&mut self, chain: usize, min: usize) -> Option<u32> {
        if self.free_ids.is_empty() && self.tables.len() >= self.table_ids_max {
            return None;
        }
        // The old head stops being written; free it if nothing in it is live any more.
        if let Some(old) = self.heads[chain].take() {
            if table(&self.tables, old).live == 0 {
                self.free_table(old);
            }
        }
        let size = self.next_size[chain].max(min);
        self.next_size[chain] = (self.next_size[chain] * 2).min(self.table_cap);
        let t = Table::new(self.next_seq, size, chain == 1);
        self.next_seq += 1;
        self.table_bytes += t.allocated() as u64;
        let id = if let Some(id) = self.free_ids.pop() {
            self.tables[id as usize] = Some(t);
            id
        } else {
            self.tables.push(Some(t));
            (self.tables.len() - 1) as u32
        };
        self.order.push(id);
        self.heads[chain] = Some(id);
        Some(id)
    }

    /// True when a write of this size can be placed (a table id is free or the head has room).
    pub fn can_append(&self, key_len: usize, value_len: usize, ttl: bool) -> bool {
        let outline = value_len >= self.layout.outline_bytes_min;
        let total = entry_len(key_len, value_len, ttl, outline);
        let chain = usize::from(ttl);
        self.heads[chain].is_some_and(|id| table(&self.tables, id).room() >= total)
            || !self.free_ids.is_empty()
            || self.tables.len() < self.table_ids_max
    }

    fn free_table(&mut self, id: u32) {
        if let Some(t) = self.tables[id as usize].take() {
            self.table_bytes -= t.allocated() as u64;
            self.garbage -= t.garbage() as u64;
            if let Some(p) = self.order.iter().position(|&x| x == id) {
                self.order.remove(p);
            }
            self.free_ids.push(id);
            for h in &mut self.heads {
                if *h == Some(id) {
                    *h = None;
                }
            }
            if self.compacting.is_some_and(|(c, _)| c == id) {
                self.compacting = None;
            }
        }
    }

    /// Appends an entry to the head of its chain; returns its location, or `None` when the
    /// map has no table id left (`table_ids_max` tables).
    fn append(
        &mut self,
        header: &Header,
        key: &[u8],
        value: &[u8],
        value_len: usize,
        slab: Option<u32>,
    ) -> Option<u64> {
        let chain = usize::from(header.flags & F_TTL != 0);
        let total = entry_len(key.len(), value_len, chain == 1, slab.is_some());
        let id = match self.heads[chain] {
            Some(id) if table(&self.tables, id).room() >= total => id,
            _ => self.alloc_table(chain, total)?,
        };
        let t = self.tables[id as usize].as_mut().expect("head exists");
        let off = t.append(header, key, value, value_len, slab);
        self.live_bytes += total as u64;
        Some(loc(id, off))
    }

    /// Marks the entry at `l` garbage (in the table's accounting and with the dead mark in its
    /// header, so walks skip it without an index probe) and releases its slab value; frees its
    /// table when it holds nothing live and is not a head.
    /// `p` is the entry at `l` as parsed by the index probe that found it (not parsed again).
    fn retire_parsed(&mut self, l: u64, p: &Parsed) {
        let (id, off) = loc_parts(l);
        let slab = {
            let t = table(&self.tables, id);
            p.outline().then(|| p.slab_id(&t.data))
        };
        if let Some(s) = slab {
            if let Some(b) = self.slab[s as usize].take() {
                self.slab_bytes -= b.len() as u64;
            }
            self.slab_free.push(s);
        }
        self.live_bytes -= p.total as u64;
        self.garbage += p.total as u64;
        self.len -= 1;
        if p.header.flags & F_TTL != 0 {
            self.volatile -= 1;
        }
        let t = self.tables[id as usize].as_mut().expect("live table");
        t.live -= p.total;
        t.set_dead(off);
        if t.live == 0 && !self.heads.contains(&Some(id)) {
            self.free_table(id);
        }
    }

    fn slot_index_mut(&mut self, slot: Slot) -> usize {
        if let Some(p) = self.slot_pos.get(slot) {
            return p as usize;
        }
        self.slots.push(SlotIndex {
            slot,
            table: HashTable::new(),
            generation: 0,
        });
        let p = self.slots.len() - 1;
        self.slot_pos.insert(slot, p as u32);
        debug_assert_eq!(self.slot_pos.len(), self.slots.len());
        p
    }

    /// Writes a new version of `key` with `meta`; with `keep_stats` the LFU counter and the
    /// visited bit of the old version (if any) are kept instead of `meta`'s. Returns false
    /// (changing nothing) when the map has no table id left; see `can_append`.
    pub fn put(&mut self, key: &[u8], value: Bytes, meta: Meta, keep_stats: bool) -> bool {
        let (lfu, visited) = (meta.lfu, meta.visited);
        self.upsert(key, value, meta, |old| {
            if keep_stats {
                (old.lfu, old.visited)
            } else {
                (lfu, visited)
            }
        })
        .is_some()
    }

    /// Writes a new version of `key` with `meta`: the new version is appended first, then the
    /// key's index slot is found (one probe; an overwrite points it at the new version and
    /// reserves nothing) or, for a new key, inserted (a second probe that compares no keys,
    /// and the only case that grows the index); the old version (if any) is retired.
    /// `merge(old)` is called with the metadata of the version being replaced and returns the
    /// LFU counter and visited bit the new version takes (patched in place; `meta`'s are kept
    /// when there is no old version).
    ///
    /// Returns `None` (changing nothing) when the map has no table id left (see
    /// `can_append`), otherwise `Some(old metadata)`.
    pub fn upsert(
        &mut self,
        key: &[u8],
        value: Bytes,
        meta: Meta,
        merge: impl FnOnce(&Meta) -> (u8, bool),
    ) -> Option<Option<Meta>> {
        let bits = self.off_bits;
        if !self.can_append(key.len(), value.len(), meta.expire_at_ms != 0) {
            return None;
        }
        let outline = value.len() >= self.layout.outline_bytes_min;
        let mut flags = 0;
        if meta.expire_at_ms != 0 {
            flags |= F_TTL;
        }
        if meta.visited {
            flags |= F_VISITED;
        }
        if outline {
            flags |= F_OUTLINE;
        }
        let header = Header {
            flags,
            lfu: meta.lfu,
            access_t: self.access_raw(meta.access_ms),
            version: meta.version,
            expire_at_ms: meta.expire_at_ms,
        };
        let value_len = value.len();
        // The new version goes in first (it is not in the index yet, so the probe below can
        // never match it); nothing in the index moves while tables are appended to.
        let new_loc = if outline {
            let id = self.slab_free.pop();
            let l = self.append(
                &header,
                key,
                &[],
                value_len,
                Some(id.unwrap_or(self.slab.len() as u32)),
            );
            let Some(l) = l else {
                if let Some(id) = id {
                    self.slab_free.push(id);
                }
                return None;
            };
            self.slab_bytes += value_len as u64;
            match id {
                Some(id) => self.slab[id as usize] = Some(value),
                None => self.slab.push(Some(value)),
            }
            l
        } else {
            self.append(&header, key, &value, value_len, None)?
        };
        self.len += 1;
        if meta.expire_at_ms != 0 {
            self.volatile += 1;
        }
        let hash = self.hash(key);
        let seed = self.seed;
        let colliding = self.layout.colliding_hash;
        let pos = self.slot_index_mut(key_slot(key));
        let tables = &self.tables;
        let si = &mut self.slots[pos];
        // The probe's key comparison parses the entry it finds; that parse is kept for the
        // old version's metadata and its retirement below. An overwrite only rewrites the
        // slot's location: nothing is reserved, so it never grows or rehashes the index.
        let mut old_parsed = None;
        let found = si.table.find_mut(hash, |&p| {
            let (t, pe) = parsed_at(tables, unpack(p, bits));
            let same = key_eq(pe.key(&t.data), key);
            if same {
                old_parsed = Some(pe);
            }
            same
        });
        let old = if let Some(slot) = found {
            let o = unpack(*slot, bits);
            *slot = pack(new_loc, bits);
            Some(o)
        } else {
            let idx = &mut si.table;
            if idx.len() == idx.capacity() {
                // The insert grows or rehashes the table: scans restart the slot.
                si.generation = si.generation.wrapping_add(1);
            }
            let before = idx.allocation_size() as u64;
            idx.insert_unique(hash, pack(new_loc, bits), |&p| {
                if colliding {
                    0x5EED
                } else {
                    xxhash_rust::xxh3::xxh3_64_with_seed(key_at(tables, unpack(p, bits)), seed)
                }
            });
            let after = idx.allocation_size() as u64;
            self.index_bytes = self.index_bytes + after - before;
            None
        };
        let old_meta = old.map(|o| {
            let op = old_parsed.expect("the probe parsed the entry it matched");
            let old_meta = self.meta_of(&op.header);
            let (lfu, visited) = merge(&old_meta);
            let (id, off) = loc_parts(new_loc);
            let t = self.tables[id as usize].as_mut().expect("head exists");
            t.set_lfu_access(off, lfu, header.access_t);
            t.set_visited(off, visited);
            self.retire_parsed(o, &op);
            old_meta
        });
        Some(old_meta)
    }

    /// Changes the deadline and version of an existing key (in place when both the old and
    /// the new deadline exist, otherwise by writing a new version). False when absent.
    pub fn set_expire(&mut self, key: &[u8], expire_at_ms: u64, version: u64) -> bool {
        let Some(l) = self.locate(key) else {
            return false;
        };
        let (t, p) = self.parsed(l);
        let has = p.header.flags & F_TTL != 0;
        if has && expire_at_ms != 0 {
            let (id, off) = loc_parts(l);
            let t = self.tables[id as usize].as_mut().expect("live table");
            t.set_expire(off, expire_at_ms);
            t.set_version(off, version);
            return true;
        }
        let value = self.value_of(t, &p);
        let mut meta = self.meta_of(&p.header);
        meta.expire_at_ms = expire_at_ms;
        meta.version = version;
        self.put(key, value, meta, false)
    }

    pub fn remove(&mut self, key: &[u8]) -> bool {
        let bits = self.off_bits;
        let slot = key_slot(key);
        let Some(pos) = self.slot_pos.get(slot) else {
            return false;
        };
        let hash = self.hash(key);
        let tables = &self.tables;
        let idx = &mut self.slots[pos as usize].table;
        let before = idx.allocation_size() as u64;
        let mut found = None;
        let Ok(entry) = idx.find_entry(hash, |&p| {
            let (t, pe) = parsed_at(tables, unpack(p, bits));
            let same = key_eq(pe.key(&t.data), key);
            if same {
                found = Some(pe);
            }
            same
        }) else {
            return false;
        };
        let (p, _) = entry.remove();
        let l = unpack(p, bits);
        let empty = idx.is_empty();
        let after = if empty {
            0
        } else {
            idx.allocation_size() as u64
        };
        self.index_bytes = self.index_bytes + after - before;
        if empty {
            let pos = pos as usize;
            self.slots.swap_remove(pos);
            self.slot_pos.remove(slot);
            if let Some(moved) = self.slots.get(pos) {
                self.slot_pos.insert(moved.slot, pos as u32);
            }
            debug_assert_eq!(self.slot_pos.len(), self.slots.len());
        }
        let p = found.expect("the probe parsed the entry it matched");
        self.retire_parsed(l, &p);
        true
    }

    /// Drops everything (FLUSHDB); settings and statistics stay.
    pub fn clear(&mut self) {
        let (config, stats, layout, seed, cap, accounted) = (
            self.config.clone(),
            self.stats,
            self.layout,
            self.seed,
            self.table_cap,
            self.accounted,
        );
        *self = Map::new(b"", config, layout);
        self.seed = seed;
        self.stats = stats;
        self.accounted = accounted;
        self.set_table_cap(cap);
    }

    /// Number of keys of `slot` in this map.
    pub fn slot_len(&self, slot: Slot) -> usize {
        self.slot_pos
            .get(slot)
            .map_or(0, |p| self.slots[p as usize].table.len())
    }

    /// Up to `count` keys of `slot` from bucket `cursor`; returns the next cursor (0 = done).
    /// Bounded work: at most `count * 4 + 64` buckets are examined. Keys present throughout
    /// are all returned when the slot's index does not grow between calls.
    pub fn slot_keys(&self, slot: Slot, cursor: usize, count: usize) -> (usize, Vec<Bytes>) {
        let bits = self.off_bits;
        let Some(p) = self.slot_pos.get(slot) else {
            return (0, Vec::new());
        };
        let idx = &self.slots[p as usize].table;
        let n = idx.num_buckets();
        let mut out = Vec::new();
        let mut b = cursor;
        let limit = count.saturating_mul(4).saturating_add(64);
        let mut examined = 0;
        while b < n && out.len() < count && examined < limit {
            if let Some(&p) = idx.get_bucket(b) {
                let l = unpack(p, bits);
                out.push(Bytes::copy_from_slice(key_at(&self.tables, l)));
            }
            b += 1;
            examined += 1;
        }
        (if b >= n { 0 } else { b }, out)
    }

    /// Rehash generation of `slot`'s index table (0 when the slot has no keys).
    pub fn slot_generation(&self, slot: Slot) -> u32 {
        self.slot_pos
            .get(slot)
            .map_or(0, |p| self.slots[p as usize].generation)
    }

    /// Migration scan: visits up to `max` entries of `slot` from `bucket`, restarting at bucket
    /// 0 when the slot's table rehashed since `generation` was read (so every key present for
    /// the whole scan is visited at least once). Returns `(generation, next bucket)`, or `None`
    /// when the slot is done. Bounded work: at most `max * 4 + 64` buckets per call.
    pub fn slot_scan(
        &self,
        slot: Slot,
        generation: u32,
        bucket: usize,
        max: usize,
        mut visit: impl FnMut(&[u8], Bytes, &Meta),
    ) -> Option<(u32, usize)> {
        let bits = self.off_bits;
        let pos = self.slot_pos.get(slot)?;
        let si = &self.slots[pos as usize];
        let mut bucket_at = if si.generation == generation {
            bucket
        } else {
            0
        };
        let buckets = si.table.num_buckets();
        let limit = max.saturating_mul(4).saturating_add(64);
        let (mut visited, mut examined) = (0, 0);
        while bucket_at < buckets {
            if visited >= max || examined >= limit {
                return Some((si.generation, bucket_at));
            }
            if let Some(&packed) = si.table.get_bucket(bucket_at) {
                let (t, pe) = self.parsed(unpack(packed, bits));
                visit(
                    pe.key(&t.data),
                    self.value_of(t, &pe),
                    &self.meta_of(&pe.header),
                );
                visited += 1;
            }
            bucket_at += 1;
            examined += 1;
        }
        None
    }

    fn is_live(&self, id: u32, off: usize, key: &[u8]) -> bool {
        self.locate(key) == Some(loc(id, off))
    }

    /// Walks tables in scan order from `from`, calling `f` on each live entry until it returns
    /// false or `max_examined` entries were parsed; only tables accepted by `want`. Returns the
    /// position after the last examined entry, or `None` at the end.
    fn walk(
        &self,
        from: Cursor,
        max_examined: usize,
        want: impl Fn(&Table) -> bool,
        mut f: impl FnMut(&Self, Found) -> bool,
    ) -> Option<Cursor> {
        let start = self
            .order
            .partition_point(|&id| table(&self.tables, id).seq < from.seq);
        let mut examined = 0;
        for &id in &self.order[start..] {
            let t = table(&self.tables, id);
            if !want(t) {
                continue;
            }
            let mut off = if t.seq == from.seq { from.off } else { 0 };
            while off < t.used() {
                if examined >= max_examined {
                    return Some(Cursor { seq: t.seq, off });
                }
                // A forged cursor may point inside an entry: parsing is checked, and a bogus
                // entry is never live (no index slot points at it).
                let Some(p) = parse(&t.data, off) else {
                    break;
                };
                examined += 1;
                let next = off + p.total;
                // The dead mark tells garbage from live entries without an index probe; debug
                // builds (every test) check it against the index.
                debug_assert_eq!(
                    !p.dead,
                    self.is_live(id, off, p.key(&t.data)),
                    "the dead mark agrees with the index"
                );
                if !p.dead && !f(self, Found { id, off, parsed: p }) {
                    return Some(Cursor {
                        seq: t.seq,
                        off: next,
                    });
                }
                off = next;
            }
        }
        None
    }

    /// Visits live entries from `cursor` (0 to start) until `count` were visited or about
    /// `count * 4 + 64` index buckets were examined; returns the next cursor, 0 when done.
    /// Cursors are below 2^56.
    pub fn scan(&self, cursor: u64, count: usize, mut f: impl FnMut(&[u8], &Meta)) -> u64 {
        let bits = self.off_bits;
        let gen_mask = (1u32 << CURSOR_GEN_BITS) - 1;
        let mut slot = (cursor >> (CURSOR_GEN_BITS + CURSOR_BUCKET_BITS)) as usize;
        let cursor_gen = ((cursor >> CURSOR_BUCKET_BITS) as u32) & gen_mask;
        let mut bucket = (cursor & ((1 << CURSOR_BUCKET_BITS) - 1)) as usize;
        let mut first = true;
        let mut visited = 0;
        let mut examined = 0;
        let budget = count.saturating_mul(4).saturating_add(64);
        while slot < crate::slot::SLOT_COUNT {
            if let Some(p) = self.slot_pos.get(slot as Slot) {
                let si = &self.slots[p as usize];
                if first && si.generation & gen_mask != cursor_gen {
                    // The slot's table rehashed since the cursor was made: start it over.
                    bucket = 0;
                }
                let n = si.table.num_buckets();
                while bucket < n {
                    if visited >= count || examined >= budget {
                        return ((slot as u64) << (CURSOR_GEN_BITS + CURSOR_BUCKET_BITS))
                            | (u64::from(si.generation & gen_mask) << CURSOR_BUCKET_BITS)
                            | bucket as u64;
                    }
                    if let Some(&p) = si.table.get_bucket(bucket) {
                        let l = unpack(p, bits);
                        let (t, pe) = self.parsed(l);
                        f(pe.key(&t.data), &self.meta_of(&pe.header));
                        visited += 1;
                    }
                    bucket += 1;
                    examined += 1;
                }
            }
            first = false;
            slot += 1;
            bucket = 0;
        }
        0
    }

    /// A random live key (Redis's dictGetRandomKey: random slot, random bucket, probe on).
    pub fn random_entry(&self, rng: &mut Rng) -> Option<(Bytes, Meta)> {
        let bits = self.off_bits;
        if self.slots.is_empty() {
            return None;
        }
        let si = &self.slots[rng.below(self.slots.len() as u64) as usize];
        let buckets = si.table.num_buckets();
        let start = rng.below(buckets as u64) as usize;
        for i in 0..buckets {
            if let Some(&packed) = si.table.get_bucket((start + i) % buckets) {
                let (t, p) = self.parsed(unpack(packed, bits));
                return Some((
                    Bytes::copy_from_slice(p.key(&t.data)),
                    self.meta_of(&p.header),
                ));
            }
        }
        None
    }

    /// The next `n` live entries with a TTL from the sweep cursor, wrapping around once
    /// (Redis's active expiry walks its expires dictionary with a cursor the same way). The
    /// wrapped part stops where the sweep started, so no entry is returned twice.
    pub fn sample_volatile(&mut self, n: usize) -> Vec<(Bytes, Meta)> {
        let mut out = Vec::with_capacity(n);
        if self.volatile == 0 || n == 0 {
            return out;
        }
        let limit = n.saturating_mul(16).saturating_add(64);
        let start = self.sweep;
        let mut from = start;
        for pass in 0..2 {
            let mut back_at_start = false;
            let end = self.walk(
                from,
                limit,
                |t| t.volatile,
                |m, e| {
                    let t = table(&m.tables, e.id);
                    if pass == 1 && (t.seq, e.off) >= (start.seq, start.off) {
                        back_at_start = true;
                        return false;
                    }
                    out.push((
                        Bytes::copy_from_slice(e.parsed.key(&t.data)),
                        m.meta_of(&e.parsed.header),
                    ));
                    out.len() < n
                },
            );
            if back_at_start {
                self.sweep = start;
                break;
            }
            if let Some(c) = end {
                self.sweep = c;
                break;
            }
            self.sweep = Cursor::default();
            if out.len() >= n || (start.seq, start.off) == (0, 0) {
                // A walk from the very beginning has seen everything.
                break;
            }
            from = Cursor::default();
        }
        out
    }

    /// SIEVE: move the hand over entries in insertion order, clearing visited bits, and return
    /// the first unvisited key (at most two passes).
    pub fn sieve_victim(&mut self) -> Option<Bytes> {
        if self.len == 0 {
            return None;
        }
        let mut cleared: Vec<(u32, usize)> = Vec::new();
        let mut victim: Option<(Bytes, Cursor)> = None;
        let max = 2 * self.len + 2;
        let mut from = self.hand;
        for _ in 0..3 {
            let end = self.walk(
                from,
                max,
                |_| true,
                |m, e| {
                    let t = table(&m.tables, e.id);
                    if e.parsed.header.flags & F_VISITED != 0 {
                        cleared.push((e.id, e.off));
                        true
                    } else {
                        victim = Some((
                            Bytes::copy_from_slice(e.parsed.key(&t.data)),
                            Cursor {
                                seq: t.seq,
                                off: e.off,
                            },
                        ));
                        false
                    }
                },
            );
            for &(id, off) in &cleared {
                if let Some(t) = self.tables[id as usize].as_mut() {
                    t.set_visited(off, false);
                }
            }
            cleared.clear();
            if let Some((k, c)) = victim.take() {
                self.hand = c;
                return Some(k);
            }
            if end.is_some() {
                // The walk budget ran out; continue from there next time.
                self.hand = end.unwrap_or_default();
                from = self.hand;
            } else {
                from = Cursor::default();
            }
        }
        None
    }

    /// The table that compaction should work on next: not a head, garbage at least `ratio`
    /// of its used bytes; the one with the most garbage.
    fn compaction_candidate(&self, ratio: f64) -> Option<u32> {
        self.order
            .iter()
            .copied()
            .filter(|id| !self.heads.contains(&Some(*id)))
            .filter(|&id| {
                let t = table(&self.tables, id);
                t.used() > 0 && t.garbage() as f64 >= ratio * t.used() as f64
            })
            .max_by_key(|&id| table(&self.tables, id).garbage())
    }

    /// True when some table qualifies for compaction at `ratio`.
    pub fn needs_compaction(&self, ratio: f64) -> bool {
        self.compacting.is_some() || self.compaction_candidate(ratio).is_some()
    }

    /// Bytes of memory that appending a `total`-byte entry to `chain` would allocate: 0 when
    /// the head has room, else the new table and what the `tables` and `order` vectors could
    /// grow by (a `Vec` grows to at least twice its capacity, at least 4 elements).
    fn append_growth(&self, chain: usize, total: usize) -> u64 {
        if self.heads[chain].is_some_and(|id| table(&self.tables, id).room() >= total) {
            return 0;
        }
        let vec_growth = |len: usize, cap: usize, elem: usize| {
            if len == cap {
                (cap.max(4) * elem) as u64
            } else {
                0
            }
        };
        let tables = if self.free_ids.is_empty() {
            vec_growth(
                self.tables.len(),
                self.tables.capacity(),
                std::mem::size_of::<Option<Table>>(),
            )
        } else {
            0
        };
        self.next_size[chain].max(total) as u64
            + tables
            + vec_growth(self.order.len(), self.order.capacity(), 4)
    }

    /// One incremental step of compaction on the table being compacted (or the best
    /// candidate): walks its entries from the saved cursor, moving the live ones to the head
    /// of their chain, and frees the table when the cursor reaches its end.
    ///
    /// Bounds: stops before walking past `walk_budget` bytes of entries, live or dead (so a
    /// table of dead entries, an index lookup each, costs its size), before moving more than
    /// about `move_budget` bytes, and before a move that would allocate more than `grow_max`
    /// bytes (a new head table): the moved copies live beside the old table until it is
    /// freed, so a step that stops mid-table must not have allocated past the memory budget.
    /// The cursor stays where the step stopped; the next call continues there.
    pub fn compact_step(
        &mut self,
        move_budget: usize,
        walk_budget: usize,
        ratio: f64,
        grow_max: u64,
    ) -> CompactStep {
        let bits = self.off_bits;
        let mut step = CompactStep::default();
        let (id, mut off) = match self.compacting {
            Some(c) => c,
            None => match self.compaction_candidate(ratio) {
                Some(id) => (id, 0),
                None => return step,
            },
        };
        let mut grown = 0u64;
        loop {
            let Some(t) = self.tables[id as usize].as_ref() else {
                self.compacting = None;
                return step;
            };
            // Past the end, or nothing live left (every live entry moved or deleted): free it
            // without walking the dead rest.
            if off >= t.used() || t.live == 0 {
                step.bytes_freed = t.allocated();
                step.tables_freed = 1;
                self.free_table(id);
                self.compacting = None;
                return step;
            }
            self.compacting = Some((id, off));
            if step.moved >= move_budget || step.walked >= walk_budget {
                return step;
            }
            let p = parse(&t.data, off).expect("compaction walks entry boundaries");
            debug_assert_eq!(
                !p.dead,
                self.is_live(id, off, p.key(&t.data)),
                "the dead mark agrees with the index"
            );
            if !p.dead {
                let chain = usize::from(p.header.flags & F_TTL != 0);
                let growth = self.append_growth(chain, p.total);
                if grown + growth > grow_max {
                    // The move would allocate past the memory budget: stop before it.
                    step.blocked = true;
                    return step;
                }
                grown += growth;
                let Some(new_loc) = self.append_copy(id, off, p.total, chain) else {
                    // No table id left: stop here, try again later.
                    step.blocked = true;
                    return step;
                };
                // The entry moved; the copy is not a new version, and the old bytes are garbage.
                self.live_bytes -= p.total as u64;
                self.garbage += p.total as u64;
                let t = self.tables[id as usize].as_mut().expect("compacted table");
                t.live -= p.total;
                t.set_dead(off);
                let key = p.key(&table(&self.tables, id).data);
                let (hash, slot) = (self.hash(key), key_slot(key));
                let old_loc = loc(id, off);
                if let Some(pos) = self.slot_pos.get(slot) {
                    if let Some(s) = self.slots[pos as usize]
                        .table
                        .find_mut(hash, |&q| unpack(q, bits) == old_loc)
                    {
                        *s = pack(new_loc, bits);
                    }
                }
                step.moved += p.total;
                step.entries += 1;
            }
            step.walked += p.total;
            off += p.total;
        }
    }

    /// Appends a verbatim copy of the `total`-byte entry at `off` of table `src` (not a head)
    /// to the head of `chain`: compaction's move, with no re-encoding and no temporary copy of
    /// the key or value. Returns the copy's location, or `None` when no table id is left.
    fn append_copy(&mut self, src: u32, off: usize, total: usize, chain: usize) -> Option<u64> {
        let id = match self.heads[chain] {
            Some(id) if table(&self.tables, id).room() >= total => id,
            _ => self.alloc_table(chain, total)?,
        };
        assert_ne!(id, src, "a head is never compacted");
        // Two distinct elements of `tables` (MSRV 1.80: no `get_disjoint_mut`).
        let (lo, hi) = self.tables.split_at_mut(src.max(id) as usize);
        let (s, d) = if src < id {
            (&lo[src as usize], &mut hi[0])
        } else {
            (&hi[0], &mut lo[id as usize])
        };
        let (s, d) = (
            s.as_ref().expect("compacted table"),
            d.as_mut().expect("head exists"),
        );
        let at = d.data.len();
        d.data.extend_from_slice(&s.data[off..off + total]);
        d.live += total;
        self.live_bytes += total as u64;
        Some(loc(id, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(colliding: bool) -> Layout {
        Layout {
            table_bytes_min: 256,
            table_bytes_max: 1024,
            outline_bytes_min: 200,
            colliding_hash: colliding,
        }
    }

    fn meta(v: u64, ttl: u64) -> Meta {
        Meta {
            expire_at_ms: ttl,
            version: v,
            access_ms: 5000,
            lfu: 5,
            visited: false,
        }
    }

    #[test]
    fn key_eq_is_slice_equality() {
        let base: Vec<u8> = (0..40u8).collect();
        for n in 0..=20 {
            for m in [n, n + 1] {
                let a = &base[..n];
                let b = base[..m].to_vec();
                assert_eq!(key_eq(a, &b), a == &b[..], "{n} {m}");
                // One byte differs, anywhere.
                for i in 0..m {
                    let mut c = b.clone();
                    c[i] ^= 0x40;
                    assert_eq!(key_eq(a, &c), a == &c[..], "{n} {m} {i}");
                }
            }
        }
    }

    #[test]
    fn colliding_hashes_never_alias() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(true));
        for i in 0..300u32 {
            m.put(
                format!("k{i}").as_bytes(),
                Bytes::from(i.to_string()),
                meta(1, 0),
                false,
            );
        }
        for i in 0..300u32 {
            assert_eq!(
                m.value(format!("k{i}").as_bytes()).unwrap(),
                Bytes::from(i.to_string())
            );
        }
        assert!(m.remove(b"k7"));
        assert!(m.value(b"k7").is_none());
        assert_eq!(m.value(b"k8").unwrap(), Bytes::from("8"));
        assert_eq!(m.len(), 299);
    }

    #[test]
    fn upsert_reports_the_old_version_and_merges_its_stats() {
        for colliding in [false, true] {
            let mut m = Map::new(b"m", MapConfig::default(), layout(colliding));
            let fresh = |v| Meta {
                lfu: 5,
                visited: false,
                ..meta(v, 0)
            };
            // Absent: `merge` is not called and the new version keeps `meta`'s stats.
            let r = m.upsert(b"k", Bytes::from_static(b"a"), fresh(1), |_| {
                panic!("no old version")
            });
            assert_eq!(r, Some(None));
            assert_eq!(m.meta(b"k").unwrap().lfu, 5);
            // Present: `merge` sees the old version; its answer is what the new one keeps.
            let mut seen = None;
            let r = m.upsert(b"k", Bytes::from_static(b"bb"), fresh(2), |old| {
                seen = Some(*old);
                (old.lfu + 10, true)
            });
            assert_eq!(r, Some(seen));
            assert_eq!(seen.unwrap().version, 1);
            let now = m.meta(b"k").unwrap();
            assert_eq!((now.version, now.lfu, now.visited), (2, 15, true));
            assert_eq!(m.value(b"k").unwrap(), Bytes::from_static(b"bb"));
            assert_eq!(m.len(), 1);
            // A TTL version replacing a plain one moves chains; the counts follow.
            let r = m.upsert(b"k", Bytes::from_static(b"c"), meta(3, 99), |o| {
                (o.lfu, o.visited)
            });
            assert_eq!(r.unwrap().unwrap().version, 2);
            assert_eq!((m.len(), m.volatile_len()), (1, 1));
            // Out-of-line values replace inline ones and back, releasing the slab.
            let big = Bytes::from(vec![1u8; 500]);
            m.upsert(b"k", big.clone(), meta(4, 0), |o| (o.lfu, o.visited));
            assert_eq!(m.value(b"k").unwrap(), big);
            assert_eq!(m.volatile_len(), 0);
            m.upsert(b"k", Bytes::from_static(b"d"), meta(5, 0), |o| {
                (o.lfu, o.visited)
            });
            assert_eq!(m.value(b"k").unwrap(), Bytes::from_static(b"d"));
            assert_eq!(m.slab_bytes, 0);
            // Other keys are untouched, and the live bytes are those of the two entries.
            m.upsert(b"j", Bytes::from_static(b"e"), meta(6, 0), |_| {
                panic!("absent")
            });
            assert_eq!(m.value(b"k").unwrap(), Bytes::from_static(b"d"));
            assert_eq!(m.len(), 2);
            assert_eq!(
                m.live_bytes(),
                2 * entry_len(1, 1, false, false) as u64,
                "colliding {colliding}"
            );
        }
    }

    #[test]
    fn access_times_survive_the_21_bit_wrap() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        // Access clocks of 8 s units since the epoch are far above 2^21: stored modulo 2^21
        // (194 days), read back whole against the latest clock written.
        let t0 = 1_790_000_000_000u64 - 1_790_000_000_000 % ACCESS_UNIT_MS;
        let mut old = meta(1, 0);
        old.access_ms = t0 + 7999; // floored to its unit when stored
        m.put(b"old", Bytes::from_static(b"v"), old, false);
        let mut new = meta(2, 0);
        new.access_ms = t0 + 86_400_000 * 190; // 190 days later, under one wrap
        m.put(b"new", Bytes::from_static(b"v"), new, false);
        assert_eq!(m.meta(b"old").unwrap().access_ms, t0);
        assert_eq!(m.meta(b"new").unwrap().access_ms, new.access_ms);
        // Across a multiple of 2^21 units (the first one after `new`'s access).
        let edge = ((((new.access_ms / ACCESS_UNIT_MS) >> 21) + 1) << 21) * ACCESS_UNIT_MS;
        assert!(edge > new.access_ms + 5 * ACCESS_UNIT_MS);
        m.touch(b"old", edge - ACCESS_UNIT_MS, 5);
        m.touch(b"new", edge + 5 * ACCESS_UNIT_MS, 7);
        assert_eq!(m.meta(b"old").unwrap().access_ms, edge - ACCESS_UNIT_MS);
        assert_eq!(m.meta(b"new").unwrap().access_ms, edge + 5 * ACCESS_UNIT_MS);
        assert_eq!(m.meta(b"old").unwrap().lfu, 5);
        assert_eq!(m.meta(b"new").unwrap().lfu, 7);
        // An access older than one wrap reads as more recent than it was (as in Redis).
        m.touch(b"new", edge + (1 << 21) * ACCESS_UNIT_MS, 7);
        assert_eq!(
            m.meta(b"old").unwrap().access_ms,
            edge + (1 << 21) * ACCESS_UNIT_MS - ACCESS_UNIT_MS
        );
    }

    #[test]
    fn updates_make_garbage_and_compaction_reclaims_it() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        for round in 0..20u64 {
            for i in 0..50u32 {
                m.put(
                    format!("k{i}").as_bytes(),
                    Bytes::from(format!("v{round}")),
                    meta(round + 1, 0),
                    false,
                );
            }
        }
        let before = m.table_bytes();
        assert!(m.garbage_bytes() > 0);
        let mut steps = 0;
        while m.needs_compaction(0.5) {
            m.compact_step(100, usize::MAX, 0.5, u64::MAX);
            steps += 1;
            assert!(steps < 10_000);
        }
        assert!(m.table_bytes() <= before);
        for i in 0..50u32 {
            assert_eq!(
                m.value(format!("k{i}").as_bytes()).unwrap(),
                Bytes::from("v19")
            );
            assert_eq!(m.meta(format!("k{i}").as_bytes()).unwrap().version, 20);
        }
        assert_eq!(m.len(), 50);
    }

    #[test]
    fn large_values_go_out_of_line() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        let big = Bytes::from(vec![9u8; 5000]);
        m.put(b"big", big.clone(), meta(1, 0), false);
        assert_eq!(m.value(b"big").unwrap(), big);
        assert!(m.memory_bytes() >= 5000);
        m.remove(b"big");
        assert_eq!(m.live_bytes(), 0);
    }

    #[test]
    fn empty_map_is_small_and_tables_grow() {
        let m = Map::new(b"m", MapConfig::default(), layout(false));
        assert!(m.memory_bytes() < 1024, "{}", m.memory_bytes());
        let mut m = Map::new(
            b"m",
            MapConfig::default(),
            Layout {
                table_bytes_min: 4096,
                table_bytes_max: 1 << 20,
                outline_bytes_min: 1 << 18,
                colliding_hash: false,
            },
        );
        for i in 0..200u32 {
            m.put(
                format!("key{i}").as_bytes(),
                Bytes::from_static(b"value"),
                meta(1, 0),
                false,
            );
        }
        assert!(m.memory_bytes() < 64 * 1024, "{}", m.memory_bytes());
    }

    #[test]
    fn scan_meets_every_stable_key_despite_writes_and_compaction() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        for i in 0..200u32 {
            m.put(
                format!("stable{i}").as_bytes(),
                Bytes::from_static(b"v"),
                meta(1, 0),
                false,
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut round = 0u32;
        loop {
            cursor = m.scan(cursor, 5, |k, _| {
                seen.insert(k.to_vec());
            });
            // Churn: rewrite other keys, delete some, compact.
            for j in 0..20u32 {
                m.put(
                    format!("churn{}", (round * 7 + j) % 60).as_bytes(),
                    Bytes::from_static(b"x"),
                    meta(2, 0),
                    false,
                );
            }
            m.remove(format!("churn{}", round % 60).as_bytes());
            m.compact_step(300, usize::MAX, 0.3, u64::MAX);
            round += 1;
            if cursor == 0 {
                break;
            }
            assert!(round < 100_000);
        }
        for i in 0..200u32 {
            assert!(
                seen.contains(format!("stable{i}").as_bytes()),
                "stable{i} missed"
            );
        }
    }

    #[test]
    fn keys_in_many_slots_switch_the_slot_lookup_to_an_array_and_back() {
        use crate::slot::SLOT_COUNT;
        use crate::slot_pos::DENSE_AT;
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        let n = 20_000u32;
        let key = |i: u32| format!("key:{i:08}");
        let value = |i: u32| Bytes::from(format!("v{i}"));
        let mut slots = std::collections::BTreeSet::new();
        for i in 0..n {
            let k = key(i);
            // The budget's estimates stay upper bounds across the switch.
            let before = m.memory_bytes();
            let growth = m.write_growth(k.as_bytes(), value(i).len(), false);
            assert!(m.write_growth_bound(k.len(), value(i).len(), false) >= growth);
            assert!(m.put(k.as_bytes(), value(i), meta(1, 0), false));
            assert!(m.memory_bytes() <= before + growth, "key {i}");
            slots.insert(key_slot(k.as_bytes()));
            assert_eq!(
                matches!(m.slot_pos, SlotPos::Dense { .. }),
                slots.len() > DENSE_AT
            );
        }
        assert!(slots.len() > DENSE_AT);
        for i in 0..n {
            assert_eq!(m.value(key(i).as_bytes()), Some(value(i)));
        }
        assert_eq!(m.value(b"absent"), None);
        let per_slot: usize = (0..SLOT_COUNT).map(|s| m.slot_len(s as Slot)).sum();
        assert_eq!(per_slot, n as usize);
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = m.scan(cursor, 100, |k, _| {
                seen.insert(k.to_vec());
            });
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), n as usize);
        // Overwrites and compaction (which updates locations through the slot lookup).
        for i in 0..n {
            m.put(key(i).as_bytes(), value(i + 1), meta(2, 0), false);
        }
        while m.compact_step(1 << 16, usize::MAX, 0.3, u64::MAX).entries > 0 {}
        for i in 0..n {
            assert_eq!(m.value(key(i).as_bytes()), Some(value(i + 1)));
        }
        // Deleting all but 100 keys goes back to the hash map; the rest stay reachable.
        let dense_index = m.index_bytes() + m.slot_pos.allocation_size() as u64;
        for i in 100..n {
            assert!(m.remove(key(i).as_bytes()));
        }
        assert!(matches!(m.slot_pos, SlotPos::Sparse(_)));
        assert!(m.slot_pos.allocation_size() < 8 * 1024);
        assert!(m.index_bytes() + (m.slot_pos.allocation_size() as u64) < dense_index / 10);
        for i in 0..n {
            let expect = (i < 100).then(|| value(i + 1));
            assert_eq!(m.value(key(i).as_bytes()), expect);
        }
        for i in 0..100 {
            assert!(m.remove(key(i).as_bytes()));
        }
        assert_eq!(m.slot_pos.allocation_size(), 0);
    }

    #[test]
    fn slots_are_counted_and_enumerated() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        for i in 0..100u32 {
            m.put(
                format!("{{tag}}:{i}").as_bytes(),
                Bytes::from_static(b"v"),
                meta(1, 0),
                false,
            );
        }
        m.put(b"other", Bytes::from_static(b"v"), meta(1, 0), false);
        let slot = key_slot(b"tag");
        assert_eq!(m.slot_len(slot), 100);
        let mut keys = Vec::new();
        let mut c = 0;
        loop {
            let (next, mut k) = m.slot_keys(slot, c, 7);
            assert!(k.len() <= 7);
            keys.append(&mut k);
            if next == 0 {
                break;
            }
            c = next;
        }
        assert_eq!(keys.len(), 100);
    }

    #[test]
    fn index_locations_pack_into_four_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 4);
        // The default 1 MiB tables: 20 offset bits, 4096 table ids, 4 GiB of tables.
        assert_eq!(offset_bits(1 << 20), 20);
        assert_eq!(table_ids_max(20), 4096);
        assert_eq!(offset_bits((1 << 20) + 1), 21);
        // 16 MiB tables: 256 ids; 256-byte tables: ids capped at 2^16.
        assert_eq!(table_ids_max(offset_bits(1 << 24)), 256);
        assert_eq!(table_ids_max(offset_bits(256)), 1 << 16);
        for max in [256usize, 4096, 1 << 20, 3 << 20, 1 << 24] {
            let bits = offset_bits(max);
            assert!(1usize << bits >= max);
            assert!(table_ids_max(bits) as u64 * (1u64 << bits) <= 1 << 32);
            let last_id = table_ids_max(bits) as u32 - 1;
            for l in [
                loc(0, 0),
                loc(last_id, 0),
                loc(0, max - 1),
                loc(last_id, (1 << bits) - 1),
                loc(last_id / 2, max / 3),
            ] {
                assert_eq!(unpack(pack(l, bits), bits), l);
            }
        }
        let m = Map::new(
            b"m",
            MapConfig::default(),
            Layout {
                table_bytes_min: 4096,
                table_bytes_max: 1 << 20,
                outline_bytes_min: 1 << 18,
                colliding_hash: false,
            },
        );
        assert_eq!(m.free_table_ids(), 4096);
        // An unvalidated layout is clamped to 16 MiB tables, not a shift overflow.
        let mut m = Map::new(
            b"m",
            MapConfig::default(),
            Layout {
                table_bytes_min: usize::MAX,
                table_bytes_max: usize::MAX,
                outline_bytes_min: 1 << 18,
                colliding_hash: false,
            },
        );
        assert_eq!(m.free_table_ids(), 256);
        assert!(m.put(b"k", Bytes::from_static(b"v"), meta(1, 0), false));
        assert_eq!(m.value(b"k").unwrap(), Bytes::from_static(b"v"));
    }

    #[test]
    #[should_panic(expected = "location fits 32 bits")]
    fn a_location_that_does_not_fit_is_a_broken_invariant() {
        let _ = pack(loc(4096, 0), 20);
    }

    #[test]
    fn forged_scan_cursors_do_not_panic() {
        let mut m = Map::new(b"m", MapConfig::default(), layout(false));
        for i in 0..100u32 {
            m.put(
                format!("k{i}").as_bytes(),
                Bytes::from_static(b"value"),
                meta(1, 7),
                false,
            );
        }
        for c in [
            1u64,
            2,
            3,
            (1 << 24) + 1,
            (1 << 24) + 3,
            (3 << 24) + 17,
            u64::MAX >> 8,
        ] {
            let _ = m.scan(c, 10, |_, _| {});
        }
    }
}
