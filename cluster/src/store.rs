//! The engine as a migration store: [`ShardStore`] adapts one core's [`tessera_engine::Shard`]
//! to [`SlotStore`], and [`tee_ops`] turns a write the source just executed into the
//! [`StreamOp`]s to tee into the slot's migration stream.
//!
//! Mapping between the engine and the wire:
//! - Deadlines: the engine stores an absolute deadline in ms with 0 for "none"; the wire carries
//!   `Option<u64>`. `Some(0)` (a deadline at the epoch, long past) becomes 1, so it stays a
//!   deadline; deadlines above `i64::MAX` are capped there, as the engine caps its own.
//! - Versions: the target writes with `Shard::put_versioned` / `Shard::delete_versioned`, so
//!   the higher version wins and later local writes on the target get higher versions still.
//!   Versions at or above 2^63 are refused (the engine adds 1 to the highest version it has
//!   seen; a hostile `u64::MAX` would overflow it).
//! - Tombstones: the engine keeps none. `delete_versioned` removes the key when the delete is
//!   newer; a `Put` with an *older* version arriving after that delete would be applied (there
//!   is nothing left to compare with). Within one migration stream this cannot happen: the
//!   target starts the slot empty (`TargetMigration` drops it on sequence 0), ops arrive in
//!   stream order, and the stream follows the source's own order of changes (a teed op is
//!   queued when the write happens, a scanned entry is read at the time it is sent, so every
//!   op for a key is at least as new as the ones before it). A delete's version is taken
//!   above every version the source ever stored ([`delete_version`]), so it always removes the
//!   copy the target holds. Replication, which merges independent writers, will need real
//!   tombstones.
//! - Expiry: the source's scan leaves out entries already expired at its `now_ms`; the digest
//!   ignores `now_ms` and counts exactly the entries whose deadline is after the handoff's
//!   cutoff, on both sides, so clock skew between source and target cannot make digests differ.
//!
//! - Removals the source makes on its own (evictions under `maxmemory`, expiry found by a
//!   lookup or the active cycle, idleness included) are recorded by the engine while a slot
//!   streams out (`Shard::record_removals`) and teed as deletes ([`removed_ops`]), so the
//!   target does not keep a key the source evicted.
//!
//! Known limits: a map's runtime settings (`DM.CONFIG SET`) do not travel with its entries
//! (the target applies its own configuration); a key the source evicts while its slot is
//! paused for the handoff (after the last batch, before the commit) stays on the target, which
//! then serves it again (a cache may keep a key longer; it never serves a wrong value).

use bytes::Bytes;
use tessera_engine::{
    key_slot, Command, Shard, SlotCursor, SlotDropCursor, SlotEntry, DEFAULT_MAP,
};

use crate::migration::{DeadlineExt, DigestBuilder, SlotStore, StoreError};
use crate::wire::{Entry, SlotDigest, StreamOp};
use crate::Slot;

/// Versions at or above this are refused from the network (see the module docs).
pub const VERSION_LIMIT: u64 = 1 << 63;

/// One core's [`Shard`] as a [`SlotStore`], at the time `now_ms` (the driver's wall clock in
/// ms, the engine's time base). Build one per call: it only borrows the shard.
#[derive(Debug)]
pub struct ShardStore<'a> {
    /// The shard.
    pub shard: &'a mut Shard,
    /// Now, in ms: entries expired by then are not streamed; target writes use it for the
    /// access time and eviction.
    pub now_ms: u64,
}

impl<'a> ShardStore<'a> {
    /// The store over `shard` at `now_ms`.
    pub fn new(shard: &'a mut Shard, now_ms: u64) -> ShardStore<'a> {
        ShardStore { shard, now_ms }
    }
}

/// The wire form of an engine entry.
pub fn wire_entry(e: &SlotEntry) -> Entry {
    Entry {
        map: e.map.to_vec(),
        key: e.key.to_vec(),
        value: e.value.to_vec(),
        version: e.version,
        deadline_ms: (e.expire_at_ms != 0).then_some(e.expire_at_ms),
    }
}

/// The engine's deadline for a wire deadline (0 = none).
pub fn engine_deadline(deadline_ms: Option<u64>) -> u64 {
    match deadline_ms {
        None => 0,
        Some(d) => d.clamp(1, i64::MAX as u64),
    }
}

/// Engine expiry rule: a key is expired when now > deadline.
fn expired(e: &SlotEntry, now_ms: u64) -> bool {
    e.expire_at_ms != 0 && now_ms > e.expire_at_ms
}

impl SlotStore for ShardStore<'_> {
    type Cursor = SlotCursor;

