//! The cluster task: runs on core 0 of a cluster-mode node and drives the sans-I/O state
//! machines of `tessera-cluster` (the driver contract of `cluster/README.md`).
//!
//! Owns [`Driver`]: `SwimMembership` over a UDP socket on `cluster_port`, the `TableKeeper`,
//! the outgoing peer links ([`super::link`]) and the distribution of tables: the coordinator
//! pushes every new table to every member, every member sends epoch hints, a member that hears
//! of a higher epoch fetches the table, and an accepted table is sent to every core of this
//! node as a new [`super::View`]. Four tasks share the driver (`Rc<RefCell<Driver>>`, never
//! borrowed across an `.await`): gossip receive, the ticker, the peer listener, and one task per
//! incoming link. glommio polls a task once inside `spawn`, so a task spawned while the driver
//! is borrowed must yield before it borrows it. Time for the state machines is this task's
//! monotonic clock in milliseconds. Proxy routing ([`super::proxy`]) also runs here: forwarded
//! requests leave and arrive through the driver.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use tessera_cluster::wire::ReplyProtocol;
use tessera_cluster::{
    KeeperConfig, LeaveReady, Membership, MembershipEvent, MembershipOutput, Message, NodeId,
    NodeInfo, Offer, PartitionTable, PlannerConfig, SwimMembership, TableKeeper,
};

use super::config::ClusterConfig;
use super::link::{self, LinkParams};
use super::migrate::{self, DriverJob};
use super::proxy::{self, Job};
use super::ViewUpdate;
use crate::core::{Core, Request, Shared};
use crate::runtime::{self, TcpListener, UdpSocket};

/// The sockets of the cluster task, bound during start-up (so a port in use fails the start).
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
    seeds: Vec<SocketAddr>,
    me: NodeInfo,
}

impl Sockets {
    /// This node as the cluster sees it.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }
}

/// Binds the peer listener (TCP) and the gossip socket (UDP) on `net.bind:cluster_port` and
/// resolves the seeds. `client_port` is the port clients reach this node at.
pub fn bind(shared: &Shared, client_port: u16) -> Result<Sockets, String> {
    let cfg = &shared.config.cluster;
    let seeds = cfg.resolve_seeds().map_err(|e| e.to_string())?;
    let ip = shared.config.net.bind;
    let tcp = TcpListener::bind(SocketAddr::new(ip, cfg.cluster_port))
        .map_err(|e| format!("peer port {}: {e}", cfg.cluster_port))?;
    let port = tcp
        .local_addr()
        .map_err(|e| format!("peer port: {e}"))?
        .port();
    let udp = UdpSocket::bind(SocketAddr::new(ip, port))
        .map_err(|e| format!("gossip port {port}/udp: {e}"))?;
    let mut me = super::me(shared, client_port);
    me.peer_port = port;
    me.gossip_port = port;
    Ok(Sockets {
        udp,
        tcp,
        seeds,
        me,
    })
}

/// An outgoing link: the queue its task writes from (while it is dialled and up), the
/// messages held while it waits to be dialled again, and when it may be.
#[derive(Default)]
struct Link {
    tx: Option<LocalSender<Message>>,
    /// At most `link_queue_frames`; moved onto the next dial's queue.
    held: std::collections::VecDeque<Message>,
    retry_at_ms: u64,
    /// Number of the current dial: a finished link task reports with its own.
    attempt: u64,
}

/// A forwarded request waiting for its reply.
struct Waiting {
    /// Origin core and the waiter's id there.
    origin: usize,
    id: u64,
    deadline_ms: u64,
    /// The node it went to.
    to: NodeId,
}

/// Why a message could not be delivered; the text is the error a forwarded request answers.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("TRYAGAIN proxy: the queue to the owning node is full (not sent), retry")]
    QueueFull,
    #[error("CLUSTERDOWN proxy: the owning node is down (not sent)")]
    Down,
    #[error("CLUSTERDOWN proxy: the owning node's address is unknown (not sent)")]
    Unknown,
    #[error("TRYAGAIN proxy: the owning node could not be reached (not sent), retry")]
    Unreachable,
    #[error("TRYAGAIN proxy: the link to the owning node broke before its reply (the command may have run)")]
    Lost,
    #[error(
        "CLUSTERDOWN proxy: the owning node went down before its reply (the command may have run)"
    )]
    WentDown,
}

/// Largest RESP payload a `Forward` / `ForwardReply` carries: the frame cap less room for the
/// rest of the message (a larger one could not be framed).
fn frame_room(cfg: &ClusterConfig) -> usize {
    cfg.frame_bytes_max.saturating_sub(1024)
}

/// Frames of a migration stream (their loss is a link loss for the migrations).
fn is_migration(m: &Message) -> bool {
    matches!(
        m,
        Message::MigrateBatch(_)
            | Message::MigrateAck { .. }
            | Message::Handoff { .. }
            | Message::HandoffAck { .. }
            | Message::Abort { .. }
    )
}

