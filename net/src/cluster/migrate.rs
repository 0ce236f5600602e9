//! Slot migration on each core: drives `tessera_cluster::CoreMigrations` over the core's engine
//! `Shard` (`tessera_cluster::store::ShardStore`).
//!
//! Inputs, all on the owning core's executor: a newer table ([`on_table`], after a view is
//! installed), a stream message relayed by the cluster task ([`on_message`]), a broken peer
//! link ([`on_link_lost`]), the core's migration timer ([`poll`], see [`run`]), and every
//! command this core executes ([`before`] gates it: `-TRYAGAIN` for writes during a handoff
//! and for every command once the target verified it, `-MOVED` once the slot is gone or not
//! yet ours; [`after`] tees what it wrote into the slot's stream). The
//! envelopes these return go to the cluster task on core 0, which owns the peer links
//! ([`emit`]).
//!
//! Redirects decided here travel as `CommandError::Other("MOVED ...")` from the owner core and
//! are turned back into Redis's raw error by the routing core ([`raw_redirect`]).
//!
//! Every call runs on the core that serves requests, so each is bounded
//! (`migration_turn_ops_max` entries streamed, `migration_drop_keys_max` keys dropped); while
//! [`CoreMigrations::busy`](tessera_cluster::CoreMigrations::busy) the timer task pauses
//! between turns so that migration calls take at most `migration_duty_percent` of the core's
//! time ([`run`], [`turn_pause`]). Calls are counted and timed per core (INFO shards
//! `migration_calls`, `migration_us_max`, `migration_calls_over_1ms`, and the pauses in
//! `migration_pauses` / `migration_pause_us_total`).
//!
//! While a slot streams out, the shard records the keys it removes on its own (evictions,
//! expiry: `Shard::record_removals`); they are teed into the stream as deletes before the next
//! write's tee and on every call here, so the target does not keep what the source evicted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_cluster::redis::{moved, TRYAGAIN};
use tessera_cluster::store::{removed_ops, tee_ops, ShardStore, Written};
use tessera_cluster::{CoreMigrations, Envelope, Gate, Message, NodeId, ShardAddr};
use tessera_engine::{key_slot, Command, CommandError, Reply, Slot, SlotCursor};

use crate::core::{Core, Request};
use crate::runtime;

/// One core's migrations.
pub type Host = CoreMigrations<SlotCursor>;

/// Work for the cluster task on core 0.
pub enum DriverJob {
    /// Forward a request (proxy routing).
    Forward(super::proxy::Job),
    /// Send these migration messages.
    Send(Vec<Envelope>),
    /// Leave the cluster gracefully (`CLUSTER LEAVE`, SIGTERM).
    Leave,
}

/// The migrations of core `core` of node `me` (cluster mode).
pub fn new_host(me: NodeId, core: usize, cfg: tessera_cluster::MigrationConfig) -> Host {
    CoreMigrations::new(
        ShardAddr {
            node: me,
            core: core as u16,
        },
        cfg,
    )
}

