//! The per-slot migration state machines, source side and target side (cluster.md, Migration).
//!
//! The source streams its slot in bounded batches and tees every write it accepts for the slot
//! into the same ordered stream (teed writes queued before a batch go first), so the target,
//! applying ops strictly in sequence, ends with the source's state: every key written during the
//! migration ends with its last teed op, every other key with its scanned value. At handoff the
//! source pauses the slot (`-TRYAGAIN`) and sends the stream length and a digest over
//! (key, version); the target checks both and acks. The source then asks the coordinator to
//! commit: the coordinator's next table names the target. The target serves only from that
//! epoch on, the source answers `-MOVED` from it, so there is never a second writer in one epoch.
//! Until the commit either side may abort; the target then drops what it received. A source that
//! starts again streams from sequence 0 under a higher attempt number, which every stream
//! message carries: each side ignores messages of other attempts (late frames of an abandoned
//! stream), and a verified target is replaced only by the start of a newer attempt. From the
//! target's verdict to the commit table the source refuses reads too
//! ([`SourceMigration::read_gate`]): the target may already serve the slot.
//!
//! Both machines work against [`SlotStore`] (entries as map, key, value, version, deadline) so
//! they do not depend on the engine's internals (`store::ShardStore` adapts the engine). The driver owns links and timers: these machines only
//! say what to send.

use crate::node::NodeId;
use crate::partition::{MigrationId, PartitionTable, SlotState};
use crate::table::CoreId;
use crate::wire::{AbortReason, Entry, Message, MigrateBatch, SlotDigest, StreamOp};
use crate::Slot;
pub use tessera_engine::SlotDropCursor;

/// A shard named independently of any table's node indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardAddr {
    /// The node.
    pub node: NodeId,
    /// Its core.
    pub core: CoreId,
}

/// The storage a migration reads (source) and writes (target): one shard's data, by slot.
pub trait SlotStore {
    /// Resumable scan position.
    type Cursor: Clone + Default + std::fmt::Debug;
    /// Appends up to `max` entries of `slot` from `cursor` on to `out`; returns the next cursor,
    /// or `None` when the scan is complete. Every key present in the slot for the whole scan
    /// must be returned at least once; keys written or deleted during it may or may not be.
    fn scan(
        &self,
        slot: Slot,
        cursor: &Self::Cursor,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> Option<Self::Cursor>;
    /// Target side: applies one stream op (ops arrive in stream order; `Put` replaces the key,
    /// `Delete` removes it, keeping a tombstone if the store keeps them). An error (the op is
    /// invalid for this store, or it is full) changes nothing; the target then abandons the
    /// migration with [`AbortReason::Refused`].
    fn apply(&mut self, slot: Slot, op: &StreamOp) -> Result<(), StoreError>;
    /// Removes everything stored for `slot` (target after abort, a stale copy at once).
    fn drop_slot(&mut self, slot: Slot);
    /// One bounded step of [`SlotStore::drop_slot`] (a source's copy after commit): removes
    /// about `keys_max` entries at most, resuming at `cursor` (start from its default);
    /// returns how many it removed and whether the slot is now empty. The default drops the
    /// whole slot at once.
    fn drop_slot_step(
        &mut self,
        slot: Slot,
        cursor: &mut SlotDropCursor,
        keys_max: usize,
    ) -> (usize, bool) {
        let _ = (cursor, keys_max);
        self.drop_slot(slot);
        (0, true)
    }
    /// Digest of the live entries of `slot` whose deadline is after `cutoff_ms`.
    fn digest(&self, slot: Slot, cutoff_ms: u64) -> SlotDigest {
        let mut d = DigestBuilder::default();
        let mut cursor = Self::Cursor::default();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let next = self.scan(slot, &cursor, 1024, &mut buf);
            for e in &buf {
                if e.deadline_ms.is_none_or_after(cutoff_ms) {
                    d.add(&e.map, &e.key, e.version);
                }
            }
            match next {
                Some(c) => cursor = c,
                None => return d.finish(),
            }
        }
    }
}

/// Why a [`SlotStore`] refused a stream op. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key hashes to another slot than the stream's (a confused or hostile peer).
    #[error("key of slot {found} in the stream of slot {slot}")]
    WrongSlot {
        /// The stream's slot.
        slot: Slot,
        /// The key's slot.
        found: Slot,
    },
    /// The storage refused the entry (key, value or map name too long, out of memory); the
    /// text is the engine's error.
    #[error("store refused the entry: {0}")]
    Refused(String),
}

pub(crate) trait DeadlineExt {
    fn is_none_or_after(&self, cutoff_ms: u64) -> bool;
}

impl DeadlineExt for Option<u64> {
    fn is_none_or_after(&self, cutoff_ms: u64) -> bool {
        match self {
            Some(d) => *d > cutoff_ms,
            None => true,
        }
    }
}

/// Builds a [`SlotDigest`]: order-independent, duplicates counted.
#[derive(Debug, Default)]
pub struct DigestBuilder(SlotDigest);