/// The state of the cluster task.
pub struct Driver {
    core: Rc<Core>,
    cfg: ClusterConfig,
    params: LinkParams,
    me: NodeInfo,
    clock: Instant,
    membership: SwimMembership,
    keeper: TableKeeper,
    links: HashMap<NodeId, Link>,
    incoming: usize,
    next_plan_ms: u64,
    next_hint_ms: u64,
    /// (epoch, live members, quorum, coordinator, leaving) of the view the cores have (the
    /// members are the cached `members`, shared: comparing them allocates nothing per tick).
    published: Option<PublishedView>,
    table: Option<Arc<PartitionTable>>,
    /// Cores whose mailbox was full at the last publication (retried on the next tick).
    unsent: Vec<usize>,
    /// Per core: stream frames and link losses for it that found its mailbox full, in order,
    /// at most `link_queue_frames`; one task per core drains them ([`Driver::relay`]), so a
    /// later frame never overtakes an earlier one.
    relay: Vec<std::collections::VecDeque<Request>>,
    /// Per core: its relay task is running.
    relaying: Vec<bool>,
    datagrams: Vec<(SocketAddr, Bytes)>,
    /// Proxy routing: forwarded requests waiting for the owner's reply, by request id.
    forwards: HashMap<u64, Waiting>,
    /// Members membership declared down (messages for them fail at once), until they are up.
    down: std::collections::HashSet<NodeId>,
    /// Members that came up and have not yet hinted this node's epoch: such a hint may
    /// complete the coordinator's catch-up, so it replans on the next tick instead of at
    /// `replan_interval_ms`.
    awaiting_hint: std::collections::HashSet<NodeId>,
    /// Live members as membership last reported them, sorted by id: recomputed only after a
    /// call into membership (foca's state changes only there; [`Driver::absorb`] follows every
    /// one), so an idle tick formats no address.
    members: Arc<Vec<NodeInfo>>,
    members_stale: bool,
    /// Something the keeper's plan depends on changed since the last `replan` (members, a
    /// table or hint with news, a drain): replan at the next planning time. Without it the
    /// coordinator replans only while time decides (no table yet, an owner out of the view
    /// within its grace); an idle coordinator no longer computes a whole table every
    /// `replan_interval_ms` to find it unchanged.
    plan_dirty: bool,
    /// Peers whose migrations were told of a link loss this tick (told once per tick).
    lost_this_tick: std::collections::HashSet<NodeId>,
    next_forward: u64,
    this: std::rc::Weak<RefCell<Driver>>,
    /// `CLUSTER LEAVE` / SIGTERM: draining this node; `left` once it said goodbye.
    leaving: bool,
    left: bool,
}

