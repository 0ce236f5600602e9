//! [`Node`]: a running set of executors, one per core, each owning one shard: the server
//! (`tesserad`) and the embedding API are both built on it.
//!
//! Owns start-up (mailboxes, executors, listeners: every core binds the same address with
//! `SO_REUSEPORT` and accepts its own connections), the application-thread handle
//! [`NodeHandle`] (requests cross into the owner executor through crossbeam channels and the
//! calling thread blocks for the reply), and orderly shutdown (stop accepting, finish
//! in-flight requests, close connections, keep serving other cores until all have drained,
//! join the threads).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_cluster::SlotTable;
use tessera_engine::{Command, CommandError, Reply, Shard};
use thiserror::Error;
use tracing::Instrument;

use crate::config::{ConfigError, NodeConfig};
use crate::core::{Core, Mail, Op, ReplyTo, Request, Shared};
use crate::info::shard_share;
use crate::pubsub::ThreadSubscriber;
use crate::runtime::{self, mailbox, ExecutorThread, TcpListener};

/// Starting a node failed; nothing is left running.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the cross-core mailboxes: {0}")]
    Mailbox(std::io::Error),
    #[error(transparent)]
    Spawn(#[from] runtime::SpawnError),
    #[error("core {core} cannot listen on {addr}: {reason}")]
    Listen {
        core: usize,
        addr: SocketAddr,
        reason: String,
    },
    #[error("core {core} failed to start: {reason}")]
    Core { core: usize, reason: String },
    #[error("the admin port cannot listen on {addr}: {reason}")]
    Admin { addr: SocketAddr, reason: String },
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    threads: Vec<ExecutorThread<()>>,
    local_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shutdown_rx: crossbeam_channel::Receiver<()>,
}

/// A cloneable, thread-safe handle for application threads.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

/// What an executor listens on once started: clients, and (core 0 only) the admin port.
struct Listening {
    clients: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// How an executor reports the outcome of its start-up.
type Ready = Result<Listening, StartError>;

impl Node {
    /// Validates `config`, starts one executor per core (pinned), and, when
    /// `config.net.listen`, has every core listen on `bind:port`.
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.validate()?;
        let node_id = config.cluster.load_node_id()?;
        let cpus = config.runtime.cpus();
        let cores = cpus.len();
        let mut mesh: Vec<Mail> = Vec::with_capacity(cores);
        let mut inboxes = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) =
                mailbox::mailbox(config.runtime.mesh_capacity).map_err(StartError::Mailbox)?;
            mesh.push(tx);
            inboxes.push(rx);
        }
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded(1);
        let total_memory = config.engine.maxmemory_bytes;
        let policy = config.engine.maxmemory_policy;
        let shared = Arc::new(Shared {
            node_id,
            generation: crate::cluster::start_generation(),
            cores,
            cpus: cpus.clone(),
            slots: SlotTable::single_node(cores as u16),
            mesh,
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            maxmemory: AtomicU64::new(total_memory),
            policy: std::sync::Mutex::new(policy),
            shutdown_requested: AtomicBool::new(false),
            shutdown_requests: shutdown_tx,
            cores_drained: AtomicUsize::new(0),
            next_run_core: AtomicUsize::new(0),
            latency: (0..cores)
                .map(|_| crate::admin::Latency::default())
                .collect(),
            config,
        });
        let mut threads = Vec::with_capacity(cores);
        let mut local_addr = None;
        let mut admin_addr = None;
        let mut bind_addr = SocketAddr::new(shared.config.net.bind, shared.config.net.port);
        for (core, (inbox, cpu)) in inboxes.into_iter().zip(cpus).enumerate() {
            let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Ready>(1);
            let sh = Arc::clone(&shared);
            let listen = sh.config.net.listen.then_some(bind_addr);
            let spawned = runtime::spawn_executor(core, cpu, &shared.config.runtime, move || {
                executor_main(core, sh, inbox, listen, ready_tx)
                    .instrument(tracing::info_span!("core", id = core))
            });
            let thread = match spawned {
                Ok(t) => t,
                Err(e) => {
                    stop_started(&shared, threads);
                    return Err(e.into());
                }
            };
            let ready = ready_rx.recv().unwrap_or_else(|_| {
                Err(StartError::Core {
                    core,
                    reason: "executor exited during start-up".into(),
                })
            });
            threads.push(thread);
            match ready {
                Ok(listening) => {
                    if let (0, Some(addr)) = (core, listening.clients) {
                        // Port 0 resolves on core 0; the others join the same port.
                        bind_addr = addr;
                        local_addr = Some(addr);
                    }
                    admin_addr = admin_addr.or(listening.admin);
                }
                Err(e) => {
                    stop_started(&shared, threads);
                    return Err(e);
                }
            }
        }
        tracing::info!(cores, addr = ?local_addr, admin = ?admin_addr, "node started");
        Ok(Node {
            shared,
            threads,
            local_addr,
            admin_addr,
            shutdown_rx,
        })
    }

    /// The address clients connect to (None without a listener).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The admin HTTP port's address (`/metrics`, `/health`), when `[admin] port` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Number of executors.
    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// A handle for application threads.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Receives `()` when a client sent SHUTDOWN (the process owner then calls `shutdown`).
    pub fn shutdown_requested(&self) -> crossbeam_channel::Receiver<()> {
        self.shutdown_rx.clone()
    }

    /// Stops accepting, lets in-flight requests finish, closes connections, and joins every
    /// executor thread.
    pub fn shutdown(self) {
        stop_started(&self.shared, self.threads);
        tracing::info!("node stopped");
    }
}

