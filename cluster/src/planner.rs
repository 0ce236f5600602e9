//! The deterministic planner: (previous table, live members) -> next table. Run by the
//! coordinator only; local and O(slots + shards), no I/O.
//!
//! Rules (cluster.md): every shard (node, core) gets a quota of `floor(S/C)` or `ceil(S/C)`
//! slots, `C` being the total core count, with the remainder spread over nodes in proportion to
//! their core counts, so node quotas are proportional to cores and every core is within one slot
//! of even. A slot stays on its shard while that shard is alive and under quota; an over-quota
//! shard sheds slots from one end of its run (the end next to already-free slots, so freed slots
//! coalesce); free slots are handed out in slot order, continuing the previous slot's shard while
//! it has room, so ranges stay contiguous. The number of slots that change shard is therefore the
//! minimum the quotas allow.
//!
//! A slot whose shard changes and whose old shard is still alive becomes
//! `Migrating { from: old, to: new }`; the old shard keeps serving it until
//! [`commit_migrations`] names the new one in a later epoch.

use crate::node::{NodeId, NodeInfo};
use crate::partition::{MigrationId, NodeIdx, PartitionTable, Shard, SlotEntry, SlotState};
use crate::{Slot, SLOT_COUNT};

/// Most members a table holds; members beyond it (by id) get no slots. A limit on input that
/// comes from gossip, far above any planned cluster size.
pub const NODES_MAX: usize = 1024;

/// Planner settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Backups per slot, each on a distinct node other than the primary's; capped at
    /// `members - 1`. Default 0 (replication is a later issue).
    pub replica_count: u8,
}

/// Computes the next table for `members` (any order; duplicates by id keep the highest
/// generation). `coordinator` is recorded in the table. The epoch is `prev.epoch + 1`, or 1.
/// Panics if `members` is empty (there is no table without a node; the caller has itself).
pub fn plan(
    prev: Option<&PartitionTable>,
    members: &[NodeInfo],
    coordinator: NodeId,
    cfg: &PlannerConfig,
) -> PartitionTable {
    plan_draining(prev, members, &[], coordinator, cfg)
}

/// [`plan`] where the members named in `draining` are leaving gracefully: they stay in the table
/// (alive, still serving) with a quota of zero, so every slot they own becomes a migration away
/// from them. Once all have committed, the drained nodes own nothing and may exit. Panics if every
/// member is draining.
pub fn plan_draining(
    prev: Option<&PartitionTable>,
    members: &[NodeInfo],
    draining: &[NodeId],
    coordinator: NodeId,
    cfg: &PlannerConfig,
) -> PartitionTable {
    let epoch = prev.map_or(1, |p| p.epoch + 1);
    plan_at(prev, members, draining, coordinator, epoch, cfg)
}

