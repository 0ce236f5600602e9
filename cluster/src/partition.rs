//! The multi-node partition table: for every slot its primary shard (node, core), its backups and
//! its migration state, versioned by a monotonically increasing epoch.
//!
//! A table arrives from the network, so [`PartitionTable::validate`] checks every structural
//! invariant before anything routes by it. Nodes are kept sorted by id and referred to by index,
//! which keeps the per-slot entry at a few bytes.

use crate::node::{NodeId, NodeInfo};
use crate::table::CoreId;
use crate::{Slot, SLOT_COUNT};

/// Index of a node inside [`PartitionTable::nodes`].
pub type NodeIdx = u16;

/// One executor of one node: the unit that owns a slot's data.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct Shard {
    /// Index into the table's node list.
    pub node: NodeIdx,
    /// Core on that node.
    pub core: CoreId,
}

/// Identifies one migration of one slot: a hash of (coordinator, epoch, slot). The coordinator
/// is part of it because during a split view two coordinators can mint the same epoch number,
/// and their migrations of one slot must never be mistaken for each other (the simulator found
/// exactly that with ids made of epoch and slot alone).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct MigrationId(pub u64);

impl MigrationId {
    /// The id minted for `slot` by `coordinator`'s table of `epoch`.
    pub fn new(coordinator: NodeId, epoch: u64, slot: Slot) -> MigrationId {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&coordinator.0);
        h.update(&epoch.to_le_bytes());
        h.update(&slot.to_le_bytes());
        MigrationId(h.digest())
    }
}

/// Whether a slot is moving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum SlotState {
    /// The primary serves the slot.
    Stable,
    /// `from` (still the primary, still serving) streams the slot to `to`.
    Migrating {
        /// The current owner, equal to the entry's primary.
        from: Shard,
        /// The shard that owns the slot once the migration commits.
        to: Shard,
        /// This migration.
        id: MigrationId,
    },
}

/// One slot's row.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct SlotEntry {
    /// The shard that accepts writes for the slot in this epoch.
    pub primary: Shard,
    /// Replicas, each on a node other than the primary's (used by the replication issue).
    pub backups: Vec<Shard>,
    /// Stable or migrating.
    pub state: SlotState,
}

/// The cluster's routing truth for one epoch.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct PartitionTable {
    /// Monotonic version; a node accepts only a higher one.
    pub epoch: u64,
    /// The member that computed this table.
    pub coordinator: NodeId,
    /// Members, sorted by id, unique.
    pub nodes: Vec<NodeInfo>,
    /// Exactly `SLOT_COUNT` rows.
    pub slots: Vec<SlotEntry>,
}

/// Why a table is structurally invalid (a bad table is dropped, never routed by).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// The table does not have exactly `SLOT_COUNT` rows.
    #[error("table has {0} slot rows, expected {SLOT_COUNT}")]
    SlotCount(usize),
    /// The node list is empty or too long for a `NodeIdx`.
    #[error("table has {0} nodes")]
    NodeCount(usize),
    /// The node list is not strictly sorted by id (duplicates included).
    #[error("node list not sorted by id or has duplicates")]
    NodesUnsorted,
    /// A node claims zero cores.
    #[error("node {0} has zero cores")]
    ZeroCores(NodeId),
    /// A slot names a node index or core that does not exist.
    #[error("slot {0} names a shard that does not exist")]
    BadShard(Slot),
    /// A slot has a backup on its primary's node or twice on one node.
    #[error("slot {0} has a backup on its primary's node or two on one node")]
    BadBackup(Slot),
    /// A migrating slot whose `from` is not its primary, or whose `to` equals `from`.
    #[error("slot {0} has an inconsistent migration")]
    BadMigration(Slot),
}

/// Where a request for a slot should go, from one node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A core of this node owns it.
    Local(CoreId),
    /// Another node owns it.
    Remote {
        /// The owning node.
        node: &'a NodeInfo,
        /// Its owning core.
        core: CoreId,
    },
}