fn stop_started(shared: &Arc<Shared>, threads: Vec<ExecutorThread<()>>) {
    for (core, mail) in shared.mesh.iter().enumerate().take(threads.len()) {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        if mail
            .send_blocking(Request::Ops {
                ops: vec![Op::Shutdown],
                reply_to: ReplyTo::Thread(tx),
            })
            .is_err()
        {
            tracing::debug!(core, "core already stopped");
        }
    }
    // Cores that were never started count as drained.
    let missing = shared.cores - threads.len();
    shared.cores_drained.fetch_add(missing, Ordering::SeqCst);
    for mail in &shared.mesh {
        mail.ring();
    }
    for t in threads {
        if let Err(e) = t.join() {
            tracing::error!(error = %e, "executor failed");
        }
    }
}

async fn executor_main(
    core_id: usize,
    shared: Arc<Shared>,
    inbox: mailbox::InboxParts<Request, crate::core::Response>,
    listen: Option<SocketAddr>,
    ready: crossbeam_channel::Sender<Ready>,
) {
    // No spin inside the inbox: measured (examples/mesh_rtt.rs) it cuts a cross-core round
    // trip from ~35 us to ~0.3 us, but with it the integration tests hung (connections
    // stopped being served on a 1-core node); glommio's own spin_before_park applies instead.
    let inbox = match inbox.bind(Duration::ZERO) {
        Ok(i) => i,
        Err(e) => {
            let _ = ready.send(Err(StartError::Core {
                core: core_id,
                reason: e.to_string(),
            }));
            return;
        }
    };
    let listener = match listen.map(TcpListener::bind) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            let _ = ready.send(Err(StartError::Listen {
                core: core_id,
                addr: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                reason: e.to_string(),
            }));
            return;
        }
        None => None,
    };
    // The admin port lives on core 0 (scrapes are rare; it asks the other cores by message).
    let admin_listener = match shared.config.admin.addr().filter(|_| core_id == 0) {
        Some(addr) => match TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = ready.send(Err(StartError::Admin {
                    addr,
                    reason: e.to_string(),
                }));
                return;
            }
        },
        None => None,
    };
    let mut engine_config = shared.config.engine.clone();
    engine_config.maxmemory_bytes = shard_share(engine_config.maxmemory_bytes, shared.cores);
    engine_config.seed = engine_config.seed.wrapping_add(core_id as u64);
    let client_port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let me = crate::cluster::me(&shared, client_port);
    let clustered = shared.config.cluster.enabled;
    let sockets = match (clustered, core_id) {
        (true, 0) => match crate::cluster::driver::bind(&shared, client_port) {
            Ok(s) => Some(s),
            Err(reason) => {
                let _ = ready.send(Err(StartError::Core {
                    core: core_id,
                    reason: format!("cluster: {reason}"),
                }));
                return;
            }
        },
        _ => None,
    };
    let view = if clustered {
        crate::cluster::View::cluster_start(sockets.as_ref().map_or(&me, |s| s.me()))
    } else {
        crate::cluster::View::single(&me)
    };
    let core = Rc::new(Core::new(
        core_id,
        Arc::clone(&shared),
        Shard::new(engine_config),
        view,
    ));
    if let Some(sockets) = sockets {
        if let Err(reason) = crate::cluster::driver::spawn(&core, sockets) {
            let _ = ready.send(Err(StartError::Core {
                core: core_id,
                reason: format!("cluster: {reason}"),
            }));
            return;
        }
    }
    let _ = ready.send(Ok(Listening {
        clients: listener.as_ref().and_then(|l| l.local_addr().ok()),
        admin: admin_listener.as_ref().and_then(|l| l.local_addr().ok()),
    }));

    if clustered {
        let cfg = &shared.config.cluster;
        let host = crate::cluster::migrate::new_host(shared.node_id, core_id, cfg.migration());
        *core.migrations.borrow_mut() = Some(host);
        let tick = Duration::from_millis(cfg.migration_tick_ms);
        let idle_tick = Duration::from_millis(cfg.migration_idle_tick_ms);
        runtime::spawn(crate::cluster::migrate::run(
            Rc::clone(&core),
            tick,
            idle_tick,
            crate::cluster::migrate::Pacing {
                duty_percent: cfg.migration_duty_percent,
                leave_duty_percent: cfg.migration_leave_duty_percent,
                pause_max: Duration::from_millis(cfg.migration_pause_max_ms),
            },
        ));
    }
    let inbox_task = runtime::spawn(Rc::clone(&core).serve_inbox(inbox));
    let bg = runtime::background_queue();
    if let Some(l) = admin_listener {
        // Low priority: scrapes yield to client requests.
        runtime::spawn_into(bg, crate::admin::serve(Rc::clone(&core), l));
    }
    {
        let core = Rc::clone(&core);
        runtime::spawn_into(bg, async move {
            let tick = Duration::from_millis(core.shared.config.net.background_tick_ms);
            while !core.shutdown.is_fired() {
                futures_lite::future::or(runtime::sleep(tick), core.shutdown.wait()).await;
                if !core.shutdown.is_fired() {
                    core.background_tick();
                }
            }
        });
    }
    if let Some(listener) = listener {
        loop {
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    core.shutdown.wait().await;
                    None
                })
                .await;
            match accepted {
                Some(Ok(stream)) => {
                    let c = Rc::clone(&core);
                    let span = tracing::debug_span!("conn", core = core_id);
                    runtime::spawn(crate::conn::serve(c, stream).instrument(span));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                None => break,
            }
        }
        drop(listener);
    } else {
        core.shutdown.wait().await;
    }
    // Connections finish what they have read, then close; wait for them (bounded). Yields
    // rather than sleeping on a timer: see the shutdown drain in `conn::serve`.
    let grace = Instant::now() + Duration::from_millis(shared.config.net.shutdown_grace_ms);
    while core.stats.connections.get() > 0 && Instant::now() < grace {
        runtime::yield_now().await;
    }
    shared.cores_drained.fetch_add(1, Ordering::SeqCst);
    for m in &shared.mesh {
        m.ring();
    }
    // Keep answering other cores until every core has drained, then stop (yielding, as above;
    // bounded by the other cores' grace).
    while shared.cores_drained.load(Ordering::SeqCst) < shared.cores {
        runtime::yield_now().await;
    }
    shared.mesh[core_id].ring();
    inbox_task.await;
}

