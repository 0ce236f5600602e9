//! The table keeper: which partition table this node routes by, and, on the coordinator, when to
//! compute the next one.
//!
//! Rules (cluster.md): only the coordinator (the oldest live member it sees, with quorum) plans;
//! a node accepts a table only from the coordinator it sees and only with a higher epoch. A new
//! coordinator numbers its first table above every epoch it has seen (tables and gossiped epoch
//! hints), so epochs stay monotonic across coordinator changes and healed partitions.
//!
//! Catch-up: a node that becomes coordinator, and a coordinator that sees a member appear (a
//! join, or a rejoin with a renewed generation after it was declared down), plans and commits
//! nothing until every live member has sent it an epoch hint ([`TableKeeper::observe_hint`])
//! and it holds a table at least as new as every hinted epoch (fetched with `TableFetch`). A
//! coordinator that planned from an older table than one a member holds would undo what that
//! table decided: seed 4168 at 20 s, where the old coordinator, cut off, committed a verified
//! migration, rejoined younger after the heal, and the new coordinator, planning at once from
//! the table before that commit, abandoned the migration, so its target dropped the only copy
//! the winning table named.
//!
//! Lease ([`KeeperConfig::lease_ms`]): the coordinator plans, publishes and commits only while
//! every other live member has echoed, within the lease on its own clock, the clock value of
//! one of its hints ([`TableKeeper::hint`]: every hint carries the sender's clock and, to the
//! node the sender sees as coordinator, the newest clock value heard from it). A coordinator
//! that was paused (a starved process) or cut off stops before the others declare it down and
//! follow another; when its lease lapses it catches up again from hints that arrive after the
//! lapse (queued ones echo only hints sent before the pause). A node that becomes coordinator
//! waits one lease before planning, by which time its predecessor's lease, which counted this
//! node's echoes, has run out. Pause sweep seeds 39 and 139 at 20 s: without it a coordinator
//! back from a pause committed from its stale table under the epoch number its successor had
//! used, and its source dropped a slot the others' table still placed there.

use std::collections::BTreeMap;

use crate::membership::coordinator;
use crate::node::{NodeId, NodeInfo};
use crate::partition::{MigrationId, PartitionTable, SlotState, TableError};
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
    /// A member that owns slots in the current table and leaves the live view (declared down,
    /// or cut off) keeps them in the plans for this long, milliseconds, before they are
    /// reassigned to live members (without their data: there is no other copy). A node that
    /// was only slow (a loaded machine fails probes) and comes back within it loses nothing;
    /// a dead node's slots stay unavailable that much longer. Default 0 (reassign at once);
    /// `tessera-net` sets `[cluster] member_down_grace_ms`.
    pub down_grace_ms: u64,
    /// The coordinator lease, milliseconds (module docs, "Lease"): the coordinator plans,
    /// publishes and commits only while every other live member has echoed, within this long
    /// on its own clock, one of its hints as its coordinator. Must be shorter than failure
    /// detection (`probe_period_ms + suspect_to_down_ms`: a paused or cut-off coordinator
    /// stops before the others can declare it down and follow another) and longer than two
    /// hint intervals plus a round trip (or a healthy coordinator never holds it). Default 0:
    /// no lease (plans whenever caught up, as before); `tessera-net` sets
    /// `suspect_to_down_ms`.
    pub lease_ms: u64,
    /// A drained leaver exits once every live member hinted that it holds its last table, or
    /// after this long, milliseconds ([`TableKeeper::leave_ready`]). Default 0: exit as soon as
    /// drained; `tessera-net` sets `[cluster] leave_confirm_ms`.
    pub leave_confirm_ms: u64,
}

/// Whether a leaving node may exit ([`TableKeeper::leave_ready`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReady {
    /// Not yet: it still owns or receives a slot, or waits for the members to hold its last
    /// table.
    Wait,
    /// Drained, and every live member holds its last table (or a newer one).
    Confirmed {
        /// Since it found itself drained, milliseconds.
        waited_ms: u64,
    },
    /// Drained, but not every member confirmed within `leave_confirm_ms`: exit anyway.
    TimedOut {
        /// Since it found itself drained, milliseconds.
        waited_ms: u64,
    },
}