/// [`plan_draining`] numbering the table `epoch` (the keeper numbers above every epoch it has
/// seen). Migration ids are minted from (coordinator, epoch, slot), so a coordinator must never
/// plan two different tables with one epoch.
pub fn plan_at(
    prev: Option<&PartitionTable>,
    members: &[NodeInfo],
    draining: &[NodeId],
    coordinator: NodeId,
    epoch: u64,
    cfg: &PlannerConfig,
) -> PartitionTable {
    assert!(!members.is_empty(), "planning needs at least one member");
    let mut nodes = normalize(members);
    if nodes.len() > NODES_MAX {
        // Membership comes from gossip: never let its size break the table's index type.
        tracing::warn!(
            members = nodes.len(),
            max = NODES_MAX,
            "too many members; planning for the first by id"
        );
        nodes.truncate(NODES_MAX);
    }
    let drains: Vec<bool> = nodes.iter().map(|n| draining.contains(&n.id)).collect();
    assert!(
        drains.iter().any(|d| !d),
        "at least one member must not be draining"
    );

    // Shards, in (node index, core) order; `first_bin[n]` is node n's first shard.
    let mut first_bin = Vec::with_capacity(nodes.len());
    let mut bins: Vec<Shard> = Vec::new();
    for (n, info) in nodes.iter().enumerate() {
        first_bin.push(bins.len());
        for core in 0..info.cores {
            bins.push(Shard {
                node: n as NodeIdx,
                core,
            });
        }
    }
    let bin_of = |s: Shard| first_bin[usize::from(s.node)] + usize::from(s.core);

    // Previous shards translated to the new node indices: `None` when the shard is gone.
    let translate = |table: &PartitionTable, s: Shard, same_generation: bool| -> Option<Shard> {
        let old = table.nodes.get(usize::from(s.node))?;
        let idx = nodes.binary_search_by(|n| n.id.cmp(&old.id)).ok()?;
        if s.core >= nodes[idx].cores
            || (same_generation && nodes[idx].generation != old.generation)
        {
            return None;
        }
        Some(Shard {
            node: idx as NodeIdx,
            core: s.core,
        })
    };

    // Where each slot effectively lives now: an in-flight migration's target counts (it is where
    // the slot is going) unless that target restarted, which lost what it had received.
    let mut cur: Vec<Option<usize>> = vec![None; SLOT_COUNT];
    let mut prev_primary: Vec<Option<Shard>> = vec![None; SLOT_COUNT];
    if let Some(p) = prev {
        for (slot, e) in p.slots.iter().enumerate() {
            let primary = translate(p, e.primary, false);
            prev_primary[slot] = primary;
            let effective = match e.state {
                SlotState::Migrating { to, .. } => translate(p, to, true).or(primary),
                SlotState::Stable => primary,
            };
            cur[slot] = effective.map(bin_of);
        }
    }

    let quotas = quotas(&nodes, &drains, &first_bin, &cur);

    // Per-shard slot lists (ascending), then shed the excess from one end.
    let mut owned: Vec<Vec<Slot>> = vec![Vec::new(); bins.len()];
    for (slot, b) in cur.iter().enumerate() {
        if let Some(b) = b {
            owned[*b].push(slot as Slot);
        }
    }
    let mut order: Vec<usize> = (0..bins.len()).filter(|b| !owned[*b].is_empty()).collect();
    order.sort_by_key(|b| owned[*b][0]);
    for b in order {
        let excess = owned[b].len().saturating_sub(quotas[b]);
        if excess == 0 {
            continue;
        }
        let lowest = usize::from(owned[b][0]);
        let shed_low = lowest > 0 && cur[lowest - 1].is_none();
        let list = &owned[b];
        let shed: Vec<Slot> = if shed_low {
            list[..excess].to_vec()
        } else {
            list[list.len() - excess..].to_vec()
        };
        for s in shed {
            cur[usize::from(s)] = None;
        }
        owned[b].truncate(0);
    }
    let mut count = vec![0usize; bins.len()];
    for b in cur.iter().flatten() {
        count[*b] += 1;
    }

    // Hand out free slots in order, continuing the previous slot's shard while it has room.
    let mut cursor = 0usize;
    for slot in 0..SLOT_COUNT {
        if cur[slot].is_some() {
            continue;
        }
        let prev_bin = if slot > 0 { cur[slot - 1] } else { None };
        let b = match prev_bin {
            Some(b) if count[b] < quotas[b] => b,
            _ => {
                while count[cursor] >= quotas[cursor] {
                    cursor += 1;
                }
                cursor
            }
        };
        cur[slot] = Some(b);
        count[b] += 1;
    }
    debug_assert!((0..bins.len()).all(|b| count[b] == quotas[b]));

    let replicas = usize::from(cfg.replica_count).min(nodes.len() - 1);
    let slots = (0..SLOT_COUNT)
        .map(|slot| {
            let target = bins[cur[slot].expect("every slot assigned")];
            let (primary, state) = match prev_primary[slot] {
                Some(p) if p != target => {
                    let keep_id = prev.and_then(|t| match t.slots[slot].state {
                        SlotState::Migrating { to, id, .. }
                            if translate(t, to, true) == Some(target) =>
                        {
                            Some(id)
                        }
                        _ => None,
                    });
                    let id = keep_id
                        .unwrap_or_else(|| MigrationId::new(coordinator, epoch, slot as Slot));
                    (
                        p,
                        SlotState::Migrating {
                            from: p,
                            to: target,
                            id,
                        },
                    )
                }
                _ => (target, SlotState::Stable),
            };
            SlotEntry {
                primary,
                backups: backups(&nodes, primary, slot as Slot, replicas),
                state,
            }
        })
        .collect();
    let table = PartitionTable {
        epoch,
        coordinator,
        nodes,
        slots,
    };
    debug_assert_eq!(table.validate(), Ok(()));
    table
}