impl NodeHandle {
    /// Runs one command given as RESP arguments (`args[0]` is the name) and blocks the calling
    /// thread for its reply. Data commands only (connection commands need a connection).
    /// Must not be called from an executor thread.
    pub fn execute(&self, args: Vec<Bytes>) -> Reply {
        // SCAN and DM.SCAN carry a node-wide cursor (core index in its top bits): they must go
        // through the raw-argument path that composes it, not straight to one shard.
        let node_cursor = args.first().is_some_and(|name| {
            name.eq_ignore_ascii_case(b"scan") || name.eq_ignore_ascii_case(b"dm.scan")
        });
        let core = match args.get(1) {
            Some(_) if !node_cursor => match Command::parse(&args) {
                Ok(c) => return self.execute_command(c),
                Err(e) => return Reply::Error(e),
            },
            _ => self.next_core(),
        };
        self.run(core, Err(args))
    }

    /// Runs one parsed data command on its owner core (split or fanned out as needed) and
    /// blocks the calling thread for the reply.
    pub fn execute_command(&self, cmd: Command) -> Reply {
        if self.shared.config.cluster.enabled {
            // Routing follows the cluster's table, which only the executors hold.
            let core = self.next_core();
            return self.run(core, Ok(cmd));
        }
        let keys = cmd.keys();
        let owners: Vec<usize> = keys.iter().map(|k| self.shared.owner(k)).collect();
        let single = owners
            .first()
            .copied()
            .filter(|o| owners.iter().all(|x| x == o));
        match single {
            // Fast path: one owner, no waiting: one message, executed by the inbox.
            Some(owner) if cmd.lock_wait_ms().is_none() => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let req = Request::Ops {
                    ops: vec![Op::Cmd(cmd)],
                    reply_to: ReplyTo::Thread(tx),
                };
                if self.shared.mesh[owner].send_blocking(req).is_err() {
                    return stopped();
                }
                rx.recv()
                    .ok()
                    .and_then(|mut v| v.pop())
                    .unwrap_or_else(stopped)
            }
            Some(owner) => self.run(owner, Ok(cmd)),
            None => {
                let core = self.next_core();
                self.run(core, Ok(cmd))
            }
        }
    }

    fn next_core(&self) -> usize {
        self.shared.next_run_core.fetch_add(1, Ordering::Relaxed) % self.shared.cores
    }

    fn run(&self, core: usize, command: Result<Command, Vec<Bytes>>) -> Reply {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.shared.mesh[core]
            .send_blocking(Request::Run { command, reply: tx })
            .is_err()
        {
            return stopped();
        }
        rx.recv().unwrap_or_else(|_| stopped())
    }

    /// Publishes to every core's subscribers, and in cluster mode to every member's (as the
    /// client command `PUBLISH` does); returns how many received it. A member that does not
    /// answer within `cluster.proxy_timeout_ms` counts as 0.
    pub fn publish(&self, channel: impl Into<Bytes>, message: impl Into<Bytes>) -> usize {
        let channel = channel.into();
        let message = message.into();
        if self.shared.config.cluster.enabled {
            // The fan-out to the other members runs on an executor (it uses the peer links).
            let (tx, rx) = crossbeam_channel::bounded(1);
            let req = Request::Publish {
                channel,
                message,
                reply: tx,
            };
            if self.shared.mesh[self.next_core()]
                .send_blocking(req)
                .is_err()
            {
                return 0;
            }
            return rx.recv().map_or(0, |n| usize::try_from(n).unwrap_or(0));
        }
        let mut pending = Vec::new();
        for mail in &self.shared.mesh {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let req = Request::Ops {
                ops: vec![Op::Publish {
                    channel: channel.clone(),
                    message: message.clone(),
                }],
                reply_to: ReplyTo::Thread(tx),
            };
            if mail.send_blocking(req).is_ok() {
                pending.push(rx);
            }
        }
        pending
            .into_iter()
            .filter_map(|rx| rx.recv().ok())
            .map(|v| match v.first() {
                Some(Reply::Int(n)) => *n as usize,
                _ => 0,
            })
            .sum()
    }

    /// Subscribes this application to `channels`; messages `(channel, payload)` arrive on the
    /// returned receiver (holding at most `net.pubsub_pending_max`; when it is full, further
    /// messages are dropped for it). Dropping the receiver ends the subscription.
    pub fn subscribe(&self, channels: Vec<Bytes>) -> crossbeam_channel::Receiver<(Bytes, Bytes)> {
        let (tx, rx) = crossbeam_channel::bounded(self.shared.config.net.pubsub_pending_max);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let req = Request::Ops {
            ops: vec![Op::SubscribeThread(ThreadSubscriber { channels, tx })],
            reply_to: ReplyTo::Thread(ack_tx),
        };
        if self.shared.mesh[0].send_blocking(req).is_ok() {
            let _ = ack_rx.recv();
        }
        rx
    }

    /// Number of executors.
    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// Cluster mode: starts a graceful leave (as `CLUSTER LEAVE`): this node's slots migrate
    /// away, then the node leaves the membership and signals `Node::shutdown_requested`.
    /// Returns false outside cluster mode or when the node has stopped.
    pub fn leave(&self) -> bool {
        self.shared.config.cluster.enabled
            && self.shared.mesh[0]
                .send_blocking(Request::ToDriver(crate::cluster::migrate::DriverJob::Leave))
                .is_ok()
    }

    /// The core that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        self.shared.owner(key)
    }
}

fn stopped() -> Reply {
    Reply::Error(CommandError::Other("server is shutting down".into()))
}