impl Driver {
    fn new(core: Rc<Core>, me: NodeInfo, seeds: Vec<SocketAddr>) -> Result<Driver, String> {
        let cores = core.shared.cores;
        let cfg = core.shared.config.cluster.clone();
        let membership = SwimMembership::new(&me, cfg.membership(seeds), rand::random())
            .map_err(|e| e.to_string())?;
        let keeper = TableKeeper::new(
            me.id,
            KeeperConfig {
                planner: PlannerConfig::default(),
                first_plan_delay_ms: cfg.first_plan_delay_ms,
                down_grace_ms: cfg.member_down_grace_ms,
                // Shorter than failure detection (probe_period_ms + suspect_to_down_ms), longer
                // than two hint intervals (validated with the config).
                lease_ms: cfg.suspect_to_down_ms,
                leave_confirm_ms: cfg.leave_confirm_ms,
            },
            0,
        );
        let params = LinkParams {
            me: me.id,
            generation: me.generation,
            secret: cfg.secret.as_bytes().to_vec(),
            wire: cfg.wire(),
            handshake_timeout: Duration::from_millis(cfg.link_handshake_timeout_ms),
        };
        Ok(Driver {
            core,
            params,
            me,
            clock: Instant::now(),
            membership,
            keeper,
            links: HashMap::new(),
            incoming: 0,
            next_plan_ms: 0,
            next_hint_ms: 0,
            published: None,
            table: None,
            unsent: Vec::new(),
            relay: (0..cores)
                .map(|_| std::collections::VecDeque::new())
                .collect(),
            relaying: vec![false; cores],
            datagrams: Vec::new(),
            forwards: HashMap::new(),
            down: std::collections::HashSet::new(),
            awaiting_hint: std::collections::HashSet::new(),
            members: Arc::new(Vec::new()),
            members_stale: true,
            plan_dirty: true,
            lost_this_tick: std::collections::HashSet::new(),
            next_forward: 1,
            this: std::rc::Weak::new(),
            leaving: false,
            left: false,
            cfg,
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn absorb(&mut self, out: MembershipOutput) {
        self.members_stale = true;
        self.datagrams.extend(out.datagrams);
        if out.events.is_empty() {
            return;
        }
        for ev in out.events {
            match ev {
                MembershipEvent::Up(n) => {
                    tracing::info!(node = ?n.id, host = %n.host, "member up");
                    self.down.remove(&n.id);
                    // Hints to every member on the next tick (after its replan, which on the
                    // coordinator starts waiting for this member's hint): the new member
                    // fetches the table at once, instead of up to `epoch_hint_interval_ms`
                    // later, and answers with its own hint once it installed it.
                    self.next_hint_ms = 0;
                    self.awaiting_hint.insert(n.id);
                }
                MembershipEvent::Down(n) => {
                    tracing::warn!(node = ?n.id, host = %n.host, "member down");
                    self.down.insert(n.id);
                    self.awaiting_hint.remove(&n.id);
                    // Its link closes (the writer ends after its queue); everything waiting
                    // for it fails now rather than at a timeout.
                    if let Some(l) = self.links.remove(&n.id) {
                        for m in l.held {
                            self.fail(n.id, m, &Failure::Down);
                        }
                    }
                    self.fail_forwards(n.id, &Failure::WentDown, |_| true);
                    self.lose_link(n.id);
                }
                MembershipEvent::Joined => tracing::info!("joined the cluster"),
                MembershipEvent::Alone => tracing::info!("no other live member"),
                MembershipEvent::Rejoined(n) => {
                    tracing::warn!(generation = n.generation, "declared down, rejoined");
                }
            }
        }
        self.next_plan_ms = self.now_ms();
        self.publish();
    }

    /// The live members (membership's view, cached: see `members`).
    fn members(&mut self) -> Arc<Vec<NodeInfo>> {
        if self.members_stale {
            self.members_stale = false;
            let live = self.membership.live_members();
            if live != *self.members {
                self.members = Arc::new(live);
                self.plan_dirty = true;
            }
        }
        Arc::clone(&self.members)
    }

    /// The coordinator membership sees: the oldest live member.
    fn coordinator(&mut self) -> NodeId {
        tessera_cluster::membership::coordinator(&self.members()).unwrap_or(self.me.id)
    }

    /// Whether the live members reach `member_count_quorum` (membership's `has_quorum`).
    fn quorum(&self, members: &[NodeInfo]) -> bool {
        members.len() >= self.cfg.member_count_quorum
    }

    /// Whether time alone can change the plan: no table yet (the first waits
    /// `first_plan_delay_ms`), or a node of the table is not live (its slots stay in the plans
    /// for `member_down_grace_ms`).
    fn plan_by_time(&self, members: &[NodeInfo]) -> bool {
        self.keeper.table().map_or(true, |t| {
            t.nodes
                .iter()
                .any(|n| !members.iter().any(|m| m.id == n.id))
        })
    }

    /// Where `id` is: a live member, else a member of the table.
    fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.membership
            .live_members()
            .into_iter()
            .find(|n| n.id == id)
            .or_else(|| {
                let t = self.keeper.table()?;
                t.node_index(id).map(|i| t.node(i).clone())
            })
    }

    /// Queues `msg` for `to` (handled at once when `to` is this node): on its link's queue when
    /// the link is up or being dialled, else held (dialling when the retry delay has passed).
    /// A message that cannot be queued fails at once to its sender ([`Driver::fail`]): the
    /// queue is full (`link_queue_frames`), the peer is down, or its address is unknown.
    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.me.id {
            self.on_peer(to, msg);
            return;
        }
        if self.down.contains(&to) {
            self.fail(to, msg, &Failure::Down);
            return;
        }
        let now = self.now_ms();
        let max = self.cfg.link_queue_frames;
        let link = self.links.entry(to).or_default();
        let msg = match &link.tx {
            Some(tx) => match tx.try_send(msg) {
                Ok(()) => return,
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(m))) => {
                    // A dropped stream frame would leave a migration waiting forever: close the
                    // link instead (its writer ends after the queued frames), so both sides see
                    // the link lost and their migrations restart.
                    tracing::warn!(peer = ?to, "peer link queue full: frame failed, link closed");
                    link.tx = None;
                    self.fail(to, m, &Failure::QueueFull);
                    return;
                }
                Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(m))) => {
                    // The link's task ended and has not reported yet: hold and dial again.
                    link.tx = None;
                    m
                }
                Err(_) => return,
            },
            None => msg,
        };
        if link.held.len() >= max {
            self.fail(to, msg, &Failure::QueueFull);
            return;
        }
        link.held.push_back(msg);
        if now >= link.retry_at_ms {
            self.dial(to);
        }
    }

    /// Dials `to` with the held messages as the new link's first frames. Unknown peer: they
    /// fail at once.
    fn dial(&mut self, to: NodeId) {
        let addr = self.node_info(to).and_then(|info| {
            let ip = info.host.parse::<std::net::IpAddr>().ok();
            if ip.is_none() {
                tracing::warn!(peer = ?to, host = %info.host, "peer host is not an IP address");
            }
            ip.map(|ip| SocketAddr::new(ip, info.peer_port))
        });
        let Some(addr) = addr else {
            let held = self
                .links
                .get_mut(&to)
                .map(|l| std::mem::take(&mut l.held))
                .unwrap_or_default();
            for m in held {
                self.fail(to, m, &Failure::Unknown);
            }
            return;
        };
        let now = self.now_ms();
        let (tx, rx) = local_channel::new_bounded(self.cfg.link_queue_frames);
        let link = self.links.get_mut(&to).expect("dialled links exist");
        // `held` is at most `link_queue_frames` long, the channel's capacity.
        for m in link.held.drain(..) {
            let _ = tx.try_send(m);
        }
        link.tx = Some(tx);
        link.retry_at_ms = now + self.cfg.link_retry_ms;
        link.attempt += 1;
        let attempt = link.attempt;
        let params = self.params.clone();
        let timeout = Duration::from_millis(self.cfg.link_connect_timeout_ms);
        let this = self.this.clone();
        runtime::spawn(async move {
            let up = std::cell::Cell::new(false);
            let result = link::outgoing(params, to, addr, timeout, &rx, &up).await;
            match &result {
                Ok(()) => tracing::debug!(peer = ?to, "peer link closed"),
                Err(e) => tracing::info!(peer = ?to, %addr, error = %e, "peer link closed"),
            }
            // Not inside `spawn`'s first poll (the connect awaited), but be sure.
            runtime::yield_now().await;
            let mut unsent = Vec::new();
            while let Some(Some(m)) = futures_lite::future::poll_once(rx.recv()).await {
                unsent.push(m);
            }
            if let Some(d) = this.upgrade() {
                d.borrow_mut()
                    .link_ended(to, attempt, up.get(), result.is_ok(), unsent);
            }
        });
    }

    /// The outgoing link (dial `attempt`) to `to` ended; `unsent` are the frames it had not
    /// taken from its queue. A link that never came up fails its forwarded requests (never
    /// sent: `-TRYAGAIN`); one that broke holds them for the next dial and fails the requests
    /// it may have sent (their replies are not coming on a broken link). Replies are held for
    /// the next dial; migration frames are dropped (the link loss restarts their streams).
    fn link_ended(
        &mut self,
        to: NodeId,
        attempt: u64,
        was_up: bool,
        clean: bool,
        unsent: Vec<Message>,
    ) {
        let current = self.links.get(&to).is_some_and(|l| l.attempt == attempt);
        if !current {
            // Replaced (peer declared down, or closed for a full queue and dialled again):
            // whatever it still had is failed.
            for m in unsent {
                self.fail(to, m, &Failure::Unreachable);
            }
            if !clean {
                self.lose_link(to);
            }
            return;
        }
        if let Some(l) = self.links.get_mut(&to) {
            l.tx = None;
        }
        let mut keep = Vec::new();
        for m in unsent {
            match m {
                Message::ForwardReply { .. } => keep.push(m),
                Message::Forward { .. } if was_up => keep.push(m),
                m => self.fail(to, m, &Failure::Unreachable),
            }
        }
        if was_up && !clean {
            let queued: std::collections::HashSet<u64> = keep
                .iter()
                .filter_map(|m| match m {
                    Message::Forward { request_id, .. } => Some(*request_id),
                    _ => None,
                })
                .collect();
            self.fail_forwards(to, &Failure::Lost, |r| !queued.contains(&r));
        }
        if let Some(l) = self.links.get_mut(&to) {
            for m in keep.into_iter().rev() {
                l.held.push_front(m);
            }
            l.held.truncate(self.cfg.link_queue_frames);
        }
        self.lose_link(to);
    }

    /// The link to `to` is lost: held migration frames belong to streams that now restart, so
    /// they are dropped; then every core's migrations with `to` abandon (once per tick).
    fn lose_link(&mut self, to: NodeId) {
        if let Some(l) = self.links.get_mut(&to) {
            l.held.retain(|m| !is_migration(m));
        }
        if self.lost_this_tick.insert(to) {
            self.link_lost(to);
        }
    }

    /// `msg` for `to` cannot be sent: tells its sender at once. A forwarded request gets its
    /// error reply; a migration frame means the link is lost for the migrations; a reply or a
    /// table message is dropped (tables and hints are repeated; a requester times out).
    fn fail(&mut self, to: NodeId, msg: Message, why: &Failure) {
        match msg {
            Message::Forward { request_id, .. } => {
                if let Some(f) = self.forwards.remove(&request_id) {
                    proxy::deliver(
                        &self.core,
                        f.origin,
                        f.id,
                        proxy::error_bytes(&why.to_string()),
                    );
                }
            }
            m if is_migration(&m) => self.lose_link(to),
            m => {
                tracing::debug!(peer = ?to, kind = ?m.kind(), reason = %why, "peer message dropped");
            }
        }
    }

    /// Fails the forwarded requests waiting on `to` whose request id passes `which`.
    fn fail_forwards(&mut self, to: NodeId, why: &Failure, which: impl Fn(u64) -> bool) {
        let ids: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(r, f)| f.to == to && which(**r))
            .map(|(r, _)| *r)
            .collect();
        let text = why.to_string();
        for r in ids {
            if let Some(f) = self.forwards.remove(&r) {
                proxy::deliver(&self.core, f.origin, f.id, proxy::error_bytes(&text));
            }
        }
    }

    /// Held messages whose retry time came: dial.
    fn redial(&mut self, now: u64) {
        let due: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| l.tx.is_none() && !l.held.is_empty() && now >= l.retry_at_ms)
            .map(|(id, _)| *id)
            .collect();
        for to in due {
            self.dial(to);
        }
    }

    /// A message from peer `from` (authenticated).
    fn on_peer(&mut self, from: NodeId, msg: Message) {
        match msg {
            Message::TablePush(table) => {
                let coord = self.coordinator();
                let epoch = table.epoch;
                // Whatever the verdict, the keeper may plan differently now (a newer foreign
                // table, a new own one).
                self.plan_dirty = true;
                match self.keeper.offer(table, coord) {
                    Offer::Accepted => {
                        tracing::info!(epoch, from = ?from, "table installed");
                        self.publish();
                        // Tell the coordinator at once that this node holds it: a coordinator
                        // waiting for this node's hint (it just came up) plans now, rather than
                        // at this node's next periodic hint.
                        let now = self.now_ms();
                        if coord != self.me.id {
                            let hint = self.keeper.hint(coord, coord, now);
                            self.send(coord, hint);
                        }
                        // And every live member this table gives no slot (a drained leaver,
                        // which exits once every member holds its table: `held_by_all`; a
                        // joiner before its migrations): the leaver waits for the newest
                        // epoch, which may come after the one that emptied it.
                        if let Some(owning) = self.keeper.table().map(PartitionTable::owner_ids) {
                            let live = self.members();
                            for m in live.iter() {
                                if m.id != coord && m.id != self.me.id && !owning.contains(&m.id) {
                                    let hint = self.keeper.hint(m.id, coord, now);
                                    self.send(m.id, hint);
                                }
                            }
                        }
                    }
                    Offer::Invalid(e) => {
                        tracing::warn!(from = ?from, error = %e, "invalid table from peer");
                    }
                    Offer::Stale | Offer::WrongCoordinator => {}
                }
            }
            // The hint counts towards a new coordinator's catch-up (it plans only once every
            // member hinted); the same epoch from another coordinator makes it republish above.
            Message::TableEpoch {
                epoch,
                coordinator,
                at_ms,
                echo_ms,
            } => {
                // A hint of any other table than ours is news for the plan (a newer one to
                // fetch, the same epoch from another coordinator to republish above); a
                // catch-up that waits for hints is covered by `plan_deferred`.
                let ours = (
                    self.keeper.epoch(),
                    self.keeper.table().map(|t| t.coordinator),
                );
                if (epoch, Some(coordinator)) != ours {
                    self.plan_dirty = true;
                }
                if self.awaiting_hint.contains(&from) {
                    self.next_plan_ms = self.now_ms();
                    if epoch >= self.keeper.epoch() {
                        // It holds our table: the catch-up has what it needs from it.
                        self.awaiting_hint.remove(&from);
                    }
                }
                if self
                    .keeper
                    .observe_hint(from, epoch, coordinator, at_ms, echo_ms)
                {
                    let have_epoch = self.keeper.epoch();
                    self.send(from, Message::TableFetch { have_epoch });
                }
            }
            Message::TableFetch { have_epoch } => {
                if let Some(t) = self.keeper.table_for_fetch(have_epoch) {
                    let push = Message::TablePush(t.clone());
                    self.send(from, push);
                }
            }
            Message::Drain { node } => {
                self.plan_dirty = true;
                self.keeper.drain(node);
                self.next_plan_ms = self.now_ms();
            }
            Message::CommitRequest { slot, id } => self.keeper.request_commit(slot, id),
            Message::Ping { nonce } => self.send(from, Message::Pong { nonce }),
            Message::MigrateBatch(_)
            | Message::MigrateAck { .. }
            | Message::Handoff { .. }
            | Message::HandoffAck { .. }
            | Message::Abort { .. } => {
                let cores = tessera_cluster::message_cores(self.keeper.table(), self.me.id, &msg);
                for c in cores {
                    let c = usize::from(c);
                    if c == self.core.id {
                        let env = migrate::on_message(&self.core, from, &msg);
                        self.send_envelopes(env);
                    } else if c < self.core.shared.cores {
                        let req = Request::Migration {
                            from,
                            msg: msg.clone(),
                        };
                        self.relay(c, req);
                    }
                }
            }
            Message::Forward {
                request_id,
                protocol,
                payload,
                ..
            } => self.serve_forward(from, request_id, protocol, &payload),
            Message::ForwardReply {
                request_id,
                payload,
            } => {
                if let Some(f) = self.forwards.remove(&request_id) {
                    proxy::deliver(&self.core, f.origin, f.id, Bytes::from(payload));
                }
            }
            // Handshake frames after authentication, pongs, and messages of features this node
            // does not run (migration streams, forwarding) are ignored.
            _ => {}
        }
    }

    /// Sends migration messages: to a node over its link (to this node: handled at once), or to
    /// the coordinator membership sees.
    fn send_envelopes(&mut self, env: Vec<tessera_cluster::Envelope>) {
        for e in env {
            let to = match e.to {
                tessera_cluster::To::Node(n) => n,
                tessera_cluster::To::Coordinator => self.coordinator(),
            };
            self.send(to, e.message);
        }
    }

    /// A link to or from `node` closed: every core's migrations with it abandon (and restart).
    fn link_lost(&mut self, node: NodeId) {
        for c in 0..self.core.shared.cores {
            if c == self.core.id {
                migrate::on_link_lost(&self.core, node);
            } else {
                self.relay(c, Request::LinkLost(node));
            }
        }
    }

    /// `CLUSTER LEAVE` / SIGTERM: ask the coordinator to plan this node's slots away (repeated
    /// with every epoch hint until drained).
    fn start_leave(&mut self) {
        if !self.leaving {
            tracing::info!("leaving the cluster: draining slots");
        }
        self.leaving = true;
        // The cores pace their migrations by `migration_leave_duty_percent` from now on.
        self.publish();
        let coordinator = self.coordinator();
        self.send(coordinator, Message::Drain { node: self.me.id });
    }

    /// Proxy routing, on the requesting node: sends `job` to its owner node.
    fn forward(&mut self, job: Job) {
        if job.payload.len() > frame_room(&self.cfg) {
            let text = "ERR proxy: request too large for a peer frame (cluster.frame_bytes_max)";
            proxy::deliver(
                &self.core,
                job.origin_core,
                job.id,
                proxy::error_bytes(text),
            );
            return;
        }
        let request_id = self.next_forward;
        self.next_forward += 1;
        let deadline = self.now_ms() + self.cfg.proxy_timeout_ms;
        self.forwards.insert(
            request_id,
            Waiting {
                origin: job.origin_core,
                id: job.id,
                deadline_ms: deadline,
                to: job.to,
            },
        );
        let msg = Message::Forward {
            request_id,
            slot: job.slot,
            core: job.owner_core,
            protocol: match job.protocol {
                crate::resp::Protocol::Resp2 => ReplyProtocol::Resp2,
                crate::resp::Protocol::Resp3 => ReplyProtocol::Resp3,
            },
            payload: job.payload,
        };
        self.send(job.to, msg);
    }

    /// Proxy routing, on the owner node: runs a forwarded request and answers with its reply.
    fn serve_forward(
        &mut self,
        from: NodeId,
        request_id: u64,
        protocol: ReplyProtocol,
        payload: &[u8],
    ) {
        let limits = &self.core.shared.config.protocol;
        let Some(args) = proxy::parse_payload(payload, limits) else {
            let reply = proxy::error_bytes("ERR proxy: malformed forwarded request");
            let payload = reply.to_vec();
            self.send(
                from,
                Message::ForwardReply {
                    request_id,
                    payload,
                },
            );
            return;
        };
        let (core, this) = (Rc::clone(&self.core), self.this.clone());
        runtime::spawn(async move {
            // glommio polls a new task once inside `spawn`, i.e. while the caller still holds
            // the driver: step out of that borrow first.
            runtime::yield_now().await;
            let reply = super::wide::run_local(&core, args).await;
            let mut out = bytes::BytesMut::new();
            let proto = match protocol {
                ReplyProtocol::Resp2 => crate::resp::Protocol::Resp2,
                ReplyProtocol::Resp3 => crate::resp::Protocol::Resp3,
            };
            proxy::encode_reply(&reply, proto, &mut out);
            if out.len() > frame_room(&core.shared.config.cluster) {
                out = bytes::BytesMut::from(
                    &proxy::error_bytes(
                        "ERR proxy: reply too large for a peer frame (cluster.frame_bytes_max)",
                    )[..],
                );
            }
            if let Some(d) = this.upgrade() {
                let payload = out.to_vec();
                d.borrow_mut().send(
                    from,
                    Message::ForwardReply {
                        request_id,
                        payload,
                    },
                );
            }
        });
    }

    /// The periodic work: membership timers, planning, epoch hints, view publication, proxy
    /// timeouts.
    fn tick(&mut self) {
        let now = self.now_ms();
        let expired: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.deadline_ms <= now)
            .map(|(r, _)| *r)
            .collect();
        for r in expired {
            if let Some(f) = self.forwards.remove(&r) {
                let text = "TRYAGAIN proxy: the owning node did not answer in time";
                proxy::deliver(&self.core, f.origin, f.id, proxy::error_bytes(text));
            }
        }
        self.lost_this_tick.clear();
        self.redial(now);
        if self.membership.next_wake_ms().map_or(true, |at| now >= at) {
            let mut out = MembershipOutput::default();
            self.membership.tick(now, &mut out);
            self.absorb(out);
        }
        let members = self.members();
        let quorum = self.quorum(&members);
        if now >= self.next_plan_ms {
            self.next_plan_ms = now + self.cfg.replan_interval_ms;
            let mut pushed = None;
            // The keeper's catch-up and lease also change with time alone (a new coordinator
            // waits one lease; a lapsed lease catches up again): while it defers, ask again
            // every interval.
            if self.plan_dirty || self.plan_by_time(&members) || self.keeper.plan_deferred() {
                self.plan_dirty = false;
                pushed = self.keeper.replan(&members, quorum, now).cloned();
            }
            if let Some(t) = self.keeper.flush_commits(&members, now).cloned() {
                pushed = Some(t);
            }
            if let Some(t) = pushed {
                tracing::info!(epoch = t.epoch, members = members.len(), "table planned");
                self.publish();
                // A member this table gives no slot (a drained leaver, a joiner before its
                // migrations) also gets our hint at once: a leaver exits only once every
                // member hinted that it holds the table (`held_by_all`).
                let owning = t.owner_ids();
                for m in members.iter() {
                    if m.id != self.me.id {
                        self.send(m.id, Message::TablePush(t.clone()));
                        if !owning.contains(&m.id) {
                            let hint = self.keeper.hint(m.id, self.me.id, now);
                            self.send(m.id, hint);
                        }
                    }
                }
            }
        }
        if now >= self.next_hint_ms {
            self.next_hint_ms = now + self.cfg.epoch_hint_interval_ms;
            let coordinator = self.coordinator();
            // The hint names the coordinator that computed the table and carries the
            // coordinator lease's clock and echo (cluster/README.md).
            for m in members.iter() {
                if m.id != self.me.id {
                    let hint = self.keeper.hint(m.id, coordinator, now);
                    self.send(m.id, hint);
                }
            }
            if self.leaving && !self.left {
                self.send(coordinator, Message::Drain { node: self.me.id });
            }
        }
        self.publish();
        if !self.leaving || self.left {
            return;
        }
        // Every slot moved away (each by a verified handoff and a commit) and every member
        // holds the table that says so (a leaving coordinator's last commit table may exist
        // only here), or the wait ran out: say goodbye and ask the process owner to stop.
        match self.keeper.leave_ready(&members, now) {
            LeaveReady::Wait => return,
            LeaveReady::Confirmed { waited_ms } => tracing::info!(
                waited_ms,
                "drained, every member holds the last table: leaving the cluster"
            ),
            LeaveReady::TimedOut { waited_ms } => tracing::warn!(
                waited_ms,
                "drained, but not every member confirmed the last table: leaving anyway"
            ),
        }
        self.left = true;
        let mut out = MembershipOutput::default();
        self.membership.leave(now, &mut out);
        self.members_stale = true;
        self.datagrams.extend(out.datagrams);
        let shared = &self.core.shared;
        shared
            .shutdown_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = shared.shutdown_requests.try_send(());
    }

    /// Sends every core the current view when it changed (or a core missed the last one).
    fn publish(&mut self) {
        let live = self.members();
        let key = (
            self.keeper.epoch(),
            Arc::clone(&live),
            self.quorum(&live),
            self.coordinator(),
            self.leaving,
        );
        if self.published.as_ref() == Some(&key) && self.unsent.is_empty() {
            return;
        }
        let changed = self.published.as_ref() != Some(&key);
        if self.table.as_ref().map(|t| t.epoch) != self.keeper.table().map(|t| t.epoch) {
            self.table = self.keeper.table().map(|t| Arc::new(t.clone()));
        }
        let update = ViewUpdate {
            table: self.table.clone(),
            live: Arc::clone(&key.1),
            quorum: key.2,
            coordinator: key.3,
            leaving: key.4,
        };
        let targets: Vec<usize> = if changed {
            (0..self.core.shared.cores).collect()
        } else {
            std::mem::take(&mut self.unsent)
        };
        self.unsent.clear();
        for c in targets {
            if c == self.core.id {
                self.core.cluster.borrow_mut().install(update.clone());
                let env = migrate::on_table(&self.core);
                self.send_envelopes(env);
            } else if self.core.shared.mesh[c]
                .try_send(Request::Cluster(update.clone()))
                .is_err()
            {
                self.unsent.push(c);
            }
        }
        self.published = Some(key);
    }

    fn link_params(&self) -> LinkParams {
        self.params.clone()
    }

    /// Sends `req` (a stream frame or a link loss) to core `c`'s mailbox, in order: behind
    /// what is already waiting for it, else at once if there is room, else it waits in
    /// `relay[c]` for the core's relay task. A full relay queue fails a stream frame like a
    /// full link queue: the link to its sender closes and the migrations with it restart.
    fn relay(&mut self, c: usize, req: Request) {
        let mut req = req;
        if self.relay[c].is_empty() {
            match self.core.shared.mesh[c].try_send(req) {
                Ok(()) | Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                Err(crossbeam_channel::TrySendError::Full(r)) => req = r,
            }
        }
        if self.relay[c].len() >= self.cfg.link_queue_frames {
            if let Request::Migration { from, .. } = req {
                tracing::warn!(core = c, peer = ?from, "core relay queue full: frame failed, link closed");
                if let Some(l) = self.links.get_mut(&from) {
                    l.tx = None;
                }
                self.lose_link(from);
            } else {
                tracing::warn!(core = c, "core relay queue full: link loss not relayed");
            }
            return;
        }
        self.relay[c].push_back(req);
        if self.relaying[c] {
            return;
        }
        self.relaying[c] = true;
        let (this, mesh) = (self.this.clone(), self.core.shared.mesh[c].clone());
        runtime::spawn(async move {
            loop {
                // Also steps out of the driver's borrow (glommio polls a task in `spawn`).
                runtime::yield_now().await;
                let Some(d) = this.upgrade() else { return };
                let mut dm = d.borrow_mut();
                while let Some(req) = dm.relay[c].pop_front() {
                    match mesh.try_send(req) {
                        Ok(()) | Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
                        Err(crossbeam_channel::TrySendError::Full(r)) => {
                            dm.relay[c].push_front(r);
                            break;
                        }
                    }
                }
                if dm.relay[c].is_empty() {
                    dm.relaying[c] = false;
                    return;
                }
            }
        });
    }
}