/// The next table after the migrations `done` finished their handoff: each named slot that is
/// still migrating with that id becomes stable on its target. Returns `None` when none applies
/// (no new epoch is needed).
pub fn commit_migrations(
    table: &PartitionTable,
    done: &[(Slot, MigrationId)],
    coordinator: NodeId,
    cfg: &PlannerConfig,
) -> Option<PartitionTable> {
    let replicas = usize::from(cfg.replica_count).min(table.nodes.len() - 1);
    let mut next = table.clone();
    let mut changed = false;
    for &(slot, id) in done {
        let Some(e) = next.slots.get_mut(usize::from(slot)) else {
            continue;
        };
        if let SlotState::Migrating { to, id: cur, .. } = e.state {
            if cur == id {
                e.primary = to;
                e.state = SlotState::Stable;
                e.backups = backups(&table.nodes, to, slot, replicas);
                changed = true;
            }
        }
    }
    changed.then(|| {
        next.epoch += 1;
        next.coordinator = coordinator;
        next
    })
}

/// Members sorted by id; of two entries with one id the higher generation wins.
fn normalize(members: &[NodeInfo]) -> Vec<NodeInfo> {
    let mut nodes = members.to_vec();
    nodes.sort_by(|a, b| a.id.cmp(&b.id).then(b.generation.cmp(&a.generation)));
    nodes.dedup_by(|later, first| later.id == first.id);
    for n in &mut nodes {
        n.cores = n.cores.max(1);
    }
    nodes
}

/// Quota per shard. Node `i` with `c_i` of `C` cores gets `k*c_i + e_i` slots (`S = k*C + r`,
/// `e_i` the largest-remainder share of `r`, so `e_i <= c_i`); inside a node the `e_i` extra
/// slots go to the cores that hold the most now (ties: lower core), which avoids moves.
fn quotas(
    nodes: &[NodeInfo],
    drains: &[bool],
    first_bin: &[usize],
    cur: &[Option<usize>],
) -> Vec<usize> {
    // Draining nodes count as zero cores.
    let cores = |i: usize| {
        if drains[i] {
            0
        } else {
            usize::from(nodes[i].cores)
        }
    };
    let total: usize = (0..nodes.len()).map(cores).sum();
    let bins: usize = nodes.iter().map(|n| usize::from(n.cores)).sum();
    let k = SLOT_COUNT / total;
    let r = SLOT_COUNT % total;
    let mut extra: Vec<usize> = (0..nodes.len()).map(|i| r * cores(i) / total).collect();
    let mut left = r - extra.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..nodes.len()).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(r * cores(i) % total), i));
    for i in by_remainder {
        if left == 0 {
            break;
        }
        extra[i] += 1;
        left -= 1;
    }
    let mut held = vec![0usize; bins];
    for b in cur.iter().flatten() {
        held[*b] += 1;
    }
    let mut quotas = vec![0usize; bins];
    for (i, n) in nodes.iter().enumerate() {
        let base = first_bin[i];
        if drains[i] {
            continue;
        }
        quotas[base..base + usize::from(n.cores)].fill(k);
        let mut cores: Vec<usize> = (0..usize::from(n.cores)).collect();
        cores.sort_by_key(|&c| (std::cmp::Reverse(held[base + c]), c));
        debug_assert!(extra[i] <= cores.len());
        for &c in cores.iter().take(extra[i]) {
            quotas[base + c] += 1;
        }
    }
    debug_assert_eq!(quotas.iter().sum::<usize>(), SLOT_COUNT);
    quotas
}

/// `replicas` backups on the nodes following the primary's (by index, wrapping), core chosen by
/// slot so a node's backup load spreads over its cores.
fn backups(nodes: &[NodeInfo], primary: Shard, slot: Slot, replicas: usize) -> Vec<Shard> {
    (1..=replicas)
        .map(|j| {
            let node = (usize::from(primary.node) + j) % nodes.len();
            Shard {
                node: node as NodeIdx,
                core: slot % nodes[node].cores,
            }
        })
        .collect()
}