/// The latest epoch hint from one member.
#[derive(Clone, Copy, Debug)]
struct LastHint {
    /// The sender's generation in the live view when it came (0: not in the view).
    generation: u64,
    /// The sender's clock (echoed back to it while it is our coordinator: the lease).
    at_ms: u64,
    /// The epoch and coordinator of the sender's table ([`TableKeeper::held_by_all`]).
    epoch: u64,
    coordinator: NodeId,
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
    /// Whether this node was coordinator at the last [`Self::replan`] / [`Self::flush_commits`].
    was_coordinator: bool,
    /// While coordinator: per live member, the generation it had when it entered this view
    /// (or when this node became coordinator) and the epoch of its latest hint since then.
    heard: BTreeMap<NodeId, (u64, Option<u64>)>,
    /// Owners in the current table that left the live view, and since when (ms): planned as
    /// members until `down_grace_ms` has passed.
    gone: BTreeMap<NodeId, (NodeInfo, u64)>,
    down_grace_ms: u64,
    lease_ms: u64,
    leave_confirm_ms: u64,
    /// When this node, leaving, first found itself drained (ms): see [`Self::leave_ready`].
    drained_at: Option<u64>,
    /// Per sender: its latest hint (the lease's clock to echo, and the table it holds).
    hint_at: BTreeMap<NodeId, LastHint>,
    /// Per member: its generation (as for `hint_at`) and the `echo_ms` of our own hints it
    /// sent back last (our clock). Kept apart from `hint_at`: a hint without an echo (0) keeps
    /// the last one.
    echoes: BTreeMap<NodeId, (u64, u64)>,
    /// The live view at the last [`Self::replan`]: generations, for `hint_at`.
    view: Vec<(NodeId, u64)>,
    /// Whether the lease held at the last check; when it lapses the catch-up starts over.
    leased: bool,
    /// When this node last became coordinator (ms): it plans only `lease_ms` later.
    coordinator_since: u64,
    /// The last [`Self::replan`] planned nothing because of time-dependent state (not
    /// coordinator or not caught up yet, no quorum, the first plan's delay): see
    /// [`Self::plan_deferred`].
    deferred: bool,
}

