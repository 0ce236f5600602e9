//! Cluster-wide commands: PUBLISH, FLUSHALL / FLUSHDB, DM.DESTROY and DM.SCAN in cluster mode.
//!
//! They travel the proxy path ([`super::proxy::send`]: `Message::Forward` to a member, its reply
//! relayed as RESP2 bytes (the fan-out reads them here) by `Message::ForwardReply`, an unanswered request failed after
//! `cluster.proxy_timeout_ms`). The member that receives one runs it on itself only
//! ([`run_local`]), so a fan-out never fans out again.
//!
//! - PUBLISH reaches every member of the current table (as Redis Cluster broadcasts it) and
//!   returns the sum of the receivers of the members that answered; a member that does not
//!   answer is logged and counted as 0.
//! - FLUSHALL / FLUSHDB / DM.DESTROY run here and on every other member of the table; `+OK`
//!   only after every member answered `+OK`, else an error naming the first member that failed
//!   or did not answer within `proxy_timeout_ms`.
//! - DM.SCAN walks the whole cluster with one cursor: `node index << 64 | node cursor`, the node
//!   index being the member's position in the current table and the node cursor the node-wide
//!   cursor of [`crate::dispatch::route_scan`] (core in the top 8 bits). A page of another member
//!   is fetched from it over the peer link; when a member's walk ends the cursor moves to the
//!   next member's cursor 0. On member 0 the cursor is the node cursor unchanged. Guarantee: a
//!   key present for the whole scan on an unchanged table is returned at least once; across a
//!   table change (migration, member joining or leaving) keys may repeat or, for keys whose slot
//!   moved to an already-walked member, be missed.

use bytes::{Bytes, BytesMut};
use tessera_cluster::NodeInfo;
use tessera_engine::{CommandError, Reply};

use crate::core::{Core, Op};
use crate::resp::{encode, encode_error, Protocol};

/// Whether this node runs in cluster mode with a table (the cluster-wide forms apply).
pub fn active(core: &Core) -> bool {
    let view = core.cluster.borrow();
    view.enabled && view.table.is_some()
}

/// The members of the current table other than this node.
fn peers(core: &Core) -> Vec<NodeInfo> {
    let view = core.cluster.borrow();
    if !view.enabled {
        return Vec::new();
    }
    let Some(t) = view.table.as_ref() else {
        return Vec::new();
    };
    t.nodes
        .iter()
        .filter(|n| n.id != view.me)
        .cloned()
        .collect()
}

fn name(n: &NodeInfo) -> String {
    format!("{} ({}:{})", n.id, n.host, n.client_port)
}

/// The text of a RESP error reply (`-TEXT\r\n`), or `None` for any other reply.
fn error_text(b: &[u8]) -> Option<String> {
    let rest = b.strip_prefix(b"-")?;
    let rest = rest.strip_suffix(b"\r\n").unwrap_or(rest);
    Some(String::from_utf8_lossy(rest).into_owned())
}

/// Sends `args` to `to`; then [`wait`] for the reply.
fn send(
    core: &Core,
    to: &NodeInfo,
    args: &[Bytes],
) -> Option<crate::runtime::oneshot::Receiver<Bytes>> {
    super::proxy::send(core, to.id, 0, 0, args, Protocol::Resp2)
}

/// The reply bytes of a [`send`]; `Err` (a text naming the member) when it could not be asked,
/// did not answer in time, or answered an error.
async fn wait(
    to: &NodeInfo,
    rx: Option<crate::runtime::oneshot::Receiver<Bytes>>,
) -> Result<Bytes, String> {
    let Some(rx) = rx else {
        return Err(format!(
            "ERR cluster: member {} not asked: peer queue full",
            name(to)
        ));
    };
    match rx.await {
        None => Err(format!(
            "ERR cluster: member {} did not answer (stopping)",
            name(to)
        )),
        Some(b) => match error_text(&b) {
            Some(e) => Err(format!("ERR cluster: member {}: {e}", name(to))),
            None => Ok(b),
        },
    }
}

