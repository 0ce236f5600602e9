//! `tessera cluster status`: members, coordinator, table epoch and slot ranges per (node, core),
//! from Tessera's `CLUSTER.MEMBERS` and `CLUSTER.ROUTINGTABLE`, as a table or JSON.
//!
//! Replies are read in RESP2 (a map is a flat array of alternating names and values) and RESP3
//! alike, by field name, so added fields are ignored. A server without these commands (Redis,
//! or an older Tessera) answers an error, which is reported with the server's own text.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::conn::{args, Conn};
use super::resp::Reply;

/// One member as `CLUSTER.MEMBERS` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// `host:client_port`.
    pub addr: String,
    pub cores: i64,
    pub generation: i64,
    pub coordinator: bool,
    pub alive: bool,
    pub myself: bool,
    /// Slots it is primary of.
    pub slots: i64,
}

/// One run of consecutive slots with the same owner (node, core).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub first: i64,
    pub last: i64,
    /// Owner node id.
    pub node: String,
    pub addr: String,
    pub core: i64,
    /// `id/core` of the migration target, when the range is moving.
    pub migrating_to: Option<String>,
}

/// What `tessera cluster status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The node asked.
    pub asked: String,
    pub epoch: i64,
    /// Id of the node that computed the table (empty before any table).
    pub coordinator: String,
    pub members: Vec<Member>,
    pub ranges: Vec<Range>,
}

/// A reply that is not what the command documents.
fn shape(command: &str, what: &str) -> anyhow::Error {
    anyhow::anyhow!("unexpected {command} reply: {what}")
}

/// The `(name, value)` pairs of a map reply (RESP3 map, or RESP2 flat array).
fn fields<'a>(command: &str, reply: &'a Reply) -> anyhow::Result<Vec<(String, &'a Reply)>> {
    let pairs: Vec<(&Reply, &Reply)> = match reply {
        Reply::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Reply::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| (&kv[0], &kv[1])).collect()
        }
        other => return Err(shape(command, &format!("expected a map, got {other:?}"))),
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            k.as_text()
                .map(|k| (k, v))
                .ok_or_else(|| shape(command, "a field name is not text"))
        })
        .collect()
}

fn get<'a>(f: &[(String, &'a Reply)], name: &str) -> Option<&'a Reply> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn int(command: &str, f: &[(String, &Reply)], name: &str) -> anyhow::Result<i64> {
    match get(f, name) {
        Some(Reply::Integer(n)) => Ok(*n),
        Some(r) => r
            .as_text()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| shape(command, &format!("`{name}` is not an integer"))),
        None => Err(shape(command, &format!("no `{name}` field"))),
    }
}

fn text(command: &str, f: &[(String, &Reply)], name: &str) -> anyhow::Result<String> {
    get(f, name)
        .and_then(Reply::as_text)
        .ok_or_else(|| shape(command, &format!("no text `{name}` field")))
}

fn items<'a>(command: &str, reply: &'a Reply) -> anyhow::Result<&'a [Reply]> {
    match reply {
        Reply::Array(v) | Reply::Set(v) => Ok(v),
        other => Err(shape(command, &format!("expected an array, got {other:?}"))),
    }
}

/// Parses a `CLUSTER.MEMBERS` reply.
pub fn parse_members(reply: &Reply) -> anyhow::Result<Vec<Member>> {
    const C: &str = "CLUSTER.MEMBERS";
    items(C, reply)?
        .iter()
        .map(|m| {
            let f = fields(C, m)?;
            Ok(Member {
                id: text(C, &f, "id")?,
                addr: text(C, &f, "addr")?,
                cores: int(C, &f, "cores")?,
                generation: int(C, &f, "generation").unwrap_or(0),
                coordinator: int(C, &f, "coordinator")? == 1,
                alive: int(C, &f, "alive")? == 1,
                myself: int(C, &f, "myself")? == 1,
                slots: int(C, &f, "slots")?,
            })
        })
        .collect()
}