    fn scan(
        &self,
        slot: Slot,
        cursor: &SlotCursor,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> Option<SlotCursor> {
        let mut buf = Vec::with_capacity(max.min(1024));
        let next = self.shard.scan_slot(slot, cursor, max, &mut buf);
        out.extend(
            buf.into_iter()
                .filter(|e| !expired(e, self.now_ms))
                .map(|e| wire_entry(&e)),
        );
        next
    }

    fn apply(&mut self, slot: Slot, op: &StreamOp) -> Result<(), StoreError> {
        let (key, version) = match op {
            StreamOp::Put(e) => (&e.key, e.version),
            StreamOp::Delete { key, version, .. } => (key, *version),
        };
        let found = key_slot(key);
        if found != slot {
            return Err(StoreError::WrongSlot { slot, found });
        }
        if version >= VERSION_LIMIT {
            return Err(StoreError::Refused(format!(
                "version {version} out of range"
            )));
        }
        match op {
            StreamOp::Put(e) => self
                .shard
                .put_versioned(
                    &e.map,
                    &e.key,
                    Bytes::copy_from_slice(&e.value),
                    engine_deadline(e.deadline_ms),
                    e.version,
                    self.now_ms,
                )
                .map(|_| ())
                .map_err(|err| StoreError::Refused(err.to_string())),
            StreamOp::Delete { map, key, version } => {
                self.shard.delete_versioned(map, key, *version);
                Ok(())
            }
        }
    }

    fn drop_slot(&mut self, slot: Slot) {
        self.shard.drop_slot(slot);
    }

    fn drop_slot_step(
        &mut self,
        slot: Slot,
        cursor: &mut SlotDropCursor,
        keys_max: usize,
    ) -> (usize, bool) {
        self.shard.drop_slot_step(slot, cursor, keys_max)
    }

    /// Like the default, but over every stored entry whatever `now_ms` (see the module docs).
    fn digest(&self, slot: Slot, cutoff_ms: u64) -> SlotDigest {
        let mut d = DigestBuilder::default();
        let mut cursor = SlotCursor::default();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let next = self.shard.scan_slot(slot, &cursor, 1024, &mut buf);
            for e in &buf {
                let deadline = (e.expire_at_ms != 0).then_some(e.expire_at_ms);
                if deadline.is_none_or_after(cutoff_ms) {
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

/// The version a teed delete carries: above every version `shard` ever stored, so the target
/// removes whatever copy of the key it holds. (The engine does not bump its version counter on
/// a delete; a later write of the same key may reuse this number, which is harmless since the
/// key is then absent on the target.)
pub fn delete_version(shard: &Shard) -> u64 {
    shard.last_version() + 1
}

/// The op carrying the current state of `key` in `map`: a `Put` of its value, deadline and
/// version, or a `Delete` when the key is gone (deleted, expired, evicted). Reads without
/// touching anything.
pub fn current_op(shard: &Shard, map: &[u8], key: &[u8], now_ms: u64) -> StreamOp {
    match shard.peek_entry(map, key) {
        Some(e) if !expired(&e, now_ms) => StreamOp::Put(wire_entry(&e)),
        _ => StreamOp::Delete {
            map: map.to_vec(),
            key: key.to_vec(),
            version: delete_version(shard),
        },
    }
}

/// What a command may have changed, for teeing. Take it before `Shard::execute` consumes the
/// command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing (a read).
    Nothing,
    /// These keys of this map (the command's DMap, or `default`).
    Keys {
        /// The map.
        map: Bytes,
        /// The keys, in argument order.
        keys: Vec<Bytes>,
    },
    /// Whole maps or the whole shard (`FLUSHALL`/`FLUSHDB`, `DM.DESTROY`): too much to tee key
    /// by key. Refuse it while a migration is paused (`CoreMigrations::bulk_gate`), and after
    /// executing it restart the streaming migrations (`CoreMigrations::after_bulk_write`).
    Bulk,
}

impl Written {
    /// What `cmd` may write.
    pub fn of(cmd: &Command) -> Written {
        if !cmd.is_write() {
            return Written::Nothing;
        }
        if matches!(cmd, Command::Flush { .. } | Command::DmDestroy { .. }) {
            return Written::Bulk;
        }
        let keys: Vec<Bytes> = cmd.keys().into_iter().cloned().collect();
        if keys.is_empty() {
            // DM.CONFIG SET and the like: no entry changes.
            return Written::Nothing;
        }
        let map = cmd
            .dmap()
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(DEFAULT_MAP));
        Written::Keys { map, keys }
    }
}

/// The ops to tee after a write: for every key of `written` whose slot `migrating` accepts,
/// `(slot, current_op)`. Keys the shard removed on its own (evicted, expired) go through
/// [`removed_ops`]: they are gone, so they become deletes.
pub fn tee_ops(
    shard: &Shard,
    written: &Written,
    now_ms: u64,
    migrating: impl FnMut(Slot) -> bool,
) -> Vec<(Slot, StreamOp)> {
    match written {
        Written::Keys { map, keys } => tee_pairs(
            shard,
            keys.iter().map(|k| (map.as_ref(), k.as_ref())),
            now_ms,
            migrating,
        ),
        Written::Nothing | Written::Bulk => Vec::new(),
    }
}

/// The ops to tee for the keys `shard` removed on its own since the last call (evicted, or
/// expired; `Shard::record_removals` must be on): for every one whose slot `migrating`
/// accepts, `(slot, current_op)` (a delete, or a put when the key was written again since).
/// Call it before teeing a write, so the stream keeps the order of changes.
pub fn removed_ops(
    shard: &mut Shard,
    now_ms: u64,
    migrating: impl FnMut(Slot) -> bool,
) -> Vec<(Slot, StreamOp)> {
    if !shard.has_removed() {
        return Vec::new();
    }
    let removed = shard.take_removed();
    tee_pairs(
        shard,
        removed.iter().map(|(m, k)| (m.as_ref(), k.as_ref())),
        now_ms,
        migrating,
    )
}

/// [`tee_ops`] over explicit (map, key) pairs.
pub fn tee_pairs<'k>(
    shard: &Shard,
    pairs: impl IntoIterator<Item = (&'k [u8], &'k [u8])>,
    now_ms: u64,
    mut migrating: impl FnMut(Slot) -> bool,
) -> Vec<(Slot, StreamOp)> {
    let mut out = Vec::new();
    for (map, key) in pairs {
        let slot = key_slot(key);
        if migrating(slot) {
            out.push((slot, current_op(shard, map, key, now_ms)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::{MemStore, SourceMigration};
    use tessera_engine::{EngineConfig, Reply};

    fn run(shard: &mut Shard, now: u64, args: &[&str]) -> Reply {
        let args: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let cmd = Command::parse(&args).expect("valid command");
        shard.execute(cmd, now)
    }

    const NOW: u64 = 1_800_000_000_000;

    fn slot_t() -> Slot {
        key_slot(b"t")
    }

    /// Every entry of `slot` in `shard`, sorted, via the store's own scan.
    fn contents(shard: &mut Shard, slot: Slot, now: u64) -> Vec<Entry> {
        let store = ShardStore::new(shard, now);
        let mut out = Vec::new();
        let mut cursor = SlotCursor::default();
        loop {
            let next = store.scan(slot, &cursor, 3, &mut out);
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        out.sort_by(|a, b| (&a.map, &a.key).cmp(&(&b.map, &b.key)));
        out.dedup();
        out
    }

    #[test]
    fn scan_yields_maps_deadlines_and_versions_and_skips_expired() {
        let mut shard = Shard::new(EngineConfig::default());
        run(&mut shard, NOW, &["SET", "{t}a", "1"]);
        run(&mut shard, NOW, &["SET", "{t}b", "2", "PX", "5000"]);
        run(&mut shard, NOW, &["DM.PUT", "users", "{t}a", "u"]);
        run(&mut shard, NOW, &["SET", "{t}gone", "x", "PX", "10"]);
        run(&mut shard, NOW, &["SET", "other-slot", "x"]);
        let got = contents(&mut shard, slot_t(), NOW + 100);
        let names: Vec<(&[u8], &[u8])> = got
            .iter()
            .map(|e| (e.map.as_slice(), e.key.as_slice()))
            .collect();
        assert_eq!(
            names,
            vec![
                (&b"default"[..], &b"{t}a"[..]),
                (b"default", b"{t}b"),
                (b"users", b"{t}a")
            ]
        );
        assert_eq!(got[0].deadline_ms, None);
        assert_eq!(got[1].deadline_ms, Some(NOW + 5000));
        assert_eq!(got[2].value, b"u");
        assert!(got[0].version > 0 && got[2].version > got[1].version);
        // The expired key is still stored (lazily expired) and not streamed, nor counted.
        let store = ShardStore::new(&mut shard, NOW + 100);
        assert_eq!(store.digest(slot_t(), NOW + 100).count, 3);
        assert_eq!(
            store.digest(slot_t(), NOW).count,
            4,
            "cutoff, not now, decides"
        );
    }

    #[test]
    fn apply_follows_versions_and_the_slot() {
        let slot = slot_t();
        let mut shard = Shard::new(EngineConfig {
            value_bytes_max: 1024,
            ..EngineConfig::default()
        });
        let mut store = ShardStore::new(&mut shard, NOW);
        let put = |v: u64, val: &str| {
            StreamOp::Put(Entry {
                map: b"users".to_vec(),
                key: b"{t}k".to_vec(),
                value: val.as_bytes().to_vec(),
                version: v,
                deadline_ms: Some(NOW + 60_000),
            })
        };
        store.apply(slot, &put(10, "ten")).unwrap();
        // An older or equal put does not replace a newer value.
        store.apply(slot, &put(9, "nine")).unwrap();
        store.apply(slot, &put(10, "ten again")).unwrap();
        let e = store.shard.peek_entry(b"users", b"{t}k").unwrap();
        assert_eq!((&e.value[..], e.version), (&b"ten"[..], 10));
        assert_eq!(e.expire_at_ms, NOW + 60_000);
        // An older delete loses; a newer one removes.
        let del = |v: u64| StreamOp::Delete {
            map: b"users".to_vec(),
            key: b"{t}k".to_vec(),
            version: v,
        };
        store.apply(slot, &del(5)).unwrap();
        assert!(store.shard.peek_entry(b"users", b"{t}k").is_some());
        store.apply(slot, &del(11)).unwrap();
        assert!(store.shard.peek_entry(b"users", b"{t}k").is_none());
        // No tombstone: an older put after the delete comes back (see the module docs for why
        // a stream never does this).
        store.apply(slot, &put(10, "ten")).unwrap();
        assert!(store.shard.peek_entry(b"users", b"{t}k").is_some());
        // Later local writes get higher versions than anything applied.
        assert!(store.shard.last_version() >= 11);

        // Bad input is refused and changes nothing.
        let before = contents(store.shard, slot, NOW);
        let mut wrong = put(50, "x");
        if let StreamOp::Put(e) = &mut wrong {
            e.key = b"{u}k".to_vec();
        }
        assert!(matches!(
            store.apply(slot, &wrong),
            Err(StoreError::WrongSlot { .. })
        ));
        assert!(matches!(
            store.apply(slot, &put(u64::MAX, "x")),
            Err(StoreError::Refused(_))
        ));
        assert!(matches!(
            store.apply(slot, &del(u64::MAX)),
            Err(StoreError::Refused(_))
        ));
        let mut long = put(60, "x");
        if let StreamOp::Put(e) = &mut long {
            e.value = vec![0; 1025];
        }
        assert!(matches!(
            store.apply(slot, &long),
            Err(StoreError::Refused(_))
        ));
        assert_eq!(contents(store.shard, slot, NOW), before);
        assert!(store.shard.last_version() < VERSION_LIMIT);
    }

    #[test]
    fn deadlines_map_both_ways() {
        assert_eq!(engine_deadline(None), 0);
        assert_eq!(engine_deadline(Some(0)), 1);
        assert_eq!(engine_deadline(Some(42)), 42);
        assert_eq!(engine_deadline(Some(u64::MAX)), i64::MAX as u64);
    }

    #[test]
    fn tee_reads_back_the_written_state() {
        let slot = slot_t();
        let mut shard = Shard::new(EngineConfig::default());
        let all = |_: Slot| true;
        let w = |args: &[&str]| {
            let a: Vec<Bytes> = args
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect();
            Written::of(&Command::parse(&a).unwrap())
        };
        let write = w(&["SET", "{t}a", "1", "PX", "9000"]);
        run(&mut shard, NOW, &["SET", "{t}a", "1", "PX", "9000"]);
        let ops = tee_ops(&shard, &write, NOW, all);
        let version = shard.peek_entry(DEFAULT_MAP, b"{t}a").unwrap().version;
        assert_eq!(
            ops,
            vec![(
                slot,
                StreamOp::Put(Entry {
                    map: b"default".to_vec(),
                    key: b"{t}a".to_vec(),
                    value: b"1".to_vec(),
                    version,
                    deadline_ms: Some(NOW + 9000),
                })
            )]
        );
        // A DMap write names its map; EXPIRE changes the deadline and the version.
        let write = w(&["DM.PUT", "users", "{t}a", "v"]);
        run(&mut shard, NOW, &["DM.PUT", "users", "{t}a", "v"]);
        let ops = tee_ops(&shard, &write, NOW, all);
        assert!(matches!(&ops[0].1, StreamOp::Put(e) if e.map == b"users" && e.value == b"v"));
        let write = w(&["PEXPIRE", "{t}a", "100"]);
        run(&mut shard, NOW + 1, &["PEXPIRE", "{t}a", "100"]);
        let ops = tee_ops(&shard, &write, NOW + 1, all);
        assert!(
            matches!(&ops[0].1, StreamOp::Put(e) if e.deadline_ms == Some(NOW + 101) && e.version > version)
        );
        // A delete (several keys, one in another slot and filtered out) becomes deletes newer
        // than anything stored.
        let write = w(&["DEL", "{t}a", "{t}missing", "other"]);
        run(&mut shard, NOW + 2, &["DEL", "{t}a", "{t}missing", "other"]);
        let ops = tee_ops(&shard, &write, NOW + 2, |s| s == slot);
        assert_eq!(ops.len(), 2);
        for (s, op) in &ops {
            assert_eq!(*s, slot);
            assert!(
                matches!(op, StreamOp::Delete { map, version, .. } if map == b"default" && *version > shard.last_version())
            );
        }
        // Reads tee nothing; flushes are bulk.
        assert_eq!(w(&["GET", "{t}a"]), Written::Nothing);
        assert_eq!(w(&["FLUSHALL"]), Written::Bulk);
        assert_eq!(w(&["DM.DESTROY", "users"]), Written::Bulk);
        // A key that expired by the time of the tee is gone: a delete.
        run(&mut shard, NOW, &["SET", "{t}e", "1", "PX", "5"]);
        assert!(matches!(
            current_op(&shard, DEFAULT_MAP, b"{t}e", NOW + 10),
            StreamOp::Delete { .. }
        ));
    }

    /// A source over a real shard streams to a `MemStore` exactly the live entries.
    #[test]
    fn a_source_over_a_shard_streams_everything_once() {
        let slot = slot_t();
        let mut shard = Shard::new(EngineConfig::default());
        for i in 0..500 {
            let k = format!("{{t}}k{i}");
            run(&mut shard, NOW, &["SET", &k, "v"]);
            if i % 5 == 0 {
                run(&mut shard, NOW, &["DM.PUT", "m", &k, "w"]);
            }
        }
        let to = crate::migration::ShardAddr {
            node: crate::NodeId([2; 20]),
            core: 0,
        };
        let mut s: SourceMigration<SlotCursor> = SourceMigration::new(
            crate::MigrationId(1),
            slot,
            to,
            1,
            crate::MigrationConfig {
                batch_ops_max: 7,
                window_ops_max: 1 << 20,
                ..crate::MigrationConfig::default()
            },
        );
        let mut dst = MemStore::default();
        let store = ShardStore::new(&mut shard, NOW);
        let mut batches = 0;
        while let Some(crate::Outgoing::Peer(m)) = s.poll(&store, NOW) {
            match m {
                crate::Message::MigrateBatch(b) => {
                    batches += 1;
                    for op in &b.ops {
                        dst.apply(slot, op).unwrap();
                    }
                }
                crate::Message::Handoff { digest, .. } => {
                    assert_eq!(digest, dst.digest(slot, NOW));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(batches >= 600 / 7);
        assert_eq!(dst.digest(slot, NOW).count, 600);
        assert_eq!(s.sent_ops(), 600, "each entry once (no rehash happened)");
    }
}
