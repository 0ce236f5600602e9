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
use tessera_cluster::{
    KeeperConfig, Membership, MembershipEvent, MembershipOutput, Message, NodeId, NodeInfo, Offer,
    PartitionTable, PlannerConfig, SwimMembership, TableKeeper,
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

/// An outgoing link: the queue its task writes from, or the time it may be dialled again.
struct Link {
    tx: Option<LocalSender<Message>>,
    retry_at_ms: u64,
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
    /// (epoch, live ids, quorum, coordinator) of the view the cores have.
    published: Option<(u64, Vec<NodeId>, bool, NodeId)>,
    table: Option<Arc<PartitionTable>>,
    /// Cores whose mailbox was full at the last publication (retried on the next tick).
    unsent: Vec<usize>,
    datagrams: Vec<(SocketAddr, Bytes)>,
    /// Proxy routing: forwarded requests waiting for the owner's reply:
    /// request id -> (origin core, waiter id, deadline).
    forwards: HashMap<u64, (usize, u64, u64)>,
    next_forward: u64,
    this: std::rc::Weak<RefCell<Driver>>,
    /// `CLUSTER LEAVE` / SIGTERM: draining this node; `left` once it said goodbye.
    leaving: bool,
    left: bool,
}

impl Driver {
    fn new(core: Rc<Core>, me: NodeInfo, seeds: Vec<SocketAddr>) -> Result<Driver, String> {
        let cfg = core.shared.config.cluster.clone();
        let membership = SwimMembership::new(&me, cfg.membership(seeds), rand::random())
            .map_err(|e| e.to_string())?;
        let keeper = TableKeeper::new(
            me.id,
            KeeperConfig {
                planner: PlannerConfig::default(),
                first_plan_delay_ms: cfg.first_plan_delay_ms,
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
            datagrams: Vec::new(),
            forwards: HashMap::new(),
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
        self.datagrams.extend(out.datagrams);
        if out.events.is_empty() {
            return;
        }
        for ev in &out.events {
            match ev {
                MembershipEvent::Up(n) => tracing::info!(node = ?n.id, host = %n.host, "member up"),
                MembershipEvent::Down(n) => {
                    tracing::warn!(node = ?n.id, host = %n.host, "member down");
                    self.links.remove(&n.id);
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

    /// Queues `msg` for `to` (handled at once when `to` is this node). Dropped, and logged,
    /// when the link's queue is full or the link is waiting to be re-dialled.
    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.me.id {
            self.on_peer(to, msg);
            return;
        }
        let now = self.now_ms();
        let link = self.links.entry(to).or_insert(Link {
            tx: None,
            retry_at_ms: 0,
        });
        let msg = match &link.tx {
            Some(tx) => match tx.try_send(msg) {
                Ok(()) => return,
                Err(glommio::GlommioError::WouldBlock(_)) => {
                    // A dropped frame would leave a migration stream waiting forever: close the
                    // link instead (its writer ends after the queued frames), so both sides see
                    // the link lost and their migrations restart.
                    tracing::warn!(peer = ?to, "peer link queue full: frame dropped, link closed");
                    link.tx = None;
                    return;
                }
                Err(e) => {
                    // The link's task ended: dial again (after the retry delay).
                    link.tx = None;
                    match e {
                        glommio::GlommioError::Closed(glommio::ResourceType::Channel(m)) => m,
                        _ => return,
                    }
                }
            },
            None => msg,
        };
        if now < link.retry_at_ms {
            return;
        }
        let Some(info) = self.node_info(to) else {
            return;
        };
        let Ok(ip) = info.host.parse::<std::net::IpAddr>() else {
            tracing::warn!(peer = ?to, host = %info.host, "peer host is not an IP address");
            return;
        };
        let addr = SocketAddr::new(ip, info.peer_port);
        let (tx, rx) = local_channel::new_bounded(self.cfg.link_queue_frames);
        let _ = tx.try_send(msg);
        let link = self.links.get_mut(&to).expect("inserted above");
        link.tx = Some(tx);
        link.retry_at_ms = now + self.cfg.link_retry_ms;
        let params = self.params.clone();
        let timeout = Duration::from_millis(self.cfg.link_connect_timeout_ms);
        let this = self.this.clone();
        runtime::spawn(async move {
            match link::outgoing(params, to, addr, timeout, rx).await {
                Ok(()) => tracing::debug!(peer = ?to, "peer link closed"),
                Err(e) => tracing::info!(peer = ?to, %addr, error = %e, "peer link closed"),
            }
            // Not inside `spawn`'s first poll (the connect awaited), but be sure.
            runtime::yield_now().await;
            if let Some(d) = this.upgrade() {
                d.borrow_mut().link_lost(to);
            }
        });
    }

    /// A message from peer `from` (authenticated).
    fn on_peer(&mut self, from: NodeId, msg: Message) {
        match msg {
            Message::TablePush(table) => {
                let coord = self.membership.coordinator();
                let epoch = table.epoch;
                match self.keeper.offer(table, coord) {
                    Offer::Accepted => {
                        tracing::info!(epoch, from = ?from, "table installed");
                        self.publish();
                    }
                    Offer::Invalid(e) => {
                        tracing::warn!(from = ?from, error = %e, "invalid table from peer");
                    }
                    Offer::Stale | Offer::WrongCoordinator => {}
                }
            }
            // The hint counts towards a new coordinator's catch-up (it plans only once every
            // member hinted); the same epoch from another coordinator makes it republish above.
            Message::TableEpoch { epoch, coordinator }
                if self.keeper.observe_hint(from, epoch, coordinator) =>
            {
                let have_epoch = self.keeper.epoch();
                self.send(from, Message::TableFetch { have_epoch });
            }
            Message::TableFetch { have_epoch } => {
                if let Some(t) = self.keeper.table() {
                    if t.epoch > have_epoch {
                        let push = Message::TablePush(t.clone());
                        self.send(from, push);
                    }
                }
            }
            Message::Drain { node } => {
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
                        to_core(&self.core, c, req);
                    }
                }
            }
            Message::Forward {
                request_id,
                payload,
                ..
            } => self.serve_forward(from, request_id, &payload),
            Message::ForwardReply {
                request_id,
                payload,
            } => {
                if let Some((origin, id, _)) = self.forwards.remove(&request_id) {
                    proxy::deliver(&self.core, origin, id, Bytes::from(payload));
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
                tessera_cluster::To::Coordinator => self.membership.coordinator(),
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
                to_core(&self.core, c, Request::LinkLost(node));
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
        let coordinator = self.membership.coordinator();
        self.send(coordinator, Message::Drain { node: self.me.id });
    }

    /// Proxy routing, on the requesting node: sends `job` to its owner node.
    fn forward(&mut self, job: Job) {
        let request_id = self.next_forward;
        self.next_forward += 1;
        let deadline = self.now_ms() + self.cfg.proxy_timeout_ms;
        self.forwards
            .insert(request_id, (job.origin_core, job.id, deadline));
        let msg = Message::Forward {
            request_id,
            slot: job.slot,
            core: job.owner_core,
            payload: job.payload,
        };
        self.send(job.to, msg);
    }

    /// Proxy routing, on the owner node: runs a forwarded request and answers with its reply.
    fn serve_forward(&mut self, from: NodeId, request_id: u64, payload: &[u8]) {
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
            crate::resp::encode(&reply, crate::resp::Protocol::Resp2, &mut out);
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
            .filter(|(_, (_, _, deadline))| *deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for r in expired {
            if let Some((origin, id, _)) = self.forwards.remove(&r) {
                let text = "TRYAGAIN proxy: the owning node did not answer in time";
                proxy::deliver(&self.core, origin, id, proxy::error_bytes(text));
            }
        }
        let mut out = MembershipOutput::default();
        self.membership.tick(now, &mut out);
        self.absorb(out);
        let members = self.membership.live_members();
        let quorum = self.membership.has_quorum();
        if now >= self.next_plan_ms {
            self.next_plan_ms = now + self.cfg.replan_interval_ms;
            let mut pushed = self.keeper.replan(&members, quorum, now).cloned();
            if let Some(t) = self.keeper.flush_commits(&members).cloned() {
                pushed = Some(t);
            }
            if let Some(t) = pushed {
                tracing::info!(epoch = t.epoch, members = members.len(), "table planned");
                self.publish();
                for m in &members {
                    if m.id != self.me.id {
                        self.send(m.id, Message::TablePush(t.clone()));
                    }
                }
            }
        }
        if now >= self.next_hint_ms {
            self.next_hint_ms = now + self.cfg.epoch_hint_interval_ms;
            let epoch = self.keeper.epoch();
            let coordinator = self.membership.coordinator();
            // The hint names the coordinator that computed the table (cluster/README.md).
            let computed_by = self.keeper.table().map_or(coordinator, |t| t.coordinator);
            for m in &members {
                if m.id != self.me.id {
                    let hint = Message::TableEpoch {
                        epoch,
                        coordinator: computed_by,
                    };
                    self.send(m.id, hint);
                }
            }
            if self.leaving && !self.left {
                self.send(coordinator, Message::Drain { node: self.me.id });
            }
        }
        self.publish();
        if self.leaving && !self.left && self.keeper.drained(self.me.id) {
            // Every slot moved away (each by a verified handoff and a commit): say goodbye and
            // ask the process owner to stop.
            tracing::info!("drained: leaving the cluster");
            self.left = true;
            let mut out = MembershipOutput::default();
            self.membership.leave(now, &mut out);
            self.datagrams.extend(out.datagrams);
            let shared = &self.core.shared;
            shared
                .shutdown_requested
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = shared.shutdown_requests.try_send(());
        }
    }

    /// Sends every core the current view when it changed (or a core missed the last one).
    fn publish(&mut self) {
        let live = self.membership.live_members();
        let key = (
            self.keeper.epoch(),
            live.iter().map(|n| n.id).collect::<Vec<_>>(),
            self.membership.has_quorum(),
            self.membership.coordinator(),
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
            live: Arc::new(live),
            quorum: key.2,
            coordinator: key.3,
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
}

/// Sends `req` to core `c`'s mailbox; a full mailbox is retried from a task (these messages
/// must not be lost: migration streams, link losses).
fn to_core(core: &Core, c: usize, req: Request) {
    let mesh = core.shared.mesh[c].clone();
    match mesh.try_send(req) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(req)) => {
            runtime::spawn(async move {
                let mut req = req;
                loop {
                    runtime::yield_now().await;
                    match mesh.try_send(req) {
                        Err(crossbeam_channel::TrySendError::Full(r)) => req = r,
                        _ => break,
                    }
                }
            });
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
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

/// Interval of the ticker, milliseconds: membership timers are at least this fine-grained.
const TICK_MS: u64 = 20;
