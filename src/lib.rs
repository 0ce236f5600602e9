//! `tessera`: the embedding API of the Tessera cache.
#![forbid(unsafe_code)]

pub use tessera_cluster as cluster;
pub use tessera_engine as engine;
pub use tessera_net as net;