/// Parses a `CLUSTER.ROUTINGTABLE` reply into `(epoch, coordinator, ranges)`.
pub fn parse_routing_table(reply: &Reply) -> anyhow::Result<(i64, String, Vec<Range>)> {
    const C: &str = "CLUSTER.ROUTINGTABLE";
    let top = fields(C, reply)?;
    let epoch = int(C, &top, "epoch")?;
    let coordinator = get(&top, "coordinator")
        .and_then(Reply::as_text)
        .unwrap_or_default();
    let ranges = items(
        C,
        get(&top, "ranges").ok_or_else(|| shape(C, "no `ranges`"))?,
    )?
    .iter()
    .map(|r| {
        let f = fields(C, r)?;
        Ok(Range {
            first: int(C, &f, "first")?,
            last: int(C, &f, "last")?,
            node: text(C, &f, "node")?,
            addr: text(C, &f, "addr")?,
            core: int(C, &f, "core")?,
            migrating_to: get(&f, "migrating_to").and_then(Reply::as_text),
        })
    })
    .collect::<anyhow::Result<Vec<Range>>>()?;
    Ok((epoch, coordinator, ranges))
}

/// Runs one command; an error reply becomes an error naming the node and the command.
fn call(conn: &mut Conn, command: &str) -> anyhow::Result<Reply> {
    let reply = conn.call(&args(&[command]))?;
    if let Reply::Error(e) = &reply {
        anyhow::bail!(
            "{} does not answer {command} (is it a Tessera node?): {}",
            conn.addr(),
            String::from_utf8_lossy(e)
        );
    }
    Ok(reply)
}

/// Asks the node behind `conn`.
pub fn status(conn: &mut Conn) -> anyhow::Result<Status> {
    let members = parse_members(&call(conn, "CLUSTER.MEMBERS")?)?;
    let (epoch, coordinator, ranges) = parse_routing_table(&call(conn, "CLUSTER.ROUTINGTABLE")?)?;
    Ok(Status {
        asked: conn.addr().to_owned(),
        epoch,
        coordinator,
        members,
        ranges,
    })
}

/// The first 8 hex digits of an id, as `CLUSTER NODES` users know them.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The status as text tables.
pub fn to_table(s: &Status) -> String {
    let mut o = String::new();
    let coord = s
        .members
        .iter()
        .find(|m| m.id == s.coordinator)
        .map_or_else(String::new, |m| format!(" ({})", m.addr));
    let coordinator = if s.coordinator.is_empty() {
        "none yet".to_owned()
    } else {
        format!("{}{coord}", short(&s.coordinator))
    };
    let _ = writeln!(
        o,
        "asked {}: epoch {}, coordinator {}, {} member(s)",
        s.asked,
        s.epoch,
        coordinator,
        s.members.len()
    );
    o.push('\n');
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let mut flags = Vec::new();
            if m.coordinator {
                flags.push("coordinator");
            }
            if m.myself {
                flags.push("myself");
            }
            vec![
                short(&m.id).to_owned(),
                m.addr.clone(),
                if m.alive { "up" } else { "down" }.to_owned(),
                m.cores.to_string(),
                m.slots.to_string(),
                flags.join(","),
            ]
        })
        .collect();
    table(
        &mut o,
        &["NODE", "ADDR", "STATE", "CORES", "SLOTS", "FLAGS"],
        &rows,
    );
    o.push('\n');
    let rows: Vec<Vec<String>> = s
        .ranges
        .iter()
        .map(|r| {
            vec![
                format!("{}-{}", r.first, r.last),
                (r.last - r.first + 1).to_string(),
                short(&r.node).to_owned(),
                r.addr.clone(),
                r.core.to_string(),
                r.migrating_to.as_deref().map_or(String::new(), |t| {
                    let (id, core) = t.split_once('/').unwrap_or((t, ""));
                    format!("-> {}/{core}", short(id))
                }),
            ]
        })
        .collect();
    table(
        &mut o,
        &["SLOTS", "COUNT", "NODE", "ADDR", "CORE", "MIGRATING"],
        &rows,
    );
    o
}

