//! The Redis Cluster command surface of a node, answered from the core's [`View`]:
//! `CLUSTER SLOTS | SHARDS | NODES | INFO | MYID | KEYSLOT | COUNTKEYSINSLOT | GETKEYSINSLOT |
//! LEAVE | HELP`, `READONLY`, `READWRITE`, `ASKING`, and the Olric-style `CLUSTER.MEMBERS` and
//! `CLUSTER.ROUTINGTABLE`.
//!
//! Texts and layouts follow Redis 7 (cluster clients parse them). The two Olric-style commands
//! are Tessera's own, for operators and `tessera cluster status`:
//!
//! - `CLUSTER.MEMBERS`: an array with one map per member (table members and live members not
//!   yet in the table), sorted by id: `id` (40 hex), `addr` (`host:client_port`),
//!   `cluster_port`, `cores`, `generation`, `coordinator` (1 for the coordinator this node
//!   sees), `alive` (1 when membership sees it live), `myself` (1 for this node), `slots`
//!   (number of slots it is primary of in this node's table).
//! - `CLUSTER.ROUTINGTABLE`: a map: `epoch`, `coordinator` (id of the node that computed the
//!   table, empty before any table), `ranges`: an array with one map per run of consecutive
//!   slots that share primary shard and state: `first`, `last` (inclusive), `node` (id),
//!   `addr`, `core`, `migrating_to` (`id/core` of the target, or nil).
//!
//! In RESP2 a map is a flat array of alternating names and values.

use std::rc::Rc;

use bytes::Bytes;
use tessera_cluster::redis::{cluster_info, cluster_nodes, slot_ranges};
use tessera_cluster::{NodeId, PartitionTable, SlotState};
use tessera_engine::{key_slot, CommandError, Reply, Slot, SLOT_COUNT};

use super::View;
use crate::core::{Core, Op};

fn err(text: &str) -> Reply {
    Reply::Error(CommandError::Other(text.to_owned()))
}

fn bulk(s: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(s.into()))
}

fn name(s: &'static str) -> Reply {
    Reply::Bulk(Bytes::from_static(s.as_bytes()))
}

/// Answers one cluster command (`cmd` is the command table's lower-case name).
pub async fn command(core: &Rc<Core>, cmd: &str, args: &[Bytes]) -> Reply {
    match cmd {
        "readonly" | "readwrite" | "asking" => Reply::Ok,
        "cluster.members" => members(&core.cluster.borrow()),
        "cluster.routingtable" => routing_table(&core.cluster.borrow()),
        _ => cluster(core, args).await,
    }
}

async fn cluster(core: &Rc<Core>, args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let argc = args.len();
    let arity = |n: usize| -> Result<(), Reply> {
        if argc == n {
            Ok(())
        } else {
            Err(Reply::Error(CommandError::WrongArity(format!(
                "cluster|{sub}"
            ))))
        }
    };
    let view = core.cluster.borrow().clone();
    let r = match sub.as_str() {
        "help" => arity(2).map(|()| help()),
        "myid" => arity(2).map(|()| bulk(view.me.to_hex())),
        "info" => arity(2).map(|()| info(&view)),
        "slots" => arity(2).map(|()| with_table(&view, slots)),
        "shards" => arity(2).map(|()| with_table(&view, shards)),
        "nodes" => arity(2).map(|()| {
            with_table(&view, |t| {
                bulk(cluster_nodes(t, view.me, |id| view.alive(id)))
            })
        }),
        "keyslot" => arity(3).map(|()| Reply::Int(i64::from(key_slot(&args[2])))),
        "countkeysinslot" => match arity(3).and_then(|()| parse_slot(&args[2])) {
            Ok(slot) => {
                Ok(on_owner(core, &view, slot, Op::SlotKeyCount(slot), Reply::Int(0)).await)
            }
            Err(e) => Err(e),
        },
        "getkeysinslot" => match arity(4).and_then(|()| {
            let slot = parse_slot(&args[2])?;
            let count = std::str::from_utf8(&args[3])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| err("Invalid number of keys"))?;
            Ok((slot, count))
        }) {
            Ok((slot, count)) => {
                // A bound on one reply: the engine walks at most this many keys.
                let count = usize::try_from(count).unwrap_or(usize::MAX).min(1 << 20);
                let op = Op::SlotKeys { slot, count };
                Ok(on_owner(core, &view, slot, op, Reply::Array(Vec::new())).await)
            }
            Err(e) => Err(e),
        },
        "leave" => arity(2).map(|()| leave(&view)),
        _ => Err(err(&format!(
            "unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(&args[1])
        ))),
    };
    r.unwrap_or_else(|e| e)
}

