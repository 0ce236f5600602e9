//! One core of a node: its shard, its view of the mesh, and the messages cores exchange.
//!
//! Owns [`Core`] (everything one executor holds: the engine `Shard`, the pending cross-core
//! calls, per-core counters, local clients and subscriptions) and the message types
//! [`Request`]/[`Response`]/[`Op`]. [`Core::call`] runs a batch of ops on their owner core
//! (inline when it is this one) and [`Core::serve_inbox`] executes batches other cores send.
//! Only this core's executor ever touches its `Shard`: that is invariant 1 of the design.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::TrySendError;
use tessera_cluster::SlotTable;
use tessera_engine::{Command, CommandError, EvictionPolicy, Reply, Shard, Slot};

use crate::config::NodeConfig;
use crate::pubsub::{PubSub, ThreadSubscriber};
use crate::runtime::mailbox::{Inbox, MailboxTx, Received};
use crate::runtime::{self, oneshot, signal::Signal};

/// One unit of work executed on the owner core.
pub enum Op {
    /// A data command.
    Cmd(Command),
    /// WATCH: the key's version (`Int`) or `Nil` when absent.
    KeyVersion {
        map: Bytes,
        key: Bytes,
    },
    /// EXEC's share on this core: check the watched versions, then run every op back to back
    /// (atomic: nothing else runs on this core in between); `Array` of their replies, or
    /// `NilArray` (and nothing run) when a watched key changed.
    Exec {
        watched: Vec<Watched>,
        ops: Vec<Op>,
    },
    /// Deliver a message to this core's subscribers; `Int(receivers)`.
    Publish {
        channel: Bytes,
        message: Bytes,
    },
    /// PUBSUB CHANNELS \[pattern\] on this core: `Array` of names.
    PubsubChannels {
        pattern: Option<Bytes>,
    },
    /// PUBSUB NUMSUB: `Array` of counts, one per channel.
    PubsubNumsub {
        channels: Vec<Bytes>,
    },
    /// PUBSUB NUMPAT: `Int`.
    PubsubNumpat,
    /// Register an application-thread subscriber (embedding API) on this core.
    SubscribeThread(ThreadSubscriber),
    /// Counters of this core: a `Map` of name to integer (the INFO `shards` fields).
    Stats,
    /// CONFIG SET maxmemory: this shard's share in bytes.
    SetMaxmemory(u64),
    /// CONFIG SET maxmemory-policy.
    SetPolicy(EvictionPolicy),
    /// CLIENT LIST of this core: `Bulk` text, one line per client.
    ClientList,
    /// CLIENT KILL ID n / ADDR a on this core: `Int(killed)`.
    ClientKill {
        id: Option<u64>,
        addr: Option<Bytes>,
    },
    /// SLOWLOG GET n / LEN / RESET on this core.
    SlowlogGet(usize),
    SlowlogLen,
    SlowlogReset,
    /// Stop: stop accepting, finish in-flight requests, close connections.
    Shutdown,
    /// CLUSTER COUNTKEYSINSLOT on the owner core: `Int`.
    SlotKeyCount(tessera_engine::Slot),
    /// CLUSTER GETKEYSINSLOT on the owner core (default map): `Array` of keys.
    SlotKeys {
        slot: tessera_engine::Slot,
        count: usize,
    },
}

/// A WATCHed key: map, key, and its version when watched (`None` = absent).
pub type Watched = (Bytes, Bytes, Option<u64>);

/// Where the replies of a request go.
pub enum ReplyTo {
    /// A task on another core awaits them under `id`.
    Core { core: usize, id: u64 },
    /// An application thread blocks on this channel.
    Thread(crossbeam_channel::Sender<Vec<Reply>>),
}

