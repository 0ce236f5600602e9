//! Turns [`Op`]s into protocol bytes and replies into [`Outcome`]s, for either protocol.
//!
//! One [`Op`] may be several wire commands (read-modify-write is a GET and a SET pipelined);
//! [`Expect`] records what replies it awaits so the connection can match them in order.

use std::str::FromStr;

use serde::Serialize;

use crate::memcache::{self, McCommand, McReply};
use crate::resp::{self, Reply};
use crate::workload::{Op, OpKind, Workload};
use crate::BenchError;

/// Wire protocol of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// RESP2/RESP3 (tesserad, redis-server, ...).
    Resp,
    /// memcached's text protocol.
    Memcache,
}

impl FromStr for Protocol {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "resp" | "redis" | "tessera" => Ok(Protocol::Resp),
            "memcache" | "memcached" | "mc" => Ok(Protocol::Memcache),
            _ => Err(BenchError::Config(format!("unknown protocol {s:?}"))),
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Success (including a found value).
    Ok,
    /// A read found nothing (nil, `END` with no value, `NOT_FOUND`, `-KEYNOTFOUND`).
    Miss,
    /// An error reply.
    Error,
    /// A cluster redirect (`-MOVED` or `-ASK`): an error reply, also counted apart.
    Redirect,
}

/// The replies one operation awaits, in order (at most two wire commands per op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Framing of each reply (used by memcached; RESP is self-framing).
    pub parts: [McCommand; 2],
    /// Number of replies awaited (1 or 2).
    pub len: u8,
}

/// Encodes operations of one workload for one protocol; reuses a key scratch buffer.
#[derive(Debug)]
pub struct Encoder {
    protocol: Protocol,
    prefix: Vec<u8>,
    dmap: Vec<u8>,
    ttl_ms: Option<u64>,
    /// `ttl_ms` as decimal text, formatted once.
    ttl_text: Option<Vec<u8>>,
    values: Vec<u8>,
    key: Vec<u8>,
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder for `workload` over `protocol`; rejects commands the protocol lacks.
    pub fn new(protocol: Protocol, workload: &Workload) -> Result<Self, BenchError> {
        if protocol == Protocol::Memcache {
            for k in [OpKind::DmPut, OpKind::DmGet] {
                if workload.uses(k) {
                    return Err(BenchError::Config(format!(
                        "{k} is a Tessera command; memcached has no equivalent"
                    )));
                }
            }
        }
        // Values are slices of one printable buffer: their content does not matter to a cache
        // and generating bytes per request would cost more than sending them.
        let values = (0..workload.value_size.max)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        Ok(Encoder {
            protocol,
            prefix: workload.key_prefix.clone().into_bytes(),
            dmap: workload.dmap.clone().into_bytes(),
            ttl_ms: workload.ttl_ms,
            ttl_text: workload
                .ttl_ms
                .map(|t| itoa::Buffer::new().format(t).as_bytes().to_vec()),
            values,
            key: Vec::with_capacity(64),
            scratch: Vec::with_capacity(64),
        })
    }