/// Left-aligned columns separated by two spaces; trailing blanks trimmed.
fn table(o: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&width) {
            let _ = write!(l, "{c:<w$}  ");
        }
        o.push_str(l.trim_end());
        o.push('\n');
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The status as JSON.
pub fn to_json(s: &Status) -> Value {
    json!({
        "asked": s.asked,
        "epoch": s.epoch,
        "coordinator": s.coordinator,
        "members": s.members.iter().map(|m| json!({
            "id": m.id,
            "addr": m.addr,
            "cores": m.cores,
            "generation": m.generation,
            "coordinator": m.coordinator,
            "alive": m.alive,
            "myself": m.myself,
            "slots": m.slots,
        })).collect::<Vec<_>>(),
        "ranges": s.ranges.iter().map(|r| json!({
            "first": r.first,
            "last": r.last,
            "node": r.node,
            "addr": r.addr,
            "core": r.core,
            "migrating_to": r.migrating_to,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn member(id: &str, addr: &str, coord: i64, me: i64, slots: i64) -> Reply {
        // RESP2 shape: a flat array of names and values.
        Reply::Array(vec![
            b("id"),
            b(id),
            b("addr"),
            b(addr),
            b("cluster_port"),
            Reply::Integer(17000),
            b("cores"),
            Reply::Integer(2),
            b("generation"),
            Reply::Integer(9),
            b("coordinator"),
            Reply::Integer(coord),
            b("alive"),
            Reply::Integer(1),
            b("myself"),
            Reply::Integer(me),
            b("slots"),
            Reply::Integer(slots),
        ])
    }

    fn range(first: i64, last: i64, node: &str, core: i64, mig: Option<&str>) -> Reply {
        // RESP3 shape: a map.
        Reply::Map(vec![
            (b("first"), Reply::Integer(first)),
            (b("last"), Reply::Integer(last)),
            (b("node"), b(node)),
            (b("addr"), b("127.0.0.1:7000")),
            (b("core"), Reply::Integer(core)),
            (b("migrating_to"), mig.map_or(Reply::Nil, b)),
        ])
    }

    #[test]
    fn parses_both_resp_shapes_and_prints_tables() {
        let id_a = "a".repeat(40);
        let id_f = "f".repeat(40);
        let members = Reply::Array(vec![
            member(&id_a, "127.0.0.1:7000", 1, 1, 10000),
            member(&id_f, "127.0.0.1:7001", 0, 0, 6384),
        ]);
        let members = parse_members(&members).unwrap();
        assert_eq!(members.len(), 2);
        assert!(members[0].coordinator && members[0].myself && members[0].alive);
        assert_eq!(members[1].slots, 6384);
        let rt = Reply::Array(vec![
            b("epoch"),
            Reply::Integer(7),
            b("coordinator"),
            b(&id_a),
            b("ranges"),
            Reply::Array(vec![
                range(0, 8191, &id_a, 0, None),
                range(8192, 9999, &id_a, 1, Some(&format!("{id_f}/1"))),
                range(10000, 16383, &id_f, 1, None),
            ]),
        ]);
        let (epoch, coordinator, ranges) = parse_routing_table(&rt).unwrap();
        assert_eq!((epoch, coordinator.as_str()), (7, id_a.as_str()));
        assert_eq!(ranges[1].migrating_to, Some(format!("{id_f}/1")));
        let status = Status {
            asked: "127.0.0.1:7000".into(),
            epoch,
            coordinator,
            members,
            ranges,
        };
        let shown = to_table(&status);
        assert!(
            shown.starts_with(
                "asked 127.0.0.1:7000: epoch 7, coordinator aaaaaaaa (127.0.0.1:7000), 2 member(s)\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("aaaaaaaa  127.0.0.1:7000  up     2      10000  coordinator,myself\n"),
            "{shown}"
        );
        assert!(
            shown.contains("8192-9999    1808   aaaaaaaa  127.0.0.1:7000  1     -> ffffffff/1\n"),
            "{shown}"
        );
        let j = to_json(&status);
        assert_eq!(j["ranges"][2]["core"], 1);
        assert_eq!(j["members"][1]["coordinator"], false);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            Reply::Integer(1),
            Reply::Array(vec![Reply::Integer(1)]),
            Reply::Array(vec![Reply::Array(vec![b("id")])]),
            Reply::Array(vec![Reply::Array(vec![Reply::Nil, b("x")])]),
        ] {
            assert!(parse_members(&bad).is_err(), "{bad:?}");
            assert!(parse_routing_table(&bad).is_err(), "{bad:?}");
        }
        let no_ranges = Reply::Map(vec![(b("epoch"), Reply::Integer(1))]);
        assert!(parse_routing_table(&no_ranges).is_err());
    }
}