/// A message to a core.
pub enum Request {
    /// Execute `ops` in order and answer with one reply per op.
    Ops { ops: Vec<Op>, reply_to: ReplyTo },
    /// Run one whole client command (as a connection would: routing, splitting, waiting for
    /// locks) on this core for an application thread (embedding API).
    Run {
        command: Result<Command, Vec<Bytes>>,
        reply: crossbeam_channel::Sender<Reply>,
    },
    /// PUBLISH for an application thread (embedding API): to this node's subscribers, and in
    /// cluster mode to every member's (as the client command); answers the receiver count.
    Publish {
        channel: Bytes,
        message: Bytes,
        reply: crossbeam_channel::Sender<i64>,
    },
    /// Install a new cluster view (table, live members, quorum) from the cluster task.
    Cluster(crate::cluster::ViewUpdate),
    /// Proxy routing: a request to forward to another node (to core 0, the cluster task).
    Forward(crate::cluster::proxy::Job),
    /// Proxy routing: the RESP reply to forwarded request `id` of this core.
    ForwardReply { id: u64, payload: Bytes },
    /// Work for the cluster task (to core 0).
    ToDriver(crate::cluster::migrate::DriverJob),
    /// A migration stream message from peer `from` for this core's migrations.
    Migration {
        from: tessera_cluster::NodeId,
        msg: tessera_cluster::Message,
    },
    /// The peer link to or from this node broke.
    LinkLost(tessera_cluster::NodeId),
}

/// Replies to a `Request::Ops` from another core.
pub struct Response {
    pub id: u64,
    pub replies: Vec<Reply>,
}

pub type Mail = MailboxTx<Request, Response>;

/// What every core of a node shares: immutable configuration, the mailboxes, a few
/// node-wide atomics that are never on the data path.
pub struct Shared {
    pub config: NodeConfig,
    /// This node's id (40 hex) and generation (bumped on every start).
    pub node_id: tessera_cluster::NodeId,
    pub generation: u64,
    pub cores: usize,
    pub cpus: Vec<usize>,
    pub slots: SlotTable,
    pub mesh: Vec<Mail>,
    pub started: Instant,
    pub next_client_id: AtomicU64,
    pub clients: AtomicUsize,
    /// CONFIG SET maxmemory (node total, bytes) and policy, for CONFIG GET and INFO.
    pub maxmemory: AtomicU64,
    /// Only CONFIG GET/SET and INFO touch it, never a data command.
    pub policy: std::sync::Mutex<EvictionPolicy>,
    /// Set by SHUTDOWN; the process owner (tesserad) watches `shutdown_requests`.
    pub shutdown_requested: AtomicBool,
    pub shutdown_requests: crossbeam_channel::Sender<()>,
    /// Cores that finished closing their connections during shutdown.
    pub cores_drained: AtomicUsize,
    /// Round robin for application-thread requests without keys.
    pub next_run_core: AtomicUsize,
    /// Request latency histograms, one per core: written only by that core, read by the admin
    /// port.
    pub latency: Vec<crate::admin::Latency>,
}

impl Shared {
    /// The core that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        usize::from(self.slots.owner(tessera_engine::key_slot(key)))
    }
}

