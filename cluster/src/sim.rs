//! A deterministic simulator for the cluster's sans-I/O parts: membership (foca through
//! [`SwimMembership`]), table planning and distribution ([`TableKeeper`]), and slot migration
//! (one [`CoreMigrations`] per core over a [`MemStore`], exactly as a real node's cores drive
//! them), driven by simulated clients.
//!
//! Everything is a function of the seed: one `SmallRng`, a virtual clock in 10 ms steps, a
//! network that drops, delays, duplicates and reorders gossip datagrams, delivers peer messages
//! in order per link (they model TCP) but loses them and breaks the link under a partition, and
//! crashes and restarts nodes. After every step the invariants are checked:
//! - one writer per slot per epoch;
//! - no acknowledged write is lost and no deleted key comes back, for every slot that only ever
//!   moved by planned migration (slots of crashed or cut-off owners are excluded from then on);
//! - a read after commit sees every acknowledged write: a client read served by the newest
//!   table's owner, or by the shard a planned commit moved the slot away from (which must
//!   refuse it if it cannot know), returns the last acknowledged write (`client_read`);
//! - a migration reaches its handoff only with a contiguous stream, equal content and digest;
//! - epochs only grow on every node.
//!
//! A failure names its seed; `run(&SimConfig::new(seed))` replays it exactly.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::host::{message_cores, CoreMigrations, Envelope, Gate, HostStats, To};
use crate::keeper::{KeeperConfig, LeaveReady, Offer, TableKeeper};
use crate::membership::{
    Membership, MembershipConfig, MembershipEvent, MembershipOutput, SwimMembership,
};
use crate::migration::{MemStore, MigrationConfig, ShardAddr, SlotStore, SourcePhase};
use crate::node::{NodeId, NodeInfo};
use crate::partition::{PartitionTable, SlotState};
use crate::planner::PlannerConfig;
use crate::wire::{
    encode, AbortReason, Entry, FrameDecoder, FrameError, Message, StreamOp, WireConfig,
};
use crate::{key_slot, Slot};

/// One simulation's parameters; everything else derives from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Nodes at start (a further one joins, one leaves gracefully).
    pub nodes: usize,
    /// Simulated duration in milliseconds (faults stop at 60% of it, leaving time to settle).
    pub duration_ms: u64,
    /// Probability a gossip datagram is dropped.
    pub drop: f64,
    /// Probability a gossip datagram is delivered twice.
    pub duplicate: f64,
    /// Largest one-way delay, milliseconds (random per message: this reorders datagrams).
    pub delay_ms_max: u64,
    /// Distinct client keys (few keys: many overwrites and deletes per key).
    pub keys: usize,
    /// Partitions and a crash/restart (off: only planned changes, a join and a graceful leave).
    pub faults: bool,
    /// Partitions may also cut one pair of nodes from each other (both directions) while each
    /// still reaches the rest (off by default, so the seeds swept before it replay the same).
    pub pair_cuts: bool,
    /// A scripted fault (the lagging-coordinator scenario, `cluster/README.md`): from this
    /// time, at the first step where the newest table has a migration whose source and target
    /// are both other than the table's coordinator, cut that coordinator from the target only,
    /// for `lagging_cut_ms`.
    pub lagging_cut_at_ms: Option<u64>,
    /// How long the scripted cut lasts.
    pub lagging_cut_ms: u64,
    /// Process pauses instead of partitions (off by default, so older seeds replay the same):
    /// now and then a node stops handling anything (timers, datagrams, peer messages, clients)
    /// for 0.3-5 s, then resumes with its clock jumped and its queued input delivered in a
    /// burst, before or after its first timer (drawn per pause): what a starved or SIGSTOPped
    /// process sees. Crashes, the join, the leave and datagram loss stay as in the default
    /// sweep; owners keep their slots for `down_grace_ms` (as `tessera-net` does). A paused
    /// node is up, so with this flag any acknowledged write lost other than by a crash fails
    /// the run ("nothing acknowledged is lost while its node is up").
    pub pauses: bool,
    /// The coordinator lease (`KeeperConfig::lease_ms`; 0: none).
    pub lease_ms: u64,
    /// The graceful leave is the coordinator's (the one that computed the newest table),
    /// not another node's, and node 2 is a third seed (off by default, so older seeds replay
    /// the same): a leaving coordinator plans and pushes its own last commit table.
    pub coordinator_leaves: bool,
}

impl SimConfig {
    /// The default scenario for `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            duration_ms: 20_000,
            drop: 0.05,
            duplicate: 0.02,
            delay_ms_max: 30,
            keys: 300,
            faults: true,
            pair_cuts: false,
            lagging_cut_at_ms: None,
            lagging_cut_ms: 0,
            pauses: false,
            // As tessera-net sets it: `suspect_to_down_ms` of the sim's membership (1500,
            // failure detection about 2000), three hint intervals.
            lease_ms: 1500,
            coordinator_leaves: false,
        }
    }
}

/// What a successful run did (so a sweep can show it exercised something).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Client writes acknowledged.
    pub writes_acked: u64,
    /// Client writes refused (`-TRYAGAIN`, `-MOVED` twice, `-CLUSTERDOWN`).
    pub writes_refused: u64,
    /// Migrations that reached commit on the target.
    pub migrations_committed: u64,
    /// Migrations aborted (and usually restarted).
    pub migrations_aborted: u64,
    /// Highest epoch reached.
    pub final_epoch: u64,
    /// Slots whose data was lost the documented way (owner crashed, or declared down and its
    /// slots reassigned, or a write taken by a cut-off owner under an old table): their
    /// expectations are forgotten at that moment and tracked again from the next write.
    pub slot_losses: u64,
    /// Writes acknowledged by an owner whose table was already superseded for that slot.
    pub stale_writes: u64,
    /// Client reads served and checked against the acknowledged writes.
    pub reads_checked: u64,
    /// Reads served by a shard that lost the slot other than by a planned commit (cut off,
    /// declared down): not checked (PA, see README).
    pub stale_reads: u64,
    /// Pair cuts made (random with `pair_cuts`, or the scripted lagging cut).
    pub pair_cuts: u64,
    /// Steps during which live nodes followed different coordinators.
    pub coordinator_split_steps: u64,
    /// Of those, steps during a pair cut.
    pub coordinator_split_steps_in_pair_cut: u64,
    /// Tables published by a coordinator while a pair cut separated it from a table member.
    pub published_across_pair_cut: u64,
    /// Process pauses made (`pauses`).
    pub pauses: u64,
    /// Messages (datagrams and peer frames) queued for paused nodes and delivered on resume.
    pub held_messages: u64,
    /// Tables installed by a node with the newest epoch number but another coordinator than
    /// the newest table's (two coordinators minted one epoch: a split view).
    pub same_epoch_tables: u64,
    /// Graceful leaves that exited once every member of the leaver's view held its last table
    /// (`TableKeeper::held_by_all`), and those that exited after the bounded wait instead.
    pub leaves_confirmed: u64,
    /// See `leaves_confirmed`.
    pub leaves_unconfirmed: u64,
    /// Nodes that heard they were declared down and rejoined under a renewed identity.
    pub rejoins: u64,
    /// Graceful leaves of the node that computed the newest table (`coordinator_leaves`).
    pub coordinator_leaves: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulation seed {seed} failed at {time_ms} ms: {what}")]
pub struct SimFailure {
    /// Replay with `run(&SimConfig::new(seed))`.
    pub seed: u64,
    /// Virtual time of the failing step.
    pub time_ms: u64,
    /// The invariant and the details.
    pub what: String,
}

const STEP_MS: u64 = 10;
/// A drained leaver's wait for every member to hold its last table: tessera-net's default
/// `leave_confirm_ms`.
const LEAVE_CONFIRM_MS: u64 = 5000;
/// How long the cluster gets, after the scenario, to finish every migration and agree.
const SETTLE_MS: u64 = 15_000;
const CORES: u16 = 2;

type Cursor = Option<crate::migration::MapKey>;

/// One core: its data and its migrations.
struct SimCore {
    store: MemStore,
    host: CoreMigrations<Cursor>,
}

fn sim_migration_config() -> MigrationConfig {
    MigrationConfig {
        batch_ops_max: 8,
        window_ops_max: 32,
        pump_messages_max: 4,
        restart_delay_ms: 100,
        ..MigrationConfig::default()
    }
}

fn add_stats(total: &mut HostStats, s: &HostStats) {
    total.sources_started += s.sources_started;
    total.sources_committed += s.sources_committed;
    total.sources_aborted += s.sources_aborted;
    total.targets_committed += s.targets_committed;
    total.targets_aborted += s.targets_aborted;
    total.streams_refused += s.streams_refused;
    total.ops_teed += s.ops_teed;
}

