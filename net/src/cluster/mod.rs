//! The cluster drivers: what turns the sans-I/O `tessera-cluster` state machines into a running
//! cluster node.
//!
//! Owns:
//! - [`View`]: one core's routing truth (the [`PartitionTable`] it routes by, the live members
//!   and the quorum flag). Every core holds its own copy; the cluster task on core 0 installs new
//!   ones through the mailbox ([`crate::core::Request::Cluster`]), so routing reads a `RefCell`
//!   and never a lock.
//! - [`admit`]: the cluster checks of one keyed data command (`-MOVED`, `-CROSSSLOT`,
//!   `-CLUSTERDOWN`), run before it is routed to its owner core.
//! - [`surface`]: the Redis Cluster commands (`CLUSTER ...`, `READONLY`, `ASKING`, ...) and the
//!   Olric-style `CLUSTER.MEMBERS` / `CLUSTER.ROUTINGTABLE`.
//! - [`config`]: the `[cluster]` table. [`driver`]: the cluster task (membership over UDP,
//!   table keeper, table distribution). [`link`]: authenticated peer links over TCP.
//!
//! A node always has a table: a single node (cluster mode off) routes by a one-member table whose
//! slots are split over its cores exactly as [`tessera_cluster::SlotTable`] splits them, so
//! Redis Cluster clients work against it. In cluster mode a node has no table until the
//! coordinator publishes one; until then keyed commands get `-CLUSTERDOWN`.

pub mod config;
pub mod driver;
pub mod link;
pub mod migrate;
pub mod proxy;
pub mod surface;
pub mod wide;

use std::sync::Arc;

use tessera_cluster::redis::{moved, CLUSTERDOWN, CROSSSLOT};
use tessera_cluster::{
    NodeId, NodeIdx, NodeInfo, PartitionTable, Shard, SlotEntry, SlotState, SlotTable, SLOT_COUNT,
};
use tessera_engine::{key_slot, Command, Slot};

use crate::core::Core;
use crate::dispatch::{raw_error, Out};

/// One core's routing state.
#[derive(Clone, Debug)]
pub struct View {
    /// Whether this node runs in cluster mode (redirects, CROSSSLOT, quorum apply).
    pub enabled: bool,
    /// This node.
    pub me: NodeId,
    /// The table routed by; `None` only in cluster mode before the first table.
    pub table: Option<Arc<PartitionTable>>,
    /// This node's index in `table` (None: not a member of it).
    pub me_idx: Option<NodeIdx>,
    /// Live members (membership's view), sorted by id; always contains this node.
    pub live: Arc<Vec<NodeInfo>>,
    /// Whether the live member count reaches `member_count_quorum`.
    pub quorum: bool,
    /// The coordinator membership sees.
    pub coordinator: NodeId,
    /// This node is leaving (`CLUSTER LEAVE`, SIGTERM): its slots are being drained away, and
    /// its migration timers pace by `migration_leave_duty_percent`.
    pub leaving: bool,
    /// Per slot, the local core owning it, or [`REMOTE`] (another node, or no table): the hot
    /// path's routing lookup. 32 KiB, where the table's slot entries are about 800 KiB: every
    /// request for a random key would otherwise miss the cache on its slot entry (measured:
    /// `admit_slot` 5% of a cluster node's CPU under a GET/SET load).
    local: Arc<[u16]>,
}

/// [`View`]'s per-slot mark of a slot no local core owns.
const REMOTE: u16 = u16::MAX;

/// The per-slot local owners of `table` for the node at `me_idx`.
fn local_cores(table: Option<&PartitionTable>, me_idx: Option<NodeIdx>) -> Arc<[u16]> {
    (0..SLOT_COUNT)
        .map(|s| match table {
            Some(t) => {
                let owner = t.owner(s as Slot);
                if Some(owner.node) == me_idx {
                    owner.core
                } else {
                    REMOTE
                }
            }
            None => REMOTE,
        })
        .collect()
}

/// What the cluster task sends every core: a new view (table, members, quorum).
#[derive(Clone, Debug)]
pub struct ViewUpdate {
    pub table: Option<Arc<PartitionTable>>,
    pub live: Arc<Vec<NodeInfo>>,
    pub quorum: bool,
    pub coordinator: NodeId,
    pub leaving: bool,
}

impl View {
    /// The view of a node outside cluster mode: itself, owning every slot, split over its
    /// cores like [`SlotTable::single_node`].
    pub fn single(me: &NodeInfo) -> View {
        let table = single_node_table(me);
        View {
            enabled: false,
            me: me.id,
            me_idx: Some(0),
            local: local_cores(Some(&table), Some(0)),
            table: Some(Arc::new(table)),
            live: Arc::new(vec![me.clone()]),
            quorum: true,
            coordinator: me.id,
            leaving: false,
        }
    }