/// The table the next plan starts from: ours, or a newer one of another coordinator.
fn newest<'a>(
    own: Option<&'a PartitionTable>,
    foreign: Option<&'a PartitionTable>,
) -> Option<&'a PartitionTable> {
    match (own, foreign) {
        (Some(own), Some(f)) if f.epoch > own.epoch => Some(f),
        (None, Some(f)) => Some(f),
        (own, _) => own,
    }
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
            was_coordinator: false,
            heard: BTreeMap::new(),
            gone: BTreeMap::new(),
            down_grace_ms: cfg.down_grace_ms,
            lease_ms: cfg.lease_ms,
            leave_confirm_ms: cfg.leave_confirm_ms,
            drained_at: None,
            hint_at: BTreeMap::new(),
            echoes: BTreeMap::new(),
            view: Vec::new(),
            leased: false,
            deferred: true,
            coordinator_since: 0,
        }
    }

    /// The members a plan places slots on: the live ones, and the owners of the current table
    /// that left the live view less than `down_grace_ms` ago (see [`KeeperConfig`]).
    fn planning_members(&mut self, live: &[NodeInfo], now_ms: u64) -> Vec<NodeInfo> {
        let is_live = |id: NodeId| live.iter().any(|m| m.id == id);
        // The owners are those of the table the next plan starts from: a newer foreign table
        // if there is one (pause sweep seed 11: a coordinator back from a pause held no table
        // of its own, planned from the foreign one, and gave the slots of an owner paused in
        // turn to the others at once, without their data).
        let Some(table) = newest(self.table.as_ref(), self.foreign.as_ref()) else {
            self.gone.clear();
            return live.to_vec();
        };
        self.gone
            .retain(|id, _| !is_live(*id) && table.node_index(*id).is_some());
        if self.down_grace_ms > 0 {
            for (i, n) in table.nodes.iter().enumerate() {
                let owns = || table.slots.iter().any(|e| usize::from(e.primary.node) == i);
                if !is_live(n.id) && !self.gone.contains_key(&n.id) && owns() {
                    self.gone.insert(n.id, (n.clone(), now_ms));
                }
            }
        }
        let grace = self.down_grace_ms;
        let mut members = live.to_vec();
        members.extend(
            self.gone
                .values()
                .filter(|(_, since)| now_ms < since.saturating_add(grace))
                .map(|(n, _)| n.clone()),
        );
        members
    }

    /// The table to answer a `TableFetch { have_epoch }` with: ours if it is newer than the
    /// asker's, and only while no newer epoch is known to exist. A coordinator back from a
    /// pause routes by its old table until it has caught up; handing that table to a member
    /// that has none (just restarted) makes it serve slots that newer tables moved (pause
    /// sweep seed 13 at 20 s: a restarted node installed epoch 1 while others held epoch 3,
    /// and the writes it took were lost when it caught up).
    pub fn table_for_fetch(&self, have_epoch: u64) -> Option<&PartitionTable> {
        self.table
            .as_ref()
            .filter(|t| t.epoch > have_epoch && t.epoch >= self.max_epoch_seen)
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

    /// The epoch hint (`Message::TableEpoch`) to send to member `to` at `now_ms`, this node
    /// seeing `coordinator_seen` as coordinator: this node's epoch and the coordinator that
    /// computed its table, its clock, and, when `to` is its coordinator, the echo of the
    /// newest clock value `to` sent (the coordinator's lease, module docs).
    pub fn hint(&self, to: NodeId, coordinator_seen: NodeId, now_ms: u64) -> crate::Message {
        let echo_ms = if to == coordinator_seen {
            self.hint_at.get(&to).map_or(0, |h| h.at_ms)
        } else {
            0
        };
        crate::Message::TableEpoch {
            epoch: self.epoch(),
            coordinator: self
                .table
                .as_ref()
                .map_or(coordinator_seen, |t| t.coordinator),
            at_ms: now_ms.max(1),
            echo_ms,
        }
    }

    /// A gossiped epoch hint (`Message::TableEpoch`) from member `from`, with the coordinator
    /// that computed that table, the sender's clock and its echo of ours; returns true when the
    /// caller should fetch that table from `from`. The same epoch from another coordinator is
    /// a conflict, settled by the coordinator's next replan. On the coordinator the hint also
    /// counts towards catch-up and its echo towards the lease (module docs): a coordinator
    /// plans only once every live member has hinted, and only while every one echoes.
    pub fn observe_hint(
        &mut self,
        from: NodeId,
        epoch: u64,
        coordinator: NodeId,
        at_ms: u64,
        echo_ms: u64,
    ) -> bool {
        if let Some(h) = self.heard.get_mut(&from) {
            h.1 = Some(epoch);
        }
        let generation = self
            .view
            .iter()
            .find(|(id, _)| *id == from)
            .map_or(0, |&(_, g)| g);
        self.hint_at.insert(
            from,
            LastHint {
                generation,
                at_ms,
                epoch,
                coordinator,
            },
        );
        if echo_ms > 0 {
            self.echoes.insert(from, (generation, echo_ms));
        }
        self.observe_epoch_from(epoch, coordinator)
    }

    /// Whether every other member of `members` echoed one of our hints sent less than
    /// `lease_ms` ago (always, without a lease).
    fn lease_holds(&self, members: &[NodeInfo], now_ms: u64) -> bool {
        self.lease_ms == 0
            || members.iter().filter(|m| m.id != self.me).all(|m| {
                self.echoes.get(&m.id).is_some_and(|&(g, at)| {
                    g == m.generation && at <= now_ms && now_ms < at.saturating_add(self.lease_ms)
                })
            })
    }

    /// [`Self::observe_hint`] without the sender: detects conflicts and asks for fetches, but
    /// does not count towards a coordinator's catch-up.
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

    /// Whether every other member of `members` (the live view) hinted, in its current
    /// generation, our table (its epoch and coordinator) or a newer epoch: they all hold our
    /// table or a newer one (the same epoch from another coordinator is another table). A drained
    /// node exits only then (or after `cluster.leave_confirm_ms`): a leaving coordinator's last
    /// commit table may otherwise exist only on the node that exits, and the members would
    /// route the slots it committed to the exited node until a successor plans again, one
    /// lease later (the process test, 2026-12-01: 5.3 s of refused connections).
    pub fn held_by_all(&self, members: &[NodeInfo]) -> bool {
        let epoch = self.epoch();
        let by = self.table.as_ref().map(|t| t.coordinator);
        members.iter().filter(|m| m.id != self.me).all(|m| {
            self.hint_at.get(&m.id).is_some_and(|h| {
                h.generation == m.generation
                    && (h.epoch > epoch || (h.epoch == epoch && Some(h.coordinator) == by))
            })
        })
    }

    /// On a leaving node, whether it may exit now: it is [`Self::drained`] and every live member
    /// holds its last table ([`Self::held_by_all`]), or `leave_confirm_ms` has passed since it
    /// found itself drained. The one exit rule of tessera-net's driver and the simulator.
    pub fn leave_ready(&mut self, members: &[NodeInfo], now_ms: u64) -> LeaveReady {
        if !self.drained(self.me) {
            self.drained_at = None;
            return LeaveReady::Wait;
        }
        let waited_ms = now_ms.saturating_sub(*self.drained_at.get_or_insert(now_ms));
        if self.held_by_all(members) {
            LeaveReady::Confirmed { waited_ms }
        } else if waited_ms >= self.leave_confirm_ms {
            LeaveReady::TimedOut { waited_ms }
        } else {
            LeaveReady::Wait
        }
    }

    /// Marks `node` as leaving gracefully: the next plans give it no slots.
    pub fn drain(&mut self, node: NodeId) {
        if !self.draining.contains(&node) {
            self.draining.push(node);
        }
    }

    /// Whether `node` is draining and owns no slot any more (it may exit): by this node's
    /// table it is neither the owner nor the migration target of any slot. A target may hold
    /// a verified copy whose commit table it has not seen yet (pause sweep seed 56 at 20 s: the
    /// joiner, told to leave while paused, resumed with the table that planned migrations
    /// towards it, owned nothing by it, and left with the copies the next table named).
    pub fn drained(&self, node: NodeId) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| match t.node_index(node) {
                Some(i) => t.slots.iter().all(|e| {
                    e.primary.node != i
                        && !matches!(e.state, SlotState::Migrating { to, .. } if to.node == i)
                }),
                None => true,
            })
    }

    /// Whether this node is coordinator among `members` and caught up with them: every other
    /// member hinted since it entered the view (or since this node became coordinator), and no
    /// hinted epoch is above the newest table held (own or foreign; the fetch is in flight).
    /// Updates the catch-up bookkeeping; idempotent for the same members.
    fn caught_up(&mut self, members: &[NodeInfo], now_ms: u64) -> bool {
        let is_coordinator = coordinator(members) == Some(self.me);
        if !is_coordinator || !self.was_coordinator {
            // Hints heard before this node became coordinator may predate a table the old
            // coordinator published: start afresh.
            self.heard.clear();
        }
        if is_coordinator && !self.was_coordinator {
            self.coordinator_since = now_ms;
        }
        self.was_coordinator = is_coordinator;
        if !is_coordinator {
            self.leased = false;
            return false;
        }
        // The previous coordinator's lease ran on echoes from every member, this node's
        // included, and this node stopped echoing it when it stopped seeing it as coordinator:
        // waiting one lease from then, this node cannot plan while the old one still may.
        let waited = now_ms >= self.coordinator_since.saturating_add(self.lease_ms);
        let leased = self.lease_holds(members, now_ms);
        if !leased && self.leased {
            // The lease lapsed (this node was paused, or cut off): another node may have
            // coordinated meanwhile, and hints queued during the pause say nothing about it.
            // Catch up again from hints that arrive from now on.
            self.heard.clear();
        }
        self.leased = leased;
        self.heard.retain(|id, (generation, _)| {
            members
                .iter()
                .any(|m| m.id == *id && m.generation == *generation)
        });
        for m in members {
            if m.id != self.me {
                self.heard.entry(m.id).or_insert((m.generation, None));
            }
        }
        let newest = self
            .epoch()
            .max(self.foreign.as_ref().map_or(0, |t| t.epoch));
        leased
            && waited
            && self
                .heard
                .values()
                .all(|&(_, hinted)| hinted.is_some_and(|e| e <= newest))
    }

    /// On the coordinator (with quorum, caught up: module docs): computes and installs the next
    /// table if the members or drains change the plan. Returns the new table to push to every
    /// member.
    pub fn replan(
        &mut self,
        members: &[NodeInfo],
        has_quorum: bool,
        now_ms: u64,
    ) -> Option<&PartitionTable> {
        // The coordinator role and the catch-up go by the live view; slots stay with owners
        // that left it for `down_grace_ms`. Tracked on every call, coordinator or not: a node
        // that flaps (back in the view while this one is not coordinator, gone again) gets a
        // fresh grace each time it leaves (the join test at load 15-18: without this, the
        // grace counted from its first departure and ran out while it came and went).
        let planning = self.planning_members(members, now_ms);
        // A clock value heard from a node of an earlier generation is not echoed to its new
        // one (a restarted process's clock starts again).
        self.view = members.iter().map(|m| (m.id, m.generation)).collect();
        let view = &self.view;
        let in_view = |id: &NodeId, g: &u64| view.iter().any(|(v, vg)| v == id && vg == g);
        self.hint_at.retain(|id, h| in_view(id, &h.generation));
        self.echoes.retain(|id, (g, _)| in_view(id, g));
        self.deferred = true;
        if !self.caught_up(members, now_ms) || !has_quorum {
            return None;
        }
        if self.table.is_none() && self.foreign.is_none() && now_ms < self.first_plan_at_ms {
            return None;
        }
        self.deferred = false;
        let members = &planning;
        let draining: Vec<NodeId> = self
            .draining
            .iter()
            .copied()
            .filter(|d| members.iter().any(|m| m.id == *d))
            .collect();
        if members.iter().all(|m| draining.contains(&m.id)) {
            return None;
        }
        let base = newest(self.table.as_ref(), self.foreign.as_ref());
        // Planning from a newer table of another coordinator: publish even if the rows equal
        // ours, so that this node and its members route by an epoch above it.
        let rebased = base.map(|t| t.epoch) > self.table.as_ref().map(|t| t.epoch);
        let epoch = self.max_epoch_seen.max(self.epoch()) + 1;
        let next = plan_at(base, members, &draining, self.me, epoch, &self.cfg);
        self.foreign = None;
        if let Some(cur) = &self.table {
            // Unchanged but for freshly minted ids of migrations that were already planned?
            // Ids of continuing migrations are kept by the planner, so equal rows mean no change.
            if cur.nodes == next.nodes && cur.slots == next.slots && !self.conflict && !rebased {
                return None;
            }
        }
        self.conflict = false;
        self.max_epoch_seen = epoch;
        self.table = Some(next);
        self.table.as_ref()
    }

    /// Whether the last [`Self::replan`] planned nothing for a reason that time alone can end
    /// (this node is not coordinator or not caught up, the lease or a new coordinator's wait,
    /// no quorum, the first plan's delay). A driver that calls `replan` only on news (a
    /// member change, a hint, a table) must also call it while this is true.
    pub fn plan_deferred(&self) -> bool {
        self.deferred
    }

    /// On the coordinator: a source finished a handoff; committed at the next [`Self::flush_commits`].
    pub fn request_commit(&mut self, slot: Slot, id: MigrationId) {
        // Sources repeat their requests until the commit table comes: keep one of each.
        if !self.commits.contains(&(slot, id)) {
            self.commits.push((slot, id));
        }
    }

    /// On the coordinator: publishes one table committing every requested migration that is
    /// still current. Returns it to push to every member. Requests wait while the coordinator
    /// is catching up (a commit on a stale table would revert what a newer one decided).
    pub fn flush_commits(&mut self, members: &[NodeInfo], now_ms: u64) -> Option<&PartitionTable> {
        let caught_up = self.caught_up(members, now_ms);
        if self.commits.is_empty() || coordinator(members) != Some(self.me) {
            self.commits.clear();
            return None;
        }
        if !caught_up {
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

    /// Every other member of `members` hints `epoch` to `k` (as the periodic hints do).
    fn hints_from_all(k: &mut TableKeeper, members: &[NodeInfo], epoch: u64) {
        k.caught_up(members, 0);
        let by = k.table().map_or(k.me, |t| t.coordinator);
        for m in members {
            if m.id != k.me {
                k.observe_hint(m.id, epoch, by, 1, 0);
            }
        }
    }

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
        assert!(
            c.replan(&members, true, 0).is_none(),
            "no plan before every member hinted"
        );
        hints_from_all(&mut c, &members, 0);
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
        hints_from_all(&mut two, &partial, 0);
        let theirs = two.replan(&partial, true, 0).unwrap().clone();
        // Node 1 (older) sees everyone; it refused node 2's table but plans from it.
        let mut one = TableKeeper::new(test_node(1, 2).id, KeeperConfig::default(), 0);
        assert_eq!(
            one.offer(theirs.clone(), test_node(1, 2).id),
            Offer::WrongCoordinator
        );
        hints_from_all(&mut one, &members, theirs.epoch);
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
        hints_from_all(&mut k, &members, 0);
        assert!(k.replan(&members, true, 2000).is_none());
        assert!(k.replan(&members, true, 2500).is_some());
    }

    #[test]
    fn drain_then_commit_empties_the_leaver() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 1)];
        let me = coordinator(&members).unwrap();
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        hints_from_all(&mut k, &members, 0);
        k.replan(&members, true, 0).unwrap();
        let leaver = test_node(3, 1).id;
        assert!(!k.drained(leaver));
        k.drain(leaver);
        let t = k.replan(&members, true, 0).unwrap().clone();
        for (slot, _, _, id) in t.migrations() {
            k.request_commit(slot, id);
        }
        let done = k.flush_commits(&members, 0).unwrap();
        assert_eq!(done.epoch, t.epoch + 1);
        assert!(k.drained(leaver));
    }

    /// The process test of 2026-12-01: a draining coordinator planned its last commit table
    /// and exited 9 ms later, before any member had it; the members routed the committed slots
    /// to the exited node until the next coordinator planned, one lease (5 s) later. It may
    /// exit once every live member hinted that epoch (or a newer one).
    #[test]
    fn a_drained_coordinator_knows_when_every_member_holds_its_last_table() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 1)];
        let me = coordinator(&members).unwrap();
        let others: Vec<NodeId> = members
            .iter()
            .map(|m| m.id)
            .filter(|&id| id != me)
            .collect();
        let cfg = KeeperConfig {
            leave_confirm_ms: 1000,
            ..KeeperConfig::default()
        };
        let mut k = TableKeeper::new(me, cfg, 0);
        hints_from_all(&mut k, &members, 0);
        let first = k.replan(&members, true, 0).unwrap().epoch;
        assert_eq!(k.leave_ready(&members, 0), LeaveReady::Wait, "not drained");
        k.drain(me);
        let t = k.replan(&members, true, 0).unwrap().clone();
        for (slot, _, _, id) in t.migrations() {
            k.request_commit(slot, id);
        }
        let last = k.flush_commits(&members, 0).unwrap().epoch;
        assert!(k.drained(me));
        assert!(
            !k.held_by_all(&members),
            "no member hinted the last table yet"
        );
        // The exit waits for the members, at most `leave_confirm_ms` from the first check.
        assert_eq!(k.leave_ready(&members, 100), LeaveReady::Wait);
        assert_eq!(k.leave_ready(&members, 1099), LeaveReady::Wait);
        assert_eq!(
            k.leave_ready(&members, 1100),
            LeaveReady::TimedOut { waited_ms: 1000 }
        );
        // One member holds it, the other an older table.
        k.observe_hint(others[0], last, me, 2, 0);
        k.observe_hint(others[1], first, me, 2, 0);
        assert!(!k.held_by_all(&members));
        // The same epoch from another coordinator is another table.
        k.observe_hint(others[1], last, others[0], 3, 0);
        assert!(!k.held_by_all(&members));
        // A hint of a newer epoch counts; a member's hint from an earlier generation does not.
        k.observe_hint(others[1], last + 1, me, 3, 0);
        assert!(k.held_by_all(&members));
        assert_eq!(
            k.leave_ready(&members, 1200),
            LeaveReady::Confirmed { waited_ms: 1100 }
        );
        let mut restarted = members.clone();
        for m in &mut restarted {
            if m.id == others[1] {
                m.generation += 1;
            }
        }
        assert!(!k.held_by_all(&restarted));
        // A member that left the view is not waited for.
        let without: Vec<NodeInfo> = members
            .iter()
            .filter(|m| m.id != others[1])
            .cloned()
            .collect();
        assert!(k.held_by_all(&without));
    }

    /// Seed 4168 at 20 s, reduced: the old coordinator committed migrations in a table the next
    /// coordinator never received; the next one must plan from that table, not from its own
    /// older one (which would abandon the committed migrations and make their targets drop the
    /// copies the newer table names).
    #[test]
    fn a_new_coordinator_catches_up_before_planning() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        let (one, two) = (test_node(1, 2).id, test_node(2, 2).id);
        let mut k1 = TableKeeper::new(one, KeeperConfig::default(), 0);
        let mut k2 = TableKeeper::new(two, KeeperConfig::default(), 0);
        let two_of = |m: &[NodeInfo]| m[..2].to_vec();
        hints_from_all(&mut k1, &two_of(&members), 0);
        let t1 = k1.replan(&two_of(&members), true, 0).unwrap().clone();
        assert_eq!(k2.offer(t1.clone(), one), Offer::Accepted);
        // Node 3 joins: node 1 plans migrations towards it and commits them, while node 2
        // (cut off) receives neither table.
        hints_from_all(&mut k1, &members, t1.epoch);
        let t2 = k1.replan(&members, true, 0).unwrap().clone();
        for (slot, _, _, id) in t2.migrations() {
            k1.request_commit(slot, id);
        }
        let t3 = k1.flush_commits(&members, 0).unwrap().clone();
        let committed: Vec<usize> = (0..crate::SLOT_COUNT)
            .filter(|&s| t3.slots[s].primary != t1.slots[s].primary)
            .collect();
        assert!(!committed.is_empty());
        // Node 1 was declared down meanwhile and rejoined younger: node 2 is now coordinator.
        let mut view = members.clone();
        view[0].generation = 5;
        assert_eq!(coordinator(&view), Some(two));
        assert!(k2.replan(&view, true, 0).is_none(), "no hints yet");
        assert!(!k2.observe_hint(test_node(3, 2).id, t1.epoch, one, 1, 0));
        assert!(k2.replan(&view, true, 0).is_none(), "node 1 not heard");
        assert!(
            k2.observe_hint(one, t3.epoch, one, 1, 0),
            "fetch the newer table"
        );
        assert!(
            k2.replan(&view, true, 0).is_none(),
            "a member holds a newer table than any this node has"
        );
        assert!(k2.flush_commits(&view, 0).is_none());
        assert_eq!(k2.offer(t3.clone(), two), Offer::WrongCoordinator);
        let next = k2.replan(&view, true, 0).unwrap();
        assert!(next.epoch > t3.epoch);
        for &s in &committed {
            assert_eq!(
                next.node(next.slots[s].primary.node).id,
                t3.node(t3.slots[s].primary.node).id,
                "slot {s}: a committed migration was undone"
            );
        }
    }

    /// Under load a live node fails its probes and is declared down for a second or two
    /// (`join_and_graceful_leave_lose_nothing` at load 15: the coordinator reassigned the
    /// slots of a node that was up, and 2887 acknowledged keys were gone): its slots stay with
    /// it for `down_grace_ms`, and move only if it stays away.
    #[test]
    fn an_owner_that_leaves_the_view_keeps_its_slots_for_the_grace() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        let me = coordinator(&members).unwrap();
        let cfg = KeeperConfig {
            down_grace_ms: 5000,
            ..KeeperConfig::default()
        };
        let mut k = TableKeeper::new(me, cfg, 0);
        hints_from_all(&mut k, &members, 0);
        let t = k.replan(&members, true, 0).unwrap().clone();
        let three = test_node(3, 2).id;
        let owned = |t: &PartitionTable| {
            let i = t.node_index(three);
            t.slots.iter().filter(|e| Some(e.primary.node) == i).count()
        };
        assert!(owned(&t) > 0);
        let without: Vec<NodeInfo> = members[..2].to_vec();
        assert!(k.replan(&without, true, 1000).is_none(), "nothing moves");
        assert!(k.replan(&without, true, 5999).is_none(), "nothing moves");
        // Back within the grace with a renewed generation (as after a rejoin): the table
        // records the generation, every slot stays where it was.
        let mut back = members.clone();
        back[2].generation = 7;
        hints_from_all(&mut k, &back, t.epoch);
        let again = k.replan(&back, true, 5999).unwrap();
        let primaries = |t: &PartitionTable| -> Vec<NodeId> {
            t.slots.iter().map(|e| t.node(e.primary.node).id).collect()
        };
        assert_eq!(primaries(again), primaries(&t));
        assert!(again.migrations().next().is_none());
        // It flaps: back while this node plans nothing (no quorum here), gone again: the grace
        // counts from the last departure.
        assert!(k.replan(&without, true, 6500).is_none());
        assert!(k.replan(&back, false, 8000).is_none());
        assert!(k.replan(&without, true, 9000).is_none());
        assert!(
            k.replan(&without, true, 13_000).is_none(),
            "grace from 9000, not 6500"
        );
        // Gone for longer than the grace: its slots go to the live members.
        let moved = k.replan(&without, true, 14_000).unwrap();
        assert_eq!(owned(moved), 0);
        // Without a grace, at once.
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        hints_from_all(&mut k, &members, 0);
        k.replan(&members, true, 0).unwrap();
        assert_eq!(owned(k.replan(&without, true, 1).unwrap()), 0);
    }

    /// Pause sweep seed 56 at 20 s, reduced: a joiner told to leave holds the table that plans
    /// migrations towards it (it owns nothing by that table yet): it is not drained, as the
    /// next table may commit them to it.
    #[test]
    fn a_leaver_that_is_still_a_migration_target_is_not_drained() {
        let two = vec![test_node(1, 2), test_node(2, 2)];
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        let me = coordinator(&members).unwrap();
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        hints_from_all(&mut k, &two, 0);
        let t1 = k.replan(&two, true, 0).unwrap().clone();
        hints_from_all(&mut k, &members, t1.epoch);
        let t2 = k.replan(&members, true, 0).unwrap().clone();
        let joiner = test_node(3, 2).id;
        let mut j = TableKeeper::new(joiner, KeeperConfig::default(), 0);
        assert_eq!(j.offer(t2.clone(), me), Offer::Accepted);
        let i = t2.node_index(joiner).unwrap();
        assert!(t2.slots.iter().all(|e| e.primary.node != i));
        assert!(t2.migrations().any(|(_, _, to, _)| to.node == i));
        assert!(!j.drained(joiner), "a migration target is not drained");
        // Once its migrations are committed and drained away again, it is.
        for (slot, _, _, id) in t2.migrations() {
            k.request_commit(slot, id);
        }
        let t3 = k.flush_commits(&members, 0).unwrap().clone();
        assert_eq!(j.offer(t3, me), Offer::Accepted);
        assert!(!j.drained(joiner));
        k.drain(joiner);
        let t4 = k.replan(&members, true, 0).unwrap().clone();
        for (slot, _, _, id) in t4.migrations() {
            k.request_commit(slot, id);
        }
        let t5 = k.flush_commits(&members, 0).unwrap().clone();
        assert_eq!(j.offer(t5, me), Offer::Accepted);
        assert!(j.drained(joiner));
    }

    /// Pause sweep seeds 39 and 139 at 20 s, reduced: the coordinator is paused (a starved
    /// process) with commit requests pending, the others follow another coordinator meanwhile,
    /// and on resume its timer runs before its queued input (with the input first, the queued
    /// hints echo only hints sent before the pause, the same). Without a lease it commits at once from
    /// its stale table, under an epoch number the other coordinator already used; with one it
    /// plans and commits nothing until every member echoed a hint sent after the pause, and
    /// then only from the newest table a member holds.
    #[test]
    fn a_paused_coordinator_stops_until_its_lease_is_renewed() {
        let two = vec![test_node(1, 2), test_node(2, 2)];
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        let me = coordinator(&members).unwrap();
        let cfg = KeeperConfig {
            lease_ms: 1500,
            ..KeeperConfig::default()
        };
        // Every other member hints `epoch` at `now`, echoing our hint of `echo` (0: none).
        let hints = |k: &mut TableKeeper, epoch: u64, by: NodeId, now: u64, echo: u64| {
            k.replan(&members, false, now);
            for m in &members[1..] {
                k.observe_hint(m.id, epoch, by, now, echo);
            }
        };
        let run = |lease: bool| {
            let cfg = if lease {
                cfg.clone()
            } else {
                KeeperConfig::default()
            };
            let mut k = TableKeeper::new(me, cfg, 0);
            hints_from_all(&mut k, &two, 0);
            hints(&mut k, 0, me, 1590, 0);
            if lease {
                assert!(
                    k.replan(&two, true, 1600).is_none(),
                    "no echo yet: no lease"
                );
                hints(&mut k, 0, me, 1600, 1550);
            }
            let t1 = k.replan(&two, true, 1600).unwrap().clone();
            hints(&mut k, t1.epoch, me, 1700, 1650);
            let t2 = k.replan(&members, true, 1800).unwrap().clone();
            for (slot, _, _, id) in t2.migrations() {
                k.request_commit(slot, id);
            }
            // Paused from 1800 to 5000: resumed, its timer runs first.
            (k, t2)
        };
        let (mut bare, t2) = run(false);
        assert!(
            bare.flush_commits(&members, 5000).is_some(),
            "without a lease the paused coordinator commits at once from its stale table"
        );
        let (mut k, t2b) = run(true);
        assert_eq!(t2.slots, t2b.slots);
        assert!(k.flush_commits(&members, 5000).is_none(), "lease lapsed");
        assert!(k.replan(&members, true, 5000).is_none(), "lease lapsed");
        // Its queued input: hints sent before the others moved on, echoing old hints.
        hints(&mut k, t2.epoch, me, 5000, 1750);
        assert!(k.flush_commits(&members, 5010).is_none(), "stale echoes");
        // Fresh echoes: one member holds a newer table of the coordinator that took over.
        let other = test_node(2, 2).id;
        let commits: Vec<_> = t2.migrations().map(|(s, _, _, id)| (s, id)).collect();
        let mut newer = commit_migrations(&t2, &commits, other, &PlannerConfig::default()).unwrap();
        newer.epoch = t2.epoch + 2;
        k.replan(&members, false, 5500);
        k.observe_hint(members[2].id, t2.epoch, me, 5500, 5100);
        assert!(k.observe_hint(members[1].id, newer.epoch, newer.coordinator, 5500, 5100));
        assert!(
            k.flush_commits(&members, 5510).is_none(),
            "a member holds a newer table"
        );
        assert!(k.replan(&members, true, 5510).is_none());
        assert_eq!(k.offer(newer.clone(), me), Offer::WrongCoordinator);
        let next = k.replan(&members, true, 5520).unwrap();
        assert!(
            next.epoch > newer.epoch,
            "plans above the newest table it learnt of"
        );
        assert_eq!(
            next.slots, newer.slots,
            "and keeps what that table committed"
        );
    }

    /// The other half of the lease: a node that becomes coordinator (the old one left its
    /// view) waits one lease before planning, however soon every member echoes and hints,
    /// as the old one may hold its lease that long (it counted this node's echoes).
    #[test]
    fn a_new_coordinator_waits_out_the_old_ones_lease() {
        let members = vec![test_node(1, 2), test_node(2, 2), test_node(3, 2)];
        let (one, two) = (members[0].id, members[1].id);
        let cfg = KeeperConfig {
            lease_ms: 1500,
            ..KeeperConfig::default()
        };
        let mut k = TableKeeper::new(two, cfg, 0);
        // Node 2 follows node 1 until 10 000, when node 1 leaves its view.
        assert!(k.replan(&members, true, 9000).is_none());
        let view = members[1..].to_vec();
        let hint = |k: &mut TableKeeper, now: u64| {
            k.observe_hint(members[2].id, 0, one, now, now - 10);
        };
        assert!(k.replan(&view, true, 10_000).is_none());
        hint(&mut k, 10_100);
        assert!(
            k.replan(&view, true, 10_100).is_none(),
            "the old lease may hold"
        );
        hint(&mut k, 11_400);
        assert!(
            k.replan(&view, true, 11_499).is_none(),
            "the old lease may hold"
        );
        // Nothing but time changes between these two calls: a driver that replans only on
        // news must be told to ask again.
        assert!(k.plan_deferred(), "the wait is time-dependent");
        assert!(k.replan(&view, true, 11_500).is_some());
        assert!(!k.plan_deferred());
        assert!(
            k.replan(&view, true, 11_600).is_none(),
            "nothing changed: no new table"
        );
        assert!(!k.plan_deferred(), "no change is not a deferral");
    }

    /// Pause sweep seed 11 at 20 s, reduced: node 1 (the oldest) was paused while nodes 2 and 3
    /// made the first table; back, it holds no table of its own and plans from theirs, while
    /// node 3 is paused in turn (out of the view): node 3 keeps its slots for the grace.
    #[test]
    fn the_grace_follows_the_table_a_plan_starts_from() {
        let pair = vec![test_node(2, 2), test_node(3, 2)];
        let mut k2 = TableKeeper::new(pair[0].id, KeeperConfig::default(), 0);
        hints_from_all(&mut k2, &pair, 0);
        let theirs = k2.replan(&pair, true, 0).unwrap().clone();
        let three = pair[1].id;
        let owned = |t: &PartitionTable| {
            let i = t.node_index(three);
            t.slots.iter().filter(|e| Some(e.primary.node) == i).count()
        };
        assert!(owned(&theirs) > 0);
        let view = vec![test_node(1, 2), test_node(2, 2)];
        let cfg = KeeperConfig {
            down_grace_ms: 5000,
            ..KeeperConfig::default()
        };
        let mut k1 = TableKeeper::new(view[0].id, cfg, 0);
        assert_eq!(
            k1.offer(theirs.clone(), view[0].id),
            Offer::WrongCoordinator
        );
        hints_from_all(&mut k1, &view, theirs.epoch);
        let next = k1.replan(&view, true, 1000).unwrap();
        assert_eq!(
            owned(next),
            owned(&theirs),
            "node 3 keeps its slots for the grace"
        );
    }

    /// Pause sweep seed 13 at 20 s, reduced: a node that knows of a newer epoch than its
    /// table's (a coordinator catching up after a pause) does not hand its table out.
    #[test]
    fn a_table_known_to_be_stale_is_not_handed_out() {
        let members = vec![test_node(1, 2), test_node(2, 2)];
        let me = coordinator(&members).unwrap();
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        hints_from_all(&mut k, &members, 0);
        let t1 = k.replan(&members, true, 0).unwrap().clone();
        assert_eq!(k.table_for_fetch(0).map(|t| t.epoch), Some(t1.epoch));
        assert!(
            k.table_for_fetch(t1.epoch).is_none(),
            "not newer than the asker's"
        );
        assert!(k.observe_hint(members[1].id, t1.epoch + 2, members[1].id, 1, 0));
        assert!(k.table_for_fetch(0).is_none(), "a newer epoch exists");
    }

    #[test]
    fn a_member_that_rejoins_must_hint_again() {
        let members = vec![test_node(1, 2), test_node(2, 2)];
        let me = coordinator(&members).unwrap();
        let mut k = TableKeeper::new(me, KeeperConfig::default(), 0);
        hints_from_all(&mut k, &members, 0);
        let t = k.replan(&members, true, 0).unwrap().clone();
        let mut rejoined = members.clone();
        let other = rejoined.iter_mut().find(|m| m.id != me).unwrap();
        other.generation = 9;
        other.cores = 4;
        assert!(k.replan(&rejoined, true, 0).is_none());
        hints_from_all(&mut k, &rejoined, t.epoch);
        assert!(k.replan(&rejoined, true, 0).is_some());
    }
}
