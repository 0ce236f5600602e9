//! `tessera-bench`: a latency benchmarking harness for RESP servers (tesserad, redis-server, ...)
//! and memcached, with closed-loop and coordinated-omission-corrected open-loop load.
//!
//! Modules in pipeline order: protocol codecs ([`resp`], [`memcache`], [`codec`]) ->
//! what to send ([`workload`]) -> when to send it ([`schedule`]) -> sending it ([`runner`]) ->
//! recording ([`stats`]) -> reporting ([`report`], [`plot`]) -> modes built on runs
//! ([`compare`], [`procfs`]) -> the command line ([`cli`]).
//!
//! It depends on no other Tessera crate: it measures servers from the outside only.
#![forbid(unsafe_code)]

pub mod cli;
pub mod codec;
pub mod compare;
pub mod memcache;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod resp;
pub mod route;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod workload;

/// Everything that can go wrong in a benchmark run. Server error replies are not errors:
/// they are counted per command type.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option or combination of options is invalid; nothing was sent.
    #[error("configuration: {0}")]
    Config(String),
    /// Connecting to a target failed; the run did not start.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The target address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Socket I/O failed mid-run; the run was aborted.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid reply (or closed mid-run); the run was aborted.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Writing a result file failed; measurements were complete.
    #[error("output: {0}")]
    Output(String),
    /// A process could not be measured through /proc.
    #[error("/proc: {0}")]
    Proc(String),
}
