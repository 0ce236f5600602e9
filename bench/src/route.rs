//! Owner routing for a thread-per-core server (tesserad): keys restricted to the slots owned by
//! the core that serves the connection, so no request needs a cross-core hop (performance.md P5,
//! the "hop tax": CPU per op with uniform keys over CPU per op with owner-routed keys).
//!
//! What the harness assumes, and how each assumption is checked:
//! - The slot of a key is Redis Cluster's `CRC16-XMODEM(hash_tag(key)) & 0x3FFF` (public, and
//!   checked against Redis's reference values below).
//! - A connection learns its core from `CLIENT INFO` (tesserad appends `core=N`) and the number
//!   of executors from `INFO server` (`executors:N`); a server that reports neither cannot be
//!   owner-routed and the run does not start.
//! - tesserad's single-node table gives core `c` of `n` the contiguous slot range
//!   `[c * 16384 / n, (c + 1) * 16384 / n)`. Nothing on the wire states this, so it is verified
//!   after the fact: [`server_counters`] reads every core's `executed` and `remote_in` counters
//!   (`INFO shards`), and compare mode reports the fraction of operations that crossed cores
//!   (about `1 - 1/n` with uniform keys, about 0 when routing works).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::resp;
use crate::BenchError;

/// Number of slots (Redis Cluster's).
pub const SLOT_COUNT: u32 = 16384;
/// Longest reply the harness reads from an introspection command (`CLIENT INFO`, `INFO`).
const INFO_BYTES_MAX: usize = 1024 * 1024;

/// How a connection chooses its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Route {
    /// Keys from the whole key space, wherever they live.
    #[default]
    Any,
    /// Only keys whose slot the connection's own core owns (tesserad).
    Owner,
    /// Cluster-aware client: the slot map comes from `CLUSTER SLOTS` of the given (seed)
    /// address, connections are spread over every master, and each connection sends only keys
    /// whose slot its master owns. `-MOVED`/`-ASK` replies count as errors.
    Cluster,
}

impl FromStr for Route {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Route::Any),
            "owner" => Ok(Route::Owner),
            "cluster" => Ok(Route::Cluster),
            _ => Err(BenchError::Config(format!(
                "route {s:?} is not `any`, `owner` or `cluster`"
            ))),
        }
    }
}

/// The hashed part of `key`: between the first `{` and the next `}` when non-empty.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Redis Cluster's slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) & 0x3FFF
}

/// Keys `{prefix}N` accepted for one connection: those whose slot core `core` of `cores` owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFilter {
    prefix: Vec<u8>,
    cores: u32,
    core: u32,
    /// Cluster mode: master index owning each slot ([`UNASSIGNED`] for none); `None`: the
    /// single-node contiguous table.
    table: Option<Arc<[u16]>>,
    scratch: Vec<u8>,
}

/// Owner of a slot no master serves in a [`ClusterMap`].
pub const UNASSIGNED: u16 = u16::MAX;

impl OwnerFilter {
    /// A filter for core `core` of `cores` (`core < cores`, `cores >= 1`).
    pub fn new(prefix: &str, cores: u32, core: u32) -> Result<Self, BenchError> {
        if cores == 0 || cores > SLOT_COUNT || core >= cores {
            return Err(BenchError::Protocol(format!(
                "server reports core {core} of {cores} executors"
            )));
        }
        Ok(OwnerFilter {
            prefix: prefix.as_bytes().to_vec(),
            cores,
            core,
            table: None,
            scratch: Vec::with_capacity(prefix.len() + 20),
        })
    }

    /// A filter for the keys whose slot master `node` of `map` owns.
    pub fn cluster(prefix: &str, map: &ClusterMap, node: u32) -> Result<Self, BenchError> {
        let masters = map.masters.len() as u32;
        if node >= masters {
            return Err(BenchError::Config(format!(
                "cluster master {node} of {masters} does not exist"
            )));
        }
        Ok(OwnerFilter {
            prefix: prefix.as_bytes().to_vec(),
            cores: masters,
            core: node,
            table: Some(map.owner.clone()),
            scratch: Vec::with_capacity(prefix.len() + 20),
        })
    }