struct SimNode {
    info: NodeInfo,
    up: bool,
    membership: SwimMembership,
    keeper: TableKeeper,
    cores: Vec<SimCore>,
    leaving: bool,
    next_hint_ms: u64,
    next_plan_ms: u64,
    last_epoch: u64,
    /// A process pause: until when, and whether the queued input is handled before the
    /// first timer on resume.
    paused: Option<(u64, bool)>,
    /// Input that arrived while paused, in arrival order.
    held: Vec<Payload>,
}

/// A partition: who cannot reach whom.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cut {
    /// One node cut from all the others.
    Isolate(NodeId),
    /// Two nodes cut from each other (both directions); each still reaches the rest.
    Pair(NodeId, NodeId),
}

#[derive(PartialEq, Eq)]
enum Payload {
    /// A datagram: sender, receiver, bytes.
    Gossip(SocketAddr, SocketAddr, Vec<u8>),
    /// A peer message as its encoded frame (every message goes through the real codec).
    Peer {
        from: NodeId,
        to: NodeId,
        frame: Vec<u8>,
    },
}

struct Event {
    at: u64,
    seq: u64,
    payload: Payload,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Min-heap on (at, seq).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Put(u64),
    Deleted(u64),
}

struct Sim {
    /// `TESSERA_SIM_TRACE_SLOT`: print what happens to one slot (debugging a failing seed).
    trace: Option<Slot>,
    cfg: SimConfig,
    rng: SmallRng,
    now: u64,
    nodes: Vec<SimNode>,
    events: BinaryHeap<Event>,
    seq: u64,
    /// Per directed link: the last scheduled delivery (keeps peer links FIFO).
    link_clock: HashMap<(NodeId, NodeId), u64>,
    /// The current partition (if any), and when it heals.
    partition: Option<(Cut, u64)>,
    version: u64,
    /// Per (map, key): what the last acknowledged write left.
    expect: BTreeMap<crate::migration::MapKey, Expect>,
    writers: HashMap<(Slot, u64, NodeId), ShardAddr>,
    /// Migrations whose handoff the target verified: only these may move data by commit.
    verified: std::collections::HashSet<crate::MigrationId>,
    /// Verified migrations whose target crashed before the commit: a commit naming one moves
    /// the slot to a dead copy, the documented crash loss.
    crashed_targets: std::collections::HashSet<crate::MigrationId>,
    auth: Option<PartitionTable>,
    /// Per slot: the shard the newest table's last change moved it away from by a planned
    /// commit (so a read there must still see every acknowledged write, or be refused).
    committed_from: HashMap<Slot, ShardAddr>,
    /// The key of the last acknowledged write (half the reads read it back: read-your-writes).
    last_written: Option<crate::migration::MapKey>,
    /// Client reads draw from their own generator: they change nothing, so a seed replays
    /// the same run with or without them.
    read_rng: SmallRng,
    report: SimReport,
    /// Migration counters of nodes replaced by a restart.
    retired: HostStats,
    /// Leavers that exited once every member of their view held their last table, with that
    /// view (id, generation): while such a member is up in that generation, no table it routes
    /// by may give the leaver a slot (`check_left`).
    confirmed_left: Vec<(NodeId, Vec<(NodeId, u64)>)>,
}

fn node_info(i: usize, generation: u64) -> NodeInfo {
    let mut id = [0u8; 20];
    id[0] = 0x10 + i as u8;
    id[19] = i as u8;
    NodeInfo {
        id: NodeId(id),
        host: format!("127.0.0.{}", i + 1),
        client_port: 7000,
        peer_port: 17000,
        gossip_port: 7946,
        cores: CORES,
        generation,
    }
}

fn gossip_addr(info: &NodeInfo) -> SocketAddr {
    SocketAddr::new(
        info.host.parse().expect("sim hosts are IPs"),
        info.gossip_port,
    )
}

