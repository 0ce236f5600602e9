//! `tessera`: the embedding API of the Tessera cache.
//!
//! - [`Node`] runs a Tessera node inside this process (the same executors as `tesserad`);
//!   [`Client`] talks to a remote `tesserad` (or Redis Cluster-compatible servers).
//! - [`DMap`] is the typed DMap API (Olric's operations) over any [`Execute`] backend: an
//!   embedded node's handle or a remote connection. Switching modes is a constructor change.
//! - [`PubSub`] (publish, subscribe into a [`Subscription`]) has the same shape in both modes.
//! - Feature `serde` (default): `DMap::put_serde`/`get_serde` store typed values as JSON, or
//!   in any format through a [`Codec`] (`put_with`/`get_with`).
//! - The crates below are re-exported for users who need the lower layers.
#![forbid(unsafe_code)]

#[cfg(feature = "serde")]
pub mod codec;
pub mod dmap;
pub mod error;
pub mod node;
pub mod pubsub;
pub mod remote;

#[cfg(feature = "serde")]
pub use codec::{Codec, Json};
pub use dmap::{DMap, Entry, Execute, LockGuard, PutOptions};
pub use error::Error;
pub use node::{Node, NodeConfig, NodeHandle};
pub use pubsub::{PubSub, Subscription};
pub use remote::{Client, ClientConfig};
pub use tessera_engine::{CommandError, Reply};

pub use tessera_cluster as cluster;
pub use tessera_engine as engine;
pub use tessera_net as net;