    /// The core (cluster mode: master index) that owns `slot`.
    pub fn owner_of(&self, slot: u16) -> u32 {
        match &self.table {
            Some(t) => u32::from(t[usize::from(slot)]),
            None => u32::from(slot) * self.cores / SLOT_COUNT,
        }
    }

    /// True when key number `n` belongs to this filter's core.
    pub fn accepts(&mut self, n: u64) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.prefix);
        self.scratch
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.owner_of(key_slot(&self.scratch)) == self.core
    }

    /// Number of executors of the server.
    pub fn cores(&self) -> u32 {
        self.cores
    }

    /// The core this filter keeps keys for.
    pub fn core(&self) -> u32 {
        self.core
    }
}

/// Sends one command on a blocking stream and returns the payload of its bulk-string reply.
fn bulk_query(stream: &mut TcpStream, args: &[&[u8]]) -> Result<Vec<u8>, BenchError> {
    let mut req = Vec::new();
    resp::encode_command(&mut req, args);
    stream.write_all(&req)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((reply, used)) = resp::parse_reply(&buf)? {
            let what = String::from_utf8_lossy(args[0]).into_owned();
            return match reply {
                resp::Reply::Bulk | resp::Reply::Simple => {
                    // `$len\r\npayload\r\n` (or `=len\r\ntxt:payload\r\n`, `+payload\r\n`).
                    let head = memchr::memchr(b'\n', &buf).map_or(0, |i| i + 1);
                    let body = if buf[0] == b'+' {
                        &buf[1..used - 2]
                    } else {
                        &buf[head..used - 2]
                    };
                    Ok(body.to_vec())
                }
                other => Err(BenchError::Protocol(format!(
                    "{what} answered {other:?}, not a string"
                ))),
            };
        }
        if buf.len() > INFO_BYTES_MAX {
            return Err(BenchError::Protocol("introspection reply too long".into()));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(BenchError::Protocol(
                "server closed the connection during introspection".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `name=value` (CLIENT INFO) or `name:value` (INFO) field of a text reply.
fn field<'a>(text: &'a str, name: &str, sep: char) -> Option<&'a str> {
    text.split([' ', '\r', '\n', ','])
        .find_map(|tok| tok.strip_prefix(name)?.strip_prefix(sep))
}

/// Asks the server which core serves this connection and how many executors it runs:
/// `(core, executors)`. Uses a blocking stream with `timeout` on reads; the stream is left
/// with no pending bytes.
pub fn learn_core(stream: &mut TcpStream, timeout: Duration) -> Result<(u32, u32), BenchError> {
    stream.set_read_timeout(Some(timeout))?;
    // An error reply (a server without CLIENT INFO) is the same answer as one without `core=`.
    let text = |r: Result<Vec<u8>, BenchError>| match r {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(BenchError::Protocol(_)) => Ok(None),
        Err(e) => Err(e),
    };
    let info = text(bulk_query(stream, &[b"CLIENT", b"INFO"]))?;
    let core = info
        .as_deref()
        .and_then(|i| field(i, "core", '='))
        .and_then(|v| v.parse::<u32>().ok());
    let server = text(bulk_query(stream, &[b"INFO", b"server"]))?;
    let cores = server
        .as_deref()
        .and_then(|s| field(s, "executors", ':'))
        .and_then(|v| v.parse::<u32>().ok());
    stream.set_read_timeout(None)?;
    match (core, cores) {
        (Some(c), Some(n)) => Ok((c, n)),
        _ => Err(BenchError::Config(
            "route=owner needs a server that reports `core=` in CLIENT INFO and `executors:` \
             in INFO server (tesserad); this one does not"
                .into(),
        )),
    }
}

/// Node-wide sums of tesserad's per-core counters (`INFO shards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CoreCounters {
    /// Data commands executed by the owner cores' shards.
    pub executed: u64,
    /// Operations a core received from another core (a cross-core hop each).
    pub remote_in: u64,
}

/// Parses the `# Shards` section: lines `coreN:k=v,k=v,...`. `None` when no such line exists
/// (a server other than tesserad).
pub fn parse_shards(text: &str) -> Option<CoreCounters> {
    let mut out = CoreCounters::default();
    let mut seen = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("core") else {
            continue;
        };
        let Some((_, fields)) = rest.split_once(':') else {
            continue;
        };
        seen = true;
        for kv in fields.split(',') {
            match kv.trim().split_once('=') {
                Some(("executed", v)) => out.executed += v.parse::<u64>().unwrap_or(0),
                Some(("remote_in", v)) => out.remote_in += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    seen.then_some(out)
}

/// Reads the server's per-core counters over a fresh connection (`None`: not tesserad).
pub fn server_counters(addr: &str, timeout: Duration) -> Result<Option<CoreCounters>, BenchError> {
    let target = crate::runner::Target {
        label: String::new(),
        addr: addr.to_string(),
        protocol: crate::codec::Protocol::Resp,
        route: Route::Any,
    };
    let mut s = crate::runner::connect_blocking(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    match bulk_query(&mut s, &[b"INFO", b"shards"]) {
        Ok(text) => Ok(parse_shards(&String::from_utf8_lossy(&text))),
        // An error reply (a server without INFO sections) means no counters, not a failure.
        Err(BenchError::Protocol(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The slot map of a cluster as a client sees it (`CLUSTER SLOTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    /// `host:port` of every master, in order of first appearance.
    pub masters: Vec<String>,
    /// Index into `masters` of each slot's owner ([`UNASSIGNED`] when no range covers it).
    pub owner: Arc<[u16]>,
}

impl ClusterMap {
    /// Slots no master serves.
    pub fn unassigned(&self) -> usize {
        self.owner.iter().filter(|&&o| o == UNASSIGNED).count()
    }

    /// Master index that owns the slot of `key`, if any.
    pub fn master_of(&self, key: &[u8]) -> Option<usize> {
        let o = self.owner[usize::from(key_slot(key))];
        (o != UNASSIGNED).then_some(usize::from(o))
    }
}

/// Longest aggregate accepted in a `CLUSTER SLOTS` reply.
const SLOTS_ELEMS_MAX: usize = 1 << 20;

/// A decoded RESP value (only what `CLUSTER SLOTS` needs).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Str(Vec<u8>),
    Array(Vec<Value>),
    Other,
}

/// Decodes one value of a complete frame starting at `pos`: `(value, next position)`.
fn decode(buf: &[u8], pos: usize, depth: usize) -> Result<(Value, usize), BenchError> {
    let bad = |m: &str| BenchError::Protocol(format!("CLUSTER SLOTS reply: {m}"));
    if depth > 8 {
        return Err(bad("nested too deep"));
    }
    let tag = *buf.get(pos).ok_or_else(|| bad("truncated"))?;
    let eol = memchr::memchr(b'\n', &buf[pos..]).ok_or_else(|| bad("truncated"))? + pos;
    if eol < pos + 2 || buf[eol - 1] != b'\r' {
        return Err(bad("line not ended by CRLF"));
    }
    let line = std::str::from_utf8(&buf[pos + 1..eol - 1]).map_err(|_| bad("non-UTF-8 line"))?;
    let after = eol + 1;
    match tag {
        b':' => Ok((
            Value::Int(line.parse().map_err(|_| bad("bad integer"))?),
            after,
        )),
        b'+' => Ok((Value::Str(line.as_bytes().to_vec()), after)),
        b'$' => {
            let len: i64 = line.parse().map_err(|_| bad("bad length"))?;
            if len < 0 {
                return Ok((Value::Other, after));
            }
            let end = after
                .checked_add(len as usize)
                .filter(|&e| e + 2 <= buf.len())
                .ok_or_else(|| bad("truncated"))?;
            Ok((Value::Str(buf[after..end].to_vec()), end + 2))
        }
        b'*' => {
            let n: i64 = line.parse().map_err(|_| bad("bad length"))?;
            if n < 0 {
                return Ok((Value::Other, after));
            }
            let n = n as usize;
            if n > SLOTS_ELEMS_MAX {
                return Err(bad("too many elements"));
            }
            let mut items = Vec::with_capacity(n.min(1024));
            let mut p = after;
            for _ in 0..n {
                let (v, next) = decode(buf, p, depth + 1)?;
                items.push(v);
                p = next;
            }
            Ok((Value::Array(items), p))
        }
        b'-' => Err(BenchError::Config(format!(
            "CLUSTER SLOTS answered an error ({line}): is the target a cluster node?"
        ))),
        _ => Err(bad("unexpected reply type")),
    }
}

/// Parses a complete `CLUSTER SLOTS` reply: `[[first, last, [host, port, ...], replicas...]...]`.
pub fn parse_cluster_slots(buf: &[u8]) -> Result<ClusterMap, BenchError> {
    let bad = |m: String| BenchError::Protocol(format!("CLUSTER SLOTS reply: {m}"));
    let (v, _) = decode(buf, 0, 0)?;
    let Value::Array(rows) = v else {
        return Err(bad("not an array".into()));
    };
    let mut masters: Vec<String> = Vec::new();
    let mut owner = vec![UNASSIGNED; SLOT_COUNT as usize];
    for row in rows {
        let Value::Array(row) = row else {
            return Err(bad("a range is not an array".into()));
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(node))) =
            (row.first(), row.get(1), row.get(2))
        else {
            return Err(bad(
                "a range is not [first, last, [host, port, ...], ...]".into()
            ));
        };
        let (Some(Value::Str(host)), Some(Value::Int(port))) = (node.first(), node.get(1)) else {
            return Err(bad("a node is not [host, port, ...]".into()));
        };
        if !(0..i64::from(SLOT_COUNT)).contains(first)
            || !(*first..i64::from(SLOT_COUNT)).contains(last)
            || !(1..=65535).contains(port)
        {
            return Err(bad(format!(
                "range {first}-{last} at port {port} is invalid"
            )));
        }
        let addr = format!("{}:{port}", String::from_utf8_lossy(host));
        let idx = masters.iter().position(|m| *m == addr).unwrap_or_else(|| {
            masters.push(addr);
            masters.len() - 1
        });
        for slot in &mut owner[*first as usize..=*last as usize] {
            *slot = idx as u16;
        }
    }
    if masters.is_empty() {
        return Err(BenchError::Config(
            "CLUSTER SLOTS lists no ranges: the cluster has no slots assigned yet".into(),
        ));
    }
    Ok(ClusterMap {
        masters,
        owner: owner.into(),
    })
}

/// Fetches the slot map from `addr` (`CLUSTER SLOTS`) over a fresh blocking connection.
pub fn fetch_cluster_map(addr: &str, timeout: Duration) -> Result<ClusterMap, BenchError> {
    let target = crate::runner::Target {
        label: String::new(),
        addr: addr.to_string(),
        protocol: crate::codec::Protocol::Resp,
        route: Route::Any,
    };
    let mut s = crate::runner::connect_blocking(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut req = Vec::new();
    resp::encode_command(&mut req, &[b"CLUSTER", b"SLOTS"]);
    s.write_all(&req)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((_, used)) = resp::parse_reply(&buf)? {
            return parse_cluster_slots(&buf[..used]);
        }
        if buf.len() > INFO_BYTES_MAX {
            return Err(BenchError::Protocol("CLUSTER SLOTS reply too long".into()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(BenchError::Protocol(
                "server closed the connection during CLUSTER SLOTS".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        // `CLUSTER KEYSLOT` on a real Redis Cluster.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"a{b}c"), b"b");
    }

    #[test]
    fn owner_filters_split_the_key_space() {
        let mut f0 = OwnerFilter::new("key:", 2, 0).unwrap();
        let mut f1 = OwnerFilter::new("key:", 2, 1).unwrap();
        let mut kept = 0;
        for n in 0..10_000u64 {
            let a = f0.accepts(n);
            assert_ne!(a, f1.accepts(n), "every key has exactly one owner");
            kept += u32::from(a);
            let slot = key_slot(format!("key:{n}").as_bytes());
            assert_eq!(a, slot < 8192);
        }
        assert!((4_500..5_500).contains(&kept), "about half: {kept}");
        assert!(OwnerFilter::new("k", 2, 2).is_err());
        assert!(OwnerFilter::new("k", 0, 0).is_err());
    }

    #[test]
    fn parses_fields_and_shards() {
        let ci = "id=7 addr=127.0.0.1:5 laddr=127.0.0.1:6 fd=0 name= age=0 cmd=client|info resp=2 core=1\n";
        assert_eq!(field(ci, "core", '='), Some("1"));
        assert_eq!(field(ci, "id", '='), Some("7"));
        let info = "# Server\r\nredis_version:7.2.0\r\nexecutors:2\r\n";
        assert_eq!(field(info, "executors", ':'), Some("2"));
        assert_eq!(field(info, "cores", ':'), None);
        let shards = "# Shards\r\ncore0:cpu=0,keys=5,executed=100,remote_in=40\r\ncore1:cpu=1,executed=50,remote_in=10\r\n";
        assert_eq!(
            parse_shards(shards),
            Some(CoreCounters {
                executed: 150,
                remote_in: 50
            })
        );
        assert_eq!(parse_shards("# Shards\r\n"), None);
        assert!("sideways".parse::<Route>().is_err());
        assert_eq!("cluster".parse::<Route>().unwrap(), Route::Cluster);
    }

    /// A `CLUSTER SLOTS` reply as tesserad/Redis send it.
    fn slots_reply(ranges: &[(u16, u16, u16)]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", ranges.len()).into_bytes();
        for (first, last, port) in ranges {
            out.extend_from_slice(
                format!(
                    "*3\r\n:{first}\r\n:{last}\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$4\r\nabcd\r\n"
                )
                .as_bytes(),
            );
        }
        out
    }

    #[test]
    fn cluster_slots_route_every_key_to_its_owner() {
        let reply = slots_reply(&[(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)]);
        let map = parse_cluster_slots(&reply).unwrap();
        assert_eq!(
            map.masters,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert_eq!(map.unassigned(), 0);
        // Redis's reference slots: foo 12182, bar 5061, somekey 11058.
        assert_eq!(map.master_of(b"foo"), Some(2));
        assert_eq!(map.master_of(b"bar"), Some(0));
        assert_eq!(map.master_of(b"somekey"), Some(2));
        assert_eq!(map.master_of(b"{bar}x"), Some(0));
        let mut filters: Vec<OwnerFilter> = (0..3)
            .map(|i| OwnerFilter::cluster("key:", &map, i).unwrap())
            .collect();
        let mut per = [0u32; 3];
        for n in 0..30_000u64 {
            let owners: Vec<usize> = (0..3).filter(|&i| filters[i].accepts(n)).collect();
            assert_eq!(owners.len(), 1, "key {n} has exactly one master");
            let slot = key_slot(format!("key:{n}").as_bytes());
            let expect = if slot <= 5460 {
                0
            } else if slot <= 10922 {
                1
            } else {
                2
            };
            assert_eq!(owners[0], expect, "key {n} slot {slot}");
            per[owners[0]] += 1;
        }
        assert!(per.iter().all(|&c| (9_000..11_000).contains(&c)), "{per:?}");
        assert!(OwnerFilter::cluster("key:", &map, 3).is_err());
        // A master owning two ranges; a gap leaves slots unassigned.
        let map = parse_cluster_slots(&slots_reply(&[(0, 99, 7000), (200, 16383, 7000)])).unwrap();
        assert_eq!(map.masters.len(), 1);
        assert_eq!(map.unassigned(), 100);
    }

    #[test]
    fn bad_cluster_slots_replies_are_errors() {
        assert!(parse_cluster_slots(b"*0\r\n").is_err());
        assert!(
            parse_cluster_slots(b"-ERR This instance has cluster support disabled\r\n").is_err()
        );
        assert!(parse_cluster_slots(b":1\r\n").is_err());
        assert!(parse_cluster_slots(&slots_reply(&[(10, 5, 7000)])).is_err());
        assert!(parse_cluster_slots(&slots_reply(&[(0, 16384, 7000)])).is_err());
        assert!(parse_cluster_slots(&slots_reply(&[(0, 1, 0)])).is_err());
        let mut cut = slots_reply(&[(0, 16383, 7000)]);
        cut.truncate(cut.len() - 5);
        assert!(parse_cluster_slots(&cut).is_err());
        assert!(parse_cluster_slots(b"*1\r\n*2\r\n:0\r\n:5\r\n").is_err());
    }
}