async fn flush(d: &Rc<RefCell<Driver>>, udp: &UdpSocket) {
    let datagrams = std::mem::take(&mut d.borrow_mut().datagrams);
    for (to, data) in datagrams {
        if let Err(e) = udp.send_to(&data, to).await {
            tracing::debug!(%to, error = %e, "gossip send failed");
        }
    }
}

/// Starts the cluster task on this core (core 0 of a cluster-mode node).
pub fn spawn(core: &Rc<Core>, sockets: Sockets) -> Result<(), String> {
    let Sockets {
        udp,
        tcp,
        seeds,
        me,
    } = sockets;
    tracing::info!(id = %me.id, peer_port = me.peer_port, seeds = seeds.len(), "cluster mode");
    let driver = Driver::new(Rc::clone(core), me, seeds)?;
    let d = Rc::new(RefCell::new(driver));
    d.borrow_mut().this = Rc::downgrade(&d);
    let udp = Rc::new(udp);
    {
        let mut out = MembershipOutput::default();
        let mut dm = d.borrow_mut();
        let now = dm.now_ms();
        dm.membership.start(now, &mut out);
        dm.absorb(out);
        dm.publish();
    }
    let stop = core.shutdown.clone();
    // Gossip receive.
    {
        let (d, udp, stop) = (Rc::clone(&d), Rc::clone(&udp), stop.clone());
        let max = d.borrow().cfg.gossip_packet_bytes;
        runtime::spawn(async move {
            let mut buf = vec![0u8; max + 64];
            loop {
                let got = futures_lite::future::or(
                    async { Some(udp.recv_from(&mut buf).await) },
                    async {
                        stop.wait().await;
                        None
                    },
                )
                .await;
                match got {
                    None => break,
                    Some(Ok((n, from))) => {
                        {
                            let mut dm = d.borrow_mut();
                            let now = dm.now_ms();
                            let mut out = MembershipOutput::default();
                            if let Err(e) = dm.membership.handle_datagram(now, &buf[..n], &mut out)
                            {
                                tracing::debug!(%from, error = %e, "gossip datagram dropped");
                            }
                            dm.absorb(out);
                        }
                        flush(&d, &udp).await;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        runtime::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    // Ticker.
    {
        let (d, udp, stop) = (Rc::clone(&d), Rc::clone(&udp), stop.clone());
        runtime::spawn(async move {
            let period = Duration::from_millis(TICK_MS);
            while !stop.is_fired() {
                futures_lite::future::or(runtime::sleep(period), stop.wait()).await;
                if stop.is_fired() {
                    break;
                }
                d.borrow_mut().tick();
                flush(&d, &udp).await;
            }
            // Say goodbye so the others see this node leave at once instead of after the
            // failure-detection delay.
            {
                let mut dm = d.borrow_mut();
                if !dm.left {
                    dm.left = true;
                    let now = dm.now_ms();
                    let mut out = MembershipOutput::default();
                    dm.membership.leave(now, &mut out);
                    dm.datagrams.extend(out.datagrams);
                }
            }
            flush(&d, &udp).await;
        });
    }
    // Proxy jobs from this node's cores.
    {
        let (tx, rx) = local_channel::new_bounded(d.borrow().cfg.link_queue_frames);
        core.proxy.set_jobs(tx);
        let d = Rc::clone(&d);
        runtime::spawn(async move {
            while let Some(job) = rx.recv().await {
                let mut dm = d.borrow_mut();
                match job {
                    DriverJob::Forward(job) => dm.forward(job),
                    DriverJob::Send(env) => dm.send_envelopes(env),
                    DriverJob::Leave => dm.start_leave(),
                }
            }
        });
    }
    // Peer listener.
    {
        let (d, stop) = (Rc::clone(&d), stop);
        runtime::spawn(async move {
            loop {
                let accepted =
                    futures_lite::future::or(async { Some(tcp.accept().await) }, async {
                        stop.wait().await;
                        None
                    })
                    .await;
                let stream = match accepted {
                    None => break,
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "peer accept failed");
                        runtime::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (params, max) = {
                    let dm = d.borrow();
                    (dm.link_params(), dm.cfg.peer_links_max)
                };
                if d.borrow().incoming >= max {
                    tracing::warn!(max, "too many peer links: connection refused");
                    drop(stream);
                    continue;
                }
                d.borrow_mut().incoming += 1;
                let d = Rc::clone(&d);
                let peer = stream.peer_addr().ok();
                runtime::spawn(async move {
                    let sender = std::cell::Cell::new(None);
                    let deliver = |from: NodeId, msg: Message| {
                        sender.set(Some(from));
                        d.borrow_mut().on_peer(from, msg);
                    };
                    if let Err(e) = link::incoming(params, stream, deliver).await {
                        match e {
                            link::LinkError::Closed => {
                                tracing::debug!(?peer, "peer link closed");
                            }
                            e => tracing::warn!(?peer, error = %e, "peer link closed"),
                        }
                    }
                    let mut dm = d.borrow_mut();
                    dm.incoming -= 1;
                    // Targets fed by this link abandon (their sources restart).
                    if let Some(from) = sender.get() {
                        dm.link_lost(from);
                    }
                });
            }
        });
    }
    Ok(())
}

/// (epoch, live members, quorum, coordinator, leaving): see `Driver::published`.
type PublishedView = (u64, Arc<Vec<NodeInfo>>, bool, NodeId, bool);

/// Interval of the ticker, milliseconds: membership timers are at least this fine-grained.
const TICK_MS: u64 = 20;