/// Per-core counters (plain cells: only this core writes them).
#[derive(Default)]
pub struct CoreStats {
    /// Data commands executed on this core's shard (owner-side).
    pub executed: Cell<u64>,
    /// Ops received from other cores / threads.
    pub remote_in: Cell<u64>,
    /// Batches sent to other cores.
    pub batches_out: Cell<u64>,
    /// Sends that found the target's request channel full and had to retry (backpressure).
    pub mesh_full: Cell<u64>,
    pub connections: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub commands: Cell<u64>,
    pub rejected_connections: Cell<u64>,
    pub net_in_bytes: Cell<u64>,
    pub net_out_bytes: Cell<u64>,
    pub expired_active: Cell<u64>,
    pub compacted_bytes: Cell<u64>,
    /// Background ticks run, their total and their longest duration (microseconds): what the
    /// background work costs the requests that wait behind it.
    pub bg_ticks: Cell<u64>,
    pub bg_tick_us_total: Cell<u64>,
    pub bg_tick_us_max: Cell<u64>,
    /// Calls into this core's slot migrations (table, stream message, timer, link loss),
    /// their total and longest duration, and how many took over a millisecond: the time a
    /// migration keeps the core from serving requests, one turn at a time.
    pub migration_calls: Cell<u64>,
    pub migration_us_total: Cell<u64>,
    pub migration_us_max: Cell<u64>,
    pub migration_calls_over_1ms: Cell<u64>,
    /// Pauses of the migration timer between turns (`migration_duty_percent`) and their total
    /// length: how much the pacing stretched this core's migrations.
    pub migration_pauses: Cell<u64>,
    pub migration_pause_us_total: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// One entry of the slow log.
pub struct SlowEntry {
    pub id: u64,
    pub at_s: u64,
    pub micros: u64,
    pub args: Vec<Bytes>,
    pub addr: String,
    pub name: String,
}

/// A connected client as seen by CLIENT LIST / KILL (the connection task holds the other Rc).
pub struct ClientEntry {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub created: Instant,
    pub name: RefCell<Bytes>,
    pub last_cmd: RefCell<&'static str>,
    pub resp: Cell<u8>,
    pub killed: Signal,
}

/// Everything one executor owns.
pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub shard: RefCell<Shard>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Vec<Reply>>>>,
    next_call: Cell<u64>,
    pub stats: CoreStats,
    pub clients: RefCell<HashMap<u64, Rc<ClientEntry>>>,
    pub pubsub: RefCell<PubSub>,
    pub slowlog: RefCell<std::collections::VecDeque<SlowEntry>>,
    next_slow_id: Cell<u64>,
    pub shutdown: Signal,
    /// This core's routing view of the cluster (installed by the cluster task).
    pub cluster: RefCell<crate::cluster::View>,
    /// Requests forwarded to other nodes and waiting for replies (proxy routing).
    pub proxy: crate::cluster::proxy::ProxyState,
    /// This core's slot migrations (cluster mode only).
    pub migrations: RefCell<Option<crate::cluster::migrate::Host>>,
    /// Wakes this core's migration task from its idle sleep (fired and replaced by
    /// [`crate::cluster::migrate::wake`] when a table, stream message or link loss may have
    /// started a migration).
    pub migration_wake: RefCell<Signal>,
    /// Migration messages for the cluster task that found its queue full, in order
    /// ([`crate::cluster::migrate::emit`]).
    pub migration_outbox: Rc<crate::cluster::migrate::Outbox>,
}

impl Core {
    pub fn new(id: usize, shared: Arc<Shared>, shard: Shard, view: crate::cluster::View) -> Core {
        Core {
            id,
            shared,
            shard: RefCell::new(shard),
            pending: RefCell::new(HashMap::new()),
            next_call: Cell::new(1),
            stats: CoreStats::default(),
            clients: RefCell::new(HashMap::new()),
            pubsub: RefCell::new(PubSub::default()),
            slowlog: RefCell::new(std::collections::VecDeque::new()),
            next_slow_id: Cell::new(0),
            shutdown: Signal::new(),
            cluster: RefCell::new(view),
            proxy: crate::cluster::proxy::ProxyState::default(),
            migrations: RefCell::new(None),
            migration_wake: RefCell::new(Signal::new()),
            migration_outbox: Rc::default(),
        }
    }

    /// The local core that owns `key` (see [`crate::cluster::owner_core`]).
    pub fn owner(&self, key: &[u8]) -> usize {
        crate::cluster::owner_core(self, key)
    }

    /// Executes one data command on this core's shard, after the cluster's owner checks
    /// (`slot`: the slot its keys hash to when the caller knows it, so the checks need not hash
    /// them again). Never awaits.
    pub fn execute_cmd(&self, cmd: Command, slot: Option<Slot>, now_ms: u64) -> Reply {
        if let Some(r) = crate::cluster::migrate::before(self, &cmd, slot) {
            return r;
        }
        let written = crate::cluster::migrate::written(self, &cmd);
        bump(&self.stats.executed, 1);
        let r = self.shard.borrow_mut().execute(cmd, now_ms);
        if let Some(w) = written {
            crate::cluster::migrate::after(self, &w, now_ms);
        }
        r
    }