async fn ask(core: &Core, to: &NodeInfo, args: &[Bytes]) -> Result<Bytes, String> {
    wait(to, send(core, to, args)).await
}

/// Runs `args` on every other member of the table at once (all sent before any is awaited);
/// each member's reply in table order.
async fn on_peers(core: &Core, args: &[Bytes]) -> Vec<(NodeInfo, Result<Bytes, String>)> {
    let sent: Vec<_> = peers(core)
        .into_iter()
        .map(|p| {
            let rx = send(core, &p, args);
            (p, rx)
        })
        .collect();
    let mut out = Vec::with_capacity(sent.len());
    for (p, rx) in sent {
        let r = wait(&p, rx).await;
        out.push((p, r));
    }
    out
}

/// PUBLISH on this node's cores only: the number of receivers.
async fn publish_local(core: &Core, channel: &Bytes, message: &Bytes) -> i64 {
    let mut n = 0;
    for c in 0..core.shared.cores {
        let op = Op::Publish {
            channel: channel.clone(),
            message: message.clone(),
        };
        if let Some(Reply::Int(k)) = core.call(c, vec![op]).await.pop() {
            n += k;
        }
    }
    n
}

/// A request forwarded by another member for this node only (proxy routing and the
/// cluster-wide fan-outs): PUBLISH to local subscribers, anything else as a data command.
pub async fn run_local(core: &Core, args: Vec<Bytes>) -> Reply {
    if args.len() == 3 && args[0].eq_ignore_ascii_case(b"publish") {
        return Reply::Int(publish_local(core, &args[1], &args[2]).await);
    }
    crate::dispatch::run_for_thread(core, Err(args)).await
}

/// PUBLISH from a connection or an application thread: on every member in cluster mode (with
/// a table), else on this node's cores only; the total number of receivers.
pub async fn publish(core: &Core, channel: &Bytes, message: &Bytes) -> i64 {
    let mut n = publish_local(core, channel, message).await;
    if !active(core) {
        return n;
    }
    let args = [
        Bytes::from_static(b"PUBLISH"),
        channel.clone(),
        message.clone(),
    ];
    for (p, r) in on_peers(core, &args).await {
        match r.as_deref().map(parse_int) {
            Ok(Some(k)) => n += k,
            Ok(None) => tracing::warn!(member = %p.id, "PUBLISH: unexpected reply"),
            Err(e) => tracing::warn!(error = %e, "PUBLISH not relayed to a member"),
        }
    }
    n
}