fn leave(view: &View) -> Reply {
    if view.enabled {
        err("CLUSTER LEAVE is not supported yet")
    } else {
        err("This instance has cluster support disabled")
    }
}

fn help() -> Reply {
    let lines = [
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "COUNTKEYSINSLOT <slot>",
        "    Return the number of keys in <slot> on this node.",
        "GETKEYSINSLOT <slot> <count>",
        "    Return key names stored by this node in <slot>.",
        "INFO",
        "    Return information about the cluster.",
        "KEYSLOT <key>",
        "    Return the hash slot for <key>.",
        "LEAVE",
        "    Migrate every slot of this node away, then stop it (cluster mode only).",
        "MYID",
        "    Return the node id.",
        "NODES",
        "    Return cluster configuration seen by node.",
        "SHARDS",
        "    Return information about slot range mappings and the nodes serving them.",
        "SLOTS",
        "    Return information about slots range mappings.",
        "HELP",
        "    Print this help.",
    ];
    Reply::Array(
        lines
            .iter()
            .map(|l| Reply::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
    )
}

fn parse_slot(arg: &[u8]) -> Result<Slot, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| (0..SLOT_COUNT as i64).contains(n))
        .map(|n| n as Slot)
        .ok_or_else(|| err("Invalid slot"))
}

/// Runs `op` on the local core owning `slot`; `absent` when this node does not own it.
async fn on_owner(core: &Rc<Core>, view: &View, slot: Slot, op: Op, absent: Reply) -> Reply {
    match view.local_core(slot) {
        Some(c) => core.call(c, vec![op]).await.pop().unwrap_or(absent),
        None => absent,
    }
}

fn with_table(view: &View, f: impl FnOnce(&PartitionTable) -> Reply) -> Reply {
    match view.table.as_deref() {
        Some(t) => f(t),
        // Redis with no slots assigned: empty answers.
        None => Reply::Array(Vec::new()),
    }
}

fn info(view: &View) -> Reply {
    match view.table.as_deref() {
        Some(t) => bulk(cluster_info(t, view.quorum)),
        None => bulk(
            "cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:0\r\n\
             cluster_slots_ok:0\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
             cluster_known_nodes:1\r\ncluster_size:0\r\ncluster_current_epoch:0\r\n\
             cluster_my_epoch:0\r\n",
        ),
    }
}

fn node_entry(n: &tessera_cluster::NodeInfo) -> Reply {
    Reply::Array(vec![
        bulk(n.host.clone()),
        Reply::Int(i64::from(n.client_port)),
        bulk(n.id.to_hex()),
    ])
}

/// `CLUSTER SLOTS`: `[first, last, [host, port, id], replicas...]` per range.
fn slots(t: &PartitionTable) -> Reply {
    Reply::Array(
        slot_ranges(t)
            .into_iter()
            .map(|r| {
                let mut row = vec![
                    Reply::Int(i64::from(r.first)),
                    Reply::Int(i64::from(r.last)),
                    node_entry(r.primary),
                ];
                row.extend(r.replicas.iter().map(|n| node_entry(n)));
                Reply::Array(row)
            })
            .collect(),
    )
}

fn shard_node(n: &tessera_cluster::NodeInfo, role: &'static str) -> Reply {
    Reply::Map(vec![
        (name("id"), bulk(n.id.to_hex())),
        (name("port"), Reply::Int(i64::from(n.client_port))),
        (name("ip"), bulk(n.host.clone())),
        (name("endpoint"), bulk(n.host.clone())),
        (name("role"), name(role)),
        (name("replication-offset"), Reply::Int(0)),
        (name("health"), name("online")),
    ])
}

/// `CLUSTER SHARDS`: one entry per primary node with all its ranges.
fn shards(t: &PartitionTable) -> Reply {
    let ranges = slot_ranges(t);
    let mut out = Vec::new();
    for n in &t.nodes {
        let mine: Vec<_> = ranges.iter().filter(|r| r.primary.id == n.id).collect();
        if mine.is_empty() {
            continue;
        }
        let slots = mine
            .iter()
            .flat_map(|r| {
                [
                    Reply::Int(i64::from(r.first)),
                    Reply::Int(i64::from(r.last)),
                ]
            })
            .collect();
        let mut nodes = vec![shard_node(n, "master")];
        let mut replicas: Vec<&tessera_cluster::NodeInfo> = mine
            .iter()
            .flat_map(|r| r.replicas.iter().copied())
            .collect();
        replicas.sort_by_key(|r| r.id);
        replicas.dedup_by_key(|r| r.id);
        nodes.extend(replicas.into_iter().map(|r| shard_node(r, "replica")));
        out.push(Reply::Map(vec![
            (name("slots"), Reply::Array(slots)),
            (name("nodes"), Reply::Array(nodes)),
        ]));
    }
    Reply::Array(out)
}

