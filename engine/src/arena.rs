//! Arena tables and the byte layout of an entry inside them.
//!
//! A table is an append-only byte arena of fixed capacity. An entry is written once and never
//! resized; a new version is appended elsewhere and the old bytes become garbage. Metadata that
//! changes on reads (access time, LFU counter, SIEVE bit) is patched in place.
//!
//! Entry layout (little-endian, no padding):
//!
//! ```text
//! +-------------------------------+---------------------+--------------+--------+--------+-----+----------------+
//! | flags:3 | lfu:8 | access_t:21 | dead:1 | version:63 | expire_at_ms | klen   | vlen   | key | value          |
//! | u32                           | u64                 | u64, if TTL  | varint | varint |     | or u32 slab id |
//! +-------------------------------+---------------------+--------------+--------+--------+-----+----------------+
//! ```
//!
//! The first word packs, from the top bit down: `flags` (bit 0 the entry has a TTL, bit 1 the
//! value is out of line, i.e. the value field is a 4-byte index into the map's slab of
//! `Bytes`, bit 2 SIEVE's visited bit), Redis's 8-bit logarithmic LFU counter, and `access_t`,
//! the last access in units of `ACCESS_UNIT_MS` (8 s) modulo 2^21. Like Redis's 24-bit object
//! field, one word holds both the LFU counter and the access clock: every access that changes
//! the counter also sets the clock, which is the LFU decay's reference time. 2^21 units of 8 s
//! wrap every 194 days, as Redis's 24-bit LRU clock of seconds does; the map turns a stored
//! clock back into an absolute time against the latest access it has written (Redis's
//! `estimateObjectIdleTime`). The cost is resolution: access times (DM.GETENTRY's
//! `last_access`), and so a map's `max_idle_ms`, are kept to 8 seconds.
//!
//! The second word is the entry's version in its low 63 bits; its top bit is the *dead* mark,
//! set (`Table::set_dead`) when the entry stops being the current version of its key (it was
//! overwritten, deleted, or moved by compaction). Walks over a table (compaction, the active
//! expiry sweep, SIEVE) tell live entries from garbage by this bit alone, without an index
//! probe; a live entry is never marked. Versions are therefore limited to `VERSION_MAX`
//! (2^63 - 1): local versions are the write time in ms shifted left by 20 bits, which stays
//! below 2^63 until the year 2248, and versions from peers above it are refused
//! (`Shard::put_versioned`; the cluster refuses them already at `VERSION_LIMIT`).
//!
//! With 16-byte keys and values under 128 bytes an entry has 14 bytes of header.

/// Flag: `expire_at_ms` is present.
pub const F_TTL: u8 = 1;
/// Flag: the value is stored out of line.
pub const F_OUTLINE: u8 = 2;
/// Flag: SIEVE visited bit.
pub const F_VISITED: u8 = 4;

/// Fixed header bytes before the optional deadline.
pub const FIXED_HEADER: usize = 4 + 8;
/// Bits of `access_t` (the low bits of the first word).
pub const ACCESS_BITS: u32 = 21;
/// Mask of `access_t`.
pub const ACCESS_MASK: u32 = (1 << ACCESS_BITS) - 1;
/// Milliseconds per unit of the stored access clock: 2^21 units span 194 days, the wrap of
/// Redis's 24-bit clock of seconds.
pub const ACCESS_UNIT_MS: u64 = 8000;
/// Largest version an entry can store: the version word's top bit is the dead mark.
pub const VERSION_MAX: u64 = (1 << 63) - 1;
/// The dead mark in the version word.
const DEAD_BIT: u64 = 1 << 63;
const LFU_SHIFT: u32 = ACCESS_BITS;
const FLAGS_SHIFT: u32 = ACCESS_BITS + 8;
const OFF_VERSION: usize = 4;
const OFF_EXPIRE: usize = 12;

fn word(flags: u8, lfu: u8, access_t: u32) -> u32 {
    (u32::from(flags) << FLAGS_SHIFT) | (u32::from(lfu) << LFU_SHIFT) | (access_t & ACCESS_MASK)
}

/// Bytes of a LEB128 varint of `v`.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(buf: &[u8], mut at: usize) -> Option<(u64, usize)> {
    // One byte (lengths under 128, the common case) without the loop.
    let first = *buf.get(at)?;
    if first & 0x80 == 0 {
        return Some((u64::from(first), at + 1));
    }
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(at)?;
        at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((v, at));
        }
    }
    None
}