impl DigestBuilder {
    /// Adds one live entry. A key's identity is (map, key); the map's length is hashed too so
    /// that no two (map, key) pairs hash the same bytes.
    pub fn add(&mut self, map: &[u8], key: &[u8], version: u64) {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&u32::try_from(map.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(map);
        h.update(key);
        h.update(&version.to_le_bytes());
        self.0.count += 1;
        self.0.sum = self.0.sum.wrapping_add(h.digest());
    }

    /// The digest.
    pub fn finish(self) -> SlotDigest {
        self.0
    }
}

/// Migration limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationConfig {
    /// Ops per batch (a batch is one frame and one yield point). Default 256, >= 1.
    pub batch_ops_max: usize,
    /// Approximate key+value bytes per batch; a batch is closed once it reaches this. Default
    /// 256 KiB; keep well under the wire's `frame_bytes_max`.
    pub batch_bytes_max: usize,
    /// Ops sent but not yet acked before the source waits. Default 4096, >= `batch_ops_max`.
    pub window_ops_max: u64,
    /// Teed writes queued before writes to the slot get `-TRYAGAIN`. Default 65536.
    pub tee_ops_max: usize,
    /// While waiting for the commit table, the commit request is sent again this often (it
    /// may have been lost with a link, or sent to a coordinator that just lost its role; the
    /// coordinator treats repeats as one). Default 1000, > 0.
    pub commit_retry_ms: u64,
    /// `CoreMigrations`: an aborted source whose migration the table still plans starts again
    /// (from sequence 0) after this delay, so a refusing or unreachable target is not flooded.
    /// Default 100, > 0.
    pub restart_delay_ms: u64,
    /// `CoreMigrations`: after a broken link, sources towards that node wait before they start
    /// again, twice as long after each further loss up to this, until a message from that node
    /// arrives (so thousands of slots planned towards a dead node do not churn). Default 2000,
    /// >= `restart_delay_ms`.
    pub restart_delay_max_ms: u64,
    /// `CoreMigrations`: messages one source may emit per call (each batch is a yield point;
    /// `CoreMigrations::busy` says when a source had more). Default 16, >= 1.
    pub pump_messages_max: usize,
    /// `CoreMigrations`: entries all the sources of one core may put into messages in one
    /// call, all slots together (a handoff counts the entries its digest reads, about the
    /// slots' size); a call may go over by one batch. Sources are served round robin and
    /// `CoreMigrations::busy` says when some had more. This is what bounds the time a
    /// migration step keeps the core from serving requests: thousands of small slots moving
    /// at once would otherwise all stream in one call. Default 512, >= 1.
    pub turn_ops_max: usize,
    /// `CoreMigrations`: keys removed per call when dropping slots that left this core
    /// (committed to their target, or abandoned to another shard); the rest is dropped by
    /// later calls, so a commit of many slots does not stall the core. Default 1024, >= 1.
    pub drop_keys_max: usize,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            batch_ops_max: 256,
            batch_bytes_max: 256 << 10,
            window_ops_max: 4096,
            tee_ops_max: 65536,
            commit_retry_ms: 1000,
            restart_delay_ms: 100,
            restart_delay_max_ms: 2000,
            pump_messages_max: 16,
            turn_ops_max: 512,
            drop_keys_max: 1024,
        }
    }
}

/// A [`MigrationConfig`] constraint is violated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid migration config: {0}")]
pub struct MigrationConfigError(&'static str);

impl MigrationConfig {
    /// Checks the documented constraints.
    pub fn validate(&self) -> Result<(), MigrationConfigError> {
        if self.batch_ops_max == 0 {
            return Err(MigrationConfigError("batch_ops_max must be >= 1"));
        }
        if self.window_ops_max < self.batch_ops_max as u64 {
            return Err(MigrationConfigError(
                "window_ops_max must be >= batch_ops_max",
            ));
        }
        if self.restart_delay_max_ms < self.restart_delay_ms {
            return Err(MigrationConfigError(
                "restart_delay_max_ms must be >= restart_delay_ms",
            ));
        }
        if self.batch_bytes_max == 0
            || self.commit_retry_ms == 0
            || self.tee_ops_max == 0
            || self.restart_delay_ms == 0
            || self.pump_messages_max == 0
            || self.turn_ops_max == 0
            || self.drop_keys_max == 0
        {
            return Err(MigrationConfigError(
                "batch_bytes_max, commit_retry_ms, tee_ops_max, restart_delay_ms, \
                 pump_messages_max, turn_ops_max and drop_keys_max must be > 0",
            ));
        }
        Ok(())
    }
}

/// How the owner of a migrating slot answers a write right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteGate {
    /// Execute it, then [`SourceMigration::tee`] the resulting op.
    Serve,
    /// Reply `-TRYAGAIN` (handoff in progress or tee queue full).
    TryAgain,
    /// Reply `-MOVED` to the target (committed).
    Moved,
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// To the other side of the migration.
    Peer(Message),
    /// To the coordinator (a commit request).
    Coordinator(Message),
}

/// Source-side phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePhase {
    /// Streaming scanned entries and teed writes; writes are served.
    Streaming,
    /// End marker sent, slot paused, waiting for the target's verdict.
    HandingOff,
    /// Target verified; waiting for the coordinator's table naming it.
    AwaitingCommit,
    /// The table names the target: the slot's data here may be dropped.
    Committed,
    /// Abandoned: this side still owns the slot.
    Aborted(AbortReason),
}

/// Source side of one slot's migration.
#[derive(Debug)]
pub struct SourceMigration<C> {
    /// This migration.
    pub id: MigrationId,
    /// The slot.
    pub slot: Slot,
    /// Where it goes.
    pub to: ShardAddr,
    /// This start of the migration: every start (restarts included) streams under a higher
    /// attempt, and messages of other attempts are ignored (see [`Message::MigrateAck`]).
    pub attempt: u64,
    cursor: Option<C>,
    tee: std::collections::VecDeque<StreamOp>,
    next_seq: u64,
    acked_seq: u64,
    phase: SourcePhase,
    cfg: MigrationConfig,
    /// When the commit request is due again (`AwaitingCommit`), set by the caller's clock.
    commit_due_ms: Option<u64>,
}

