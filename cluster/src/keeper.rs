//! The table keeper: which partition table this node routes by, and, on the coordinator, when to
//! compute the next one.
//!
//! Rules (cluster.md): only the coordinator (the oldest live member it sees, with quorum) plans;
//! a node accepts a table only from the coordinator it sees and only with a higher epoch. A new
//! coordinator numbers its first table above every epoch it has seen (tables and gossiped epoch
//! hints), so epochs stay monotonic across coordinator changes and healed partitions.

use crate::membership::coordinator;
use crate::node::{NodeId, NodeInfo};
use crate::partition::{MigrationId, PartitionTable, TableError};
use crate::planner::{commit_migrations, plan_at, PlannerConfig};
use crate::Slot;

/// The verdict on a table received from a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Installed: route by it from now on.
    Accepted,
    /// Its epoch is not above ours: ignored.
    Stale,
    /// It was computed by a node we do not see as coordinator: ignored.
    WrongCoordinator,
    /// Structurally invalid: ignored (and worth a log line).
    Invalid(TableError),
}

/// Table keeper settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeeperConfig {
    /// Planner settings.
    pub planner: PlannerConfig,
    /// A node that has no table yet waits this long after its start before planning the first
    /// one, so SWIM views converge first (two partial views could otherwise each elect a
    /// coordinator and publish conflicting first tables). A few probe periods; default 0 (plan
    /// at once), tesserad should set about `3 * probe_period_ms`.
    pub first_plan_delay_ms: u64,
}

/// One node's table state.
#[derive(Debug)]
pub struct TableKeeper {
    me: NodeId,
    first_plan_at_ms: u64,
    table: Option<PartitionTable>,
    max_epoch_seen: u64,
    cfg: PlannerConfig,
    draining: Vec<NodeId>,
    commits: Vec<(Slot, MigrationId)>,
    /// The newest valid table seen from a coordinator we did not follow (partial views at
    /// start-up, a healed partition): planning starts from it when it is newer than ours, so
    /// the owners that served under it keep their slots (and their data) by stickiness.
    foreign: Option<PartitionTable>,
    /// Another coordinator published a table with our epoch number (a split view): the next
    /// replan on the coordinator publishes above it even if the plan did not change, or the
    /// members holding the other table would never move to ours.
    conflict: bool,
}

impl TableKeeper {
    /// A keeper for node `me`, started at `now_ms`, with no table yet.
    pub fn new(me: NodeId, cfg: KeeperConfig, now_ms: u64) -> TableKeeper {
        TableKeeper {
            me,
            first_plan_at_ms: now_ms.saturating_add(cfg.first_plan_delay_ms),
            table: None,
            max_epoch_seen: 0,
            cfg: cfg.planner,
            draining: Vec::new(),
            commits: Vec::new(),
            foreign: None,
            conflict: false,
        }
    }

    /// The table this node routes by.
    pub fn table(&self) -> Option<&PartitionTable> {
        self.table.as_ref()
    }

