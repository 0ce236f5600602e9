//! Routing of data commands to their owner cores, batching per core, and merging replies.
//!
//! Owns [`Batch`]: the requests of one read of a connection. Each data command is routed by
//! its keys: to this core (executed inline, at once), or appended to the batch of its owner
//! core. When the batch is finished every remote core receives exactly one message with all
//! its commands, and the replies are put back in request order. Per-core order is request
//! order, and a key lives on exactly one core, so the outcome equals sequential execution.
//! Multi-key commands are split by core and merged ([`Merge`]); keyless commands (DBSIZE,
//! KEYS, FLUSHALL, DM.STATS ...) go to every core; SCAN cursors carry the core index in their
//! top 8 bits.

use bytes::{Bytes, BytesMut};
use tessera_engine::{Command, CommandError, Reply, Slot, SCAN_CURSOR_LIMIT};

use crate::core::{Core, Op, SendFuture, Watched};
use crate::resp::{encode, Protocol};

/// Where one sub-reply will come from.
pub enum Part {
    Ready(Reply),
    /// The next reply of `core`'s batch (parts of one core resolve in append order).
    Remote {
        core: usize,
    },
}

/// How the parts of a split or fanned-out command become one reply.
pub enum Merge {
    /// Integer sum (DEL, EXISTS, TOUCH, UNLINK, DM.DEL, DBSIZE).
    Sum,
    /// `+OK` when every part is (MSET, FLUSHALL, DM.DESTROY).
    AllOk,
    /// MGET: part `i` answers the keys at `positions[i]` of the original request.
    Mget {
        positions: Vec<Vec<usize>>,
        n: usize,
    },
    /// Concatenated arrays (KEYS).
    Concat,
    /// The first non-nil reply (RANDOMKEY).
    FirstNonNil,
    /// SCAN / DM.SCAN on `core` of `cores`: rewrite the shard-local cursor.
    Scan { core: usize, cores: usize },
    /// Maps whose integer values are summed key by key (DM.STATS, recursively).
    SumMaps,
    /// PUBSUB NUMSUB: per-core count arrays summed, then `[channel, count, ...]`.
    Numsub { channels: Vec<Bytes> },
}

/// One reply slot of the batch, in request order.
pub enum Out {
    One(Part),
    Merge(Merge, Vec<Part>),
    /// Bytes already encoded (pub/sub confirmations).
    Raw(Bytes),
    /// Encoded bytes still to come (a request forwarded to another node, proxy routing).
    Wait(crate::runtime::oneshot::Receiver<Bytes>),
}

/// The commands of one read, grouped per owner core.
pub struct Batch {
    remote: Vec<Vec<Op>>,
    outs: Vec<Out>,
    now_ms: u64,
    /// EXEC: ops for this core wait in `remote[core.id]` too (see [`Batch::run_atomic`]).
    defer_local: bool,
}

impl Batch {
    pub fn new(cores: usize) -> Batch {
        Batch {
            remote: (0..cores).map(|_| Vec::new()).collect(),
            outs: Vec::new(),
            now_ms: crate::runtime::now_ms(),
            defer_local: false,
        }
    }

    /// A batch for EXEC: nothing runs until [`Batch::run_atomic`], which runs each core's ops
    /// back to back.
    pub fn deferred(cores: usize) -> Batch {
        let mut b = Batch::new(cores);
        b.defer_local = true;
        b
    }

    /// Starts a new read: takes the time once for every command executed inline.
    pub fn begin(&mut self) {
        self.now_ms = crate::runtime::now_ms();
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.outs.is_empty()
    }

    /// Number of reply slots so far.
    pub fn len(&self) -> usize {
        self.outs.len()
    }

    pub fn push(&mut self, out: Out) {
        self.outs.push(out);
    }

    pub fn reply(&mut self, r: Reply) {
        self.outs.push(Out::One(Part::Ready(r)));
    }