    /// Executes one op on this core's shard. Never awaits: an op is atomic on its core.
    pub fn execute(&self, op: Op, now_ms: u64) -> Reply {
        match op {
            Op::Cmd(cmd) => self.execute_cmd(cmd, None, now_ms),
            Op::KeyVersion { map, key } => {
                match self.shard.borrow_mut().key_version(&map, &key, now_ms) {
                    Some(v) => Reply::Int(v as i64),
                    None => Reply::Nil,
                }
            }
            Op::Exec { watched, ops } => {
                {
                    let mut shard = self.shard.borrow_mut();
                    for (map, key, version) in watched {
                        if shard.key_version(&map, &key, now_ms) != version {
                            return Reply::NilArray;
                        }
                    }
                }
                Reply::Array(ops.into_iter().map(|op| self.execute(op, now_ms)).collect())
            }
            Op::Publish { channel, message } => {
                Reply::Int(self.pubsub.borrow_mut().publish(&channel, &message) as i64)
            }
            Op::PubsubChannels { pattern } => Reply::Array(
                self.pubsub
                    .borrow()
                    .channels(pattern.as_deref())
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            ),
            Op::PubsubNumsub { channels } => {
                let ps = self.pubsub.borrow();
                Reply::Array(
                    channels
                        .iter()
                        .map(|c| Reply::Int(ps.numsub(c) as i64))
                        .collect(),
                )
            }
            Op::PubsubNumpat => Reply::Int(self.pubsub.borrow().numpat() as i64),
            Op::SubscribeThread(sub) => {
                self.pubsub.borrow_mut().subscribe_thread(sub);
                Reply::Ok
            }
            Op::Stats => self.stats_reply(),
            Op::SetMaxmemory(bytes) => {
                self.shard.borrow_mut().set_maxmemory(bytes);
                Reply::Ok
            }
            Op::SetPolicy(p) => {
                self.shard.borrow_mut().set_eviction_policy(p);
                Reply::Ok
            }
            Op::ClientList => Reply::Bulk(Bytes::from(self.client_list(None))),
            Op::ClientKill { id, addr } => {
                let mut n = 0;
                for c in self.clients.borrow().values() {
                    let hit = id.is_some_and(|i| i == c.id)
                        || addr
                            .as_ref()
                            .is_some_and(|a| a.as_ref() == c.addr.as_bytes());
                    if hit {
                        c.killed.fire();
                        n += 1;
                    }
                }
                Reply::Int(n)
            }
            Op::SlowlogGet(n) => Reply::Array(
                self.slowlog
                    .borrow()
                    .iter()
                    .take(n)
                    .map(|e| {
                        Reply::Array(vec![
                            Reply::Int(e.id as i64),
                            Reply::Int(e.at_s as i64),
                            Reply::Int(e.micros as i64),
                            Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                            Reply::Bulk(Bytes::from(e.addr.clone())),
                            Reply::Bulk(Bytes::from(e.name.clone())),
                        ])
                    })
                    .collect(),
            ),
            Op::SlowlogLen => Reply::Int(self.slowlog.borrow().len() as i64),
            Op::SlowlogReset => {
                self.slowlog.borrow_mut().clear();
                Reply::Ok
            }
            Op::Shutdown => {
                self.shutdown.fire();
                Reply::Ok
            }
            Op::SlotKeyCount(slot) => Reply::Int(self.shard.borrow().slot_key_count(slot) as i64),
            Op::SlotKeys { slot, count } => {
                let shard = self.shard.borrow();
                let (_, keys) = shard.slot_keys(tessera_engine::DEFAULT_MAP, slot, 0, count);
                Reply::Array(keys.into_iter().map(Reply::Bulk).collect())
            }
        }
    }

    /// Runs `ops` on `core` and returns their replies in order. Inline when `core` is this
    /// one; otherwise one message to the owner, awaited without blocking this executor.
    pub async fn call(&self, core: usize, ops: Vec<Op>) -> Vec<Reply> {
        if core == self.id {
            let now = runtime::now_ms();
            return ops.into_iter().map(|op| self.execute(op, now)).collect();
        }
        let n = ops.len();
        match self.send(core, ops) {
            Some(f) => f.wait(self, n).await,
            None => stopped(n),
        }
    }