impl PartitionTable {
    /// Checks every structural invariant; call on every table received from the network.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.slots.len() != SLOT_COUNT {
            return Err(TableError::SlotCount(self.slots.len()));
        }
        if self.nodes.is_empty() || self.nodes.len() > usize::from(NodeIdx::MAX) {
            return Err(TableError::NodeCount(self.nodes.len()));
        }
        if self.nodes.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(TableError::NodesUnsorted);
        }
        if let Some(n) = self.nodes.iter().find(|n| n.cores == 0) {
            return Err(TableError::ZeroCores(n.id));
        }
        let valid = |s: Shard| {
            self.nodes
                .get(usize::from(s.node))
                .is_some_and(|n| s.core < n.cores)
        };
        for (slot, e) in self.slots.iter().enumerate() {
            let slot = slot as Slot;
            if !valid(e.primary) || !e.backups.iter().all(|b| valid(*b)) {
                return Err(TableError::BadShard(slot));
            }
            for (i, b) in e.backups.iter().enumerate() {
                if b.node == e.primary.node || e.backups[..i].iter().any(|o| o.node == b.node) {
                    return Err(TableError::BadBackup(slot));
                }
            }
            if let SlotState::Migrating { from, to, .. } = e.state {
                if from != e.primary || to == from || !valid(to) {
                    return Err(TableError::BadMigration(slot));
                }
            }
        }
        Ok(())
    }

    /// The index of node `id`, if it is a member of this table.
    pub fn node_index(&self, id: NodeId) -> Option<NodeIdx> {
        self.nodes
            .binary_search_by(|n| n.id.cmp(&id))
            .ok()
            .map(|i| i as NodeIdx)
    }

    /// The node at `idx`. Panics on an index this (validated) table does not have.
    pub fn node(&self, idx: NodeIdx) -> &NodeInfo {
        &self.nodes[usize::from(idx)]
    }

    /// The row of `slot`.
    pub fn entry(&self, slot: Slot) -> &SlotEntry {
        &self.slots[usize::from(slot)]
    }

    /// The primary shard of `slot`.
    pub fn owner(&self, slot: Slot) -> Shard {
        self.entry(slot).primary
    }

    /// Where a request for `slot` goes when it arrives at node `me`.
    pub fn route(&self, slot: Slot, me: NodeId) -> Route<'_> {
        let owner = self.owner(slot);
        let node = self.node(owner.node);
        if node.id == me {
            Route::Local(owner.core)
        } else {
            Route::Remote {
                node,
                core: owner.core,
            }
        }
    }

    /// Contiguous ranges `(first, last, owner)` inclusive, in slot order: what `CLUSTER SLOTS`
    /// and `CLUSTER SHARDS` list (one row per run of one node; cores are merged).
    pub fn node_ranges(&self) -> Vec<(Slot, Slot, NodeIdx)> {
        let mut out: Vec<(Slot, Slot, NodeIdx)> = Vec::new();
        for (slot, e) in self.slots.iter().enumerate() {
            let slot = slot as Slot;
            match out.last_mut() {
                Some((_, last, node)) if *node == e.primary.node && *last + 1 == slot => {
                    *last = slot;
                }
                _ => out.push((slot, slot, e.primary.node)),
            }
        }
        out
    }

    /// The nodes that are the primary of at least one slot, sorted by id (a table's nodes may
    /// include a drained leaver, or a joiner before its migrations, that own none).
    pub fn owner_ids(&self) -> Vec<NodeId> {
        let mut owns = vec![false; self.nodes.len()];
        for e in &self.slots {
            owns[usize::from(e.primary.node)] = true;
        }
        self.nodes
            .iter()
            .zip(owns)
            .filter_map(|(n, owns)| owns.then_some(n.id))
            .collect()
    }

    /// Number of slots whose primary is `shard`.
    pub fn count_owned(&self, shard: Shard) -> usize {
        self.slots.iter().filter(|e| e.primary == shard).count()
    }

    /// Slots currently migrating, with their state.
    pub fn migrations(&self) -> impl Iterator<Item = (Slot, Shard, Shard, MigrationId)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| match e.state {
                SlotState::Migrating { from, to, id } => Some((slot as Slot, from, to, id)),
                SlotState::Stable => None,
            })
    }
}
