//! `tessera-engine`: the per-shard keyspace of a Tessera node.
//!
//! Sans-I/O: no sockets, no threads, no clock reads. Every operation that needs time takes
//! `now_ms` (milliseconds since the Unix epoch) as a parameter, so the engine is deterministic
//! given its inputs and can be tested against a model on a simulated clock.
//!
//! The seam with the rest of the system (pelikan style):
//! `Command::parse(args) -> Command`, `Shard::execute(command, now_ms) -> Reply`.
#![forbid(unsafe_code)]

pub mod arena;
pub mod command;
pub mod config;
pub mod error;
pub mod evict;
pub mod glob;
pub mod map;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod number;
pub mod reply;
pub mod shard;
pub mod slot;

#[cfg(test)]
mod semantics_tests;

pub use command::{Command, Cond, ExpireCond, Expiry, MapOption, SetKind, SCAN_CURSOR_LIMIT};
pub use config::{ConfigError, EngineConfig, EvictionPolicy, MapConfig};
pub use error::CommandError;
pub use reply::Reply;
pub use shard::{CompactReport, ExpireReport, Shard, ShardStats};
pub use slot::{hash_tag, key_slot, Slot, SLOT_COUNT};

/// The map that plain Redis commands operate on.
pub const DEFAULT_MAP: &[u8] = b"default";