    /// Sends a batch to another core and returns the receiver of its replies (None when that
    /// core has stopped). The channel being full is backpressure: this awaits in `send_async`.
    pub fn send(&self, core: usize, ops: Vec<Op>) -> Option<SendFuture> {
        debug_assert_ne!(core, self.id);
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        bump(&self.stats.batches_out, 1);
        let req = Request::Ops {
            ops,
            reply_to: ReplyTo::Core { core: self.id, id },
        };
        match self.shared.mesh[core].try_send(req) {
            Ok(()) => Some(SendFuture::Sent(rx)),
            Err(TrySendError::Full(req)) => {
                bump(&self.stats.mesh_full, 1);
                Some(SendFuture::Retry {
                    core,
                    req: Some(req),
                    rx,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.borrow_mut().remove(&id);
                None
            }
        }
    }

    /// Executes messages from other cores until the node has stopped.
    pub async fn serve_inbox(self: Rc<Self>, inbox: Inbox<Request, Response>) {
        loop {
            if self.shutdown.is_fired()
                && self.shared.cores_drained.load(Ordering::SeqCst) >= self.shared.cores
            {
                return;
            }
            match inbox.recv().await {
                None => {}
                Some(Received::Response(resp)) => {
                    let tx = self.pending.borrow_mut().remove(&resp.id);
                    if let Some(tx) = tx {
                        tx.send(resp.replies);
                    }
                }
                Some(Received::Request(Request::Ops { ops, reply_to })) => {
                    let now = runtime::now_ms();
                    bump(&self.stats.remote_in, ops.len() as u64);
                    let replies: Vec<Reply> =
                        ops.into_iter().map(|op| self.execute(op, now)).collect();
                    match reply_to {
                        ReplyTo::Core { core, id } => {
                            // The caller's core only disappears at the very end of shutdown.
                            let _ = self.shared.mesh[core].respond(Response { id, replies });
                        }
                        ReplyTo::Thread(tx) => {
                            let _ = tx.send(replies);
                        }
                    }
                }
                Some(Received::Request(Request::Cluster(update))) => {
                    self.cluster.borrow_mut().install(update);
                    let env = crate::cluster::migrate::on_table(&self);
                    crate::cluster::migrate::emit_wait(&self, env).await;
                }
                Some(Received::Request(Request::ToDriver(
                    job @ crate::cluster::migrate::DriverJob::Send(_),
                ))) => {
                    // Migration messages from another core: wait for room rather than drop
                    // one (a dropped handoff or verdict left its source paused forever).
                    let sent = self.proxy.send_job(job).await;
                    tracing::trace!(sent, "migration messages to the cluster task");
                }
                Some(Received::Request(Request::ToDriver(job))) => {
                    let origin = match &job {
                        crate::cluster::migrate::DriverJob::Forward(j) => {
                            Some((j.origin_core, j.id))
                        }
                        _ => None,
                    };
                    if !self.proxy.submit_job(job) {
                        tracing::warn!("cluster task queue full: job dropped");
                        if let Some((origin, id)) = origin {
                            let payload = crate::cluster::proxy::error_bytes(
                                "TRYAGAIN proxy queue full, retry",
                            );
                            crate::cluster::proxy::deliver(&self, origin, id, payload);
                        }
                    }
                }
                Some(Received::Request(Request::Migration { from, msg })) => {
                    let env = crate::cluster::migrate::on_message(&self, from, &msg);
                    crate::cluster::migrate::emit_wait(&self, env).await;
                }
                Some(Received::Request(Request::LinkLost(node))) => {
                    crate::cluster::migrate::on_link_lost(&self, node);
                }
                Some(Received::Request(Request::Forward(job))) => {
                    let (origin, id) = (job.origin_core, job.id);
                    if !self.proxy.submit(job) {
                        let payload =
                            crate::cluster::proxy::error_bytes("TRYAGAIN proxy queue full, retry");
                        crate::cluster::proxy::deliver(&self, origin, id, payload);
                    }
                }
                Some(Received::Request(Request::ForwardReply { id, payload })) => {
                    self.proxy.complete(id, payload);
                }
                Some(Received::Request(Request::Publish {
                    channel,
                    message,
                    reply,
                })) => {
                    let core = Rc::clone(&self);
                    runtime::spawn(async move {
                        let n = crate::cluster::wide::publish(&core, &channel, &message).await;
                        let _ = reply.send(n);
                    });
                }
                Some(Received::Request(Request::Run { command, reply })) => {
                    let core = Rc::clone(&self);
                    runtime::spawn(async move {
                        let r = crate::dispatch::run_for_thread(&core, command).await;
                        let _ = reply.send(r);
                    });
                }
            }
            runtime::yield_if_needed().await;
        }
    }

    fn stats_reply(&self) -> Reply {
        let st = self.shard.borrow().stats();
        let s = &self.stats;
        let host = self
            .migrations
            .borrow()
            .as_ref()
            .map(|h| h.stats)
            .unwrap_or_default();
        let pairs: Vec<(&'static str, u64)> = vec![
            ("core", self.id as u64),
            ("cpu", self.shared.cpus[self.id] as u64),
            ("keys", st.keys),
            ("default_map_keys", st.default_map_keys),
            ("keys_with_ttl", st.keys_with_ttl),
            ("maps", st.maps),
            ("used_memory", st.used_memory_bytes),
            ("live_bytes", st.live_bytes),
            ("garbage_bytes", st.garbage_bytes),
            ("table_bytes", st.table_bytes),
            ("index_bytes", st.index_bytes),
            ("maxmemory", st.maxmemory_bytes),
            ("hits", st.hits),
            ("misses", st.misses),
            ("evicted_keys", st.evicted_keys),
            ("expired_keys", st.expired_keys),
            ("executed", s.executed.get()),
            ("remote_in", s.remote_in.get()),
            ("batches_out", s.batches_out.get()),
            ("mesh_full", s.mesh_full.get()),
            ("connections", s.connections.get()),
            ("connections_total", s.connections_total.get()),
            ("rejected_connections", s.rejected_connections.get()),
            ("commands", s.commands.get()),
            ("net_in_bytes", s.net_in_bytes.get()),
            ("net_out_bytes", s.net_out_bytes.get()),
            ("expired_active", s.expired_active.get()),
            ("compacted_bytes", s.compacted_bytes.get()),
            ("bg_ticks", s.bg_ticks.get()),
            ("bg_tick_us_total", s.bg_tick_us_total.get()),
            ("bg_tick_us_max", s.bg_tick_us_max.get()),
            ("migration_calls", s.migration_calls.get()),
            ("migration_us_total", s.migration_us_total.get()),
            ("migration_us_max", s.migration_us_max.get()),
            ("migration_calls_over_1ms", s.migration_calls_over_1ms.get()),
            ("migration_pauses", s.migration_pauses.get()),
            ("migration_pause_us_total", s.migration_pause_us_total.get()),
            ("migration_turns_cut", host.turns_cut),
            ("migration_keys_dropped", host.keys_dropped),
            ("migration_removals_teed", host.removals_teed),
            ("migration_sources_started", host.sources_started),
            ("migration_sources_committed", host.sources_committed),
            ("migration_sources_aborted", host.sources_aborted),
            ("migration_targets_committed", host.targets_committed),
            ("migration_targets_aborted", host.targets_aborted),
            ("migration_streams_refused", host.streams_refused),
            ("migration_verified_resets", host.verified_resets),
            ("migration_commits_unverified", host.commits_unverified),
            ("migration_stale_messages", host.stale_messages),
            (
                "pubsub_channels",
                self.pubsub.borrow().channel_count() as u64,
            ),
            ("mesh_backlog", self.shared.mesh[self.id].backlog() as u64),
        ];
        Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Reply::simple(k), Reply::Int(v as i64)))
                .collect(),
        )
    }

    /// CLIENT LIST lines of this core (all clients, or one id).
    pub fn client_list(&self, only: Option<u64>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let clients = self.clients.borrow();
        let mut ids: Vec<&u64> = clients.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let c = &clients[id];
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            let _ = writeln!(
                out,
                "id={} addr={} laddr={} fd=0 name={} age={} idle=0 flags=N db=0 sub=0 psub=0 multi=-1 cmd={} resp={} core={}",
                c.id,
                c.addr,
                c.laddr,
                String::from_utf8_lossy(&c.name.borrow()),
                c.created.elapsed().as_secs(),
                c.last_cmd.borrow(),
                c.resp.get(),
                self.id
            );
        }
        out
    }

    /// Records a slow command (bounded by `slowlog_len_max`).
    pub fn record_slow(&self, micros: u64, args: &[Bytes], addr: &str, name: &str) {
        let max = self.shared.config.net.slowlog_len_max;
        if max == 0 {
            return;
        }
        let id = self.next_slow_id.get();
        self.next_slow_id.set(id + 1);
        let mut log = self.slowlog.borrow_mut();
        log.push_front(SlowEntry {
            id,
            at_s: runtime::now_ms() / 1000,
            micros,
            // Redis keeps at most 32 arguments, each cut to 128 bytes.
            args: args
                .iter()
                .take(32)
                .map(|a| a.slice(..a.len().min(128)))
                .collect(),
            addr: addr.to_owned(),
            name: name.to_owned(),
        });
        log.truncate(max);
    }

    /// Counts one call into the migrations that took `us` microseconds.
    pub fn count_migration_call(&self, us: u64) {
        let s = &self.stats;
        bump(&s.migration_calls, 1);
        bump(&s.migration_us_total, us);
        if us > s.migration_us_max.get() {
            s.migration_us_max.set(us);
        }
        if us > 1000 {
            bump(&s.migration_calls_over_1ms, 1);
        }
    }

    /// Counts one pause of the migration timer between turns.
    pub fn count_migration_pause(&self, pause: std::time::Duration) {
        let s = &self.stats;
        bump(&s.migration_pauses, 1);
        bump(
            &s.migration_pause_us_total,
            u64::try_from(pause.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// Runs one background tick: active expiry and one compaction step, bounded by config.
    pub fn background_tick(&self) {
        let started = Instant::now();
        let net = &self.shared.config.net;
        let now = runtime::now_ms();
        let mut shard = self.shard.borrow_mut();
        let e = shard.active_expire(now, net.expire_budget_keys);
        bump(&self.stats.expired_active, e.expired as u64);
        let c = shard.compact_step(net.compact_budget_bytes);
        bump(&self.stats.compacted_bytes, c.bytes_moved as u64);
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        bump(&self.stats.bg_ticks, 1);
        bump(&self.stats.bg_tick_us_total, us);
        if us > self.stats.bg_tick_us_max.get() {
            self.stats.bg_tick_us_max.set(us);
        }
    }
}

/// Replies when the target core has stopped (only during shutdown).
fn stopped(n: usize) -> Vec<Reply> {
    (0..n)
        .map(|_| Reply::Error(CommandError::Other("server is shutting down".into())))
        .collect()
}

/// The pending result of [`Core::send`].
pub enum SendFuture {
    Sent(oneshot::Receiver<Vec<Reply>>),
    Retry {
        core: usize,
        req: Option<Request>,
        rx: oneshot::Receiver<Vec<Reply>>,
    },
}

impl SendFuture {
    /// Waits for the replies (`n` = number of ops, for the error case).
    pub async fn wait(self, core_ref: &Core, n: usize) -> Vec<Reply> {
        let rx = match self {
            SendFuture::Sent(rx) => rx,
            SendFuture::Retry { core, mut req, rx } => {
                while let Some(r) = req.take() {
                    match core_ref.shared.mesh[core].try_send(r) {
                        Ok(()) => {}
                        Err(TrySendError::Full(r)) => {
                            req = Some(r);
                            runtime::yield_now().await;
                        }
                        Err(TrySendError::Disconnected(_)) => return stopped(n),
                    }
                }
                rx
            }
        };
        rx.await.unwrap_or_else(|| stopped(n))
    }
}