fn with_host<T>(core: &Core, f: impl FnOnce(&mut Host, &mut ShardStore<'_>) -> T) -> Option<T> {
    let started = Instant::now();
    let mut host = core.migrations.borrow_mut();
    let host = host.as_mut()?;
    let mut shard = core.shard.borrow_mut();
    let now = runtime::now_ms();
    tee_removed(host, &mut shard, now);
    let mut store = ShardStore::new(&mut shard, now);
    let out = f(host, &mut store);
    shard.record_removals(host.has_sources());
    drop(shard);
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    core.count_migration_call(us);
    Some(out)
}

/// Tees the keys the shard removed on its own (evicted, expired) into the streams of their
/// slots, as their current state (a delete, or a put if written again since).
fn tee_removed(host: &mut Host, shard: &mut tessera_engine::Shard, now_ms: u64) {
    for (slot, op) in removed_ops(shard, now_ms, |s| host.is_source(s)) {
        host.tee_removal(slot, op);
    }
}

/// A view with a newer table was installed on this core.
pub fn on_table(core: &Core) -> Vec<Envelope> {
    let Some(table) = core.cluster.borrow().table.clone() else {
        return Vec::new();
    };
    let now = runtime::now_ms();
    let env = with_host(core, |h, store| {
        if table.epoch > h.epoch() {
            h.on_table(&table, now, store)
        } else {
            Vec::new()
        }
    })
    .unwrap_or_default();
    wake(core);
    env
}

/// A stream message from peer `from`.
pub fn on_message(core: &Core, from: NodeId, msg: &Message) -> Vec<Envelope> {
    let now = runtime::now_ms();
    let env = with_host(core, |h, store| h.on_message(from, msg, now, store)).unwrap_or_default();
    wake(core);
    env
}

/// The link to or from `node` broke.
pub fn on_link_lost(core: &Core, node: NodeId) {
    let now = runtime::now_ms();
    with_host(core, |h, store| h.on_link_lost(node, now, store));
    wake(core);
}

/// The timer: restarts, next batches, handoffs, commit requests. Returns (envelopes, busy).
pub fn poll(core: &Core) -> (Vec<Envelope>, bool) {
    let now = runtime::now_ms();
    with_host(core, |h, store| {
        let out = h.poll(now, store);
        (out, h.busy())
    })
    .unwrap_or_default()
}

fn redirect(text: String) -> Reply {
    Reply::Error(CommandError::Other(text))
}

/// The `-MOVED` / `-TRYAGAIN` an owner core answers instead of executing `cmd` (cluster mode
/// only): the slot's table owner is not this core, or its migration gates the command.
/// `slot`: the slot of `cmd`'s keys when the caller already knows it (`None`: hashed here).
pub fn before(core: &Core, cmd: &Command, slot: Option<Slot>) -> Option<Reply> {
    let view = core.cluster.borrow();
    if !view.enabled {
        return None;
    }
    let host = core.migrations.borrow();
    let host = host.as_ref()?;
    let slot = if let Some(s) = slot {
        s
    } else {
        let keys = cmd.keys();
        let Some(first) = keys.first() else {
            // FLUSHALL, DM.DESTROY: not while a handoff waits for its verdict, nor while the
            // aborts of an earlier bulk write still wait for room ([`Outbox`]: bounded so).
            return match Written::of(cmd) {
                Written::Bulk
                    if host.bulk_gate() == Gate::TryAgain || core.migration_outbox.busy() =>
                {
                    Some(redirect(TRYAGAIN.into()))
                }
                _ => None,
            };
        };
        key_slot(first)
    };
    let table = view.table.as_ref()?;
    // The view's per-slot local owners, not the table's slot entry: the same answer without
    // a cache miss on ~800 KiB of entries per request.
    if view.local_core(slot) != Some(core.id) {
        // Routed by an older view than this core's (or to the wrong core): send the client
        // to the owner the table names.
        return Some(redirect(moved(slot, table.node(table.owner(slot).node))));
    }
    if host.is_idle() {
        // No slot of this core migrates: every slot it owns is served (the common case,
        // checked without the gate's two map lookups).
        return None;
    }
    // Reads are gated too: once the target verified, the commit table may have reached it and
    // it may have taken writes this copy does not see.
    let gate = if cmd.is_write() {
        host.write_gate(slot)
    } else {
        host.read_gate(slot)
    };
    match gate {
        Gate::Serve => None,
        Gate::TryAgain => Some(redirect(TRYAGAIN.into())),
        Gate::Moved(to) => {
            let node = table
                .node_index(to.node)
                .map(|i| table.node(i).clone())
                .or_else(|| view.live.iter().find(|n| n.id == to.node).cloned())?;
            Some(redirect(moved(slot, &node)))
        }
    }
}

/// What `cmd` may write, when this core has migrations that need teeing (`Written::Nothing`
/// for a read while a slot streams out: a read may expire keys, which [`after`] tees).
pub fn written(core: &Core, cmd: &Command) -> Option<Written> {
    let host = core.migrations.borrow();
    let host = host.as_ref()?;
    if host.is_idle() {
        return None;
    }
    match Written::of(cmd) {
        Written::Nothing if !host.has_sources() => None,
        w => Some(w),
    }
}

/// After a command that wrote `written` executed: tees the keys the shard removed on its own
/// meanwhile, then the new state of the written keys, into the streams of migrating slots;
/// after a bulk write restarts the streams.
pub fn after(core: &Core, written: &Written, now_ms: u64) {
    let env = {
        let mut guard = core.migrations.borrow_mut();
        let Some(host) = guard.as_mut() else {
            return;
        };
        let mut shard = core.shard.borrow_mut();
        let env = if *written == Written::Bulk {
            shard.take_removed();
            host.after_bulk_write(now_ms)
        } else {
            tee_removed(host, &mut shard, now_ms);
            for (slot, op) in tee_ops(&shard, written, now_ms, |s| host.is_source(s)) {
                host.tee(slot, op);
            }
            Vec::new()
        };
        shard.record_removals(host.has_sources());
        env
    };
    emit(core, env);
}

/// Hands envelopes to the cluster task (core 0) without waiting: the calls that cannot wait
/// (the aborts after a bulk write). When its queue is full they wait, in order, in this core's
/// [`Outbox`], drained by one task; migration messages are never dropped (a dropped handoff or
/// verdict left its source paused forever). While the outbox holds anything, [`emit_wait`]
/// waits for it (nothing overtakes it) and bulk writes get `-TRYAGAIN` ([`before`]), so it
/// holds at most one bulk write's aborts. The timer and the mailbox loop use [`emit_wait`],
/// which holds the producer back instead.
pub fn emit(core: &Core, env: Vec<Envelope>) {
    if env.is_empty() {
        return;
    }
    let Some(hand) = Hand::of(core) else {
        tracing::debug!("no cluster task: migration messages not sent");
        return;
    };
    core.migration_outbox.push(hand, env);
}

/// Hands envelopes to the cluster task (core 0), waiting while its queue (core 0's job queue,
/// `link_queue_frames` jobs, or core 0's mailbox, `runtime.mesh_capacity`) is full, and
/// behind what waits in this core's [`Outbox`]: the caller (the migration timer, the mailbox
/// loop) makes no more until they are queued.
pub async fn emit_wait(core: &Core, env: Vec<Envelope>) {
    if env.is_empty() {
        return;
    }
    while core.migration_outbox.busy() {
        runtime::yield_now().await;
    }
    if let Some(hand) = Hand::of(core) {
        hand.send_wait(env).await;
    } else {
        tracing::debug!("no cluster task: migration messages not sent");
    }
}

/// Where a core hands migration messages to the cluster task: core 0's job queue (on core 0)
/// or core 0's mailbox.
#[derive(Clone)]
pub enum Hand {
    /// The cluster task's job queue (on core 0).
    Jobs(std::rc::Rc<glommio::channels::local_channel::LocalSender<DriverJob>>),
    /// Core 0's mailbox (other cores).
    Mesh(crate::core::Mail),
}

impl Hand {
    fn of(core: &Core) -> Option<Hand> {
        if core.id == 0 {
            core.proxy.job_sender().map(Hand::Jobs)
        } else {
            Some(Hand::Mesh(core.shared.mesh[0].clone()))
        }
    }

    /// Queues `env` if there is room; hands it back when full (dropped only when the
    /// receiver is gone: shutting down).
    fn try_send(&self, env: Vec<Envelope>) -> Result<(), Vec<Envelope>> {
        match self {
            Hand::Jobs(tx) => match tx.try_send(DriverJob::Send(env)) {
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(
                    DriverJob::Send(env),
                ))) => Err(env),
                _ => Ok(()),
            },
            Hand::Mesh(mesh) => match mesh.try_send(Request::ToDriver(DriverJob::Send(env))) {
                Err(crossbeam_channel::TrySendError::Full(Request::ToDriver(DriverJob::Send(
                    env,
                )))) => Err(env),
                _ => Ok(()),
            },
        }
    }

    /// Queues `env`, waiting while the queue is full.
    async fn send_wait(&self, env: Vec<Envelope>) {
        match self {
            Hand::Jobs(tx) => {
                let _ = tx.send(DriverJob::Send(env)).await;
            }
            Hand::Mesh(mesh) => {
                mesh_send_wait(mesh.clone(), Request::ToDriver(DriverJob::Send(env))).await;
            }
        }
    }
}

