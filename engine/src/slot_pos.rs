//! `SlotPos`: where a map finds a slot's index table (slot -> position in `Map::slots`).
//!
//! Every lookup (GET, SET, DEL, compaction's index update) starts here, so for a map with keys
//! in many slots this is a directly indexed array: one load of a `u16` instead of a hash-map
//! probe (about 30 instructions and one more cache line on the lookup's dependent chain).
//! A small map must stay small (an empty map costs under 1 KiB; 200 small keys must not cost
//! megabytes), so the array is only used once the map has keys in many slots:
//!
//! - `Sparse`: a hashbrown map (nothing allocated while empty), for up to `DENSE_AT` slots.
//! - `Dense`: one `u16` per slot (`SLOT_COUNT` of them, 32 KiB), holding position + 1 (0 = the
//!   slot has no keys). A sparse map switches when a new slot would take it past `DENSE_AT`
//!   slots: at that point its next allocation (4096 buckets of 9 bytes, 36 KiB) would be larger
//!   than the array. It switches back when the count falls to `SPARSE_AT` (the gap keeps a
//!   map near one threshold from switching back and forth; going back scans the array once).

use crate::slot::{Slot, SLOT_COUNT};

/// Slots with keys beyond which a sparse map becomes dense (hashbrown's capacity at 2048
/// buckets, so the sparse map never grows past 2048 buckets).
pub const DENSE_AT: usize = 1792;
/// Slots with keys at or below which a dense map becomes sparse again.
pub const SPARSE_AT: usize = 256;
/// Bytes of the dense array.
pub const DENSE_BYTES: u64 = (SLOT_COUNT * std::mem::size_of::<u16>()) as u64;

/// Hasher for the sparse slot -> position map: a multiply (slots are already uniform).
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotHasher;

impl std::hash::BuildHasher for SlotHasher {
    type Hasher = SlotHasherState;
    fn build_hasher(&self) -> SlotHasherState {
        SlotHasherState(0)
    }
}

/// State of `SlotHasher`.
#[derive(Debug)]
pub struct SlotHasherState(u64);

impl std::hash::Hasher for SlotHasherState {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = u64::from(v);
    }
}

type Sparse = hashbrown::HashMap<Slot, u32, SlotHasher>;

/// Slot -> position of its index table in `Map::slots` (see the module docs).
#[derive(Debug)]
pub enum SlotPos {
    Sparse(Sparse),
    Dense {
        /// Position + 1 per slot; 0 = no keys.
        pos: Box<[u16; SLOT_COUNT]>,
        /// Slots with keys.
        len: usize,
    },
}

impl Default for SlotPos {
    fn default() -> SlotPos {
        SlotPos::Sparse(Sparse::with_hasher(SlotHasher))
    }
}

impl SlotPos {
    /// Position of `slot`'s index table, if the slot has keys.
    #[inline]
    pub fn get(&self, slot: Slot) -> Option<u32> {
        match self {
            SlotPos::Dense { pos, .. } => match pos[usize::from(slot) & (SLOT_COUNT - 1)] {
                0 => None,
                p => Some(u32::from(p) - 1),
            },
            SlotPos::Sparse(m) => m.get(&slot).copied(),
        }
    }

    /// Slots with keys.
    pub fn len(&self) -> usize {
        match self {
            SlotPos::Dense { len, .. } => *len,
            SlotPos::Sparse(m) => m.len(),
        }
    }

    /// Bytes allocated.
    pub fn allocation_size(&self) -> usize {
        match self {
            SlotPos::Dense { pos, .. } => std::mem::size_of_val::<[u16; SLOT_COUNT]>(pos),
            SlotPos::Sparse(m) => m.allocation_size(),
        }
    }

    /// Sets the position of `slot` (a new slot, or a slot whose table moved in `Map::slots`).
    pub fn insert(&mut self, slot: Slot, p: u32) {
        debug_assert!((slot as usize) < SLOT_COUNT && (p as usize) < SLOT_COUNT);
        if let SlotPos::Sparse(m) = self {
            if m.len() >= DENSE_AT && !m.contains_key(&slot) {
                let mut pos: Box<[u16; SLOT_COUNT]> = vec![0u16; SLOT_COUNT]
                    .into_boxed_slice()
                    .try_into()
                    .expect("SLOT_COUNT entries");
                for (&s, &q) in m.iter() {
                    pos[usize::from(s)] = (q + 1) as u16;
                }
                *self = SlotPos::Dense { pos, len: m.len() };
            }
        }
        match self {
            SlotPos::Dense { pos, len } => {
                let e = &mut pos[usize::from(slot) & (SLOT_COUNT - 1)];
                if *e == 0 {
                    *len += 1;
                }
                *e = (p + 1) as u16;
            }
            SlotPos::Sparse(m) => {
                m.insert(slot, p);
            }
        }
    }

