//! The slot function: `CRC16-XMODEM(hash_tag(key)) & 0x3FFF`, Redis Cluster's exact function.
//!
//! It lives in the engine because every entry knows its slot; `tessera-cluster` re-exports it and
//! owns everything else about slots (tables, owners, migration).

/// Number of slots in the key space (Redis Cluster's).
pub const SLOT_COUNT: usize = 16384;

/// A slot number, always `< SLOT_COUNT`.
pub type Slot = u16;

/// The part of `key` that is hashed: the bytes between the first `{` and the next `}` when that
/// span is non-empty, otherwise the whole key (Redis Cluster's hash-tag rule).
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{') {
        if let Some(len) = find_byte(&key[open + 1..], b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Position of the first `needle` in `hay`, eight bytes at a time (every command computes a
/// slot, and most keys have no `{`: a byte loop cost about 4 instructions per key byte).
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ pattern;
        // A zero byte of `w` is a match. The lowest flagged byte is always a real zero (a
        // false flag needs a borrow from a zero byte below it), and little-endian order
        // makes the lowest byte the first in memory.
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| base + p)
}

/// The slot of `key`.
#[inline]
pub fn key_slot(key: &[u8]) -> Slot {
    let slot = crc16_xmodem(hash_tag(key)) & 0x3FFF;
    debug_assert!((slot as usize) < SLOT_COUNT);
    slot
}

/// `CRC16_TABLES[0]` is the classic byte table; `CRC16_TABLES[k][b]` is the CRC register after
/// feeding byte `b` followed by `k` zero bytes into a zero register, so eight bytes are folded
/// with eight independent lookups (slice-by-8) instead of eight dependent ones.
const fn crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            // One more zero byte fed into the register `tables[k - 1][i]`.
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

static CRC16_TABLES: [[u16; 256]; 8] = crc16_tables();

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
#[inline]
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut chunks = bytes.chunks_exact(8);
    let mut crc = 0u16;
    for c in &mut chunks {
        // The register is xored into the first two bytes; each byte then contributes its
        // effect followed by as many zero bytes as come after it in the chunk.
        let b0 = c[0] ^ (crc >> 8) as u8;
        let b1 = c[1] ^ crc as u8;
        crc = t[7][usize::from(b0)]
            ^ t[6][usize::from(b1)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t[0][usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The byte-at-a-time CRC16-XMODEM, the reference the sliced one is tested against.
#[cfg(test)]
fn crc16_bytewise(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLES[0][usize::from(((crc >> 8) as u8) ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn redis_cluster_reference_slots() {
        // Values from `CLUSTER KEYSLOT` on a real Redis Cluster.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        // Braces in the second eight-byte word and in the tail.
        assert_eq!(hash_tag(b"01234567{ab}cd"), b"ab");
        assert_eq!(hash_tag(b"0123456789abcdef{x}"), b"x");
        assert_eq!(hash_tag(b"0123{567890abcdef}"), b"567890abcdef");
    }

    /// The sliced CRC and the word-at-a-time brace search agree with the byte-at-a-time
    /// forms on every length around the 8-byte chunking and on bytes of every value.
    #[test]
    fn sliced_crc_and_brace_search_match_bytewise() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Braces often, so the tag rule is exercised.
                        match x % 8 {
                            0 => b'{',
                            1 => b'}',
                            _ => (x >> 8) as u8,
                        }
                    })
                    .collect();
                assert_eq!(crc16_xmodem(&bytes), crc16_bytewise(&bytes), "{bytes:?}");
                for needle in [b'{', b'}', 0, 0x80, 0xFF] {
                    assert_eq!(
                        find_byte(&bytes, needle),
                        bytes.iter().position(|&b| b == needle),
                        "{bytes:?} {needle}"
                    );
                }
            }
        }
        assert_eq!(crc16_bytewise(b"123456789"), 0x31C3);
    }
}