impl Sim {
    fn new_node(&mut self, i: usize) -> SimNode {
        // The generation is the start time: bumped by every restart, and the node's age. With
        // pauses, in microseconds and staggered per node as real start times are (a node that
        // rejoins after being declared down renews it by one and stays the oldest, so it is
        // coordinator again, as in tessera-net); before, all first nodes had generation 1.
        let generation = if self.cfg.pauses {
            (self.now + 1) * 1000 + 100 * i as u64
        } else {
            self.now + 1
        };
        let info = node_info(i, generation);
        let mcfg = MembershipConfig {
            seeds: (0..if self.cfg.coordinator_leaves { 3 } else { 2 })
                .map(|j| gossip_addr(&node_info(j, 0)))
                .collect(),
            seed_retry_ms: 500,
            member_count_quorum: 2,
            probe_period_ms: 500,
            probe_rtt_ms: 200,
            suspect_to_down_ms: 1500,
            max_packet_bytes: 1400,
            down_announce_ms: 2000,
            secret: b"sim cluster secret".to_vec(),
        };
        let mut membership =
            SwimMembership::new(&info, mcfg, self.rng.random()).expect("valid sim config");
        let mut out = MembershipOutput::default();
        membership.start(self.now, &mut out);
        let node = SimNode {
            keeper: TableKeeper::new(
                info.id,
                KeeperConfig {
                    planner: PlannerConfig::default(),
                    first_plan_delay_ms: 1000,
                    // Crashed and cut-off owners lose their slots at once here (the sweeps
                    // check the loss bookkeeping); the grace has its own keeper test. With
                    // pauses, tessera-net's default: a paused node is not a dead one.
                    down_grace_ms: if self.cfg.pauses { 10_000 } else { 0 },
                    lease_ms: self.cfg.lease_ms,
                    leave_confirm_ms: LEAVE_CONFIRM_MS,
                },
                self.now,
            ),
            cores: (0..CORES)
                .map(|core| SimCore {
                    store: MemStore::default(),
                    host: CoreMigrations::new(
                        ShardAddr {
                            node: info.id,
                            core,
                        },
                        sim_migration_config(),
                    ),
                })
                .collect(),
            info,
            up: true,
            membership,
            leaving: false,
            next_hint_ms: self.now,
            next_plan_ms: self.now,
            last_epoch: 0,
            paused: None,
            held: Vec::new(),
        };
        self.send_gossip(gossip_addr(&node.info), out);
        node
    }

    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        match &self.partition {
            Some((Cut::Isolate(v), _)) => (a == *v) != (b == *v),
            Some((Cut::Pair(x, y), _)) => (a == *x && b == *y) || (a == *y && b == *x),
            None => false,
        }
    }

    fn send_gossip(&mut self, from: SocketAddr, out: MembershipOutput) {
        for (to, data) in out.datagrams {
            if self.rng.random_bool(self.cfg.drop) {
                continue;
            }
            let copies = if self.rng.random_bool(self.cfg.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.rng.random_range(0..=self.cfg.delay_ms_max);
                self.seq += 1;
                self.events.push(Event {
                    at,
                    seq: self.seq,
                    payload: Payload::Gossip(from, to, data.to_vec()),
                });
            }
        }
    }

    fn send_peer(&mut self, from: NodeId, to: NodeId, msg: &Message) {
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        encode(msg, &mut buf, &WireConfig::default()).expect("sim messages fit a frame");
        let frame = buf.to_vec();
        if from == to {
            // Local delivery (the coordinator talking to itself): no link.
            self.seq += 1;
            self.events.push(Event {
                at: self.now,
                seq: self.seq,
                payload: Payload::Peer {
                    from,
                    to,
                    frame: frame.clone(),
                },
            });
            return;
        }
        if self.cut(from, to) {
            return;
        }
        let delay = self.rng.random_range(1..=self.cfg.delay_ms_max.max(1));
        let clock = self.link_clock.entry((from, to)).or_insert(0);
        let at = (self.now + delay).max(*clock);
        *clock = at;
        self.seq += 1;
        self.events.push(Event {
            at,
            seq: self.seq,
            payload: Payload::Peer { from, to, frame },
        });
    }

    fn trace(&self, slot: Slot, what: impl FnOnce() -> String) {
        if self.trace == Some(slot) {
            eprintln!("[{:>6} ms] slot {slot}: {}", self.now, what());
        }
    }

    /// With a traced slot: node `i`'s membership events.
    /// Counts a node's renewals (`rejoins`) and prints its membership events when tracing.
    fn trace_events(&mut self, i: usize, out: &MembershipOutput) {
        self.report.rejoins += out
            .events
            .iter()
            .filter(|e| matches!(e, MembershipEvent::Rejoined(_)))
            .count() as u64;
        if let (Some(ts), false) = (self.trace, out.events.is_empty()) {
            self.trace(ts, || {
                let ev: Vec<String> = out
                    .events
                    .iter()
                    .map(|e| match e {
                        MembershipEvent::Up(n) => format!("up {:?}/{}", n.id, n.generation),
                        MembershipEvent::Down(n) => format!("down {:?}/{}", n.id, n.generation),
                        MembershipEvent::Rejoined(n) => format!("rejoined as {}", n.generation),
                        other => format!("{other:?}"),
                    })
                    .collect();
                format!("node {i} membership: {ev:?}")
            });
        }
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.info.id == id && n.up)
    }

    fn fail(&self, what: String) -> SimFailure {
        SimFailure {
            seed: self.cfg.seed,
            time_ms: self.now,
            what,
        }
    }

    /// Delivers every event due now.
    fn deliver(&mut self) -> Result<(), SimFailure> {
        while self.events.peek().is_some_and(|e| e.at <= self.now) {
            let ev = self.events.pop().expect("peeked");
            self.dispatch(ev.payload, false)?;
        }
        Ok(())
    }

    /// Handles one datagram or peer frame at its receiver, or queues it there while the
    /// receiver is paused (`resumed`: it was queued, the network already judged it).
    fn dispatch(&mut self, payload: Payload, resumed: bool) -> Result<(), SimFailure> {
        {
            match payload {
                Payload::Gossip(from, to, data) => {
                    let Some(i) = self
                        .nodes
                        .iter()
                        .position(|n| n.up && gossip_addr(&n.info) == to)
                    else {
                        return Ok(());
                    };
                    // A partition drops datagrams across it (the sender is not known for
                    // datagrams, so the receiver side decides: only same-side delivery).
                    match &self.partition {
                        _ if resumed => {}
                        Some((Cut::Isolate(victim), _)) => {
                            let here = self.nodes[i].info.id == *victim;
                            // Datagrams from the other side are dropped with high probability.
                            if self.rng.random_bool(0.9) && here != self.rng.random_bool(0.5) {
                                return Ok(());
                            }
                        }
                        // A pair cut knows both ends: every datagram between them is lost
                        // (no draw, so it changes nothing else in the run).
                        Some((Cut::Pair(x, y), _)) => {
                            let addr = |id: &NodeId| {
                                self.nodes
                                    .iter()
                                    .find(|n| n.info.id == *id)
                                    .map(|n| gossip_addr(&n.info))
                            };
                            let (x, y) = (addr(x), addr(y));
                            if (Some(from) == x && Some(to) == y)
                                || (Some(from) == y && Some(to) == x)
                            {
                                return Ok(());
                            }
                        }
                        None => {}
                    }
                    if self.nodes[i].paused.is_some() {
                        self.report.held_messages += 1;
                        self.nodes[i].held.push(Payload::Gossip(from, to, data));
                        return Ok(());
                    }
                    let mut out = MembershipOutput::default();
                    let _ = self.nodes[i]
                        .membership
                        .handle_datagram(self.now, &data, &mut out);
                    let changed = !out.events.is_empty();
                    self.trace_events(i, &out);
                    self.send_gossip(to, out);
                    if changed {
                        self.nodes[i].next_plan_ms = self.now;
                    }
                }
                Payload::Peer { from, to, frame } => {
                    if !resumed && from != to && self.cut(from, to) {
                        return Ok(());
                    }
                    if let Some(i) = self.index_of(to) {
                        if self.nodes[i].paused.is_some() {
                            self.report.held_messages += 1;
                            self.nodes[i].held.push(Payload::Peer { from, to, frame });
                            return Ok(());
                        }
                    }
                    let mut dec = FrameDecoder::new(WireConfig::default());
                    dec.extend(&frame);
                    let msg = match dec.next_frame() {
                        Ok(Some(f)) => f.message.to_owned_message(),
                        Ok(None) => Err(FrameError::Poisoned),
                        Err(e) => Err(e),
                    };
                    let msg = msg.map_err(|e| self.fail(format!("peer frame: {e}")))?;
                    if let Some(i) = self.index_of(to) {
                        self.on_peer(i, from, msg)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses a random node that is up and not paused yet (at most two at once).
    fn pause_start(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].paused.is_none())
            .collect();
        if up.is_empty() || self.nodes.iter().filter(|n| n.paused.is_some()).count() >= 2 {
            return;
        }
        let i = up[self.rng.random_range(0..up.len())];
        let until = self.now + self.rng.random_range(300..=5000);
        let input_first = self.rng.random_bool(0.5);
        self.nodes[i].paused = Some((until, input_first));
        self.report.pauses += 1;
        if let Some(ts) = self.trace {
            self.trace(ts, || {
                format!("node {i} paused until {until} (input first on resume: {input_first})")
            });
        }
    }

    /// Resumes every paused node whose pause is over (all of them with `all`): its clock has
    /// jumped, its queued input comes in a burst, before or after its first timer.
    fn resume_due(&mut self, all: bool) -> Result<(), SimFailure> {
        for i in 0..self.nodes.len() {
            let Some((until, input_first)) = self.nodes[i].paused else {
                continue;
            };
            if !self.nodes[i].up {
                self.nodes[i].paused = None;
                self.nodes[i].held.clear();
                continue;
            }
            if !all && self.now < until {
                continue;
            }
            self.nodes[i].paused = None;
            self.trace.inspect(|&ts| {
                self.trace(ts, || {
                    format!(
                        "node {i} resumes, {} messages queued",
                        self.nodes[i].held.len()
                    )
                });
            });
            if !input_first {
                self.step_node(i)?;
            }
            for p in std::mem::take(&mut self.nodes[i].held) {
                self.dispatch(p, true)?;
            }
            // Until the next time step nothing else happens: a paused node's next timer
            // (in the main loop) runs right after the burst.
        }
        Ok(())
    }

    fn on_peer(&mut self, i: usize, from: NodeId, msg: Message) -> Result<(), SimFailure> {
        let me = self.nodes[i].info.id;
        match msg {
            Message::TablePush(table) => {
                let coord = self.nodes[i].membership.coordinator();
                if self.nodes[i].keeper.offer(table, coord) == Offer::Accepted {
                    self.installed(i)?;
                }
            }
            Message::TableEpoch {
                epoch,
                coordinator,
                at_ms,
                echo_ms,
            } if self.nodes[i]
                .keeper
                .observe_hint(from, epoch, coordinator, at_ms, echo_ms) =>
            {
                let have = self.nodes[i].keeper.epoch();
                self.send_peer(me, from, &Message::TableFetch { have_epoch: have });
            }
            Message::TableFetch { have_epoch } => {
                if let Some(t) = self.nodes[i].keeper.table_for_fetch(have_epoch) {
                    let t = t.clone();
                    self.send_peer(me, from, &Message::TablePush(t));
                }
            }
            Message::Drain { node } => {
                self.nodes[i].keeper.drain(node);
                self.nodes[i].next_plan_ms = self.now;
            }
            Message::CommitRequest { id, slot } => {
                self.nodes[i].keeper.request_commit(slot, id);
            }
            Message::MigrateBatch(_)
            | Message::Handoff { .. }
            | Message::MigrateAck { .. }
            | Message::HandoffAck { .. }
            | Message::Abort { .. } => self.on_migration(i, from, &msg)?,
            _ => {}
        }
        Ok(())
    }

    fn coordinator_of(&self, i: usize) -> NodeId {
        self.nodes[i].membership.coordinator()
    }

    /// A migration message for node `i`: to the cores its table names (`message_cores`), as a
    /// real node routes it, with the stream invariants checked on the way.
    fn on_migration(&mut self, i: usize, from: NodeId, msg: &Message) -> Result<(), SimFailure> {
        let me = self.nodes[i].info.id;
        let (slot, id) = match msg {
            Message::MigrateBatch(b) => (b.slot, b.id),
            Message::Handoff { id, slot, .. }
            | Message::MigrateAck { id, slot, .. }
            | Message::HandoffAck { id, slot, .. }
            | Message::Abort { id, slot, .. } => (*slot, *id),
            _ => return Ok(()),
        };
        let now = self.now;
        for core in message_cores(self.nodes[i].keeper.table(), me, msg) {
            let c = &mut self.nodes[i].cores[usize::from(core)];
            let had_target = c.host.target(slot).is_some_and(|t| t.id == id);
            let before = c
                .host
                .source(slot)
                .filter(|s| s.id == id)
                .map(crate::migration::SourceMigration::phase);
            let out = c.host.on_message(from, msg, now, &mut c.store);
            let after = c
                .host
                .source(slot)
                .filter(|s| s.id == id)
                .map(crate::migration::SourceMigration::phase);
            if self.trace == Some(slot) {
                eprintln!(
                    "[{now:>6} ms] slot {slot}: node {i} core {core} gets {:?} from {from:?}: source {before:?} -> {after:?}, target {:?}, sends {:?}",
                    msg.kind(),
                    c.host.target(slot).map(|t| (t.phase(), t.applied_ops())),
                    out.iter().map(|e| e.message.kind()).collect::<Vec<_>>()
                );
            }
            // Peer links are FIFO: a live target never sees a sequence gap.
            if had_target
                && out.iter().any(|e| {
                    matches!(
                        e.message,
                        Message::Abort {
                            reason: AbortReason::Sequence,
                            ..
                        }
                    )
                })
            {
                return Err(self.fail(format!(
                    "sequence gap on a FIFO link: slot {slot} from {from:?}"
                )));
            }
            if before == Some(SourcePhase::HandingOff)
                && after == Some(SourcePhase::AwaitingCommit)
                && self.check_handoff(i, usize::from(core), from, slot)?
            {
                self.verified.insert(id);
            }
            self.send_all(i, out);
        }
        Ok(())
    }

    /// Sends what a core of node `i` emitted. A message for a node this one has no link to (cut
    /// off, down) is not sent and that link counts as lost, as a real driver reports it.
    fn send_all(&mut self, i: usize, out: Vec<Envelope>) {
        let me = self.nodes[i].info.id;
        let mut lost = Vec::new();
        for env in out {
            match env.to {
                To::Node(to) => {
                    if to != me && (self.cut(me, to) || self.index_of(to).is_none()) {
                        if !lost.contains(&to) {
                            lost.push(to);
                        }
                        continue;
                    }
                    self.send_peer(me, to, &env.message);
                }
                To::Coordinator => {
                    let coordinator = self.coordinator_of(i);
                    self.send_peer(me, coordinator, &env.message);
                }
            }
        }
        let now = self.now;
        for to in lost {
            for c in &mut self.nodes[i].cores {
                c.host.on_link_lost(to, now, &mut c.store);
            }
        }
    }

    /// The source of `slot` on core `src_core` of node `i` was verified by the target on node
    /// `target`: the stream was contiguous and both sides hold the same content and digest.
    /// Returns whether the target holds the verified copy (so a commit may name it).
    fn check_handoff(
        &self,
        i: usize,
        src_core: usize,
        target: NodeId,
        slot: Slot,
    ) -> Result<bool, SimFailure> {
        let Some(j) = self.index_of(target) else {
            return Ok(false);
        };
        let s = self.nodes[i].cores[src_core]
            .host
            .source(slot)
            .expect("just verified");
        let found = self.nodes[j]
            .cores
            .iter()
            .find_map(|c| c.host.target(slot).filter(|t| t.id == s.id).map(|t| (c, t)));
        let Some((dst_core, t)) = found else {
            // Legitimate only if a newer table already made the target abandon the migration
            // (the verdict was in flight); then no commit can name it.
            let still_planned = self.nodes[j].keeper.table().is_some_and(
                |tb| matches!(tb.entry(slot).state, SlotState::Migrating { id, .. } if id == s.id),
            );
            if still_planned {
                return Err(self.fail(format!(
                    "slot {slot}: handoff acked by a node with no target"
                )));
            }
            return Ok(false);
        };
        if t.applied_ops() != s.sent_ops() {
            return Err(self.fail(format!(
                "slot {slot}: target applied {} ops, source sent {}",
                t.applied_ops(),
                s.sent_ops()
            )));
        }
        let src = &self.nodes[i].cores[src_core].store;
        let dst = &dst_core.store;
        if src.slots.get(&slot) != dst.slots.get(&slot)
            || src.digest(slot, self.now) != dst.digest(slot, self.now)
        {
            let keys = |m: &MemStore| {
                m.slots.get(&slot).map(|s| {
                    s.values()
                        .map(|e| (e.map.clone(), e.key.clone(), e.version))
                        .collect::<Vec<_>>()
                })
            };
            return Err(self.fail(format!(
                "slot {slot}: content differs at handoff: source {:?} target {:?} (target phase {:?}, core {}, src core {src_core})",
                keys(src),
                keys(dst),
                t.phase(),
                t.me.core
            )));
        }
        Ok(true)
    }

    /// Node `i` installed a new table: start, advance or finish its migrations.
    fn installed(&mut self, i: usize) -> Result<(), SimFailure> {
        let epoch = self.nodes[i].keeper.epoch();
        if epoch < self.nodes[i].last_epoch {
            return Err(self.fail(format!("epoch went back on node {i}")));
        }
        self.nodes[i].last_epoch = epoch;
        let table = self.nodes[i].keeper.table().expect("installed").clone();
        if let Some(ts) = self.trace {
            let e = table.entry(ts);
            self.trace(ts, || {
                format!(
                    "node {i} installs epoch {} (coord {:?}): primary {:?} state {:?}",
                    table.epoch,
                    table.coordinator,
                    shard_addr(&table, e.primary),
                    e.state
                )
            });
        }
        if older_than(self.auth.as_ref(), table.epoch) {
            self.new_auth(&table)?;
        } else if self
            .auth
            .as_ref()
            .is_some_and(|a| a.epoch == table.epoch && a.coordinator != table.coordinator)
        {
            self.report.same_epoch_tables += 1;
        }
        let now = self.now;
        for core in 0..self.nodes[i].cores.len() {
            let c = &mut self.nodes[i].cores[core];
            let out = c.host.on_table(&table, now, &mut c.store);
            self.send_all(i, out);
        }
        Ok(())
    }

    /// A table newer than any seen: slots reassigned other than by a planned commit lost their
    /// data (their owner died or was cut off) and leave the durability checks.
    fn new_auth(&mut self, table: &PartitionTable) -> Result<(), SimFailure> {
        let mut lost = BTreeSet::new();
        let mut crash_lost = BTreeSet::new();
        if let Some(prev) = &self.auth {
            for slot in 0..crate::SLOT_COUNT {
                let slot = slot as Slot;
                let (p, n) = (prev.entry(slot), table.entry(slot));
                let p_owner = shard_addr(prev, p.primary);
                let n_owner = shard_addr(table, n.primary);
                if p_owner == n_owner {
                    continue;
                }
                // Planned: a commit of a migration whose handoff was verified. A migration target
                // promoted because its source was declared down holds partial data: a loss.
                let planned = matches!(p.state, SlotState::Migrating { to, id, .. }
                    if shard_addr(prev, to) == n_owner && self.verified.contains(&id));
                if self.trace == Some(slot) {
                    eprintln!(
                        "[{:>6} ms] slot {slot}: newest table {} -> {}: owner {p_owner:?} -> {n_owner:?}, planned {planned}",
                        self.now, prev.epoch, table.epoch
                    );
                }
                let crashed = matches!(p.state, SlotState::Migrating { to, id, .. }
                    if shard_addr(prev, to) == n_owner && self.crashed_targets.contains(&id));
                if planned {
                    self.committed_from.insert(slot, p_owner);
                } else if crashed {
                    self.committed_from.remove(&slot);
                    crash_lost.insert(slot);
                } else {
                    self.committed_from.remove(&slot);
                    lost.insert(slot);
                }
            }
        }
        self.auth = Some(table.clone());
        self.lose(&crash_lost);
        let why = format!(
            "table {} (coordinator {:?}) reassigned the slot without a verified migration",
            table.epoch, table.coordinator
        );
        self.lose_live(&lost, &why)
    }

    /// Like [`Self::lose`] for a loss that is not a crash's (a reassignment, a stale write):
    /// with `pauses` (no partitions, every live node keeps its data) it breaks the rule that
    /// nothing acknowledged is lost while its node is up, so it fails the run if the slots held
    /// acknowledged writes.
    fn lose_live(&mut self, slots: &BTreeSet<Slot>, why: &str) -> Result<(), SimFailure> {
        if self.cfg.pauses {
            if let Some((map, key)) = self
                .expect
                .keys()
                .find(|(_, k)| slots.contains(&key_slot(k)))
            {
                return Err(self.fail(format!(
                    "acknowledged writes lost while their node is up: {}/{} (slot {}): {why}",
                    String::from_utf8_lossy(map),
                    String::from_utf8_lossy(key),
                    key_slot(key)
                )));
            }
        }
        self.lose(slots);
        Ok(())
    }

    /// The cores' migration timers: restarts, batches, handoffs, commit requests.
    fn poll_cores(&mut self, i: usize) {
        let now = self.now;
        for core in 0..self.nodes[i].cores.len() {
            let c = &mut self.nodes[i].cores[core];
            let out = c.host.poll(now, &mut c.store);
            self.send_all(i, out);
        }
    }

    fn step_node(&mut self, i: usize) -> Result<(), SimFailure> {
        let me = self.nodes[i].info.id;
        let mut out = MembershipOutput::default();
        self.nodes[i].membership.tick(self.now, &mut out);
        if !out.events.is_empty() {
            self.nodes[i].next_plan_ms = self.now;
        }
        self.trace_events(i, &out);
        self.send_gossip(gossip_addr(&self.nodes[i].info), out);
        let members = self.nodes[i].membership.live_members();
        let quorum = self.nodes[i].membership.has_quorum();
        if self.now >= self.nodes[i].next_plan_ms {
            self.nodes[i].next_plan_ms = self.now + 300;
            let mut pushed = self.nodes[i]
                .keeper
                .replan(&members, quorum, self.now)
                .cloned();
            if let Some(t) = self.nodes[i]
                .keeper
                .flush_commits(&members, self.now)
                .cloned()
            {
                pushed = Some(t);
            }
            if let Some(t) = pushed {
                if let Some((Cut::Pair(x, y), _)) = &self.partition {
                    let cut_member =
                        |a: &NodeId, b: &NodeId| *a == me && t.nodes.iter().any(|n| n.id == *b);
                    if cut_member(x, y) || cut_member(y, x) {
                        self.report.published_across_pair_cut += 1;
                    }
                }
                if let Some(ts) = self.trace {
                    let view: Vec<(NodeId, u64)> =
                        members.iter().map(|m| (m.id, m.generation)).collect();
                    self.trace(ts, || {
                        format!(
                            "node {i} publishes epoch {} seeing (id, generation) {view:?}",
                            t.epoch
                        )
                    });
                }
                self.installed(i)?;
                for m in &members {
                    if m.id != me {
                        self.send_peer(me, m.id, &Message::TablePush(t.clone()));
                    }
                }
            }
        }
        if self.now >= self.nodes[i].next_hint_ms {
            self.nodes[i].next_hint_ms = self.now + 500;
            let coordinator = self.coordinator_of(i);
            // The hint names the coordinator that computed the table (so a coordinator learns
            // of a same-numbered table from another one), not the one this node sees, and
            // echoes the clock of the coordinator this node sees (its lease).
            for m in &members {
                if m.id != me {
                    let hint = self.nodes[i].keeper.hint(m.id, coordinator, self.now);
                    self.send_peer(me, m.id, &hint);
                }
            }
            if self.nodes[i].leaving {
                self.send_peer(me, coordinator, &Message::Drain { node: me });
            }
        }
        self.poll_cores(i);
        // A drained leaver says goodbye and stops, once every member holds its table (or
        // after the bounded wait), as tessera-net's driver does.
        let ready =
            if self.nodes[i].leaving && self.nodes[i].cores.iter().all(|c| !c.host.has_sources()) {
                self.nodes[i].keeper.leave_ready(&members, self.now)
            } else {
                LeaveReady::Wait
            };
        if ready != LeaveReady::Wait {
            if let LeaveReady::Confirmed { .. } = ready {
                self.report.leaves_confirmed += 1;
                let view = members.iter().map(|m| (m.id, m.generation)).collect();
                self.confirmed_left.push((me, view));
            } else {
                self.report.leaves_unconfirmed += 1;
            }
            let mut out = MembershipOutput::default();
            self.nodes[i].membership.leave(self.now, &mut out);
            self.send_gossip(gossip_addr(&self.nodes[i].info), out);
            self.nodes[i].up = false;
            if let Some(ts) = self.trace {
                self.trace(ts, || format!("node {i} drained and left"));
            }
        }
        Ok(())
    }

    /// One client operation through a random node, following one `-MOVED`.
    fn client_op(&mut self) -> Result<(), SimFailure> {
        // A paused node does not answer: its clients time out (they pick among the others).
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].paused.is_none())
            .collect();
        if up.is_empty() {
            return Ok(());
        }
        let mut at = up[self.rng.random_range(0..up.len())];
        let n = self.rng.random_range(0..self.cfg.keys);
        let key = format!("key{n}").into_bytes();
        // Every third key lives in a DMap, with the same key name in `default` for some of them,
        // so streams carry several maps and (map, key) is the identity.
        let map: &[u8] = if n % 3 == 0 { b"dmap" } else { b"default" };
        let key = if n % 6 == 0 {
            format!("key{}", n + 1).into_bytes()
        } else {
            key
        };
        let slot = key_slot(&key);
        let delete = self.rng.random_bool(0.25);
        for _hop in 0..2 {
            let node = &self.nodes[at];
            let Some(table) = node.keeper.table() else {
                break;
            };
            if !node.membership.has_quorum() {
                break;
            }
            let owner = table.entry(slot).primary;
            let owner_id = table.node(owner.node).id;
            if owner_id != node.info.id {
                match self.index_of(owner_id) {
                    Some(j) if self.nodes[j].paused.is_none() => {
                        at = j;
                        continue;
                    }
                    _ => break,
                }
            }
            if node.cores[usize::from(owner.core)].host.write_gate(slot) != Gate::Serve {
                break;
            }
            let epoch = table.epoch;
            let shard = ShardAddr {
                node: node.info.id,
                core: owner.core,
            };
            // An epoch is named by (number, coordinator): during a split view two coordinators
            // can mint the same number (see README, open questions).
            if let Some(prev) = self.writers.insert((slot, epoch, table.coordinator), shard) {
                if prev != shard {
                    return Err(self.fail(format!(
                        "two writers for slot {slot} in epoch {epoch}: {prev:?} and {shard:?}"
                    )));
                }
            }
            self.version += 1;
            let version = self.version;
            let node = &mut self.nodes[at];
            let core = &mut node.cores[usize::from(owner.core)];
            let store = &mut core.store;
            self.last_written = Some((map.to_vec(), key.clone()));
            let op = if delete {
                store.delete(slot, map, &key);
                self.expect
                    .insert((map.to_vec(), key.clone()), Expect::Deleted(version));
                StreamOp::Delete {
                    map: map.to_vec(),
                    key,
                    version,
                }
            } else {
                let e = Entry {
                    map: map.to_vec(),
                    key: key.clone(),
                    value: version.to_le_bytes().to_vec(),
                    version,
                    deadline_ms: (version % 5 == 0).then_some(1_000_000_000 + version),
                };
                store.put(slot, e.clone());
                self.expect
                    .insert((map.to_vec(), key), Expect::Put(version));
                StreamOp::Put(e)
            };
            core.host.tee(slot, op);
            self.report.writes_acked += 1;
            self.trace(slot, || {
                format!("write v{version} delete={delete} at node {at} {shard:?} epoch {epoch}")
            });
            // An owner that is not the owner in the newest table took this write: it was cut off
            // from a newer table, or a split view made two coordinators publish tables with
            // the same epoch number. PA behaviour: the write is lost when views converge. Not
            // possible in a planned migration (the source pauses before the commit table
            // exists; the target serves only once the table names it).
            if let Some(auth) = &self.auth {
                if shard_addr(auth, auth.entry(slot).primary) != shard {
                    self.report.stale_writes += 1;
                    let why = format!(
                        "write v{version} acknowledged at {shard:?} under epoch {epoch}, newest table {} (coordinator {:?}) names {:?}",
                        auth.epoch,
                        auth.coordinator,
                        shard_addr(auth, auth.entry(slot).primary)
                    );
                    self.lose_live(&BTreeSet::from([slot]), &why)?;
                }
            }
            return Ok(());
        }
        self.report.writes_refused += 1;
        Ok(())
    }

    /// One client read through a random node, following one `-MOVED`, served as a real node
    /// serves it (the owner core by the node's table, gated by `read_gate`): a read served by
    /// the slot's owner in the newest table, or by the shard a planned commit moved it away
    /// from, must see the last acknowledged write (a read after commit sees every acknowledged
    /// write). Reads at shards that lost the slot otherwise (cut off, declared down) are PA
    /// and only counted.
    fn client_read(&mut self) -> Result<(), SimFailure> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].paused.is_none())
            .collect();
        if up.is_empty() {
            return Ok(());
        }
        let mut at = up[self.read_rng.random_range(0..up.len())];
        let pick = match &self.last_written {
            Some(k) if self.read_rng.random_bool(0.5) => self.expect.get_key_value(k),
            _ => self
                .expect
                .iter()
                .nth(self.read_rng.random_range(0..self.expect.len().max(1))),
        };
        let Some(((map, key), exp)) = pick.map(|(k, e)| (k.clone(), *e)) else {
            return Ok(());
        };
        let slot = key_slot(&key);
        for _hop in 0..2 {
            let node = &self.nodes[at];
            let Some(table) = node.keeper.table() else {
                return Ok(());
            };
            if !node.membership.has_quorum() {
                return Ok(());
            }
            let owner = table.entry(slot).primary;
            let owner_id = table.node(owner.node).id;
            if owner_id != node.info.id {
                match self.index_of(owner_id) {
                    Some(j) if self.nodes[j].paused.is_none() => {
                        at = j;
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            let core = &node.cores[usize::from(owner.core)];
            if core.host.read_gate(slot) != Gate::Serve {
                return Ok(());
            }
            let shard = ShardAddr {
                node: node.info.id,
                core: owner.core,
            };
            let got = core.store.get(slot, &map, &key).map(|e| e.version);
            let auth = self.auth.as_ref().expect("a node has a table");
            let authoritative = shard_addr(auth, auth.entry(slot).primary) == shard
                || self.committed_from.get(&slot) == Some(&shard);
            if !authoritative {
                self.report.stale_reads += 1;
                return Ok(());
            }
            self.report.reads_checked += 1;
            let ok = match (exp, got) {
                (Expect::Put(v), Some(g)) => g >= v,
                (Expect::Put(_), None) => false,
                (Expect::Deleted(_), None) => true,
                (Expect::Deleted(v), Some(g)) => g > v,
            };
            self.trace(slot, || {
                format!("read at node {at} {shard:?}: {got:?}, expected {exp:?}")
            });
            if !ok {
                return Err(self.fail(format!(
                    "read of {}/{} (slot {slot}) at {shard:?} (table epoch {}, newest {}) found {got:?}, expected {exp:?}",
                    String::from_utf8_lossy(&map),
                    String::from_utf8_lossy(&key),
                    table.epoch,
                    auth.epoch
                )));
            }
            return Ok(());
        }
        Ok(())
    }

    /// Acknowledged writes are where the newest table says, deleted keys stay deleted.
    fn check_data(&self) -> Result<(), SimFailure> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        for ((map, key), exp) in &self.expect {
            let slot = key_slot(key);
            let owner = shard_addr(auth, auth.entry(slot).primary);
            let Some(j) = self.index_of(owner.node) else {
                continue;
            };
            let got = self.nodes[j].cores[usize::from(owner.core)]
                .store
                .get(slot, map, key);
            let ok = match (exp, got) {
                (Expect::Put(v), Some(e)) => e.version >= *v && e.value == e.version.to_le_bytes(),
                (Expect::Put(_), None) => false,
                (Expect::Deleted(_), None) => true,
                (Expect::Deleted(v), Some(e)) => e.version > *v,
            };
            if !ok {
                return Err(self.fail(format!(
                    "key {}/{} (slot {slot}) expected {exp:?} at {owner:?} (epoch {}), found {:?}",
                    String::from_utf8_lossy(map),
                    String::from_utf8_lossy(key),
                    auth.epoch,
                    got.map(|e| e.version)
                )));
            }
        }
        Ok(())
    }

    /// A leaver that exited once every member of its view held its last table: no such member,
    /// while up in the same generation, routes by a table that gives the leaver a slot (it
    /// would send clients to a node that is gone until a new coordinator plans again).
    fn check_left(&self) -> Result<(), SimFailure> {
        for (leaver, view) in &self.confirmed_left {
            for n in &self.nodes {
                if !n.up || !view.contains(&(n.info.id, n.info.generation)) {
                    continue;
                }
                let Some(t) = n.keeper.table() else { continue };
                let Some(idx) = t.node_index(*leaver) else {
                    continue;
                };
                if let Some(slot) = t.slots.iter().position(|e| e.primary.node == idx) {
                    return Err(self.fail(format!(
                        "node {:?} routes slot {slot} to {leaver:?}, which left once every \
                         member held its last table (epoch {}, by {:?})",
                        n.info.id, t.epoch, t.coordinator
                    )));
                }
            }
        }
        Ok(())
    }

    /// The data of `slots` is gone the documented way: forget what was expected there.
    fn lose(&mut self, slots: &BTreeSet<Slot>) {
        if slots.is_empty() {
            return;
        }
        self.report.slot_losses += slots.len() as u64;
        if let Some(ts) = self.trace {
            if slots.contains(&ts) {
                self.trace(ts, || "data lost (documented)".into());
            }
        }
        self.expect
            .retain(|(_, k), _| !slots.contains(&key_slot(k)));
    }

    /// Liveness: with faults over, within `SETTLE_MS` every migration commits and every live
    /// node routes by the same table, which contains only live nodes.
    fn settle(&mut self) -> Result<(), SimFailure> {
        let deadline = self.now + SETTLE_MS;
        while self.now <= deadline {
            self.partition = None;
            self.resume_due(true)?;
            self.deliver()?;
            for i in 0..self.nodes.len() {
                if self.nodes[i].up {
                    self.step_node(i)?;
                }
            }
            self.client_op()?;
            self.client_read()?;
            self.check_data()?;
            self.check_left()?;
            self.now += STEP_MS;
            let Some(auth) = &self.auth else { continue };
            let up: Vec<&SimNode> = self.nodes.iter().filter(|n| n.up).collect();
            let settled = auth.migrations().next().is_none()
                && up.iter().all(|n| n.keeper.epoch() == auth.epoch)
                && auth.nodes.len() == up.len()
                && up.iter().all(|n| n.cores.iter().all(|c| c.host.is_idle()));
            if settled {
                return Ok(());
            }
        }
        let auth = self.auth.as_ref();
        let stuck: Vec<String> = auth
            .into_iter()
            .flat_map(|t| t.migrations().take(3).map(move |m| (t, m)))
            .map(|(t, (slot, from, to, id))| {
                let (f, d) = (shard_addr(t, from), shard_addr(t, to));
                let src = self.index_of(f.node).and_then(|i| {
                    self.nodes[i].cores[usize::from(f.core)]
                        .host
                        .source(slot)
                        .map(crate::migration::SourceMigration::phase)
                });
                let dst = self.index_of(d.node).and_then(|i| {
                    self.nodes[i].cores[usize::from(d.core)]
                        .host
                        .target(slot)
                        .map(crate::migration::TargetMigration::phase)
                });
                format!("slot {slot} {id:?} {f:?} -> {d:?}: source {src:?}, target {dst:?}")
            })
            .collect();
        let views: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| {
                let me = n.membership.me();
                format!(
                    "{:?} gen {} sees {:?} leaving {}",
                    me.id,
                    me.generation,
                    n.membership
                        .live_members()
                        .iter()
                        .map(|m| (m.id, m.generation))
                        .collect::<Vec<_>>(),
                    n.leaving
                )
            })
            .collect();
        Err(self.fail(format!(
            "not settled after {SETTLE_MS} ms: views {views:?}; {stuck:?}; epoch {:?}, {} migrations pending, node epochs {:?}, table nodes {}, live nodes {}",
            auth.map(|t| t.epoch),
            auth.map_or(0, |t| t.migrations().count()),
            self.nodes.iter().filter(|n| n.up).map(|n| n.keeper.epoch()).collect::<Vec<_>>(),
            auth.map_or(0, |t| t.nodes.len()),
            self.nodes.iter().filter(|n| n.up).count(),
        )))
    }

    /// Crashes node `i`: its memory is gone, so is the data of the slots it owned.
    fn crash(&mut self, i: usize) {
        let id = self.nodes[i].info.id;
        if let Some(ts) = self.trace {
            self.trace(ts, || format!("node {i} {id:?} crashes"));
        }
        let mut lost = BTreeSet::new();
        if let Some(auth) = &self.auth {
            for slot in 0..crate::SLOT_COUNT {
                if auth.node(auth.entry(slot as Slot).primary.node).id == id {
                    lost.insert(slot as Slot);
                }
            }
        }
        self.lose(&lost);
        // A copy this node verified as a migration target is gone with it: a commit that names
        // it now (the commit request may already be out) moves the slot to lost data, the
        // documented "owner crashed" loss (seed 7 at 12 s found the gap in this bookkeeping).
        for c in &self.nodes[i].cores {
            for t in c.host.targets() {
                if self.verified.remove(&t.id) {
                    self.crashed_targets.insert(t.id);
                }
            }
        }
        self.nodes[i].up = false;
        self.links_lost(id);
    }

    /// Tells every migration with a peer on `id` that its link broke.
    fn links_lost(&mut self, id: NodeId) {
        let now = self.now;
        for n in &mut self.nodes {
            for c in &mut n.cores {
                c.host.on_link_lost(id, now, &mut c.store);
            }
        }
    }

    fn partition_start(&mut self) {
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| n.info.id)
            .collect();
        if up.len() < 2 {
            return;
        }
        // Only drawn with `pair_cuts`, so older seeds replay the same without it.
        if self.cfg.pair_cuts && self.rng.random_bool(0.5) {
            let a = self.rng.random_range(0..up.len());
            let b = (a + self.rng.random_range(1..up.len())) % up.len();
            let heal = self.now + self.rng.random_range(300..3000);
            self.pair_cut(up[a], up[b], heal);
            return;
        }
        let victim = up[self.rng.random_range(0..up.len())];
        let heal = self.now + self.rng.random_range(300..1500);
        self.partition = Some((Cut::Isolate(victim), heal));
        if let Some(ts) = self.trace {
            self.trace(ts, || format!("partition: {victim:?} cut off until {heal}"));
        }
        // Links across the cut break: in-flight migrations with the victim lose their link.
        let now = self.now;
        let others: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.info.id)
            .filter(|&id| id != victim)
            .collect();
        for n in &mut self.nodes {
            if n.info.id == victim {
                for c in &mut n.cores {
                    for &other in &others {
                        c.host.on_link_lost(other, now, &mut c.store);
                    }
                }
            }
        }
        self.links_lost(victim);
    }

    /// Cuts `a` from `b` (both directions) until `heal`; both still reach everyone else.
    fn pair_cut(&mut self, a: NodeId, b: NodeId, heal: u64) {
        self.partition = Some((Cut::Pair(a, b), heal));
        self.report.pair_cuts += 1;
        if let Some(ts) = self.trace {
            self.trace(ts, || format!("pair cut: {a:?} <-> {b:?} until {heal}"));
        }
        // The link between them breaks: their migrations with each other lose it.
        let now = self.now;
        for n in &mut self.nodes {
            let other = if n.info.id == a {
                b
            } else if n.info.id == b {
                a
            } else {
                continue;
            };
            for c in &mut n.cores {
                c.host.on_link_lost(other, now, &mut c.store);
            }
        }
    }

    /// The scripted lagging cut: once the newest table has a migration A -> B with neither end
    /// its coordinator C1, cut C1 from B only. Returns whether it cut.
    fn lagging_cut(&mut self) -> bool {
        let Some(auth) = &self.auth else {
            return false;
        };
        let c1 = auth.coordinator;
        let target = auth.migrations().find_map(|(_, from, to, _)| {
            let (f, t) = (shard_addr(auth, from), shard_addr(auth, to));
            (f.node != c1 && t.node != c1 && f.node != t.node).then_some(t.node)
        });
        let Some(b) = target else {
            return false;
        };
        let heal = self.now + self.cfg.lagging_cut_ms;
        self.pair_cut(c1, b, heal);
        true
    }

    /// Migration counters of every node, past and present.
    fn host_stats(&self) -> HostStats {
        let mut total = self.retired;
        for n in &self.nodes {
            for c in &n.cores {
                add_stats(&mut total, &c.host.stats);
            }
        }
        total
    }
}