/// One core's migration messages that found the cluster task's queue full ([`emit`]), in
/// order, with one task handing them on as room appears.
#[derive(Default)]
pub struct Outbox {
    queue: std::cell::RefCell<std::collections::VecDeque<Vec<Envelope>>>,
    /// The drain task runs (it holds a message in hand until it is queued).
    draining: std::cell::Cell<bool>,
}

impl Outbox {
    /// Whether messages wait here (or are being handed on): later ones must wait behind them,
    /// and a bulk write, whose aborts would wait here too, gets `-TRYAGAIN`.
    pub fn busy(&self) -> bool {
        self.draining.get()
    }

    /// Hands `env` on at once if nothing waits and there is room; else queues it behind the
    /// waiting ones and starts the drain task.
    pub fn push(self: &std::rc::Rc<Self>, hand: Hand, env: Vec<Envelope>) {
        let env = if self.draining.get() {
            env
        } else {
            match hand.try_send(env) {
                Ok(()) => return,
                Err(env) => env,
            }
        };
        self.queue.borrow_mut().push_back(env);
        if self.draining.replace(true) {
            return;
        }
        let this = std::rc::Rc::clone(self);
        runtime::spawn(async move {
            loop {
                let next = this.queue.borrow_mut().pop_front();
                let Some(env) = next else { break };
                hand.send_wait(env).await;
            }
            this.draining.set(false);
        });
    }
}