    /// Runs `op` on `target`: inline now if it is this core, else appended to its batch.
    pub fn op(&mut self, core: &Core, target: usize, op: Op) -> Part {
        if target == core.id && !self.defer_local {
            Part::Ready(core.execute(op, self.now_ms))
        } else {
            self.remote[target].push(op);
            Part::Remote { core: target }
        }
    }

    /// Runs `cmd`, whose keys all hash to `slot`, on `target` (as [`Batch::op`]); executed
    /// inline, the owner's cluster checks use `slot` instead of hashing the keys again.
    pub fn op_in_slot(&mut self, core: &Core, target: usize, slot: Slot, cmd: Command) -> Part {
        if target == core.id && !self.defer_local {
            Part::Ready(core.execute_cmd(cmd, Some(slot), self.now_ms))
        } else {
            self.remote[target].push(Op::Cmd(cmd));
            Part::Remote { core: target }
        }
    }

    /// Sends every remote batch (one message per core), waits for all, and hands each reply
    /// slot to `each` in request order: `Ok(reply)`, or `Err(bytes)` for pre-encoded frames.
    /// The batch is empty afterwards.
    async fn resolve(&mut self, core: &Core, mut each: impl FnMut(Result<Reply, Bytes>)) {
        let mut waits: Vec<(usize, usize, Option<SendFuture>)> = Vec::new();
        for (target, ops) in self.remote.iter_mut().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let ops = std::mem::take(ops);
            let n = ops.len();
            waits.push((target, n, core.send(target, ops)));
        }
        let mut results: Vec<std::vec::IntoIter<Reply>> = Vec::new();
        if !waits.is_empty() {
            results = (0..self.remote.len())
                .map(|_| Vec::new().into_iter())
                .collect();
            for (target, n, fut) in waits {
                let replies = match fut {
                    Some(f) => f.wait(core, n).await,
                    None => (0..n).map(|_| stopping()).collect(),
                };
                results[target] = replies.into_iter();
            }
        }
        // Remote parts of each core are consumed in the order they were appended, which is
        // the order of the reply slots, so an iterator per core suffices.
        let mut take = |p: Part| -> Reply {
            match p {
                Part::Ready(r) => r,
                Part::Remote { core } => results
                    .get_mut(core)
                    .and_then(Iterator::next)
                    .unwrap_or_else(stopping),
            }
        };
        for out in std::mem::take(&mut self.outs) {
            each(settle(out, &mut take).await);
        }
        self.now_ms = crate::runtime::now_ms();
    }

    /// EXEC: runs the ops queued for every core (a [`Batch::deferred`] batch) as one
    /// uninterrupted sequence per core (this core's inline, each other core's as one message)
    /// and appends every reply slot, in request order, to `replies` (`Err` = pre-encoded).
    /// With `check = Some((w, watched))`, core `w` first compares the watched versions, in the
    /// same step as its own ops, before anything is sent elsewhere: on a mismatch nothing runs
    /// anywhere, the batch is emptied and `false` returned.
    pub async fn run_atomic(
        &mut self,
        core: &Core,
        check: Option<(usize, Vec<Watched>)>,
        replies: &mut Vec<Result<Reply, Bytes>>,
    ) -> bool {
        let cores = self.remote.len();
        let mut results: Vec<std::vec::IntoIter<Reply>> =
            (0..cores).map(|_| Vec::new().into_iter()).collect();
        if let Some((w, watched)) = check {
            let ops = std::mem::take(&mut self.remote[w]);
            let n = ops.len();
            match core.call(w, vec![Op::Exec { watched, ops }]).await.pop() {
                Some(Reply::Array(v)) => results[w] = v.into_iter(),
                Some(Reply::NilArray) => {
                    self.outs.clear();
                    self.remote.iter_mut().for_each(Vec::clear);
                    return false;
                }
                other => results[w] = vec![other.unwrap_or_else(stopping); n].into_iter(),
            }
        }
        let mut waits: Vec<(usize, usize, Option<SendFuture>)> = Vec::new();
        for (target, ops) in self.remote.iter_mut().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let ops = std::mem::take(ops);
            if target == core.id {
                let now = crate::runtime::now_ms();
                let local: Vec<Reply> = ops.into_iter().map(|op| core.execute(op, now)).collect();
                results[target] = local.into_iter();
            } else {
                let n = ops.len();
                waits.push((target, n, core.send(target, ops)));
            }
        }
        for (target, n, fut) in waits {
            let got = match fut {
                Some(f) => f.wait(core, n).await,
                None => (0..n).map(|_| stopping()).collect(),
            };
            results[target] = got.into_iter();
        }
        let mut take = |p: Part| -> Reply {
            match p {
                Part::Ready(r) => r,
                Part::Remote { core } => results
                    .get_mut(core)
                    .and_then(Iterator::next)
                    .unwrap_or_else(stopping),
            }
        };
        for out in std::mem::take(&mut self.outs) {
            replies.push(settle(out, &mut take).await);
        }
        self.now_ms = crate::runtime::now_ms();
        true
    }

    /// Like [`Batch::finish`], returning the replies (application threads; pre-encoded
    /// errors become `CommandError::Other` with their text).
    pub async fn finish_replies(&mut self, core: &Core) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(self.outs.len());
        self.resolve(core, |r| {
            replies.push(match r {
                Ok(r) => r,
                Err(b) => Reply::Error(CommandError::Other(
                    String::from_utf8_lossy(b.strip_prefix(b"-").unwrap_or(&b))
                        .trim_end()
                        .to_owned(),
                )),
            });
        })
        .await;
        replies
    }

    /// Finishes the batch into `out`, encoding replies in `proto`, in request order.
    pub async fn finish(&mut self, core: &Core, proto: Protocol, out: &mut BytesMut) {
        if self.outs.is_empty() {
            return;
        }
        self.resolve(core, |r| match r {
            Ok(r) => encode(&r, proto, out),
            Err(b) => out.extend_from_slice(&b),
        })
        .await;
    }
}