fn shard_addr(t: &PartitionTable, s: crate::Shard) -> ShardAddr {
    ShardAddr {
        node: t.node(s.node).id,
        core: s.core,
    }
}

fn older_than(t: Option<&PartitionTable>, epoch: u64) -> bool {
    match t {
        Some(t) => t.epoch < epoch,
        None => true,
    }
}

/// Runs one simulation. `Err` names the seed, the time and the broken invariant.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut sim = Sim {
        trace: std::env::var("TESSERA_SIM_TRACE_SLOT")
            .ok()
            .and_then(|v| v.parse().ok()),
        rng: SmallRng::seed_from_u64(cfg.seed),
        cfg: cfg.clone(),
        now: 0,
        nodes: Vec::new(),
        events: BinaryHeap::new(),
        seq: 0,
        link_clock: HashMap::new(),
        partition: None,
        version: 0,
        expect: BTreeMap::new(),
        writers: HashMap::new(),
        verified: std::collections::HashSet::new(),
        crashed_targets: std::collections::HashSet::new(),
        auth: None,
        committed_from: HashMap::new(),
        last_written: None,
        read_rng: SmallRng::seed_from_u64(cfg.seed ^ 0x5EED_F04E_AD00),
        report: SimReport::default(),
        retired: HostStats::default(),
        confirmed_left: Vec::new(),
    };
    for i in 0..cfg.nodes {
        let n = sim.new_node(i);
        sim.nodes.push(n);
    }
    let faults_until = cfg.duration_ms * 6 / 10;
    let join_at = cfg.duration_ms / 10;
    let leave_at = cfg.duration_ms * 3 / 10 + sim.rng.random_range(0..1000);
    let crash_at = cfg.duration_ms * 4 / 10 + sim.rng.random_range(0..1000);
    let crash = sim.rng.random_bool(0.5) && cfg.faults;
    let mut crashed: Option<(usize, u64)> = None;
    let mut formed = false;
    while sim.now <= cfg.duration_ms {
        if sim.now == join_at {
            let n = sim.new_node(cfg.nodes);
            sim.nodes.push(n);
        }
        if sim.now == leave_at / STEP_MS * STEP_MS {
            // A node other than the seeds leaves gracefully (or the coordinator).
            let mut i = sim.rng.random_range(2..sim.nodes.len());
            if cfg.coordinator_leaves {
                if let Some(c) = sim.auth.as_ref().and_then(|t| sim.index_of(t.coordinator)) {
                    i = c;
                    sim.report.coordinator_leaves += u64::from(sim.nodes[i].up);
                }
            }
            if sim.nodes[i].up {
                sim.nodes[i].leaving = true;
            }
        }
        if crash && sim.now == crash_at / STEP_MS * STEP_MS {
            let up: Vec<usize> = (0..sim.nodes.len())
                .filter(|&i| sim.nodes[i].up && !sim.nodes[i].leaving)
                .collect();
            let i = up[sim.rng.random_range(0..up.len())];
            sim.crash(i);
            crashed = Some((i, sim.now + sim.rng.random_range(500..3000)));
        }
        if let Some((i, at)) = crashed {
            if sim.now >= at {
                let n = sim.new_node(i);
                for c in &sim.nodes[i].cores {
                    add_stats(&mut sim.retired, &c.host.stats);
                }
                sim.nodes[i] = n;
                crashed = None;
            }
        }
        if let Some(at) = sim.cfg.lagging_cut_at_ms {
            if sim.now >= at && sim.partition.is_none() && sim.lagging_cut() {
                sim.cfg.lagging_cut_at_ms = None;
            }
        }
        if cfg.pauses {
            // Pauses instead of partitions: a starved process, not a cut network.
            if cfg.faults && sim.now < faults_until && sim.rng.random_bool(0.003) {
                sim.pause_start();
            }
        } else {
            match &sim.partition {
                Some((_, heal)) if sim.now >= *heal => sim.partition = None,
                None if cfg.faults && sim.now < faults_until && sim.rng.random_bool(0.002) => {
                    sim.partition_start();
                }
                _ => {}
            }
        }
        sim.resume_due(false)?;
        sim.deliver()?;
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].up && sim.nodes[i].paused.is_none() {
                sim.step_node(i)?;
            }
        }
        // Clients start once the initial members agree on one table (an operator starts
        // clients after the cluster formed): before that, partial views may each elect a
        // coordinator and publish conflicting first tables.
        if !formed {
            let first: Vec<(u64, Option<NodeId>)> = sim.nodes[..cfg.nodes]
                .iter()
                .map(|n| (n.keeper.epoch(), n.keeper.table().map(|t| t.coordinator)))
                .collect();
            formed = first[0].0 > 0 && first.iter().all(|f| *f == first[0]);
        }
        if formed {
            for _ in 0..2 {
                sim.client_op()?;
            }
            sim.client_read()?;
        }
        sim.check_data()?;
        sim.check_left()?;
        let coords: BTreeSet<NodeId> = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].up)
            .map(|i| sim.coordinator_of(i))
            .collect();
        if coords.len() > 1 {
            sim.report.coordinator_split_steps += 1;
            if matches!(sim.partition, Some((Cut::Pair(..), _))) {
                sim.report.coordinator_split_steps_in_pair_cut += 1;
            }
        }
        sim.now += STEP_MS;
    }
    sim.settle()?;
    let stats = sim.host_stats();
    sim.report.migrations_committed = stats.targets_committed;
    sim.report.migrations_aborted = stats.sources_aborted;
    sim.report.final_epoch = sim.auth.as_ref().map_or(0, |t| t.epoch);
    Ok(sim.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds to sweep: `TESSERA_SIM_SEEDS` (count) and `TESSERA_SIM_FIRST` (first seed), or a
    /// short default sweep for CI.
    fn seeds() -> std::ops::Range<u64> {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let first = env("TESSERA_SIM_FIRST").unwrap_or(0);
        first..first + env("TESSERA_SIM_SEEDS").unwrap_or(3)
    }

    /// `TESSERA_SIM_LEASE_MS` overrides the coordinator lease of the sweeps (0: none, to
    /// see what the lease prevents), else the default of [`SimConfig::new`].
    fn with_lease(cfg: SimConfig) -> SimConfig {
        match std::env::var("TESSERA_SIM_LEASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(lease_ms) => SimConfig { lease_ms, ..cfg },
            None => cfg,
        }
    }

    /// Simulated milliseconds per seed: `TESSERA_SIM_MS`, default 12 s (the CI sweep).
    fn duration_ms() -> u64 {
        std::env::var("TESSERA_SIM_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12_000)
    }

    #[test]
    fn seed_sweep() {
        let mut total = SimReport::default();
        for seed in seeds() {
            let cfg = with_lease(SimConfig {
                duration_ms: duration_ms(),
                ..SimConfig::new(seed)
            });
            match run(&cfg) {
                Ok(r) => {
                    eprintln!("seed {seed}: {r:?}");
                    total.writes_acked += r.writes_acked;
                    total.migrations_committed += r.migrations_committed;
                }
                Err(e) => panic!(
                    "{e}\nreplay: TESSERA_SIM_FIRST={seed} TESSERA_SIM_SEEDS=1 TESSERA_SIM_MS={} \
                     cargo test -p tessera-cluster seed_sweep",
                    cfg.duration_ms
                ),
            }
        }
        // The sweep must have exercised the machinery it checks.
        assert!(total.writes_acked > 0);
        assert!(total.migrations_committed > 0);
    }

    /// Only planned changes (a join, a graceful leave) over a lossless network: nothing may be
    /// lost, nothing may be stale, and the migrations must have happened.
    #[test]
    fn planned_changes_lose_nothing() {
        // Seeds 2 and 3: the coordinator is the one that leaves.
        for seed in 0..4 {
            let cfg = SimConfig {
                faults: false,
                drop: 0.0,
                duration_ms: 8_000,
                coordinator_leaves: seed >= 2,
                ..SimConfig::new(seed)
            };
            let r = run(&cfg).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.slot_losses, 0, "{r:?}");
            assert_eq!(r.stale_writes, 0, "{r:?}");
            assert!(r.migrations_committed > 0, "{r:?}");
            assert!(r.writes_acked > 1000, "{r:?}");
            assert!(r.reads_checked > 500, "{r:?}");
            assert_eq!(r.stale_reads, 0, "{r:?}");
            assert_eq!(r.leaves_confirmed, 1, "{r:?}");
            assert_eq!(
                r.coordinator_leaves,
                u64::from(cfg.coordinator_leaves),
                "{r:?}"
            );
        }
    }

    /// The lagging-coordinator trace of `cluster/README.md`: once a join's migrations A -> B
    /// are under way, the coordinator C1 is cut from B only (both still reach the rest). No
    /// other faults and a lossless network, so every broken invariant is this cut's doing: no
    /// acknowledged write of a planned migration may be lost, and the views must converge.
    #[test]
    fn a_coordinator_cut_from_one_node_loses_no_commit() {
        for seed in 0..4 {
            let cfg = SimConfig {
                faults: false,
                drop: 0.0,
                duration_ms: 10_000,
                lagging_cut_at_ms: Some(1_000),
                lagging_cut_ms: 4_000,
                ..SimConfig::new(seed)
            };
            let r = run(&cfg).unwrap_or_else(|e| panic!("{e}"));
            eprintln!("seed {seed}: {r:?}");
            // The scenario happened: the cut was made while a migration was pending.
            assert_eq!(r.pair_cuts, 1, "{r:?}");
            assert!(r.migrations_committed > 0, "{r:?}");
            // C1 went on publishing (committing) while cut from a member of its table.
            assert!(r.published_across_pair_cut > 0, "{r:?}");
        }
    }

    /// Runs `cfg` and prints its report, or panics with the command that replays it in `test`.
    fn run_or_replay(cfg: &SimConfig, test: &str) -> SimReport {
        let seed = cfg.seed;
        let r = run(cfg).unwrap_or_else(|e| {
            panic!(
                "{e}\nreplay: TESSERA_SIM_FIRST={seed} TESSERA_SIM_SEEDS=1 TESSERA_SIM_MS={} \
                 cargo test -p tessera-cluster {test}",
                cfg.duration_ms
            )
        });
        eprintln!("seed {seed}: {r:?}");
        r
    }

    /// Random pair cuts in the seeded schedule (`pair_cuts`): the same invariants hold.
    #[test]
    fn pair_cut_sweep() {
        let mut cuts = 0;
        for seed in seeds() {
            let cfg = with_lease(SimConfig {
                duration_ms: duration_ms(),
                pair_cuts: true,
                ..SimConfig::new(seed)
            });
            let r = run_or_replay(&cfg, "pair_cut_sweep");
            cuts += r.pair_cuts;
        }
        eprintln!("pair cuts: {cuts}");
    }

    /// Process pauses in the seeded schedule (`pauses`), with the join, the leave, crashes and
    /// datagram loss: nothing acknowledged may be lost but by a crash.
    #[test]
    fn pause_sweep() {
        let (mut pauses, mut held) = (0, 0);
        let mut failed = Vec::new();
        // Every seed runs (a failure does not hide the next ones); the failures are listed.
        for seed in seeds() {
            let cfg = with_lease(SimConfig {
                duration_ms: duration_ms(),
                pauses: true,
                ..SimConfig::new(seed)
            });
            match run(&cfg) {
                Ok(r) => {
                    eprintln!("seed {seed}: {r:?}");
                    pauses += r.pauses;
                    held += r.held_messages;
                }
                Err(e) => {
                    eprintln!(
                        "FAILED {e}\nreplay: TESSERA_SIM_FIRST={seed} TESSERA_SIM_SEEDS=1 \
                         TESSERA_SIM_MS={} cargo test -p tessera-cluster pause_sweep",
                        cfg.duration_ms
                    );
                    failed.push(seed);
                }
            }
        }
        eprintln!("pauses: {pauses}, messages held for paused nodes: {held}");
        assert!(failed.is_empty(), "failing seeds: {failed:?}");
        assert!(pauses > 0, "the sweep paused no node");
    }

    /// The coordinator leaves (`coordinator_leaves`), with the join, crashes, datagram loss,
    /// and partitions (even seeds) or process pauses (odd seeds: then nothing acknowledged may
    /// be lost but by a crash): a leaver that exited once every member held its last table is
    /// not routed to (`check_left`; the process test's finding of 2026-12-01).
    #[test]
    fn coordinator_leave_sweep() {
        let mut total = SimReport::default();
        for seed in seeds() {
            let cfg = with_lease(SimConfig {
                duration_ms: duration_ms(),
                coordinator_leaves: true,
                pauses: seed % 2 == 1,
                ..SimConfig::new(seed)
            });
            let r = run_or_replay(&cfg, "coordinator_leave_sweep");
            total.coordinator_leaves += r.coordinator_leaves;
            total.leaves_confirmed += r.leaves_confirmed;
            total.leaves_unconfirmed += r.leaves_unconfirmed;
        }
        eprintln!(
            "coordinator leaves: {}, confirmed: {}, unconfirmed: {}",
            total.coordinator_leaves, total.leaves_confirmed, total.leaves_unconfirmed
        );
        assert!(total.coordinator_leaves > 0, "no coordinator left");
        assert!(total.leaves_confirmed > 0, "no leave was confirmed");
    }

    /// Seed 1116 at 20 s (2026-12-01): three members heard at once that they were declared
    /// down and renewed their identities together; each one's gossip went to the others' old
    /// identities and was dropped, and membership fell silent for good (the run never settled:
    /// the leaver stayed in every view). Renewed members now announce to every seed and member
    /// until connected (`SwimMembership::announce_seeds`).
    #[test]
    fn members_that_all_renew_at_once_reconnect() {
        let cfg = SimConfig {
            duration_ms: 20_000,
            ..SimConfig::new(1116)
        };
        let r = run(&cfg).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.rejoins >= 3, "the scenario changed: {r:?}");
    }

    #[test]
    fn a_seed_replays_exactly() {
        let cfg = SimConfig {
            duration_ms: 6_000,
            ..SimConfig::new(42)
        };
        assert_eq!(run(&cfg), run(&cfg));
    }
}