    /// The protocol this encoder speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn set_key(&mut self, n: u64, counter: bool) {
        self.key.clear();
        self.key.extend_from_slice(&self.prefix);
        if counter {
            self.key.extend_from_slice(b"ctr:");
        }
        self.key
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Appends the bytes of `op` to `out` and returns the replies it awaits.
    pub fn encode(&mut self, op: &Op, out: &mut Vec<u8>) -> Expect {
        let one = |c| Expect {
            parts: [c, c],
            len: 1,
        };
        self.set_key(op.key, op.kind == OpKind::Incr);
        let value = &self.values[..op.value_len.min(self.values.len())];
        match self.protocol {
            Protocol::Resp => {
                let key = &self.key[..];
                let mut ib = itoa::Buffer::new();
                let ttl = self.ttl_text.as_deref();
                match op.kind {
                    OpKind::Get => resp::encode_command(out, &[b"GET", key]),
                    OpKind::Set => resp_set(out, b"SET", None, key, value, ttl),
                    OpKind::Incr => resp::encode_command(out, &[b"INCR", key]),
                    OpKind::Del => resp::encode_command(out, &[b"DEL", key]),
                    OpKind::DmPut => {
                        resp_set(out, b"DM.PUT", Some(&self.dmap), key, value, ttl);
                    }
                    OpKind::DmGet => resp::encode_command(out, &[b"DM.GET", &self.dmap, key]),
                    OpKind::Scan => {
                        resp::encode_array_header(out, 1 + op.count as usize);
                        resp::encode_bulk(out, b"MGET");
                        for i in 0..u64::from(op.count) {
                            self.scratch.clear();
                            self.scratch.extend_from_slice(&self.prefix);
                            self.scratch
                                .extend_from_slice(ib.format(op.key + i).as_bytes());
                            resp::encode_bulk(out, &self.scratch);
                        }
                    }
                    OpKind::Rmw => {
                        resp::encode_command(out, &[b"GET", key]);
                        resp_set(out, b"SET", None, key, value, ttl);
                        return Expect {
                            parts: [McCommand::Get, McCommand::Set],
                            len: 2,
                        };
                    }
                }
                one(McCommand::Get)
            }
            Protocol::Memcache => {
                let exptime_s = self.ttl_ms.map_or(0, |t| t.div_ceil(1000));
                let key = &self.key[..];
                match op.kind {
                    OpKind::Get | OpKind::DmGet => {
                        memcache::encode_get(out, [key]);
                        one(McCommand::Get)
                    }
                    OpKind::Set | OpKind::DmPut => {
                        memcache::encode_set(out, key, value, exptime_s);
                        one(McCommand::Set)
                    }
                    OpKind::Incr => {
                        memcache::encode_incr(out, key, 1);
                        one(McCommand::Incr)
                    }
                    OpKind::Del => {
                        memcache::encode_delete(out, key);
                        one(McCommand::Delete)
                    }
                    OpKind::Scan => {
                        let mut ib = itoa::Buffer::new();
                        out.extend_from_slice(b"get");
                        for i in 0..u64::from(op.count) {
                            out.push(b' ');
                            out.extend_from_slice(&self.prefix);
                            out.extend_from_slice(ib.format(op.key + i).as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                        one(McCommand::Get)
                    }
                    OpKind::Rmw => {
                        memcache::encode_get(out, [key]);
                        memcache::encode_set(out, key, value, exptime_s);
                        Expect {
                            parts: [McCommand::Get, McCommand::Set],
                            len: 2,
                        }
                    }
                }
            }
        }
    }
}

fn resp_set(
    out: &mut Vec<u8>,
    cmd: &[u8],
    dmap: Option<&[u8]>,
    key: &[u8],
    value: &[u8],
    ttl_ms: Option<&[u8]>,
) {
    let n = 3 + usize::from(dmap.is_some()) + if ttl_ms.is_some() { 2 } else { 0 };
    resp::encode_array_header(out, n);
    resp::encode_bulk(out, cmd);
    if let Some(d) = dmap {
        resp::encode_bulk(out, d);
    }
    resp::encode_bulk(out, key);
    resp::encode_bulk(out, value);
    if let Some(t) = ttl_ms {
        resp::encode_bulk(out, b"PX");
        resp::encode_bulk(out, t);
    }
}

/// Parses one reply (framed as `part` for memcached) from the front of `buf`.
pub fn parse_reply(
    protocol: Protocol,
    part: McCommand,
    buf: &[u8],
) -> Result<Option<(Outcome, usize)>, BenchError> {
    match protocol {
        Protocol::Resp => Ok(resp::parse_reply(buf)?.map(|(r, n)| {
            let o = match r {
                Reply::Nil | Reply::Error { not_found: true } => Outcome::Miss,
                Reply::Error { not_found: false }
                    if buf.starts_with(b"-MOVED ") || buf.starts_with(b"-ASK ") =>
                {
                    Outcome::Redirect
                }
                Reply::Error { not_found: false } => Outcome::Error,
                Reply::Simple | Reply::Bulk | Reply::Aggregate(_) => Outcome::Ok,
            };
            (o, n)
        })),
        Protocol::Memcache => Ok(memcache::parse_reply(part, buf)?.map(|(r, n)| {
            let o = match r {
                McReply::Values(0) | McReply::NotFound => Outcome::Miss,
                McReply::Values(_) | McReply::Ok => Outcome::Ok,
                McReply::Error => Outcome::Error,
            };
            (o, n)
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::ValueSize;

    fn op(kind: OpKind) -> Op {
        Op {
            kind,
            key: 7,
            value_len: 3,
            count: 2,
        }
    }

    #[test]
    fn encodes_resp_commands() {
        let w = Workload {
            ttl_ms: Some(1500),
            value_size: ValueSize { min: 3, max: 3 },
            ..Workload::default()
        };
        let mut e = Encoder::new(Protocol::Resp, &w).unwrap();
        let mut out = Vec::new();
        e.encode(&op(OpKind::Set), &mut out);
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$5\r\nkey:7\r\n$3\r\nabc\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
        out.clear();
        e.encode(&op(OpKind::DmGet), &mut out);
        assert_eq!(out, b"*3\r\n$6\r\nDM.GET\r\n$5\r\nbench\r\n$5\r\nkey:7\r\n");
        out.clear();
        e.encode(&op(OpKind::Incr), &mut out);
        assert_eq!(out, b"*2\r\n$4\r\nINCR\r\n$9\r\nkey:ctr:7\r\n");
        out.clear();
        e.encode(&op(OpKind::Scan), &mut out);
        assert_eq!(
            out,
            b"*3\r\n$4\r\nMGET\r\n$5\r\nkey:7\r\n$5\r\nkey:8\r\n".as_slice()
        );
        out.clear();
        let x = e.encode(&op(OpKind::Rmw), &mut out);
        assert_eq!(x.len, 2);
        // Each RESP command parses as a request-shaped frame.
        let (_, n1) = resp::parse_reply(&out).unwrap().unwrap();
        let (_, n2) = resp::parse_reply(&out[n1..]).unwrap().unwrap();
        assert_eq!(n1 + n2, out.len());
    }

    #[test]
    fn encodes_memcache_commands_and_rejects_dmap() {
        let w = Workload {
            ttl_ms: Some(1500),
            value_size: ValueSize { min: 3, max: 3 },
            ..Workload::default()
        };
        let mut e = Encoder::new(Protocol::Memcache, &w).unwrap();
        let mut out = Vec::new();
        e.encode(&op(OpKind::Set), &mut out);
        e.encode(&op(OpKind::Scan), &mut out);
        assert_eq!(
            out,
            b"set key:7 0 2 3\r\nabc\r\nget key:7 key:8\r\n".as_slice()
        );
        let dm = Workload {
            mix: vec![(OpKind::DmGet, 1)],
            ..Workload::default()
        };
        assert!(Encoder::new(Protocol::Memcache, &dm).is_err());
    }

    #[test]
    fn classifies_outcomes() {
        let p = |proto, part, b: &[u8]| parse_reply(proto, part, b).unwrap().unwrap().0;
        assert_eq!(p(Protocol::Resp, McCommand::Get, b"$-1\r\n"), Outcome::Miss);
        assert_eq!(
            p(Protocol::Resp, McCommand::Get, b"-ERR x\r\n"),
            Outcome::Error
        );
        assert_eq!(
            p(
                Protocol::Resp,
                McCommand::Get,
                b"-KEYNOTFOUND key not found\r\n"
            ),
            Outcome::Miss
        );
        assert_eq!(
            p(
                Protocol::Resp,
                McCommand::Get,
                b"-MOVED 3999 127.0.0.1:7001\r\n"
            ),
            Outcome::Redirect
        );
        assert_eq!(
            p(
                Protocol::Resp,
                McCommand::Get,
                b"-ASK 3999 127.0.0.1:7001\r\n"
            ),
            Outcome::Redirect
        );
        assert_eq!(
            p(Protocol::Resp, McCommand::Get, b"-MOVEDX\r\n"),
            Outcome::Error
        );
        assert_eq!(
            p(Protocol::Memcache, McCommand::Get, b"END\r\n"),
            Outcome::Miss
        );
        assert_eq!(
            p(Protocol::Memcache, McCommand::Set, b"STORED\r\n"),
            Outcome::Ok
        );
    }
}