/// Bytes an entry occupies in a table.
pub fn entry_len(key_len: usize, value_len: usize, ttl: bool, outline: bool) -> usize {
    FIXED_HEADER
        + if ttl { 8 } else { 0 }
        + varint_len(key_len as u64)
        + varint_len(value_len as u64)
        + key_len
        + if outline { 4 } else { value_len }
}

/// The metadata fields of an entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u8,
    pub lfu: u8,
    /// Last access in units of `ACCESS_UNIT_MS`, modulo 2^21 (only the low `ACCESS_BITS` are
    /// stored).
    pub access_t: u32,
    /// At most `VERSION_MAX` (the stored word's top bit is the dead mark, see `Parsed::dead`).
    pub version: u64,
    pub expire_at_ms: u64,
}

/// A parsed view of an entry at some offset.
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    pub header: Header,
    pub key_start: usize,
    pub key_len: usize,
    pub value_start: usize,
    /// Real value length (also for out-of-line values).
    pub value_len: usize,
    /// Total bytes of the entry in the table.
    pub total: usize,
    /// The dead mark: the entry is no longer the current version of its key (garbage).
    pub dead: bool,
}

impl Parsed {
    pub fn key<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.key_start..self.key_start + self.key_len]
    }

    pub fn outline(&self) -> bool {
        self.header.flags & F_OUTLINE != 0
    }

    /// The slab index of an out-of-line value.
    pub fn slab_id(&self, data: &[u8]) -> u32 {
        u32::from_le_bytes(
            data[self.value_start..self.value_start + 4]
                .try_into()
                .expect("4 bytes"),
        )
    }

    /// The inline value bytes.
    pub fn inline_value<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.value_start..self.value_start + self.value_len]
    }
}

/// One append-only arena table.
#[derive(Debug)]
pub struct Table {
    /// Position in the map's scan order; only grows across the tables of a map.
    pub seq: u64,
    pub data: Vec<u8>,
    /// Bytes of entries that are the current version of their key.
    pub live: usize,
    /// True for the chain of entries with a TTL.
    pub volatile: bool,
}

impl Table {
    pub fn new(seq: u64, capacity: usize, volatile: bool) -> Table {
        Table {
            seq,
            data: Vec::with_capacity(capacity),
            live: 0,
            volatile,
        }
    }

    /// Allocated bytes (what the memory budget counts).
    pub fn allocated(&self) -> usize {
        self.data.capacity()
    }

    pub fn used(&self) -> usize {
        self.data.len()
    }

    pub fn garbage(&self) -> usize {
        self.data.len() - self.live
    }

    pub fn room(&self) -> usize {
        self.data.capacity() - self.data.len()
    }