    /// The view of a cluster-mode node before it has a table.
    pub fn cluster_start(me: &NodeInfo) -> View {
        View {
            enabled: true,
            me: me.id,
            me_idx: None,
            table: None,
            local: local_cores(None, None),
            live: Arc::new(vec![me.clone()]),
            quorum: false,
            coordinator: me.id,
            leaving: false,
        }
    }

    /// Installs an update (tables only move forward: an older epoch is ignored).
    pub fn install(&mut self, u: ViewUpdate) {
        if let Some(t) = u.table {
            let newer = self.table.as_ref().map_or(true, |cur| t.epoch > cur.epoch);
            if newer {
                self.me_idx = t.node_index(self.me);
                self.local = local_cores(Some(&t), self.me_idx);
                self.table = Some(t);
            }
        }
        self.live = u.live;
        self.quorum = u.quorum;
        self.coordinator = u.coordinator;
        self.leaving = u.leaving;
    }

    /// Current epoch (0 before any table).
    pub fn epoch(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.epoch)
    }

    /// Whether `id` is a live member.
    pub fn alive(&self, id: NodeId) -> bool {
        self.live.iter().any(|n| n.id == id)
    }

    /// The local core owning `slot`, or `None` when another node (or nobody known) owns it.
    pub fn local_core(&self, slot: Slot) -> Option<usize> {
        match self.local.get(usize::from(slot)) {
            Some(&core) if core != REMOTE => Some(usize::from(core)),
            _ => None,
        }
    }
}

/// The one-member table of a node outside cluster mode (epoch 1, the node its own coordinator).
pub fn single_node_table(me: &NodeInfo) -> PartitionTable {
    let split = SlotTable::single_node(me.cores);
    PartitionTable {
        epoch: 1,
        coordinator: me.id,
        nodes: vec![me.clone()],
        slots: (0..SLOT_COUNT)
            .map(|s| SlotEntry {
                primary: Shard {
                    node: 0,
                    core: split.owner(s as Slot),
                },
                backups: Vec::new(),
                state: SlotState::Stable,
            })
            .collect(),
    }
}

/// The generation of this start: the wall clock in milliseconds. It only has to grow from one
/// start of a node to the next (SWIM tells a restarted node from its previous life by it, and
/// the coordinator is the member with the lowest one, i.e. the oldest), which a clock that does
/// not jump back by more than a restart takes gives.
pub fn start_generation() -> u64 {
    crate::runtime::now_ms().max(1)
}

/// The host this node tells clients and peers: `cluster.announce_host`, else the bind address,
/// or loopback when bound to the unspecified address.
pub fn announce_host(shared: &crate::core::Shared) -> String {
    if !shared.config.cluster.announce_host.is_empty() {
        return shared.config.cluster.announce_host.clone();
    }
    let bind = shared.config.net.bind;
    if bind.is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        bind.to_string()
    }
}

/// This node's [`NodeInfo`], with the client port it actually listens on.
pub fn me(shared: &crate::core::Shared, client_port: u16) -> NodeInfo {
    NodeInfo {
        id: shared.node_id,
        host: announce_host(shared),
        client_port,
        peer_port: 0,
        gossip_port: 0,
        cores: shared.cores as u16,
        generation: shared.generation,
    }
}

/// Random 20 bytes for a node id (the OS-seeded CSPRNG).
pub fn random_node_id() -> NodeId {
    NodeId(rand::random())
}

/// The cluster checks of one keyed data command on this core, before it is routed: `Err(reply)`
/// to answer instead of executing. `Ok(Some(slot))` in cluster mode when every key of `cmd`
/// hashes to `slot` and this node serves it: routing and the owner core's checks take the slot
/// from here instead of hashing the keys again. `Ok(None)` for a keyless command, and outside
/// cluster mode, where everything is admitted unchecked (multi-key commands are split over
/// cores as on any single node).
pub fn admit(core: &Core, cmd: &Command) -> Result<Option<Slot>, Out> {
    if !core.cluster.borrow().enabled {
        return Ok(None);
    }
    let keys = cmd.keys();
    let Some(first) = keys.first() else {
        return Ok(None);
    };
    let slot = key_slot(first);
    if keys[1..].iter().any(|k| key_slot(k) != slot) {
        return Err(raw_error(CROSSSLOT));
    }
    admit_slot(core, slot, cmd.is_write()).map(|()| Some(slot))
}

