//! Redis Cluster's view of a [`PartitionTable`]: the redirect error texts, `CLUSTER SLOTS` /
//! `SHARDS` ranges, the `CLUSTER NODES` text and `CLUSTER INFO`. Pure functions producing data
//! or text; RESP encoding stays in `tessera-net`. Texts follow Redis 7 exactly, because
//! cluster clients (redis-cli -c, redis-rs, redis-py) parse them.

use std::fmt::Write;

use crate::node::{NodeId, NodeInfo};
use crate::partition::{NodeIdx, PartitionTable};
use crate::{key_slot, Slot, SLOT_COUNT};

/// `-TRYAGAIN` text (Redis's, without the leading `-`).
pub const TRYAGAIN: &str = "TRYAGAIN Multiple keys request during rehashing of slot";
/// `-CROSSSLOT` text.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// `-CLUSTERDOWN` text (below `member_count_quorum`, or no table yet).
pub const CLUSTERDOWN: &str = "CLUSTERDOWN The cluster is down";

/// `MOVED <slot> <host>:<port>`: the slot lives on `node` for good.
pub fn moved(slot: Slot, node: &NodeInfo) -> String {
    format!("MOVED {slot} {}", node.client_addr())
}

/// `ASK <slot> <host>:<port>`: ask `node` once, prefixed by `ASKING` (a slot mid-migration).
pub fn ask(slot: Slot, node: &NodeInfo) -> String {
    format!("ASK {slot} {}", node.client_addr())
}

/// The one slot all `keys` hash to: `Ok(None)` without keys, `Err(())` (reply
/// [`CROSSSLOT`]) when they differ.
#[allow(clippy::result_unit_err)]
pub fn common_slot<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Result<Option<Slot>, ()> {
    let mut slot = None;
    for k in keys {
        let s = key_slot(k);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => return Err(()),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// A run of slots with one primary node and one set of replica nodes (a `CLUSTER SLOTS` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange<'a> {
    /// First slot, inclusive.
    pub first: Slot,
    /// Last slot, inclusive.
    pub last: Slot,
    /// The primary's node.
    pub primary: &'a NodeInfo,
    /// Nodes holding backups of this range (the replication issue fills these).
    pub replicas: Vec<&'a NodeInfo>,
}

/// The `CLUSTER SLOTS` rows, in slot order. Cores are internal: a node's consecutive slots on
/// different cores form one range.
pub fn slot_ranges(table: &PartitionTable) -> Vec<SlotRange<'_>> {
    let mut out: Vec<(Slot, Slot, NodeIdx, Vec<NodeIdx>)> = Vec::new();
    for (slot, e) in table.slots.iter().enumerate() {
        let slot = slot as Slot;
        let mut reps: Vec<NodeIdx> = e.backups.iter().map(|b| b.node).collect();
        reps.sort_unstable();
        match out.last_mut() {
            Some((_, last, node, r)) if *node == e.primary.node && *r == reps => *last = slot,
            _ => out.push((slot, slot, e.primary.node, reps)),
        }
    }
    out.into_iter()
        .map(|(first, last, node, reps)| SlotRange {
            first,
            last,
            primary: table.node(node),
            replicas: reps.into_iter().map(|r| table.node(r)).collect(),
        })
        .collect()
}

/// `CLUSTER NODES` text: one line per node, `myself` flagged, slot ranges of each primary.
/// `alive(id)` tells whether membership sees the node (others are flagged `fail`).
pub fn cluster_nodes(table: &PartitionTable, me: NodeId, alive: impl Fn(NodeId) -> bool) -> String {
    let ranges = slot_ranges(table);
    let mut out = String::new();
    for n in &table.nodes {
        let mut flags = String::new();
        if n.id == me {
            flags.push_str("myself,");
        }
        flags.push_str("master");
        if !alive(n.id) {
            flags.push_str(",fail");
        }
        let link = if alive(n.id) {
            "connected"
        } else {
            "disconnected"
        };
        // Ignoring the fmt::Result: writing into a String cannot fail.
        let _ = write!(
            out,
            "{} {}:{}@{} {flags} - 0 0 {} {link}",
            n.id, n.host, n.client_port, n.peer_port, table.epoch
        );
        for r in ranges.iter().filter(|r| r.primary.id == n.id) {
            if r.first == r.last {
                let _ = write!(out, " {}", r.first);
            } else {
                let _ = write!(out, " {}-{}", r.first, r.last);
            }
        }
        out.push('\n');
    }
    out
}

/// `CLUSTER INFO` text (`\r\n` separated, as Redis).
pub fn cluster_info(table: &PartitionTable, state_ok: bool) -> String {
    let primaries = {
        let mut v: Vec<NodeIdx> = table.slots.iter().map(|e| e.primary.node).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let state = if state_ok { "ok" } else { "fail" };
    format!(
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{SLOT_COUNT}\r\n\
         cluster_slots_ok:{ok}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{fail}\r\n\
         cluster_known_nodes:{known}\r\ncluster_size:{primaries}\r\ncluster_current_epoch:{epoch}\r\n\
         cluster_my_epoch:{epoch}\r\n",
        ok = if state_ok { SLOT_COUNT } else { 0 },
        fail = if state_ok { 0 } else { SLOT_COUNT },
        known = table.nodes.len(),
        epoch = table.epoch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{plan, test_node, PlannerConfig};

    #[test]
    fn redirect_texts_match_redis() {
        let n = test_node(1, 1);
        assert_eq!(moved(3999, &n), "MOVED 3999 127.0.0.1:7001");
        assert_eq!(ask(3999, &n), "ASK 3999 127.0.0.1:7001");
        assert_eq!(
            common_slot([&b"{user1}.a"[..], b"{user1}.b"]),
            Ok(Some(key_slot(b"user1")))
        );
        assert_eq!(common_slot([&b"a"[..], b"b"]), Err(()));
        assert_eq!(common_slot(std::iter::empty()), Ok(None));
    }

    #[test]
    fn slots_nodes_and_info() {
        let members = [test_node(1, 2), test_node(2, 2), test_node(3, 1)];
        let t = plan(None, &members, members[0].id, &PlannerConfig::default());
        let ranges = slot_ranges(&t);
        assert_eq!(ranges.len(), 3, "one range per node, cores merged");
        assert_eq!(ranges[0].first, 0);
        assert_eq!(ranges[2].last as usize, SLOT_COUNT - 1);
        assert!(ranges.windows(2).all(|w| w[0].last + 1 == w[1].first));
        let text = cluster_nodes(&t, members[1].id, |id| id != members[2].id);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains(" myself,master - 0 0 1 connected 6554-13106"),
            "{text}"
        );
        assert!(lines[2].contains("master,fail"), "{text}");
        assert!(lines[0].starts_with(&members[0].id.to_hex()));
        let info = cluster_info(&t, true);
        assert!(info.contains("cluster_state:ok\r\n"));
        assert!(info.contains("cluster_size:3\r\n"));
        let with_backups = plan(
            None,
            &members,
            members[0].id,
            &PlannerConfig { replica_count: 1 },
        );
        assert!(slot_ranges(&with_backups)
            .iter()
            .all(|r| r.replicas.len() == 1));
    }
}
