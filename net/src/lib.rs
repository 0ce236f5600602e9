//! `tessera-net`: the runtime and all I/O of a Tessera node.
//!
//! A [`Node`] runs one pinned glommio executor per core; each owns one engine `Shard` and the
//! slots the `SlotTable` gives it, and accepts its own connections (`SO_REUSEPORT`).
//!
//! Map, in request order:
//! - [`runtime`]: the only module that knows glommio: executors, mailboxes (crossbeam channels
//!   plus a doorbell), timers, sockets.
//! - [`resp`]: the RESP2/RESP3 codec (zero-copy request parsing, reply encoding).
//! - [`conn`]: one connection: read, parse, dispatch, write; connection and server commands.
//! - [`commands`]: the command table (arity, flags, key positions) behind arity errors and
//!   `COMMAND`.
//! - [`dispatch`]: routing data commands to owner cores, one batch per core per read, splitting
//!   and merging multi-key and keyless commands, SCAN cursors, DM.LOCK waiting.
//! - [`core`]: what one executor owns and the messages cores exchange.
//! - [`pubsub`], [`info`]: pub/sub delivery per core; INFO and CONFIG.
//! - [`node`], [`config`], [`server`]: start-up, the embedding handle, shutdown; configuration.
//! - [`admin`]: the admin HTTP port (`/metrics` for Prometheus, `/health`) and the per-core
//!   command latency histograms.
//!
//! Invariants: only a core's own executor touches its shard (nothing else is shared between
//! cores but bounded request channels, one-reply-per-request response channels, and a few
//! atomics outside the data path); replies leave a connection in request order; no input from
//! a socket panics or blocks the executor.
pub mod admin;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod conn;
pub mod core;
pub mod dispatch;
pub mod info;
pub mod node;
pub mod pubsub;
pub mod resp;
pub mod runtime;
pub mod server;

pub use config::{NetConfig, NodeConfig};
pub use node::{Node, NodeHandle, StartError};