/// Sends `req` on core 0's mailbox, yielding while it is full ([`Hand::send_wait`] from
/// [`emit_wait`] and the [`Outbox`]'s task).
async fn mesh_send_wait(mesh: crate::core::Mail, mut req: Request) {
    loop {
        match mesh.try_send(req) {
            Err(crossbeam_channel::TrySendError::Full(r)) => {
                req = r;
                runtime::yield_now().await;
            }
            _ => return,
        }
    }
}

/// The core's migration timer: polls every `tick` until the core shuts down; while there is
/// more to do, again after a pause that keeps the migration calls of this core (the timer's
/// turns and the stream messages handled since the last one) within `duty_percent` of its
/// time ([`turn_pause`]; 100: at once, after the reactor's I/O: [`runtime::yield_to_io`]).
/// The time is wall-clock time: a call stretched because the core was descheduled in it (a
/// busy shared CPU) makes the next pause longer, up to `pacing.pause_max`, so the migration
/// backs off where the CPU is scarce. It waits for room for what it emitted before polling
/// again (backpressure on the sources). With no migration in any phase on this core it
/// sleeps `idle_tick`, unless [`wake`] ends the sleep.
///
/// Why a pause and not only a yield: a core that always has the next turn ready never sleeps,
/// so where its CPU is shared (several nodes or other processes on one CPU) the kernel
/// schedules it as a CPU hog, in whole time slices behind every other runnable task, and
/// requests wait for that (docs/benchmarks.md, "p99.9 during a join"). Between paced turns the
/// executor parks, and a request wakes it at once.
pub async fn run(core: std::rc::Rc<Core>, tick: Duration, idle_tick: Duration, pacing: Pacing) {
    let mut spent_mark = core.stats.migration_us_total.get();
    while !core.shutdown.is_fired() {
        let (env, busy) = poll(&core);
        emit_wait(&core, env).await;
        let spent_total = core.stats.migration_us_total.get();
        let spent_us = spent_total.wrapping_sub(spent_mark);
        spent_mark = spent_total;
        if !busy {
            if is_idle(&core) {
                // Nothing migrates here: sleep long, unless a table, stream message or link
                // loss wakes the task ([`wake`]; nothing else runs between `is_idle` and this
                // wait, and a wake during `emit_wait` found the state `is_idle` reads already
                // changed).
                let woken = core.migration_wake.borrow().wait();
                let stop = core.shutdown.wait();
                futures_lite::future::or(
                    futures_lite::future::or(runtime::sleep(idle_tick), woken),
                    stop,
                )
                .await;
            } else {
                futures_lite::future::or(runtime::sleep(tick), core.shutdown.wait()).await;
            }
            continue;
        }
        // A leaving node drains at its own share (`migration_leave_duty_percent`).
        let duty = if core.cluster.borrow().leaving {
            pacing.leave_duty_percent
        } else {
            pacing.duty_percent
        };
        let pause = turn_pause(spent_us, duty, pacing.pause_max);
        if pause.is_zero() {
            runtime::yield_to_io().await;
        } else {
            core.count_migration_pause(pause);
            futures_lite::future::or(runtime::sleep(pause), core.shutdown.wait()).await;
        }
    }
}

/// Whether this core has no migration in any phase (its migration task may sleep long).
fn is_idle(core: &Core) -> bool {
    core.migrations
        .borrow()
        .as_ref()
        .map_or(true, CoreMigrations::is_idle)
}

/// Wakes the migration task if it sleeps in its idle wait, after something that may have
/// started a migration on this core.
pub fn wake(core: &Core) {
    let waiting = core.migration_wake.borrow().waiters() > 0;
    if waiting {
        std::mem::take(&mut *core.migration_wake.borrow_mut()).fire();
    }
}

/// How the migration timer spaces its turns (`migration_duty_percent`,
/// `migration_leave_duty_percent`, `migration_pause_max_ms`).
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Share of the core's time migration calls may take, 1..=100.
    pub duty_percent: u64,
    /// The share while this node is leaving (draining its slots away), 1..=100.
    pub leave_duty_percent: u64,
    /// Longest pause between two turns.
    pub pause_max: Duration,
}