impl<C: Clone + Default + std::fmt::Debug> SourceMigration<C> {
    /// Starts streaming `slot` to `to` as attempt `attempt` (above every earlier attempt of
    /// this migration).
    pub fn new(
        id: MigrationId,
        slot: Slot,
        to: ShardAddr,
        attempt: u64,
        cfg: MigrationConfig,
    ) -> Self {
        SourceMigration {
            id,
            slot,
            to,
            attempt,
            cursor: Some(C::default()),
            tee: std::collections::VecDeque::new(),
            next_seq: 0,
            acked_seq: 0,
            phase: SourcePhase::Streaming,
            cfg,
            commit_due_ms: None,
        }
    }

    /// Current phase.
    pub fn phase(&self) -> SourcePhase {
        self.phase
    }

    /// Ops put into the stream so far (the next sequence number).
    pub fn sent_ops(&self) -> u64 {
        self.next_seq
    }

    /// How to answer a write to the slot now.
    pub fn write_gate(&self) -> WriteGate {
        match self.phase {
            SourcePhase::Streaming if self.tee.len() >= self.cfg.tee_ops_max => WriteGate::TryAgain,
            SourcePhase::Streaming | SourcePhase::Aborted(_) => WriteGate::Serve,
            SourcePhase::HandingOff | SourcePhase::AwaitingCommit => WriteGate::TryAgain,
            SourcePhase::Committed => WriteGate::Moved,
        }
    }

    /// How to answer a read of the slot now. Served while streaming and during the handoff
    /// (the target serves nothing before the commit, and writes are paused); refused with
    /// `-TRYAGAIN` once the target verified, since the commit table may already have reached
    /// the target, which then takes writes this copy does not see: a read here would miss an
    /// acknowledged write.
    pub fn read_gate(&self) -> WriteGate {
        match self.phase {
            SourcePhase::AwaitingCommit => WriteGate::TryAgain,
            SourcePhase::Committed => WriteGate::Moved,
            _ => WriteGate::Serve,
        }
    }

    /// Records a write the source just applied to the slot (only after `WriteGate::Serve`).
    pub fn tee(&mut self, op: StreamOp) {
        if self.phase == SourcePhase::Streaming {
            self.tee.push_back(op);
        }
    }

    /// The next message to send, if any: a batch (teed writes first, then scanned entries),
    /// or, once everything is out, the handoff (which pauses the slot); while waiting for the
    /// commit, the commit request again every `commit_retry_ms`. Call until `None`, again after
    /// every ack or tee, and periodically.
    pub fn poll<S: SlotStore<Cursor = C>>(&mut self, store: &S, now_ms: u64) -> Option<Outgoing> {
        if self.phase == SourcePhase::AwaitingCommit {
            let due = *self
                .commit_due_ms
                .get_or_insert(now_ms + self.cfg.commit_retry_ms);
            if now_ms < due {
                return None;
            }
            self.commit_due_ms = Some(now_ms + self.cfg.commit_retry_ms);
            return Some(Outgoing::Coordinator(Message::CommitRequest {
                id: self.id,
                slot: self.slot,
            }));
        }
        if self.phase != SourcePhase::Streaming {
            return None;
        }
        if self.next_seq - self.acked_seq >= self.cfg.window_ops_max {
            return None;
        }
        let room = self
            .cfg
            .batch_ops_max
            .min((self.cfg.window_ops_max - (self.next_seq - self.acked_seq)) as usize);
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        while ops.len() < room && bytes < self.cfg.batch_bytes_max {
            let Some(op) = self.tee.pop_front() else {
                break;
            };
            bytes += op_bytes(&op);
            ops.push(op);
        }
        if ops.len() < room && bytes < self.cfg.batch_bytes_max {
            // A scan step may find nothing yet not be done (empty index buckets, expired
            // entries): scan on, so that `None` from here means "nothing to do until an ack, a
            // tee or a timer" rather than a stall. Each step's work is bounded by the store; the
            // rounds are bounded too, and a periodic poll continues where this one stopped.
            let mut entries = Vec::new();
            for _ in 0..SCAN_ROUNDS_MAX {
                let Some(cursor) = self.cursor.take() else {
                    break;
                };
                self.cursor = store.scan(self.slot, &cursor, room - ops.len(), &mut entries);
                if !entries.is_empty() {
                    break;
                }
            }
            ops.extend(entries.into_iter().map(StreamOp::Put));
        }
        if !ops.is_empty() {
            let first_seq = self.next_seq;
            self.next_seq += ops.len() as u64;
            return Some(Outgoing::Peer(Message::MigrateBatch(MigrateBatch {
                id: self.id,
                slot: self.slot,
                attempt: self.attempt,
                first_seq,
                ops,
            })));
        }
        if self.cursor.is_none() && self.tee.is_empty() {
            self.phase = SourcePhase::HandingOff;
            return Some(Outgoing::Peer(Message::Handoff {
                id: self.id,
                slot: self.slot,
                attempt: self.attempt,
                end_seq: self.next_seq,
                digest: store.digest(self.slot, now_ms),
                cutoff_ms: now_ms,
            }));
        }
        None
    }

    /// Handles a message from the target. Returns what to send in answer. Messages about
    /// another attempt are ignored: they answer a stream this source no longer sends.
    pub fn on_message(&mut self, msg: &Message) -> Option<Outgoing> {
        match *msg {
            Message::MigrateAck { attempt, .. }
            | Message::HandoffAck { attempt, .. }
            | Message::Abort { attempt, .. }
                if attempt != self.attempt =>
            {
                None
            }
            Message::MigrateAck { id, next_seq, .. } if id == self.id => {
                if next_seq <= self.next_seq {
                    self.acked_seq = self.acked_seq.max(next_seq);
                }
                None
            }
            Message::HandoffAck { id, ok, .. } if id == self.id => {
                if self.phase != SourcePhase::HandingOff {
                    return None;
                }
                if ok {
                    self.phase = SourcePhase::AwaitingCommit;
                    Some(Outgoing::Coordinator(Message::CommitRequest {
                        id: self.id,
                        slot: self.slot,
                    }))
                } else {
                    self.abort(AbortReason::Digest)
                }
            }
            Message::Abort { id, reason, .. } if id == self.id => {
                if matches!(self.phase, SourcePhase::Committed | SourcePhase::Aborted(_)) {
                    return None;
                }
                self.phase = SourcePhase::Aborted(reason);
                None
            }
            _ => None,
        }
    }