fn flag(b: bool) -> Reply {
    Reply::Int(i64::from(b))
}

/// `CLUSTER.MEMBERS` (layout in the module doc).
pub fn members(view: &View) -> Reply {
    let mut all: Vec<tessera_cluster::NodeInfo> = view.live.as_ref().clone();
    if let Some(t) = view.table.as_deref() {
        for n in &t.nodes {
            if !all.iter().any(|m| m.id == n.id) {
                all.push(n.clone());
            }
        }
    }
    all.sort_by_key(|n| n.id);
    let owned = |id: NodeId| -> usize {
        view.table.as_deref().map_or(0, |t| {
            t.node_index(id).map_or(0, |i| {
                t.slots.iter().filter(|e| e.primary.node == i).count()
            })
        })
    };
    Reply::Array(
        all.iter()
            .map(|n| {
                Reply::Map(vec![
                    (name("id"), bulk(n.id.to_hex())),
                    (name("addr"), bulk(n.client_addr())),
                    (name("cluster_port"), Reply::Int(i64::from(n.peer_port))),
                    (name("cores"), Reply::Int(i64::from(n.cores))),
                    (name("generation"), Reply::Int(n.generation as i64)),
                    (name("coordinator"), flag(n.id == view.coordinator)),
                    (name("alive"), flag(view.alive(n.id))),
                    (name("myself"), flag(n.id == view.me)),
                    (name("slots"), Reply::Int(owned(n.id) as i64)),
                ])
            })
            .collect(),
    )
}

/// `CLUSTER.ROUTINGTABLE` (layout in the module doc).
pub fn routing_table(view: &View) -> Reply {
    let Some(t) = view.table.as_deref() else {
        return Reply::Map(vec![
            (name("epoch"), Reply::Int(0)),
            (name("coordinator"), bulk(String::new())),
            (name("ranges"), Reply::Array(Vec::new())),
        ]);
    };
    let mut rows: Vec<(Slot, Slot)> = Vec::new();
    for s in 0..SLOT_COUNT {
        let s = s as Slot;
        match rows.last_mut() {
            Some((first, last)) if *last + 1 == s && same_row(t, *first, s) => *last = s,
            _ => rows.push((s, s)),
        }
    }
    let ranges = rows
        .into_iter()
        .map(|(first, last)| {
            let e = t.entry(first);
            let node = t.node(e.primary.node);
            let migrating = match e.state {
                SlotState::Stable => Reply::Nil,
                SlotState::Migrating { to, .. } => {
                    bulk(format!("{}/{}", t.node(to.node).id.to_hex(), to.core))
                }
            };
            Reply::Map(vec![
                (name("first"), Reply::Int(i64::from(first))),
                (name("last"), Reply::Int(i64::from(last))),
                (name("node"), bulk(node.id.to_hex())),
                (name("addr"), bulk(node.client_addr())),
                (name("core"), Reply::Int(i64::from(e.primary.core))),
                (name("migrating_to"), migrating),
            ])
        })
        .collect();
    Reply::Map(vec![
        (name("epoch"), Reply::Int(t.epoch as i64)),
        (name("coordinator"), bulk(t.coordinator.to_hex())),
        (name("ranges"), Reply::Array(ranges)),
    ])
}

fn same_row(table: &PartitionTable, first: Slot, slot: Slot) -> bool {
    let (run, this) = (table.entry(first), table.entry(slot));
    let target = |state: &SlotState| match state {
        SlotState::Stable => None,
        SlotState::Migrating { to, .. } => Some(*to),
    };
    run.primary == this.primary && target(&run.state) == target(&this.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_cluster::NodeInfo;

    #[test]
    fn routing_table_rows_merge_runs() {
        let me = NodeInfo {
            id: NodeId([3; 20]),
            host: "127.0.0.1".into(),
            client_port: 7000,
            peer_port: 0,
            gossip_port: 0,
            cores: 2,
            generation: 9,
        };
        let v = View::single(&me);
        let Reply::Map(top) = routing_table(&v) else {
            panic!("map")
        };
        assert_eq!(top[0].1, Reply::Int(1));
        let Reply::Array(rows) = &top[2].1 else {
            panic!("array")
        };
        assert_eq!(rows.len(), 2, "one row per core");
        let Reply::Array(m) = members(&v) else {
            panic!("array")
        };
        assert_eq!(m.len(), 1);
        let Reply::Array(s) = slots(v.table.as_deref().unwrap()) else {
            panic!("array")
        };
        assert_eq!(s.len(), 1, "cores merge into one CLUSTER SLOTS range");
    }
}