fn parse_int(b: &[u8]) -> Option<i64> {
    let s = b.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn error_bytes(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode_error(text, &mut out);
    out.freeze()
}

/// FLUSHALL / FLUSHDB / DM.DESTROY: `local` is this node's reply; then every other member runs
/// `args`. `+OK` when all did, else the first failure (naming its member).
pub async fn all_ok(core: &Core, args: &[Bytes], local: Reply) -> Bytes {
    if local != Reply::Ok {
        let mut out = BytesMut::new();
        encode(&local, Protocol::Resp2, &mut out);
        return out.freeze();
    }
    for (p, r) in on_peers(core, args).await {
        match r {
            Ok(b) if &b[..] == b"+OK\r\n" => {}
            Ok(_) => {
                return error_bytes(&format!(
                    "ERR cluster: member {} answered an unexpected reply",
                    name(&p)
                ))
            }
            Err(e) => return error_bytes(&e),
        }
    }
    Bytes::from_static(b"+OK\r\n")
}

/// A cluster cursor: (member index, node cursor). `None` for anything but decimal digits that
/// fit 128 bits.
fn parse_cursor(arg: &[u8]) -> Option<(usize, u64)> {
    if arg.is_empty() || arg.len() > 39 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let c: u128 = std::str::from_utf8(arg).ok()?.parse().ok()?;
    let node = usize::try_from(c >> 64).ok()?;
    Some((node, c as u64))
}

fn cursor_of(node: usize, node_cursor: u64) -> u128 {
    ((node as u128) << 64) | u128::from(node_cursor)
}

/// The node cursor and the rest (the items array) of a RESP2 scan reply.
fn split_scan_reply(b: &[u8]) -> Option<(u64, &[u8])> {
    let rest = b.strip_prefix(b"*2\r\n$")?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    let body = rest.get(nl + 2..)?;
    let cursor = std::str::from_utf8(body.get(..len)?).ok()?.parse().ok()?;
    let items = body.get(len..)?.strip_prefix(b"\r\n")?;
    Some((cursor, items))
}

/// Cluster-wide DM.SCAN (`args[cursor_at]` is the cluster cursor): RESP bytes of one page.
pub async fn scan(core: &Core, args: &[Bytes], cursor_at: usize) -> Bytes {
    let invalid = || error_bytes(&CommandError::InvalidCursor.to_string());
    let Some((idx, node_cursor)) = parse_cursor(&args[cursor_at]) else {
        return invalid();
    };
    let (member, count, me) = {
        let view = core.cluster.borrow();
        let Some(t) = view.table.as_ref() else {
            return error_bytes(tessera_cluster::redis::CLUSTERDOWN);
        };
        match t.nodes.get(idx) {
            Some(n) => (n.clone(), t.nodes.len(), n.id == view.me),
            None => return invalid(),
        }
    };
    let mut rewritten = args.to_vec();
    rewritten[cursor_at] = Bytes::from(node_cursor.to_string());
    let page = if me {
        let r = crate::dispatch::run_for_thread(core, Err(rewritten)).await;
        let mut out = BytesMut::new();
        encode(&r, Protocol::Resp2, &mut out);
        out.freeze()
    } else {
        match ask(core, &member, &rewritten).await {
            Ok(b) => b,
            Err(e) => return error_bytes(&e),
        }
    };
    if error_text(&page).is_some() {
        return page;
    }
    let Some((next, items)) = split_scan_reply(&page) else {
        return error_bytes(&format!(
            "ERR cluster: member {} answered a malformed scan page",
            name(&member)
        ));
    };
    let next = if next != 0 {
        cursor_of(idx, next)
    } else if idx + 1 < count {
        cursor_of(idx + 1, 0)
    } else {
        0
    };
    let next = next.to_string();
    let mut out = BytesMut::with_capacity(items.len() + next.len() + 16);
    out.extend_from_slice(b"*2\r\n");
    crate::resp::encode_bulk(next.as_bytes(), &mut out);
    out.extend_from_slice(items);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_the_member_above_the_node_cursor() {
        assert_eq!(parse_cursor(b"0"), Some((0, 0)));
        let c = cursor_of(2, (1 << 56) + 7);
        assert_eq!(
            parse_cursor(c.to_string().as_bytes()),
            Some((2, (1 << 56) + 7))
        );
        assert_eq!(parse_cursor(b""), None);
        assert_eq!(parse_cursor(b"-1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
        assert_eq!(parse_cursor(&[b'9'; 40]), None);
    }

    #[test]
    fn scan_pages_split_into_cursor_and_items() {
        let page = b"*2\r\n$2\r\n42\r\n*1\r\n$1\r\nk\r\n";
        assert_eq!(
            split_scan_reply(page),
            Some((42, &b"*1\r\n$1\r\nk\r\n"[..]))
        );
        assert_eq!(split_scan_reply(b"*2\r\n$9\r\n42\r\n"), None);
        assert_eq!(split_scan_reply(b":1\r\n"), None);
        assert_eq!(parse_int(b":12\r\n"), Some(12));
        assert_eq!(error_text(b"-ERR x\r\n").as_deref(), Some("ERR x"));
    }
}