/// A redirect decided on the owner core (migration gate) becomes Redis's raw error.
/// One reply slot's final form, the same for a read's batch and for EXEC: a reply, or
/// pre-encoded bytes (pub/sub frames, cluster redirects, a proxied request's reply).
async fn settle(out: Out, take: &mut impl FnMut(Part) -> Reply) -> Result<Reply, Bytes> {
    match out {
        Out::One(p) => redirect_raw(take(p)),
        Out::Merge(m, parts) => redirect_raw(merge(m, parts.into_iter().map(take).collect())),
        Out::Raw(b) => Err(b),
        // A request proxied to another node (cluster proxy routing).
        Out::Wait(rx) => Err(rx.await.unwrap_or_else(|| {
            crate::cluster::proxy::error_bytes("ERR proxy: the request was dropped")
        })),
    }
}

fn redirect_raw(r: Reply) -> Result<Reply, Bytes> {
    match crate::cluster::migrate::raw_redirect(&r) {
        Some(b) => Err(b),
        None => Ok(r),
    }
}

/// A pre-encoded error slot as a `Reply` (for paths that return one reply).
fn out_error(out: Out) -> Reply {
    match out {
        Out::Raw(b) => Reply::Error(CommandError::Other(
            String::from_utf8_lossy(b.strip_prefix(b"-").unwrap_or(&b))
                .trim_end()
                .to_owned(),
        )),
        Out::One(Part::Ready(r)) => r,
        _ => stopping(),
    }
}

fn stopping() -> Reply {
    Reply::Error(CommandError::Other("server is shutting down".into()))
}

/// Redis Cluster's `CROSSSLOT` error text.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// An error reply whose prefix is not `ERR` (CROSSSLOT, NOAUTH, WRONGPASS, NOPROTO, EXECABORT):
/// `CommandError` cannot carry those, so it travels pre-encoded.
pub fn raw_error(text: &str) -> Out {
    let mut b = BytesMut::with_capacity(text.len() + 3);
    crate::resp::encode_error(text, &mut b);
    Out::Raw(b.freeze())
}