    /// Current epoch (0 before any table).
    pub fn epoch(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.epoch)
    }

    /// A peer's table, judged against the coordinator this node sees.
    pub fn offer(&mut self, table: PartitionTable, coordinator_seen: NodeId) -> Offer {
        if let Err(e) = table.validate() {
            return Offer::Invalid(e);
        }
        self.max_epoch_seen = self.max_epoch_seen.max(table.epoch);
        if table.coordinator != coordinator_seen {
            let newest = self
                .epoch()
                .max(self.foreign.as_ref().map_or(0, |t| t.epoch));
            if table.epoch > newest {
                self.foreign = Some(table);
            }
            return Offer::WrongCoordinator;
        }
        if table.epoch <= self.epoch() {
            return Offer::Stale;
        }
        self.table = Some(table);
        Offer::Accepted
    }

    /// A gossiped epoch hint; returns true when the caller should fetch that table.
    pub fn observe_epoch(&mut self, epoch: u64) -> bool {
        self.max_epoch_seen = self.max_epoch_seen.max(epoch);
        epoch > self.epoch()
    }

    /// A gossiped epoch hint with the coordinator that computed that table
    /// (`Message::TableEpoch`); returns true when the caller should fetch that table. The same
    /// epoch from another coordinator is a conflict, settled by the coordinator's next replan.
    pub fn observe_epoch_from(&mut self, epoch: u64, coordinator: NodeId) -> bool {
        if epoch == self.epoch()
            && self
                .table
                .as_ref()
                .is_some_and(|t| t.coordinator != coordinator)
        {
            self.conflict = true;
        }
        self.observe_epoch(epoch)
    }

    /// Marks `node` as leaving gracefully: the next plans give it no slots.
    pub fn drain(&mut self, node: NodeId) {
        if !self.draining.contains(&node) {
            self.draining.push(node);
        }
    }

    /// Whether `node` is draining and owns no slot any more (it may exit).
    pub fn drained(&self, node: NodeId) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| match t.node_index(node) {
                Some(i) => t.slots.iter().all(|e| e.primary.node != i),
                None => true,
            })
    }

    /// On the coordinator (with quorum): computes and installs the next table if the members or
    /// drains change the plan. Returns the new table to push to every member.
    pub fn replan(
        &mut self,
        members: &[NodeInfo],
        has_quorum: bool,
        now_ms: u64,
    ) -> Option<&PartitionTable> {
        if !has_quorum || coordinator(members) != Some(self.me) {
            return None;
        }
        if self.table.is_none() && self.foreign.is_none() && now_ms < self.first_plan_at_ms {
            return None;
        }
        let draining: Vec<NodeId> = self
            .draining
            .iter()
            .copied()
            .filter(|d| members.iter().any(|m| m.id == *d))
            .collect();
        if members.iter().all(|m| draining.contains(&m.id)) {
            return None;
        }
        let base = match (&self.table, &self.foreign) {
            (Some(own), Some(f)) if f.epoch > own.epoch => Some(f),
            (None, Some(f)) => Some(f),
            (own, _) => own.as_ref(),
        };
        let epoch = self.max_epoch_seen.max(self.epoch()) + 1;
        let next = plan_at(base, members, &draining, self.me, epoch, &self.cfg);
        self.foreign = None;
        if let Some(cur) = &self.table {
            // Unchanged but for freshly minted ids of migrations that were already planned?
            // Ids of continuing migrations are kept by the planner, so equal rows mean no change.
            if cur.nodes == next.nodes && cur.slots == next.slots && !self.conflict {
                return None;
            }
        }
        self.conflict = false;
        self.max_epoch_seen = epoch;
        self.table = Some(next);
        self.table.as_ref()
    }

    /// On the coordinator: a source finished a handoff; committed at the next [`Self::flush_commits`].
    pub fn request_commit(&mut self, slot: Slot, id: MigrationId) {
        self.commits.push((slot, id));
    }

    /// On the coordinator: publishes one table committing every requested migration that is
    /// still current. Returns it to push to every member.
    pub fn flush_commits(&mut self, members: &[NodeInfo]) -> Option<&PartitionTable> {
        if self.commits.is_empty() || coordinator(members) != Some(self.me) {
            self.commits.clear();
            return None;
        }
        let commits = std::mem::take(&mut self.commits);
        let mut next = commit_migrations(self.table.as_ref()?, &commits, self.me, &self.cfg)?;
        next.epoch = self.max_epoch_seen.max(self.epoch()) + 1;
        self.max_epoch_seen = next.epoch;
        self.table = Some(next);
        self.table.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::test_node;

    #[test]
    fn only_the_coordinator_plans_and_epochs_only_grow() {
        let members = vec![test_node(1, 2), test_node(2, 2)];
        let oldest = coordinator(&members).unwrap();
        let other = members.iter().find(|m| m.id != oldest).unwrap().id;
        let mut c = TableKeeper::new(oldest, KeeperConfig::default(), 0);
        let mut o = TableKeeper::new(other, KeeperConfig::default(), 0);
        assert!(o.replan(&members, true, 0).is_none());
        assert!(
            c.replan(&members, false, 0).is_none(),
            "no plan without quorum"
        );
        let t1 = c.replan(&members, true, 0).unwrap().clone();
        assert!(c.replan(&members, true, 0).is_none(), "nothing changed");
        assert_eq!(o.offer(t1.clone(), oldest), Offer::Accepted);
        assert_eq!(o.offer(t1.clone(), oldest), Offer::Stale);
        let mut forged = t1.clone();
        forged.epoch += 5;
        forged.coordinator = other;
        assert_eq!(o.offer(forged, oldest), Offer::WrongCoordinator);
        let mut broken = t1.clone();
        broken.epoch += 1;
        broken.slots.pop();
        assert!(matches!(o.offer(broken, oldest), Offer::Invalid(_)));
        // A new coordinator numbers above every epoch it saw.
        assert!(o.observe_epoch(40));
        let alone = vec![members.iter().find(|m| m.id == other).unwrap().clone()];
        let t2 = o.replan(&alone, true, 0).unwrap();
        assert_eq!(t2.epoch, 41);
    }

    #[test]
    fn a_new_coordinator_plans_from_the_newest_table_it_saw() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        // Node 2 coordinated a partial view {2, 3} and published its table.
        let partial = vec![test_node(2, 2), test_node(3, 2)];
        let mut two = TableKeeper::new(test_node(2, 2).id, KeeperConfig::default(), 0);
        let theirs = two.replan(&partial, true, 0).unwrap().clone();
        // Node 1 (older) sees everyone; it refused node 2's table but plans from it.
        let mut one = TableKeeper::new(test_node(1, 2).id, KeeperConfig::default(), 0);
        assert_eq!(
            one.offer(theirs.clone(), test_node(1, 2).id),
            Offer::WrongCoordinator
        );
        let next = one.replan(&members, true, 0).unwrap();
        assert!(next.epoch > theirs.epoch);
        // Slots node 2 and 3 served stay with them or migrate from them: none is reassigned
        // without a migration.
        let moved_without_migration = (0..crate::SLOT_COUNT)
            .filter(|&s| {
                let old = theirs.node(theirs.slots[s].primary.node).id;
                let e = &next.slots[s];
                next.node(e.primary.node).id != old
            })
            .count();
        assert_eq!(moved_without_migration, 0);
        assert!(next.migrations().count() > 0);
    }

    #[test]
    fn the_first_plan_waits_for_views_to_settle() {
        let members = vec![test_node(1, 2), test_node(2, 2)];
        let me = coordinator(&members).unwrap();
        let cfg = KeeperConfig {
            first_plan_delay_ms: 1500,
            ..KeeperConfig::default()
        };
        let mut k = TableKeeper::new(me, cfg, 1000);
        assert!(k.replan(&members, true, 2000).is_none());
        assert!(k.replan(&members, true, 2500).is_some());
    }

    #[test]
    fn drain_then_commit_empties_the_leaver() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 1)];
        let me = coordinator(&members).unwrap();
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        k.replan(&members, true, 0).unwrap();
        let leaver = test_node(3, 1).id;
        assert!(!k.drained(leaver));
        k.drain(leaver);
        let t = k.replan(&members, true, 0).unwrap().clone();
        for (slot, _, _, id) in t.migrations() {
            k.request_commit(slot, id);
        }
        let done = k.flush_commits(&members).unwrap();
        assert_eq!(done.epoch, t.epoch + 1);
        assert!(k.drained(leaver));
    }
}