    /// The link to the target broke. Before the handoff verdict the migration is abandoned (the
    /// driver starts it again from sequence 0 while the table still plans it); once the target
    /// verified, only a table decides, since the commit request may already be on its way.
    pub fn on_link_lost(&mut self) {
        if matches!(self.phase, SourcePhase::Streaming | SourcePhase::HandingOff) {
            self.phase = SourcePhase::Aborted(AbortReason::LinkLost);
            self.tee.clear();
        }
    }

    /// Abandons the migration (link lost, replanned): the source keeps the slot. Returns the
    /// abort to send to the target, if the migration was still live. No-op once committed.
    pub fn abort(&mut self, reason: AbortReason) -> Option<Outgoing> {
        if matches!(self.phase, SourcePhase::Committed | SourcePhase::Aborted(_)) {
            return None;
        }
        self.phase = SourcePhase::Aborted(reason);
        self.tee.clear();
        Some(Outgoing::Peer(Message::Abort {
            id: self.id,
            slot: self.slot,
            attempt: self.attempt,
            reason,
        }))
    }

    /// A new table was installed. Returns the abort to send when the table abandoned this
    /// migration. After `Committed` the driver drops the slot's data and answers `-MOVED`.
    pub fn on_table(&mut self, table: &PartitionTable) -> Option<Outgoing> {
        match judge(table, self.slot, self.id, self.to) {
            Verdict::StillMigrating => None,
            Verdict::Committed if self.phase == SourcePhase::AwaitingCommit => {
                self.phase = SourcePhase::Committed;
                None
            }
            // A table naming the target without our handoff cannot come from this protocol; the
            // coordinator reassigned the slot (e.g. we were declared down). Stop serving it.
            Verdict::Committed => {
                self.phase = SourcePhase::Committed;
                None
            }
            Verdict::Abandoned => self.abort(AbortReason::Replanned),
        }
    }
}

/// Scan steps one `poll` may take while they find nothing.
const SCAN_ROUNDS_MAX: usize = 256;

fn op_bytes(op: &StreamOp) -> usize {
    match op {
        StreamOp::Put(e) => e.map.len() + e.key.len() + e.value.len() + 32,
        StreamOp::Delete { map, key, .. } => map.len() + key.len() + 16,
    }
}

enum Verdict {
    StillMigrating,
    Committed,
    Abandoned,
}

fn judge(table: &PartitionTable, slot: Slot, id: MigrationId, to: ShardAddr) -> Verdict {
    let e = table.entry(slot);
    match e.state {
        SlotState::Migrating { id: cur, .. } if cur == id => Verdict::StillMigrating,
        // The target is the primary: this migration committed, even if the table that
        // committed it never reached us and a later one already plans the next move (a new
        // coordinator may plan from the committing table it received from the old one).
        _ if table.node(e.primary.node).id == to.node && e.primary.core == to.core => {
            Verdict::Committed
        }
        _ => Verdict::Abandoned,
    }
}

/// Target-side phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetPhase {
    /// Applying the stream.
    Receiving,
    /// Sequence and digest matched; waiting for the table that names us.
    Verified,
    /// The table names us: serve the slot.
    Committed,
    /// Abandoned: the received data was dropped.
    Aborted(AbortReason),
}

/// Target side of one slot's migration.
#[derive(Debug)]
pub struct TargetMigration {
    /// This migration.
    pub id: MigrationId,
    /// The slot.
    pub slot: Slot,
    /// This shard (the destination).
    pub me: ShardAddr,
    /// The source's attempt this target follows: a start (sequence 0) of a higher one
    /// replaces it, messages of a lower one are stale and change nothing.
    attempt: u64,
    expected_seq: u64,
    phase: TargetPhase,
}

impl TargetMigration {
    /// Prepares to receive `slot` as shard `me` from the source's attempt `attempt` (call on
    /// the first message of a migration a table shows).
    pub fn new(id: MigrationId, slot: Slot, me: ShardAddr, attempt: u64) -> TargetMigration {
        TargetMigration {
            id,
            slot,
            me,
            attempt,
            expected_seq: 0,
            phase: TargetPhase::Receiving,
        }
    }

    /// Current phase.
    pub fn phase(&self) -> TargetPhase {
        self.phase
    }

    /// Ops applied so far.
    pub fn applied_ops(&self) -> u64 {
        self.expected_seq
    }

    /// The source's attempt this target follows.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// A message of the source's attempt `attempt` starting a stream (`start`: a batch from
    /// sequence 0, or the handoff of an empty slot): a start of a higher attempt than ours
    /// replaces our stream (the source started again), even a verified one, whose source has
    /// then abandoned it. Returns the abort to answer when the message belongs to another
    /// attempt (a lower one is stale: a slow relay or an old link delivered it late; a higher
    /// one that does not start joined mid-way), `None` when it is ours to handle.
    fn follow(&mut self, attempt: u64, start: bool) -> Option<Outgoing> {
        if attempt > self.attempt && start && self.phase != TargetPhase::Committed {
            self.attempt = attempt;
            self.expected_seq = 0;
            self.phase = TargetPhase::Receiving;
        }
        (attempt != self.attempt).then_some(Outgoing::Peer(Message::Abort {
            id: self.id,
            slot: self.slot,
            attempt,
            reason: AbortReason::Sequence,
        }))
    }

