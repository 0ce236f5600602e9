//! `tessera-net`: the runtime and all I/O of a Tessera node.
pub mod resp;