    /// Forgets `slot` (its table was removed).
    pub fn remove(&mut self, slot: Slot) {
        match self {
            SlotPos::Dense { pos, len } => {
                let e = &mut pos[usize::from(slot) & (SLOT_COUNT - 1)];
                if *e != 0 {
                    *e = 0;
                    *len -= 1;
                }
                if *len <= SPARSE_AT {
                    let mut m = Sparse::with_capacity_and_hasher(*len, SlotHasher);
                    // (With no slot left this allocates nothing.)
                    for (s, &q) in pos.iter().enumerate() {
                        if q != 0 {
                            m.insert(s as Slot, u32::from(q) - 1);
                        }
                    }
                    *self = SlotPos::Sparse(m);
                }
            }
            SlotPos::Sparse(m) => {
                m.remove(&slot);
                if m.is_empty() {
                    // hashbrown keeps its buckets on removal: a map whose keys are all gone
                    // gives them back.
                    *m = Sparse::with_hasher(SlotHasher);
                }
            }
        }
    }

    /// Upper bound of the bytes that inserting `new` slots not present now adds.
    pub fn growth_bound(&self, new: usize) -> u64 {
        match self {
            SlotPos::Dense { .. } => 0,
            SlotPos::Sparse(m) if new == 0 || m.len() + new <= m.capacity() => 0,
            SlotPos::Sparse(m) => {
                // The sparse map's new allocation (8-byte pairs and a control byte per bucket)
                // on the way, and the dense array if the count passes `DENSE_AT`.
                let n = (m.len() + new).min(DENSE_AT);
                let sparse = ((n * 8 / 7 + 1).next_power_of_two().max(4) * 9 + 64) as u64;
                sparse
                    + if m.len() + new > DENSE_AT {
                        DENSE_BYTES
                    } else {
                        0
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positions of `p` as a sorted list, whatever its form.
    fn all(p: &SlotPos) -> Vec<(Slot, u32)> {
        (0..SLOT_COUNT as Slot)
            .filter_map(|s| p.get(s).map(|q| (s, q)))
            .collect()
    }

    #[test]
    fn switches_to_dense_past_the_threshold_and_back_with_the_same_contents() {
        let mut p = SlotPos::default();
        assert_eq!(p.allocation_size(), 0, "an empty map allocates nothing");
        let mut model = std::collections::BTreeMap::new();
        // Slots spread over the whole range (a multiplier coprime with 2^14).
        let slot_of = |i: usize| ((i * 7919) % SLOT_COUNT) as Slot;
        for i in 0..DENSE_AT {
            let before = p.allocation_size() as u64;
            let bound = p.growth_bound(1);
            p.insert(slot_of(i), i as u32);
            model.insert(slot_of(i), i as u32);
            assert!(
                p.allocation_size() as u64 <= before + bound,
                "growth_bound bounds"
            );
        }
        assert!(
            matches!(p, SlotPos::Sparse(_)),
            "up to DENSE_AT slots stay sparse"
        );
        assert!(p.allocation_size() < 20_000);
        // Moving an existing slot does not switch.
        p.insert(slot_of(0), 5);
        model.insert(slot_of(0), 5);
        assert!(matches!(p, SlotPos::Sparse(_)));
        let before = p.allocation_size() as u64;
        let bound = p.growth_bound(1);
        p.insert(slot_of(DENSE_AT), 77);
        model.insert(slot_of(DENSE_AT), 77);
        assert!(matches!(p, SlotPos::Dense { .. }), "one more slot switches");
        assert!(
            p.allocation_size() as u64 <= before + bound,
            "growth_bound bounds"
        );
        assert_eq!(p.allocation_size() as u64, DENSE_BYTES);
        assert_eq!(p.len(), model.len());
        assert_eq!(all(&p), model.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(p.growth_bound(100), 0);
        // Removing down to SPARSE_AT switches back, keeping every position.
        let mut i = 0;
        while model.len() > SPARSE_AT + 1 {
            p.remove(slot_of(i));
            model.remove(&slot_of(i));
            // Removing an absent slot changes nothing.
            p.remove(slot_of(i));
            i += 1;
        }
        assert!(matches!(p, SlotPos::Dense { .. }));
        p.remove(slot_of(i));
        model.remove(&slot_of(i));
        assert!(
            matches!(p, SlotPos::Sparse(_)),
            "back to sparse at SPARSE_AT"
        );
        assert!(p.allocation_size() < 8_000);
        assert_eq!(p.len(), model.len());
        assert_eq!(all(&p), model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_dense_map_that_empties_allocates_nothing() {
        let mut p = SlotPos::default();
        for s in 0..=DENSE_AT as Slot {
            p.insert(s, u32::from(s));
        }
        assert!(matches!(p, SlotPos::Dense { .. }));
        for s in 0..=DENSE_AT as Slot {
            p.remove(s);
        }
        assert_eq!(p.len(), 0);
        assert_eq!(p.allocation_size(), 0);
        assert_eq!(p.get(3), None);
    }
}