fn merge(m: Merge, parts: Vec<Reply>) -> Reply {
    if let Some(e) = parts.iter().find(|r| r.is_error()) {
        return e.clone();
    }
    match m {
        Merge::Sum => Reply::Int(
            parts
                .iter()
                .map(|r| if let Reply::Int(n) = r { *n } else { 0 })
                .sum(),
        ),
        Merge::AllOk => Reply::Ok,
        Merge::Mget { positions, n } => {
            let mut out = vec![Reply::Nil; n];
            for (part, pos) in parts.into_iter().zip(positions) {
                if let Reply::Array(items) = part {
                    for (item, p) in items.into_iter().zip(pos) {
                        out[p] = item;
                    }
                }
            }
            Reply::Array(out)
        }
        Merge::Concat => Reply::Array(
            parts
                .into_iter()
                .flat_map(|r| match r {
                    Reply::Array(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Merge::FirstNonNil => parts
            .into_iter()
            .find(|r| !matches!(r, Reply::Nil | Reply::NilArray))
            .unwrap_or(Reply::Nil),
        Merge::Scan { core, cores } => match parts.into_iter().next() {
            Some(Reply::Array(mut v)) if v.len() == 2 => {
                let local = match &v[0] {
                    Reply::Bulk(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                let next = if local != 0 {
                    ((core as u64) << 56) | local
                } else if core + 1 < cores {
                    ((core as u64) + 1) << 56
                } else {
                    0
                };
                v[0] = Reply::Bulk(Bytes::from(next.to_string()));
                Reply::Array(v)
            }
            Some(other) => other,
            None => Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"0")),
                Reply::Array(Vec::new()),
            ]),
        },
        Merge::SumMaps => parts
            .into_iter()
            .reduce(sum_maps)
            .unwrap_or(Reply::Map(Vec::new())),
        Merge::Numsub { channels } => {
            let mut counts = vec![0i64; channels.len()];
            for p in parts {
                if let Reply::Array(v) = p {
                    for (c, r) in counts.iter_mut().zip(v) {
                        if let Reply::Int(n) = r {
                            *c += n;
                        }
                    }
                }
            }
            Reply::Array(
                channels
                    .into_iter()
                    .zip(counts)
                    .flat_map(|(ch, n)| [Reply::Bulk(ch), Reply::Int(n)])
                    .collect(),
            )
        }
    }
}

fn sum_maps(a: Reply, b: Reply) -> Reply {
    match (a, b) {
        (Reply::Map(mut a), Reply::Map(b)) => {
            for (k, v) in b {
                if let Some(slot) = a.iter_mut().find(|(ka, _)| *ka == k) {
                    let old = std::mem::replace(&mut slot.1, Reply::Nil);
                    slot.1 = sum_maps(old, v);
                } else {
                    a.push((k, v));
                }
            }
            Reply::Map(a)
        }
        (Reply::Int(x), Reply::Int(y)) => Reply::Int(x.saturating_add(y)),
        (a, _) => a,
    }
}

/// Groups keys by owner core, keeping first-appearance order: `(core, key indexes)`.
fn group(core: &Core, keys: &[&Bytes]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let owner = core.owner(k);
        match groups.iter_mut().find(|(c, _)| *c == owner) {
            Some((_, v)) => v.push(i),
            None => groups.push((owner, vec![i])),
        }
    }
    groups
}

/// Routes one parsed data command (not DM.LOCK, which waits) and returns its reply slot.
pub fn route(core: &Core, batch: &mut Batch, cmd: Command) -> Out {
    let admitted = match crate::cluster::admit(core, &cmd) {
        Ok(slot) => slot,
        Err(out) => return out,
    };
    let cores = core.shared.cores;
    let fan = |batch: &mut Batch, cmd: &Command| -> Vec<Part> {
        (0..cores)
            .map(|c| batch.op(core, c, Op::Cmd(cmd.clone())))
            .collect()
    };
    match cmd {
        Command::Keys { .. } => Out::Merge(Merge::Concat, fan(batch, &cmd)),
        Command::RandomKey => Out::Merge(Merge::FirstNonNil, fan(batch, &cmd)),
        Command::DbSize => Out::Merge(Merge::Sum, fan(batch, &cmd)),
        Command::Flush { .. } | Command::DmDestroy { .. } | Command::DmConfigSet { .. } => {
            Out::Merge(Merge::AllOk, fan(batch, &cmd))
        }
        Command::DmStats { .. } => Out::Merge(Merge::SumMaps, fan(batch, &cmd)),
        // A command built directly (embedding API) carries the node-wide cursor.
        Command::Scan {
            cursor,
            pattern,
            count,
            type_filter,
        } => scan_on_owner(core, batch, cursor, |local| Command::Scan {
            cursor: local,
            pattern,
            count,
            type_filter,
        }),
        Command::DmScan {
            map,
            cursor,
            pattern,
            count,
        } => scan_on_owner(core, batch, cursor, |local| Command::DmScan {
            map,
            cursor: local,
            pattern,
            count,
        }),
        Command::MGet { keys } => {
            let n = keys.len();
            let groups = group(core, &keys.iter().collect::<Vec<_>>());
            if groups.len() == 1 {
                return Out::One(batch.op(core, groups[0].0, Op::Cmd(Command::MGet { keys })));
            }
            let mut parts = Vec::new();
            let mut positions = Vec::new();
            for (c, idx) in groups {
                let sub = idx.iter().map(|&i| keys[i].clone()).collect();
                parts.push(batch.op(core, c, Op::Cmd(Command::MGet { keys: sub })));
                positions.push(idx);
            }
            Out::Merge(Merge::Mget { positions, n }, parts)
        }
        Command::MSet { pairs, nx: false } => {
            let groups = group(core, &pairs.iter().map(|(k, _)| k).collect::<Vec<_>>());
            if groups.len() == 1 {
                let c = groups[0].0;
                return Out::One(batch.op(core, c, Op::Cmd(Command::MSet { pairs, nx: false })));
            }
            let parts = groups
                .into_iter()
                .map(|(c, idx)| {
                    let sub = idx.iter().map(|&i| pairs[i].clone()).collect();
                    batch.op(
                        core,
                        c,
                        Op::Cmd(Command::MSet {
                            pairs: sub,
                            nx: false,
                        }),
                    )
                })
                .collect();
            Out::Merge(Merge::AllOk, parts)
        }
        Command::Del { keys } => split_count(core, batch, keys, |keys| Command::Del { keys }),
        Command::Exists { keys } => split_count(core, batch, keys, |keys| Command::Exists { keys }),
        Command::Touch { keys } => split_count(core, batch, keys, |keys| Command::Touch { keys }),
        Command::DmDel { map, keys } => {
            split_count(core, batch, keys, move |keys| Command::DmDel {
                map: map.clone(),
                keys,
            })
        }
        other => {
            if let Some(slot) = admitted {
                // Cluster mode: admit checked that every key is in `slot` and that it is
                // served here; one hash of the key per request, not one per check.
                let owner = crate::cluster::owner_core_of_slot(core, slot);
                return Out::One(batch.op_in_slot(core, owner, slot, other));
            }
            let keys = other.keys();
            let Some(first) = keys.first() else {
                // A keyless command not listed above would be a routing bug; run it here.
                return Out::One(batch.op(core, core.id, Op::Cmd(other)));
            };
            let owner = core.owner(first);
            if keys[1..].iter().any(|k| core.owner(k) != owner) {
                return raw_error(CROSSSLOT);
            }
            Out::One(batch.op(core, owner, Op::Cmd(other)))
        }
    }
}

/// Runs a SCAN-like command with node-wide `cursor` on the core its top 8 bits name.
fn scan_on_owner(
    core: &Core,
    batch: &mut Batch,
    cursor: u64,
    make: impl FnOnce(u64) -> Command,
) -> Out {
    let cores = core.shared.cores;
    let target = (cursor >> 56) as usize;
    if target >= cores {
        return Out::One(Part::Ready(Reply::Error(CommandError::InvalidCursor)));
    }
    let cmd = make(cursor & (SCAN_CURSOR_LIMIT - 1));
    Out::Merge(
        Merge::Scan {
            core: target,
            cores,
        },
        vec![batch.op(core, target, Op::Cmd(cmd))],
    )
}

fn split_count(
    core: &Core,
    batch: &mut Batch,
    keys: Vec<Bytes>,
    make: impl Fn(Vec<Bytes>) -> Command,
) -> Out {
    let groups = group(core, &keys.iter().collect::<Vec<_>>());
    if groups.len() == 1 {
        return Out::One(batch.op(core, groups[0].0, Op::Cmd(make(keys))));
    }
    let parts = groups
        .into_iter()
        .map(|(c, idx)| {
            let sub = idx.iter().map(|&i| keys[i].clone()).collect();
            batch.op(core, c, Op::Cmd(make(sub)))
        })
        .collect();
    Out::Merge(Merge::Sum, parts)
}

/// SCAN / DM.SCAN: `cursor_at` is the cursor's argument index. The node-wide cursor is
/// `core << 56 | shard-local cursor`.
pub fn route_scan(core: &Core, batch: &mut Batch, args: &[Bytes], cursor_at: usize) -> Out {
    let cores = core.shared.cores;
    let cursor = std::str::from_utf8(&args[cursor_at])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let Some(cursor) = cursor else {
        return Out::One(Part::Ready(Reply::Error(CommandError::InvalidCursor)));
    };
    let target = (cursor >> 56) as usize;
    if target >= cores {
        return Out::One(Part::Ready(Reply::Error(CommandError::InvalidCursor)));
    }
    let local = cursor & (SCAN_CURSOR_LIMIT - 1);
    let mut rewritten = args.to_vec();
    rewritten[cursor_at] = Bytes::from(local.to_string());
    match Command::parse(&rewritten) {
        Ok(cmd) => Out::Merge(
            Merge::Scan {
                core: target,
                cores,
            },
            vec![batch.op(core, target, Op::Cmd(cmd))],
        ),
        Err(e) => Out::One(Part::Ready(Reply::Error(e))),
    }
}

/// DM.LOCK: retries one attempt at a time on the owner until the lock is taken or the wait
/// runs out, sleeping between attempts on a timer (the executor keeps serving others).
pub async fn lock(core: &Core, cmd: Command) -> Reply {
    if let Err(out) = crate::cluster::admit(core, &cmd) {
        return out_error(out);
    }
    let wait_ms = cmd.lock_wait_ms().unwrap_or(0);
    let owner = cmd.keys().first().map_or(core.id, |k| core.owner(k));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut backoff = std::time::Duration::from_millis(1);
    loop {
        let r = core
            .call(owner, vec![Op::Cmd(cmd.clone())])
            .await
            .pop()
            .unwrap_or_else(stopping);
        let now = std::time::Instant::now();
        if !matches!(r, Reply::Error(CommandError::LockNotAcquired)) || now >= deadline {
            return r;
        }
        crate::runtime::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(std::time::Duration::from_millis(20));
    }
}

/// One data command for an application thread (embedding API): parsed or raw arguments.
pub async fn run_for_thread(core: &Core, command: Result<Command, Vec<Bytes>>) -> Reply {
    let cmd = match command {
        Ok(c) => c,
        Err(args) => {
            let Some(name) = args.first() else {
                return Reply::Error(CommandError::UnknownCommand(String::new(), String::new()));
            };
            let lower = name.to_ascii_lowercase();
            if lower == b"scan" && args.len() >= 2 {
                return finish_one(core, |b| route_scan(core, b, &args, 1)).await;
            }
            if lower == b"dm.scan" && args.len() >= 3 {
                return finish_one(core, |b| route_scan(core, b, &args, 2)).await;
            }
            match Command::parse(&args) {
                Ok(c) => c,
                Err(e) => return Reply::Error(e),
            }
        }
    };
    if cmd.lock_wait_ms().is_some() {
        return lock(core, cmd).await;
    }
    finish_one(core, |b| route(core, b, cmd)).await
}

async fn finish_one(core: &Core, f: impl FnOnce(&mut Batch) -> Out) -> Reply {
    let mut batch = Batch::new(core.shared.cores);
    let out = f(&mut batch);
    batch.push(out);
    batch
        .finish_replies(core)
        .await
        .pop()
        .unwrap_or_else(stopping)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bulk(Bytes::from(s.to_owned()))
    }

    #[test]
    fn mget_parts_go_back_to_request_order() {
        let r = merge(
            Merge::Mget {
                positions: vec![vec![0, 2], vec![1, 3]],
                n: 4,
            },
            vec![
                Reply::Array(vec![b("a"), Reply::Nil]),
                Reply::Array(vec![b("b"), b("d")]),
            ],
        );
        assert_eq!(r, Reply::Array(vec![b("a"), b("b"), Reply::Nil, b("d")]));
    }

    #[test]
    fn scan_cursor_carries_the_core_in_the_top_byte() {
        let page = |c: &str| Reply::Array(vec![b(c), Reply::Array(vec![b("k")])]);
        let cur = |r: Reply| match r {
            Reply::Array(v) => v[0].clone(),
            _ => Reply::Nil,
        };
        // more on this core: same core, its local cursor
        let r = merge(Merge::Scan { core: 1, cores: 3 }, vec![page("42")]);
        assert_eq!(cur(r), b(&((1u64 << 56) + 42).to_string()));
        // this core done: next core from 0
        let r = merge(Merge::Scan { core: 1, cores: 3 }, vec![page("0")]);
        assert_eq!(cur(r), b(&(2u64 << 56).to_string()));
        // last core done: 0 ends the walk
        let r = merge(Merge::Scan { core: 2, cores: 3 }, vec![page("0")]);
        assert_eq!(cur(r), b("0"));
    }

    #[test]
    fn counts_maps_and_errors() {
        assert_eq!(
            merge(Merge::Sum, vec![Reply::Int(2), Reply::Int(3)]),
            Reply::Int(5)
        );
        assert_eq!(merge(Merge::AllOk, vec![Reply::Ok, Reply::Ok]), Reply::Ok);
        let err = Reply::Error(CommandError::OutOfMemory);
        assert_eq!(merge(Merge::AllOk, vec![Reply::Ok, err.clone()]), err);
        let m = |v: i64| {
            Reply::Map(vec![(
                b("m"),
                Reply::Map(vec![(Reply::simple("length"), Reply::Int(v))]),
            )])
        };
        assert_eq!(merge(Merge::SumMaps, vec![m(2), m(5)]), m(7));
        let r = merge(
            Merge::Numsub {
                channels: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            },
            vec![
                Reply::Array(vec![Reply::Int(1), Reply::Int(0)]),
                Reply::Array(vec![Reply::Int(2), Reply::Int(1)]),
            ],
        );
        assert_eq!(
            r,
            Reply::Array(vec![b("a"), Reply::Int(3), b("b"), Reply::Int(1)])
        );
        assert_eq!(merge(Merge::FirstNonNil, vec![Reply::Nil, b("x")]), b("x"));
        assert_eq!(
            merge(
                Merge::Concat,
                vec![Reply::Array(vec![b("x")]), Reply::Array(vec![b("y")])]
            ),
            Reply::Array(vec![b("x"), b("y")])
        );
    }
}
