//! `tessera-engine`: the per-shard keyspace of a Tessera node.
//!
//! Sans-I/O: no sockets, no threads, no clock reads. Every operation that needs time takes
//! `now_ms` (milliseconds since the Unix epoch) as a parameter, so the engine is deterministic
//! given its inputs and can be tested against a model on a simulated clock.
//!
//! The seam with the rest of the system (pelikan style):
//! `Command::parse(args) -> Command`, `Shard::execute(command, now_ms) -> Reply`.
//!
//! Code map:
//! - `command`: `Command` and its parser (arity, options, error texts of Redis and Olric).
//! - `shard`: `Shard`, the semantics of every command, lazy and active expiry, the memory
//!   budget and eviction, compaction steps, statistics.
//! - `map`: `Map`, one map's storage: arena tables in two chains (with / without TTL), the
//!   per-slot index of packed 4-byte locations, the out-of-line value slab, SCAN, sampling,
//!   the SIEVE hand, compaction.
//! - `arena`: an arena table and the byte layout of an entry.
//! - `evict`: LFU arithmetic, candidate ranking, the seeded PRNG.
//! - `config`: `EngineConfig`, `MapConfig`, `EvictionPolicy`.
//! - `number`, `glob`: Redis's number parsing/formatting and glob matching.
//! - `slot`: the slot function; `reply`, `error`: what a command returns.
//! - `model` (tests, feature `model`): the `HashMap` reference model used by the property test
//!   and the fuzz target.
//!
//! The executor that owns a `Shard` is expected to call `active_expire` and `compact_step`
//! with small budgets between requests; writes also compact a little by themselves when a map
//! carries much garbage, so memory stays bounded without them.
#![forbid(unsafe_code)]

pub mod arena;
pub mod command;
pub mod config;
pub mod error;
pub mod evict;
pub mod glob;
pub mod map;
mod maps;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod number;
pub mod reply;
pub mod shard;
pub mod slot;
mod slot_pos;

#[cfg(test)]
mod semantics_tests;

pub use command::{Command, Cond, ExpireCond, Expiry, MapOption, SetKind, SCAN_CURSOR_LIMIT};
pub use config::{ConfigError, EngineConfig, EvictionPolicy, MapConfig};
pub use error::{CommandError, RawError};
pub use reply::Reply;
pub use shard::{
    CompactReport, ExpireReport, Shard, ShardStats, SlotCursor, SlotDropCursor, SlotEntry,
};
pub use slot::{hash_tag, key_slot, Slot, SLOT_COUNT};

/// The map that plain Redis commands operate on.
pub const DEFAULT_MAP: &[u8] = b"default";
