//! `tessera-net`: the runtime and all I/O of a Tessera node.
pub mod commands;
pub mod config;
pub mod conn;
pub mod core;
pub mod dispatch;
pub mod info;
pub mod node;

pub use config::{NetConfig, NodeConfig};
pub use node::{Node, NodeHandle, StartError};
pub mod pubsub;
pub mod resp;
pub mod runtime;
pub mod server;