/// How long the migration timer waits before its next turn after migration calls took
/// `spent_us` since the previous one, so that they take at most `duty_percent` of the core's
/// time: `spent_us * (100 - duty_percent) / duty_percent`, at most `max` (a call stretched by
/// the core being descheduled must not stall the streams for too long). `duty_percent` is in
/// 1..=100; 100 never pauses.
pub fn turn_pause(spent_us: u64, duty_percent: u64, max: Duration) -> Duration {
    let duty = duty_percent.clamp(1, 100);
    let pause_us = spent_us.saturating_mul(100 - duty) / duty;
    Duration::from_micros(pause_us).min(max)
}

/// A redirect decided on an owner core (`ERR MOVED ...` / `ERR TRYAGAIN ...` as a reply) as
/// the raw error a cluster client expects.
pub fn raw_redirect(reply: &Reply) -> Option<Bytes> {
    match reply {
        Reply::Error(CommandError::Other(t))
            if t.starts_with("MOVED ") || t.starts_with("TRYAGAIN ") =>
        {
            Some(super::proxy::error_bytes(t))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages that find the cluster task's queue full ([`emit`], the aborts of a bulk write)
    /// wait in the core's outbox, in order and behind nothing spawned; while they wait the
    /// outbox is busy (a bulk write gets `-TRYAGAIN`, so at most one bulk write's aborts wait),
    /// and a sender that waits for it first ([`emit_wait`]) does not overtake them.
    #[test]
    fn full_queue_messages_wait_in_order_in_the_outbox() {
        use glommio::channels::local_channel;
        use tessera_cluster::To;
        let cfg = crate::runtime::RuntimeConfig {
            cores: 1,
            ..crate::runtime::RuntimeConfig::default()
        };
        let cpu = cfg.cpus()[0];
        let h = crate::runtime::spawn_executor(0, cpu, &cfg, move || async move {
            let (tx, rx) = local_channel::new_bounded(2);
            let hand = Hand::Jobs(std::rc::Rc::new(tx));
            let outbox = std::rc::Rc::new(Outbox::default());
            let job = |n: u64| {
                vec![Envelope {
                    to: To::Coordinator,
                    message: Message::Ping { nonce: n },
                }]
            };
            let mut busy = Vec::new();
            for n in 0..5 {
                outbox.push(hand.clone(), job(n));
                busy.push(outbox.busy());
            }
            let consumer = runtime::spawn(async move {
                let mut got = Vec::new();
                while let Some(DriverJob::Send(env)) = rx.recv().await {
                    if let Message::Ping { nonce } = env[0].message {
                        got.push(nonce);
                    }
                    if got.len() == 8 {
                        break;
                    }
                }
                got
            });
            // As `emit_wait` does: behind whatever waits in the outbox.
            while outbox.busy() {
                runtime::yield_now().await;
            }
            hand.send_wait(job(5)).await;
            outbox.push(hand.clone(), job(6));
            hand.send_wait(job(7)).await;
            let got = consumer.await.unwrap_or_default();
            (busy, outbox.busy(), got)
        })
        .unwrap();
        let (busy, busy_after, got) = h.join().unwrap();
        assert_eq!(
            busy,
            [false, false, true, true, true],
            "queued at once while there is room, then held in the outbox"
        );
        assert!(!busy_after, "drained");
        assert_eq!(got, (0..8).collect::<Vec<u64>>(), "all, in order");
    }

    #[test]
    fn turn_pause_keeps_the_calls_within_their_share() {
        let max = Duration::from_millis(100);
        // 25 %: a 300 us turn is followed by 900 us without migration calls.
        assert_eq!(turn_pause(300, 25, max), Duration::from_micros(900));
        assert_eq!(turn_pause(300, 50, max), Duration::from_micros(300));
        // 100 % never pauses; nothing spent, nothing to wait for.
        assert_eq!(turn_pause(300, 100, max), Duration::ZERO);
        assert_eq!(turn_pause(0, 25, max), Duration::ZERO);
        // A call stretched to 20 ms (the core was descheduled in it) backs off 60 ms; a longer
        // one waits at most `max`.
        assert_eq!(turn_pause(20_000, 25, max), Duration::from_millis(60));
        assert_eq!(turn_pause(40_000, 25, max), max);
        // Out-of-range shares are clamped, huge spans saturate.
        assert_eq!(turn_pause(10, 0, max), Duration::from_micros(990));
        assert_eq!(turn_pause(u64::MAX, 1, max), max);
    }
}
