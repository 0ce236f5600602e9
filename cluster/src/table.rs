//! `SlotTable`: which core of this node owns each slot.
//!
//! On a single node the slots are split into contiguous, even ranges, one per core. The cluster
//! layer extends this to (node, core) owners with epochs.

use crate::{Slot, SLOT_COUNT};

/// Index of an executor (core) within a node.
pub type CoreId = u16;

/// Owner core of every slot on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTable {
    owners: Box<[CoreId]>,
    cores: u16,
}

impl SlotTable {
    /// Contiguous even ranges: core `c` owns slots `[c * N / cores, (c + 1) * N / cores)`.
    pub fn single_node(cores: u16) -> SlotTable {
        assert!(cores >= 1, "a node has at least one core");
        assert!(usize::from(cores) <= SLOT_COUNT);
        let owners: Box<[CoreId]> = (0..SLOT_COUNT)
            .map(|slot| ((slot * usize::from(cores)) / SLOT_COUNT) as CoreId)
            .collect();
        SlotTable { owners, cores }
    }

    /// The core that owns `slot`.
    pub fn owner(&self, slot: Slot) -> CoreId {
        self.owners[usize::from(slot)]
    }

    /// Number of cores slots are spread over.
    pub fn cores(&self) -> u16 {
        self.cores
    }

    /// The contiguous slot ranges `(first, last)` inclusive owned by `core`.
    pub fn ranges(&self, core: CoreId) -> Vec<(Slot, Slot)> {
        let mut out = Vec::new();
        let mut start: Option<usize> = None;
        for slot in 0..=SLOT_COUNT {
            let owned = slot < SLOT_COUNT && self.owners[slot] == core;
            match (owned, start) {
                (true, None) => start = Some(slot),
                (false, Some(s)) => {
                    out.push((s as Slot, (slot - 1) as Slot));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_contiguous_split() {
        let t = SlotTable::single_node(2);
        assert_eq!(t.ranges(0), vec![(0, 8191)]);
        assert_eq!(t.ranges(1), vec![(8192, 16383)]);
        let t = SlotTable::single_node(3);
        let sizes: Vec<usize> = (0..3)
            .map(|c| {
                t.ranges(c)
                    .iter()
                    .map(|(a, b)| usize::from(b - a) + 1)
                    .sum()
            })
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), SLOT_COUNT);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }
}