/// The cluster checks of a request for `slot` (a write when `write`): `-CLUSTERDOWN` without a
/// table or (for writes) without quorum, `-MOVED` when another node owns it.
pub fn admit_slot(core: &Core, slot: Slot, write: bool) -> Result<(), Out> {
    let view = core.cluster.borrow();
    if !view.enabled {
        return Ok(());
    }
    let Some(table) = view.table.as_ref() else {
        return Err(raw_error(CLUSTERDOWN));
    };
    if write && !view.quorum {
        return Err(raw_error(CLUSTERDOWN));
    }
    if view.local_core(slot).is_some() {
        return Ok(());
    }
    Err(raw_error(&moved(slot, table.node(table.owner(slot).node))))
}

/// The local core that owns `key` (in cluster mode: per this core's table; a key another node
/// owns maps to this core, and [`admit`] has already turned it away).
pub fn owner_core(core: &Core, key: &[u8]) -> usize {
    owner_core_of_slot(core, key_slot(key))
}

/// The local core that owns `slot` (see [`owner_core`]).
pub fn owner_core_of_slot(core: &Core, slot: Slot) -> usize {
    let view = core.cluster.borrow();
    if !view.enabled {
        return usize::from(core.shared.slots.owner(slot));
    }
    view.local_core(slot).unwrap_or(core.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(cores: u16) -> NodeInfo {
        NodeInfo {
            id: NodeId([7; 20]),
            host: "127.0.0.1".into(),
            client_port: 6379,
            peer_port: 0,
            gossip_port: 0,
            cores,
            generation: 1,
        }
    }

    #[test]
    fn single_node_table_matches_the_slot_table() {
        for cores in [1u16, 2, 3, 7] {
            let t = single_node_table(&me(cores));
            t.validate().unwrap();
            let split = SlotTable::single_node(cores);
            for s in 0..SLOT_COUNT as Slot {
                assert_eq!(t.owner(s).core, split.owner(s));
            }
            let v = View::single(&me(cores));
            assert_eq!(v.local_core(0), Some(0));
            assert_eq!(
                v.local_core((SLOT_COUNT - 1) as Slot),
                Some(usize::from(cores) - 1)
            );
        }
    }

    #[test]
    fn views_only_move_forward() {
        let mut v = View::cluster_start(&me(2));
        assert_eq!(v.epoch(), 0);
        assert_eq!(v.local_core(5), None);
        let mut t = single_node_table(&me(2));
        t.epoch = 5;
        let live = Arc::new(vec![me(2)]);
        let upd = |t: &PartitionTable| ViewUpdate {
            table: Some(Arc::new(t.clone())),
            live: Arc::clone(&live),
            quorum: true,
            coordinator: me(2).id,
            leaving: false,
        };
        v.install(upd(&t));
        assert_eq!(v.epoch(), 5);
        assert_eq!(v.local_core(5), Some(0));
        t.epoch = 4;
        v.install(upd(&t));
        assert_eq!(v.epoch(), 5, "an older table is ignored");
    }

    #[test]
    fn local_core_follows_the_installed_table() {
        // Two nodes; this one (index 1 in the table) owns every third slot on core 1.
        let other = NodeInfo {
            id: NodeId([1; 20]),
            ..me(2)
        };
        let mine = me(2);
        let mut t = single_node_table(&other);
        t.nodes.push(mine.clone());
        t.epoch = 7;
        for s in (0..SLOT_COUNT).step_by(3) {
            t.slots[s].primary = Shard { node: 1, core: 1 };
        }
        let mut v = View::cluster_start(&mine);
        v.install(ViewUpdate {
            table: Some(Arc::new(t.clone())),
            live: Arc::new(vec![other.clone(), mine.clone()]),
            quorum: true,
            coordinator: other.id,
            leaving: false,
        });
        assert_eq!(v.me_idx, Some(1));
        for s in 0..SLOT_COUNT {
            let want = (s % 3 == 0).then_some(1);
            assert_eq!(v.local_core(s as Slot), want, "slot {s}");
        }
        // A newer table moves everything to the other node: nothing is local any more.
        for e in &mut t.slots {
            e.primary = Shard { node: 0, core: 0 };
        }
        t.epoch = 8;
        v.install(ViewUpdate {
            table: Some(Arc::new(t)),
            live: Arc::new(vec![other.clone(), mine]),
            quorum: true,
            coordinator: other.id,
            leaving: false,
        });
        assert!((0..SLOT_COUNT).all(|s| v.local_core(s as Slot).is_none()));
    }
}