/// A test node with id byte `n`, loopback ports and generation 1.
#[cfg(test)]
pub(crate) fn test_node(n: u8, cores: u16) -> NodeInfo {
    let mut id = [0u8; 20];
    id[0] = n;
    id[19] = n.wrapping_mul(37);
    NodeInfo {
        id: NodeId(id),
        host: "127.0.0.1".into(),
        client_port: 7000 + u16::from(n),
        peer_port: 17000 + u16::from(n),
        gossip_port: 27000 + u16::from(n),
        cores,
        generation: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn node(n: u8, cores: u16) -> NodeInfo {
        test_node(n, cores)
    }

    /// The shard (node id, core) each slot ends up on once in-flight migrations commit.
    fn targets(t: &PartitionTable) -> Vec<(NodeId, u16)> {
        t.slots
            .iter()
            .map(|e| {
                let s = match e.state {
                    SlotState::Migrating { to, .. } => to,
                    SlotState::Stable => e.primary,
                };
                (t.node(s.node).id, s.core)
            })
            .collect()
    }

    fn commit_all(t: &PartitionTable) -> PartitionTable {
        let done: Vec<_> = t.migrations().map(|(s, _, _, id)| (s, id)).collect();
        commit_migrations(t, &done, t.coordinator, &PlannerConfig::default())
            .unwrap_or_else(|| t.clone())
    }

    /// The least number of slots any assignment with exact (fractional) per-core quotas moves.
    fn ideal_moves(prev: &PartitionTable, members: &[NodeInfo]) -> f64 {
        let total: f64 = members.iter().map(|n| f64::from(n.cores)).sum();
        let share = SLOT_COUNT as f64 / total;
        let before = targets(prev);
        let mut kept = 0.0;
        for n in members {
            for core in 0..n.cores {
                let held = before.iter().filter(|s| **s == (n.id, core)).count() as f64;
                kept += held.min(share);
            }
        }
        SLOT_COUNT as f64 - kept
    }

    fn moved(before: &PartitionTable, after: &PartitionTable) -> usize {
        targets(before)
            .iter()
            .zip(targets(after))
            .filter(|(a, b)| **a != *b)
            .count()
    }

    fn check_balance(t: &PartitionTable) {
        let total: usize = t.nodes.iter().map(|n| usize::from(n.cores)).sum();
        let lo = SLOT_COUNT / total;
        let counts = targets(t);
        for n in &t.nodes {
            for core in 0..n.cores {
                let c = counts.iter().filter(|s| **s == (n.id, core)).count();
                assert!(
                    c == lo || c == lo + 1,
                    "core load {c} not within one slot of even {lo}"
                );
            }
        }
    }

    fn check_plan(prev: &PartitionTable, members: &[NodeInfo]) -> PartitionTable {
        let next = plan(
            Some(prev),
            members,
            members[0].id,
            &PlannerConfig::default(),
        );
        assert_eq!(next.validate(), Ok(()));
        assert_eq!(next.epoch, prev.epoch + 1);
        check_balance(&next);
        let ideal = ideal_moves(prev, members);
        let got = moved(prev, &next) as f64;
        let shards: usize = members.iter().map(|n| usize::from(n.cores)).sum();
        assert!(
            (got - ideal).abs() <= shards as f64,
            "moved {got} slots, ideal {ideal}"
        );
        next
    }

    #[test]
    fn first_table_is_even_and_contiguous() {
        let members = [node(1, 2), node(2, 2), node(3, 2)];
        let t = plan(None, &members, members[0].id, &PlannerConfig::default());
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.epoch, 1);
        assert_eq!(t.migrations().count(), 0);
        check_balance(&t);
        // One run per node; one per core too.
        assert_eq!(t.node_ranges().len(), 3);
        let mut runs = 1;
        for w in t.slots.windows(2) {
            if w[0].primary != w[1].primary {
                runs += 1;
            }
        }
        assert_eq!(runs, 6);
    }

    #[test]
    fn join_moves_the_ideal_fraction() {
        let three = [node(1, 2), node(2, 2), node(3, 2)];
        let t = plan(None, &three, three[0].id, &PlannerConfig::default());
        let four = [node(1, 2), node(2, 2), node(3, 2), node(4, 2)];
        let next = check_plan(&t, &four);
        let m = moved(&t, &next);
        // 1/4 of the slots go to the new node, nothing else moves.
        assert!((m as i64 - (SLOT_COUNT / 4) as i64).abs() <= 8, "moved {m}");
        // Every moving slot is a migration from a live node to the new one.
        let newcomer = next.node_index(node(4, 2).id).unwrap();
        assert_eq!(next.migrations().count(), m);
        assert!(next.migrations().all(|(_, _, to, _)| to.node == newcomer));
        // The newcomer's slots come in few runs: at most one per donor shard plus one.
        let done = commit_all(&next);
        let runs = done
            .node_ranges()
            .iter()
            .filter(|r| r.2 == newcomer)
            .count();
        assert!(runs <= 4, "newcomer got {runs} ranges");
        assert!(
            done.node_ranges().len() <= 12,
            "{:?}",
            done.node_ranges().len()
        );
    }

    #[test]
    fn leave_moves_only_the_leavers_slots() {
        let four = [node(1, 2), node(2, 2), node(3, 2), node(4, 2)];
        let t = plan(None, &four, four[0].id, &PlannerConfig::default());
        let three = [node(1, 2), node(2, 2), node(4, 2)];
        let next = check_plan(&t, &three);
        let m = moved(&t, &next);
        assert!((m as i64 - (SLOT_COUNT / 4) as i64).abs() <= 8, "moved {m}");
        // Node 3 is gone: its slots cannot migrate from it, they are reassigned directly.
        assert_eq!(next.migrations().count(), 0);
    }

    #[test]
    fn graceful_leave_is_a_migration_from_the_leaver() {
        // A leaving node stays in the table (alive) with no quota: modelled by planning without it
        // but keeping its id in the previous table; its slots migrate only when it is alive, so a
        // graceful leave plans with the leaver still a member of `prev` and absent from members.
        let four = [node(1, 2), node(2, 2), node(3, 2), node(4, 2)];
        let t = plan(None, &four, four[0].id, &PlannerConfig::default());
        let next = plan_leave(&t, node(3, 2).id);
        let leaver = next.node_index(node(3, 2).id).unwrap();
        assert!(next.migrations().all(|(_, from, _, _)| from.node == leaver));
        assert_eq!(
            next.migrations().count(),
            t.slots
                .iter()
                .filter(|e| e.primary.node == t.node_index(node(3, 2).id).unwrap())
                .count()
        );
        let done = commit_all(&next);
        assert!(done.slots.iter().all(|e| e.primary.node != leaver));
        let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id).collect();
        assert_eq!(
            next.owner_ids(),
            all,
            "still the owner while migrating away"
        );
        let rest: Vec<NodeId> = all.into_iter().filter(|&id| id != node(3, 2).id).collect();
        assert_eq!(
            done.owner_ids(),
            rest,
            "a node in the table that owns nothing"
        );
    }

    #[test]
    fn core_count_change_moves_the_ideal_fraction() {
        let three = [node(1, 2), node(2, 2), node(3, 2)];
        let t = plan(None, &three, three[0].id, &PlannerConfig::default());
        let grown = [node(1, 4), node(2, 2), node(3, 2)];
        let next = check_plan(&t, &grown);
        // Two new cores of eight: a quarter of the slots move to them.
        let m = moved(&t, &next);
        assert!((m as i64 - (SLOT_COUNT / 4) as i64).abs() <= 8, "moved {m}");
        let done = commit_all(&next);
        let shrunk = [node(1, 1), node(2, 2), node(3, 2)];
        check_plan(&done, &shrunk);
    }

    #[test]
    fn heterogeneous_quotas_are_proportional() {
        let members = [node(1, 1), node(2, 3), node(3, 4)];
        let t = plan(None, &members, members[0].id, &PlannerConfig::default());
        check_balance(&t);
        let per_node: Vec<usize> = (0..3)
            .map(|n| t.slots.iter().filter(|e| e.primary.node == n).count())
            .collect();
        for (n, m) in per_node.iter().zip(&members) {
            let ideal = SLOT_COUNT as f64 * f64::from(m.cores) / 8.0;
            assert!((*n as f64 - ideal).abs() <= 1.0, "{n} vs {ideal}");
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let members = [node(1, 2), node(2, 3), node(3, 1)];
        let a = plan(None, &members, members[0].id, &PlannerConfig::default());
        let shuffled = [node(3, 1), node(1, 2), node(2, 3)];
        let b = plan(None, &shuffled, members[0].id, &PlannerConfig::default());
        assert_eq!(a, b);
        let four = [node(4, 2), node(1, 2), node(2, 3), node(3, 1)];
        assert_eq!(
            plan(Some(&a), &four, members[0].id, &PlannerConfig::default()),
            plan(Some(&b), &four, members[0].id, &PlannerConfig::default())
        );
    }

    #[test]
    fn replanning_mid_migration_keeps_or_cancels() {
        let three = [node(1, 2), node(2, 2), node(3, 2)];
        let t = plan(None, &three, three[0].id, &PlannerConfig::default());
        let four = [node(1, 2), node(2, 2), node(3, 2), node(4, 2)];
        let mid = plan(Some(&t), &four, four[0].id, &PlannerConfig::default());
        // Same members again: the migrations continue with the same ids.
        let again = plan(Some(&mid), &four, four[0].id, &PlannerConfig::default());
        let ids = |t: &PartitionTable| t.migrations().collect::<Vec<_>>();
        assert_eq!(ids(&mid), ids(&again));
        // The newcomer dies before any commit: everything is stable where it was.
        let back = plan(Some(&mid), &three, three[0].id, &PlannerConfig::default());
        assert_eq!(back.migrations().count(), 0);
        assert_eq!(moved(&t, &back), 0);
    }

    #[test]
    fn backups_are_on_other_nodes() {
        let members = [node(1, 2), node(2, 2), node(3, 2)];
        let cfg = PlannerConfig { replica_count: 5 };
        let t = plan(None, &members, members[0].id, &cfg);
        assert_eq!(t.validate(), Ok(()));
        assert!(t.slots.iter().all(|e| e.backups.len() == 2));
        let one = plan(None, &members[..1], members[0].id, &cfg);
        assert!(one.slots.iter().all(|e| e.backups.is_empty()));
    }

    #[test]
    fn oversized_membership_is_capped_not_a_panic() {
        let many: Vec<NodeInfo> = (0..1100u16)
            .map(|i| {
                let mut n = test_node(1, 1);
                n.id.0[0] = (i >> 8) as u8;
                n.id.0[1] = i as u8;
                n
            })
            .collect();
        let t = plan(None, &many, many[0].id, &PlannerConfig::default());
        assert_eq!(t.nodes.len(), NODES_MAX);
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn random_membership_changes_stay_ideal() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut members = vec![node(1, 2)];
        let mut t = plan(None, &members, members[0].id, &PlannerConfig::default());
        for step in 0..40u8 {
            match rng.random_range(0..3) {
                0 if members.len() < 8 => {
                    members.push(node(10 + step, rng.random_range(1..5)));
                }
                1 if members.len() > 1 => {
                    let i = rng.random_range(0..members.len());
                    members.remove(i);
                }
                _ => {
                    let i = rng.random_range(0..members.len());
                    members[i].cores = rng.random_range(1..5);
                }
            }
            let next = check_plan(&t, &members);
            t = if rng.random_bool(0.5) {
                commit_all(&next)
            } else {
                next
            };
        }
    }

    /// Plans `t`'s members minus `leaver` while the leaver is still alive and serving.
    fn plan_leave(t: &PartitionTable, leaver: NodeId) -> PartitionTable {
        plan_without(t, leaver)
    }

    fn plan_without(t: &PartitionTable, leaver: NodeId) -> PartitionTable {
        plan_draining(
            Some(t),
            &t.nodes,
            &[leaver],
            t.nodes[0].id,
            &PlannerConfig::default(),
        )
    }
}