    /// Handles a message from the source; returns the answer to send.
    pub fn on_message<S: SlotStore>(&mut self, store: &mut S, msg: &Message) -> Option<Outgoing> {
        match msg {
            Message::MigrateBatch(b) if b.id == self.id => {
                if let Some(abort) = self.follow(b.attempt, b.first_seq == 0) {
                    return Some(abort);
                }
                if self.phase != TargetPhase::Receiving {
                    return None;
                }
                if b.first_seq == 0 && self.expected_seq == 0 {
                    // A stream starts from an empty slot: whatever this store held is stale.
                    store.drop_slot(self.slot);
                }
                if b.first_seq != self.expected_seq || b.slot != self.slot {
                    return self.abort(store, AbortReason::Sequence);
                }
                for op in &b.ops {
                    if store.apply(self.slot, op).is_err() {
                        return self.abort(store, AbortReason::Refused);
                    }
                }
                self.expected_seq += b.ops.len() as u64;
                Some(Outgoing::Peer(Message::MigrateAck {
                    id: self.id,
                    slot: self.slot,
                    attempt: self.attempt,
                    next_seq: self.expected_seq,
                }))
            }
            Message::Handoff {
                id,
                attempt,
                end_seq,
                digest,
                cutoff_ms,
                ..
            } if *id == self.id => {
                // The handoff of an empty slot is its stream's first message, like a batch from
                // sequence 0 (seed 115 at 12 s: a source that started again after its link
                // broke before our verdict reached it waited for a verdict forever).
                if let Some(abort) = self.follow(*attempt, *end_seq == 0) {
                    return Some(abort);
                }
                if self.phase != TargetPhase::Receiving {
                    return None;
                }
                if *end_seq == 0 && self.expected_seq == 0 {
                    // An empty slot: whatever this store held for it is stale.
                    store.drop_slot(self.slot);
                }
                let ok =
                    *end_seq == self.expected_seq && store.digest(self.slot, *cutoff_ms) == *digest;
                if ok {
                    self.phase = TargetPhase::Verified;
                } else {
                    let reason = if *end_seq == self.expected_seq {
                        AbortReason::Digest
                    } else {
                        AbortReason::Sequence
                    };
                    store.drop_slot(self.slot);
                    self.phase = TargetPhase::Aborted(reason);
                }
                Some(Outgoing::Peer(Message::HandoffAck {
                    id: self.id,
                    slot: self.slot,
                    attempt: self.attempt,
                    ok,
                }))
            }
            // An abort of an older attempt is stale; one of a newer attempt ends ours too (the
            // source has abandoned it).
            Message::Abort {
                id,
                attempt,
                reason,
                ..
            } if *id == self.id && *attempt >= self.attempt => {
                if matches!(self.phase, TargetPhase::Receiving | TargetPhase::Verified) {
                    store.drop_slot(self.slot);
                    self.phase = TargetPhase::Aborted(*reason);
                }
                None
            }
            _ => None,
        }
    }

    /// The link to the source broke: abandon while receiving; once verified keep the data, since
    /// the commit may already be decided (a table settles it either way).
    pub fn on_link_lost<S: SlotStore>(&mut self, store: &mut S) {
        if self.phase == TargetPhase::Receiving {
            store.drop_slot(self.slot);
            self.phase = TargetPhase::Aborted(AbortReason::LinkLost);
        }
    }

    /// Abandons the migration before commit: drops what was received; returns the abort to send.
    pub fn abort<S: SlotStore>(&mut self, store: &mut S, reason: AbortReason) -> Option<Outgoing> {
        if !matches!(self.phase, TargetPhase::Receiving | TargetPhase::Verified) {
            return None;
        }
        store.drop_slot(self.slot);
        self.phase = TargetPhase::Aborted(reason);
        Some(Outgoing::Peer(Message::Abort {
            id: self.id,
            slot: self.slot,
            attempt: self.attempt,
            reason,
        }))
    }

    /// A new table was installed: commit (serve from now on) or abandon.
    pub fn on_table<S: SlotStore>(
        &mut self,
        store: &mut S,
        table: &PartitionTable,
    ) -> Option<Outgoing> {
        match judge(table, self.slot, self.id, self.me) {
            Verdict::StillMigrating => None,
            Verdict::Committed if self.phase == TargetPhase::Verified => {
                self.phase = TargetPhase::Committed;
                None
            }
            Verdict::Committed | Verdict::Abandoned => self.abort(store, AbortReason::Replanned),
        }
    }
}

/// A key's identity in a shard: (map, key).
pub type MapKey = (Vec<u8>, Vec<u8>);

/// A `BTreeMap` store for tests and the simulator: per slot, (map, key) -> entry. It applies
/// ops as they come (no version checks, no slot checks): the model of an ordered stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    /// The data.
    pub slots: std::collections::BTreeMap<Slot, std::collections::BTreeMap<MapKey, Entry>>,
}

impl MemStore {
    /// Writes `entry` (as a client write would).
    pub fn put(&mut self, slot: Slot, entry: Entry) {
        self.slots
            .entry(slot)
            .or_default()
            .insert((entry.map.clone(), entry.key.clone()), entry);
    }

    /// Deletes `key` of `map`.
    pub fn delete(&mut self, slot: Slot, map: &[u8], key: &[u8]) -> bool {
        let Some(m) = self.slots.get_mut(&slot) else {
            return false;
        };
        let found = m.remove(&(map.to_vec(), key.to_vec())).is_some();
        if m.is_empty() {
            // An empty slot is stored as no slot, so equal contents compare equal.
            self.slots.remove(&slot);
        }
        found
    }