    /// Appends an entry; the caller checked `room()`. Returns its offset.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        header: &Header,
        key: &[u8],
        value: &[u8],
        value_len: usize,
        slab_id: Option<u32>,
    ) -> usize {
        let off = self.data.len();
        let d = &mut self.data;
        d.extend_from_slice(&word(header.flags, header.lfu, header.access_t).to_le_bytes());
        // A version with the top bit set would read as a dead entry: every path that makes
        // versions keeps them at most `VERSION_MAX` (see the module docs).
        assert!(header.version <= VERSION_MAX, "version below 2^63");
        d.extend_from_slice(&header.version.to_le_bytes());
        if header.flags & F_TTL != 0 {
            d.extend_from_slice(&header.expire_at_ms.to_le_bytes());
        }
        put_varint(d, key.len() as u64);
        put_varint(d, value_len as u64);
        d.extend_from_slice(key);
        match slab_id {
            Some(id) => d.extend_from_slice(&id.to_le_bytes()),
            None => d.extend_from_slice(value),
        }
        let total = d.len() - off;
        self.live += total;
        off
    }

    fn word_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.data[off..off + 4].try_into().expect("4 bytes"))
    }

    fn set_word(&mut self, off: usize, w: u32) {
        self.data[off..off + 4].copy_from_slice(&w.to_le_bytes());
    }

    /// Sets the LFU counter and the (wrapped) access clock together, keeping the flags: the
    /// counter's decay is measured from the access clock, so they always change as one.
    pub fn set_lfu_access(&mut self, off: usize, lfu: u8, access_t: u32) {
        let w = self.word_at(off);
        let flags = (w >> FLAGS_SHIFT) as u8;
        self.set_word(off, word(flags, lfu, access_t));
    }

    /// `set_lfu_access` and `set_visited(true)` in one write of the word (a read's touch).
    pub fn set_lfu_access_visited(&mut self, off: usize, lfu: u8, access_t: u32) {
        let w = self.word_at(off);
        let flags = (w >> FLAGS_SHIFT) as u8 | F_VISITED;
        self.set_word(off, word(flags, lfu, access_t));
    }

    pub fn set_visited(&mut self, off: usize, on: bool) {
        let bit = u32::from(F_VISITED) << FLAGS_SHIFT;
        let w = self.word_at(off);
        self.set_word(off, if on { w | bit } else { w & !bit });
    }

    /// Sets the version of a live entry (keeps it live).
    pub fn set_version(&mut self, off: usize, version: u64) {
        assert!(version <= VERSION_MAX, "version below 2^63");
        self.data[off + OFF_VERSION..off + OFF_VERSION + 8].copy_from_slice(&version.to_le_bytes());
    }

    /// Marks the entry at `off` dead (see the module docs): one bit of the version word.
    pub fn set_dead(&mut self, off: usize) {
        self.data[off + OFF_VERSION + 7] |= (DEAD_BIT >> 56) as u8;
    }

    /// Changes an existing deadline in place (the entry must have `F_TTL`).
    pub fn set_expire(&mut self, off: usize, at: u64) {
        debug_assert!(self.word_at(off) >> FLAGS_SHIFT & u32::from(F_TTL) != 0);
        self.data[off + OFF_EXPIRE..off + OFF_EXPIRE + 8].copy_from_slice(&at.to_le_bytes());
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the entry at `off` of `data`; `None` when the bytes there are not a complete entry
/// (only possible for offsets that did not come from the index, e.g. a forged SCAN cursor).
#[inline]
pub fn parse(data: &[u8], off: usize) -> Option<Parsed> {
    let w = read_u32(data, off)?;
    let flags = (w >> FLAGS_SHIFT) as u8;
    let lfu = (w >> LFU_SHIFT) as u8;
    let access_t = w & ACCESS_MASK;
    let version_word = read_u64(data, off + OFF_VERSION)?;
    let version = version_word & VERSION_MAX;
    let (expire_at_ms, at) = if flags & F_TTL != 0 {
        (read_u64(data, off + OFF_EXPIRE)?, off + OFF_EXPIRE + 8)
    } else {
        (0, off + FIXED_HEADER)
    };
    let (klen, at) = get_varint(data, at)?;
    let (vlen, at) = get_varint(data, at)?;
    let key_start = at;
    let key_len = usize::try_from(klen).ok()?;
    let value_len = usize::try_from(vlen).ok()?;
    let value_start = key_start.checked_add(key_len)?;
    let stored_value = if flags & F_OUTLINE != 0 { 4 } else { value_len };
    let end = value_start.checked_add(stored_value)?;
    if end > data.len() {
        return None;
    }
    Some(Parsed {
        header: Header {
            flags,
            lfu,
            access_t,
            version,
            expire_at_ms,
        },
        key_start,
        key_len,
        value_start,
        value_len,
        total: end - off,
        dead: version_word & DEAD_BIT != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let mut t = Table::new(1, 4096, false);
        let h = Header {
            flags: F_TTL,
            lfu: 5,
            access_t: 77,
            version: 99,
            expire_at_ms: 12345,
        };
        let a = t.append(&h, b"key", b"value", 5, None);
        let big = vec![7u8; 300];
        let h2 = Header {
            flags: F_OUTLINE,
            ..Header::default()
        };
        let b = t.append(&h2, &big, b"", 1 << 20, Some(3));
        let pa = parse(&t.data, a).unwrap();
        assert_eq!(pa.header, h);
        assert_eq!(pa.key(&t.data), b"key");
        assert_eq!(pa.inline_value(&t.data), b"value");
        assert_eq!(pa.total, entry_len(3, 5, true, false));
        assert_eq!(b, pa.total);
        let pb = parse(&t.data, b).unwrap();
        assert_eq!(pb.key(&t.data), &big[..]);
        assert_eq!(pb.value_len, 1 << 20);
        assert_eq!(pb.slab_id(&t.data), 3);
        assert_eq!(pb.total, entry_len(300, 1 << 20, false, true));
        assert_eq!(t.live, t.used());
        t.set_lfu_access(a, 9, 1000);
        t.set_visited(a, true);
        t.set_expire(a, 5);
        t.set_version(a, 100);
        let pa = parse(&t.data, a).unwrap();
        assert_eq!(
            (
                pa.header.access_t,
                pa.header.lfu,
                pa.header.expire_at_ms,
                pa.header.version
            ),
            (1000, 9, 5, 100)
        );
        assert!(pa.header.flags & F_VISITED != 0);
        assert_eq!(pa.header.flags & F_TTL, F_TTL);
    }

    #[test]
    fn flags_lfu_and_access_share_a_word_without_clobbering() {
        let mut t = Table::new(1, 256, true);
        let h = Header {
            flags: F_TTL | F_OUTLINE,
            lfu: 200,
            access_t: u32::MAX, // only the low 21 bits are kept
            version: VERSION_MAX,
            expire_at_ms: 7,
        };
        let a = t.append(&h, b"k", b"", 10, Some(1));
        assert_eq!(FIXED_HEADER, 12);
        let p = parse(&t.data, a).unwrap();
        assert_eq!(p.header.flags, F_TTL | F_OUTLINE);
        assert_eq!(p.header.access_t, ACCESS_MASK);
        assert_eq!((p.header.lfu, p.header.version), (200, VERSION_MAX));
        assert!(!p.dead);
        assert_eq!(p.total, entry_len(1, 10, true, true));
        t.set_visited(a, true);
        t.set_lfu_access(a, 255, 12345);
        let p = parse(&t.data, a).unwrap();
        assert_eq!(p.header.flags, F_TTL | F_OUTLINE | F_VISITED);
        assert_eq!((p.header.lfu, p.header.access_t), (255, 12345));
        t.set_visited(a, false);
        t.set_lfu_access_visited(a, 17, 99);
        let p = parse(&t.data, a).unwrap();
        assert_eq!(p.header.flags, F_TTL | F_OUTLINE | F_VISITED);
        assert_eq!((p.header.lfu, p.header.access_t), (17, 99));
        assert_eq!((p.header.version, p.header.expire_at_ms), (VERSION_MAX, 7));
        t.set_visited(a, false);
        t.set_lfu_access(a, 0, u32::MAX);
        let p = parse(&t.data, a).unwrap();
        assert_eq!(p.header.flags, F_TTL | F_OUTLINE);
        assert_eq!((p.header.lfu, p.header.access_t), (0, ACCESS_MASK));
        assert_eq!(p.header.expire_at_ms, 7);
        t.set_visited(a, true);
        let p = parse(&t.data, a).unwrap();
        assert_eq!((p.header.lfu, p.header.access_t), (0, ACCESS_MASK));
    }

    #[test]
    fn the_dead_mark_is_the_version_words_top_bit_and_clobbers_nothing() {
        let mut table = Table::new(1, 256, true);
        let hdr = Header {
            flags: F_TTL | F_VISITED,
            lfu: 3,
            access_t: 99,
            version: VERSION_MAX,
            expire_at_ms: u64::MAX,
        };
        let first = table.append(&hdr, b"key", b"value", 5, None);
        let second = table.append(&Header { version: 1, ..hdr }, b"other", b"v", 1, None);
        assert!(!parse(&table.data, first).unwrap().dead);
        table.set_dead(first);
        let pa = parse(&table.data, first).unwrap();
        assert!(pa.dead);
        // Every field reads as before, the version without the mark.
        assert_eq!(pa.header, hdr);
        assert_eq!(pa.key(&table.data), b"key");
        assert_eq!(pa.inline_value(&table.data), b"value");
        // The neighbour is untouched.
        let pb = parse(&table.data, second).unwrap();
        assert!(!pb.dead);
        assert_eq!((pb.header.version, pb.key(&table.data)), (1, &b"other"[..]));
        // Patching metadata keeps the mark; only a new version (live entries only) clears it.
        table.set_lfu_access(first, 7, 8);
        table.set_visited(first, false);
        table.set_expire(first, 5);
        assert!(parse(&table.data, first).unwrap().dead);
        table.set_version(first, 42);
        assert!(!parse(&table.data, first).unwrap().dead);
    }

    #[test]
    #[should_panic(expected = "version below 2^63")]
    fn a_version_with_the_dead_bit_is_refused() {
        let mut t = Table::new(1, 256, false);
        let h = Header {
            version: VERSION_MAX + 1,
            ..Header::default()
        };
        t.append(&h, b"k", b"v", 1, None);
    }

    #[test]
    fn a_small_entry_has_14_bytes_of_header() {
        // The bytes-per-entry target: 16-byte key, 32-byte value, no TTL.
        assert_eq!(entry_len(16, 32, false, false), 14 + 48);
    }
}