    /// Reads `key` of `map`.
    pub fn get(&self, slot: Slot, map: &[u8], key: &[u8]) -> Option<&Entry> {
        self.slots.get(&slot)?.get(&(map.to_vec(), key.to_vec()))
    }
}

impl SlotStore for MemStore {
    /// The last (map, key) returned (scans resume after it).
    type Cursor = Option<MapKey>;

    fn scan(
        &self,
        slot: Slot,
        cursor: &Self::Cursor,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> Option<Self::Cursor> {
        use std::ops::Bound;
        let map = self.slots.get(&slot)?;
        let lower = match cursor {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut last = None;
        for (k, e) in map.range((lower, Bound::Unbounded)).take(max.max(1)) {
            out.push(e.clone());
            last = Some(k.clone());
        }
        let last = last?;
        let more = map
            .range((Bound::Excluded(last.clone()), Bound::Unbounded))
            .next()
            .is_some();
        more.then_some(Some(last))
    }

    fn apply(&mut self, slot: Slot, op: &StreamOp) -> Result<(), StoreError> {
        match op {
            StreamOp::Put(e) => self.put(slot, e.clone()),
            StreamOp::Delete { map, key, .. } => {
                self.delete(slot, map, key);
            }
        }
        Ok(())
    }

    fn drop_slot(&mut self, slot: Slot) {
        self.slots.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{commit_migrations, plan, test_node, PlannerConfig};
    use crate::wire::WireConfig;

    /// Keys ending in an odd digit live in a DMap, the others in `default`.
    fn map_of(k: &str) -> &'static [u8] {
        if k.as_bytes().last().is_some_and(|b| b % 2 == 1) {
            b"users"
        } else {
            b"default"
        }
    }

    fn entry(k: &str, v: u64) -> Entry {
        Entry {
            map: map_of(k).to_vec(),
            key: k.as_bytes().to_vec(),
            value: v.to_le_bytes().to_vec(),
            version: v,
            deadline_ms: (v % 3 == 0).then_some(1_000_000 + v),
        }
    }

    /// Runs one migration of `slot` with writes interleaved; returns (source, target) stores.
    fn migrate(writes_every: usize) -> (MemStore, MemStore, SourcePhase, TargetPhase) {
        let slot = 5;
        let mut src = MemStore::default();
        for i in 0..1000 {
            src.put(slot, entry(&format!("k{i:04}"), i));
        }
        let to = ShardAddr {
            node: NodeId([2; 20]),
            core: 0,
        };
        let id = MigrationId(1);
        let cfg = MigrationConfig {
            batch_ops_max: 64,
            window_ops_max: 256,
            ..MigrationConfig::default()
        };
        let mut s: SourceMigration<Option<MapKey>> = SourceMigration::new(id, slot, to, 1, cfg);
        let mut t = TargetMigration::new(id, slot, to, 1);
        let mut dst = MemStore::default();
        let mut version = 10_000;
        let mut step = 0;
        let mut commit = None;
        while let Some(out) = s.poll(&src, 0) {
            let Outgoing::Peer(msg) = out else { panic!() };
            step += 1;
            // Client writes, deletes and overwrites between batches, each teed.
            if writes_every > 0 && step % writes_every == 0 && s.write_gate() == WriteGate::Serve {
                version += 1;
                let k = format!("k{:04}", (version * 7) % 1200);
                if version % 4 == 0 {
                    if src.delete(slot, map_of(&k), k.as_bytes()) {
                        s.tee(StreamOp::Delete {
                            map: map_of(&k).to_vec(),
                            key: k.into_bytes(),
                            version,
                        });
                    }
                } else {
                    let e = entry(&k, version);
                    src.put(slot, e.clone());
                    s.tee(StreamOp::Put(e));
                }
            }
            if let Some(Outgoing::Peer(reply)) = t.on_message(&mut dst, &msg) {
                if let Some(o) = s.on_message(&reply) {
                    commit = Some(o);
                }
            }
        }
        assert!(matches!(
            commit,
            Some(Outgoing::Coordinator(Message::CommitRequest { .. }))
        ));
        (src, dst, s.phase(), t.phase())
    }

    #[test]
    fn stream_with_tee_reproduces_the_source() {
        for every in [0, 1, 2, 5] {
            let (src, dst, sp, tp) = migrate(every);
            assert_eq!(sp, SourcePhase::AwaitingCommit);
            assert_eq!(tp, TargetPhase::Verified);
            assert_eq!(src, dst, "writes every {every}");
        }
    }

    #[test]
    fn the_map_is_part_of_a_keys_identity() {
        let slot = 7;
        let mut a = MemStore::default();
        let mut e = entry("same", 4);
        e.map = b"default".to_vec();
        a.put(slot, e.clone());
        let mut b = MemStore::default();
        e.map = b"users".to_vec();
        b.put(slot, e.clone());
        assert_ne!(a.digest(slot, 0), b.digest(slot, 0), "same key, other map");
        // Both maps hold the key: two entries; deleting one leaves the other.
        a.put(slot, e);
        assert_eq!(a.digest(slot, 0).count, 2);
        a.apply(
            slot,
            &StreamOp::Delete {
                map: b"default".to_vec(),
                key: b"same".to_vec(),
                version: 9,
            },
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(slot, 0), b.digest(slot, 0));
        // No (map, key) split aliases another: "ab"/"c" and "a"/"bc" differ.
        let mut d1 = DigestBuilder::default();
        d1.add(b"ab", b"c", 1);
        let mut d2 = DigestBuilder::default();
        d2.add(b"a", b"bc", 1);
        assert_ne!(d1.finish(), d2.finish());
    }

    #[test]
    fn a_restarted_stream_of_an_empty_slot_resets_a_verified_target() {
        let slot = 3;
        let me = ShardAddr {
            node: NodeId([2; 20]),
            core: 0,
        };
        let id = MigrationId(4);
        let mut dst = MemStore::default();
        let mut t = TargetMigration::new(id, slot, me, 1);
        let batch = Message::MigrateBatch(MigrateBatch {
            id,
            slot,
            attempt: 1,
            first_seq: 0,
            ops: vec![StreamOp::Put(entry("a", 1))],
        });
        t.on_message(&mut dst, &batch);
        let mut one = MemStore::default();
        one.put(slot, entry("a", 1));
        let handoff = |attempt, end_seq, digest| Message::Handoff {
            id,
            slot,
            attempt,
            end_seq,
            digest,
            cutoff_ms: 0,
        };
        let ack = |attempt, ok| {
            Some(Outgoing::Peer(Message::HandoffAck {
                id,
                slot,
                attempt,
                ok,
            }))
        };
        assert_eq!(
            t.on_message(&mut dst, &handoff(1, 1, one.digest(slot, 0))),
            ack(1, true)
        );
        assert_eq!(t.phase(), TargetPhase::Verified);
        // The verdict was lost with the link; the key was deleted meanwhile; the source starts
        // again (attempt 2) and its first message is the handoff of an empty slot.
        let empty = SlotDigest::default();
        assert_eq!(t.on_message(&mut dst, &handoff(2, 0, empty)), ack(2, true));
        assert_eq!(t.phase(), TargetPhase::Verified);
        assert!(dst.slots.is_empty(), "the old copy is gone");
    }

    /// A slow relay (or an old link) delivers the first batch of attempt 1 after attempt 2 was
    /// verified: it must not send the verified copy back to receiving (the commit would then
    /// name a target holding only that stale batch, or nothing).
    #[test]
    fn a_stale_start_of_an_older_attempt_changes_nothing() {
        let slot = 3;
        let me = ShardAddr {
            node: NodeId([2; 20]),
            core: 0,
        };
        let id = MigrationId(4);
        let batch = |attempt, key| {
            Message::MigrateBatch(MigrateBatch {
                id,
                slot,
                attempt,
                first_seq: 0,
                ops: vec![StreamOp::Put(entry(key, 1))],
            })
        };
        let mut dst = MemStore::default();
        let mut t = TargetMigration::new(id, slot, me, 2);
        t.on_message(&mut dst, &batch(2, "b"));
        let mut src = MemStore::default();
        src.put(slot, entry("b", 1));
        let handoff = Message::Handoff {
            id,
            slot,
            attempt: 2,
            end_seq: 1,
            digest: src.digest(slot, 0),
            cutoff_ms: 0,
        };
        t.on_message(&mut dst, &handoff);
        assert_eq!(t.phase(), TargetPhase::Verified);
        let stale = t.on_message(&mut dst, &batch(1, "a"));
        assert!(
            matches!(
                stale,
                Some(Outgoing::Peer(Message::Abort {
                    attempt: 1,
                    reason: AbortReason::Sequence,
                    ..
                }))
            ),
            "{stale:?}"
        );
        let abort = Message::Abort {
            id,
            slot,
            attempt: 1,
            reason: AbortReason::LinkLost,
        };
        assert_eq!(t.on_message(&mut dst, &abort), None);
        assert_eq!(t.phase(), TargetPhase::Verified);
        assert_eq!(dst, src, "the verified copy is intact");
        // And the source ignores answers to another attempt.
        let mut s: SourceMigration<Option<MapKey>> =
            SourceMigration::new(id, slot, me, 3, MigrationConfig::default());
        let ok = Message::HandoffAck {
            id,
            slot,
            attempt: 2,
            ok: true,
        };
        while s.poll(&src, 0).is_some() {}
        assert_eq!(s.phase(), SourcePhase::HandingOff);
        assert_eq!(s.on_message(&ok), None);
        assert_eq!(s.phase(), SourcePhase::HandingOff);
    }

    #[test]
    fn config_validation() {
        assert_eq!(MigrationConfig::default().validate(), Ok(()));
        let bad = MigrationConfig {
            window_ops_max: 1,
            ..MigrationConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(WireConfig::default().validate(), Ok(()));
        assert!(WireConfig {
            frame_bytes_max: 10
        }
        .validate()
        .is_err());
    }

    #[test]
    fn a_commit_seen_only_through_a_later_table_still_commits() {
        let members = [test_node(1, 1), test_node(2, 1)];
        let t0 = plan(
            None,
            &members[..1],
            members[0].id,
            &PlannerConfig::default(),
        );
        let t1 = plan(
            Some(&t0),
            &members,
            members[0].id,
            &PlannerConfig::default(),
        );
        let (slot, _, to, id) = t1.migrations().next().unwrap();
        let to = ShardAddr {
            node: t1.node(to.node).id,
            core: to.core,
        };
        let mut src = MemStore::default();
        src.put(slot, entry("x", 3));
        let mut s: SourceMigration<Option<MapKey>> =
            SourceMigration::new(id, slot, to, 1, MigrationConfig::default());
        let mut t = TargetMigration::new(id, slot, to, 1);
        let mut dst = MemStore::default();
        while let Some(Outgoing::Peer(m)) = s.poll(&src, 0) {
            if let Some(Outgoing::Peer(r)) = t.on_message(&mut dst, &m) {
                s.on_message(&r);
            }
        }
        // The commit table is lost; the next table already moves the slot on from the target.
        let t2 = commit_migrations(
            &t1,
            &[(slot, id)],
            t1.coordinator,
            &PlannerConfig::default(),
        )
        .unwrap();
        let mut t3 = t2.clone();
        t3.epoch += 1;
        let primary = t3.slots[usize::from(slot)].primary;
        let other = crate::partition::Shard {
            node: 1 - primary.node,
            core: 0,
        };
        t3.slots[usize::from(slot)].state = SlotState::Migrating {
            from: primary,
            to: other,
            id: MigrationId(999_999),
        };
        assert_eq!(t3.validate(), Ok(()));
        t.on_table(&mut dst, &t3);
        s.on_table(&t3);
        assert_eq!(
            t.phase(),
            TargetPhase::Committed,
            "the target keeps its verified copy"
        );
        assert_eq!(s.write_gate(), WriteGate::Moved);
        assert_eq!(dst.get(slot, b"default", b"x"), Some(&entry("x", 3)));
    }

    #[test]
    fn sequence_gap_and_bad_digest_abort() {
        let slot = 1;
        let me = ShardAddr {
            node: NodeId([2; 20]),
            core: 0,
        };
        let mut dst = MemStore::default();
        let mut t = TargetMigration::new(MigrationId(9), slot, me, 1);
        let batch = |first_seq| {
            Message::MigrateBatch(MigrateBatch {
                id: MigrationId(9),
                slot,
                attempt: 1,
                first_seq,
                ops: vec![StreamOp::Put(entry("a", 1))],
            })
        };
        assert!(t.on_message(&mut dst, &batch(0)).is_some());
        let out = t.on_message(&mut dst, &batch(5));
        assert!(matches!(
            out,
            Some(Outgoing::Peer(Message::Abort {
                reason: AbortReason::Sequence,
                ..
            }))
        ));
        assert!(dst.slots.is_empty(), "aborted target drops what it got");

        let mut t = TargetMigration::new(MigrationId(9), slot, me, 1);
        let mut dst = MemStore::default();
        t.on_message(&mut dst, &batch(0));
        let handoff = Message::Handoff {
            id: MigrationId(9),
            slot,
            attempt: 1,
            end_seq: 1,
            digest: SlotDigest { count: 1, sum: 0 },
            cutoff_ms: 0,
        };
        assert_eq!(
            t.on_message(&mut dst, &handoff),
            Some(Outgoing::Peer(Message::HandoffAck {
                id: MigrationId(9),
                slot,
                attempt: 1,
                ok: false
            }))
        );
        assert_eq!(t.phase(), TargetPhase::Aborted(AbortReason::Digest));
    }

    #[test]
    fn commit_and_abort_follow_the_table() {
        let members = [test_node(1, 1), test_node(2, 1)];
        let t0 = plan(
            None,
            &members[..1],
            members[0].id,
            &PlannerConfig::default(),
        );
        let t1 = plan(
            Some(&t0),
            &members,
            members[0].id,
            &PlannerConfig::default(),
        );
        let (slot, _, to, id) = t1.migrations().next().unwrap();
        let to = ShardAddr {
            node: t1.node(to.node).id,
            core: to.core,
        };
        let mut src = MemStore::default();
        src.put(slot, entry("x", 3));
        let mut s: SourceMigration<Option<MapKey>> =
            SourceMigration::new(id, slot, to, 1, MigrationConfig::default());
        let mut t = TargetMigration::new(id, slot, to, 1);
        let mut dst = MemStore::default();
        assert!(s.on_table(&t1).is_none());
        while let Some(Outgoing::Peer(m)) = s.poll(&src, 0) {
            if let Some(Outgoing::Peer(r)) = t.on_message(&mut dst, &m) {
                s.on_message(&r);
            }
        }
        assert_eq!(s.write_gate(), WriteGate::TryAgain, "paused during handoff");
        assert_eq!(s.phase(), SourcePhase::AwaitingCommit);
        // The commit request is repeated until the commit table arrives.
        assert_eq!(s.poll(&src, 10), None);
        assert!(matches!(
            s.poll(&src, 1010),
            Some(Outgoing::Coordinator(Message::CommitRequest { .. }))
        ));
        assert_eq!(s.poll(&src, 1011), None);
        // Before the commit table, the target does not serve.
        assert_eq!(t.phase(), TargetPhase::Verified);
        let t2 = commit_migrations(
            &t1,
            &[(slot, id)],
            t1.coordinator,
            &PlannerConfig::default(),
        )
        .unwrap();
        s.on_table(&t2);
        t.on_table(&mut dst, &t2);
        assert_eq!(s.write_gate(), WriteGate::Moved);
        assert_eq!(t.phase(), TargetPhase::Committed);
        assert_eq!(dst.get(slot, b"default", b"x"), Some(&entry("x", 3)));

        // A replan that cancels the migration aborts both sides; the target drops its copy.
        let mut s: SourceMigration<Option<MapKey>> =
            SourceMigration::new(id, slot, to, 1, MigrationConfig::default());
        let mut t = TargetMigration::new(id, slot, to, 1);
        let mut dst = MemStore::default();
        if let Some(Outgoing::Peer(m)) = s.poll(&src, 0) {
            t.on_message(&mut dst, &m);
        }
        assert!(!dst.slots.is_empty());
        let back = plan(
            Some(&t1),
            &members[..1],
            members[0].id,
            &PlannerConfig::default(),
        );
        assert!(matches!(
            s.on_table(&back),
            Some(Outgoing::Peer(Message::Abort { .. }))
        ));
        t.on_table(&mut dst, &back);
        assert_eq!(s.write_gate(), WriteGate::Serve);
        assert!(dst.slots.is_empty());
    }
}
