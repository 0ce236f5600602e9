//! `Node`: a Tessera node embedded in the application process.
//!
//! It runs the same executors as `tesserad` (one pinned executor per core, each owning its slots),
//! with or without a listening port. Application threads reach it through [`NodeHandle`]s, which
//! send each command to its owner core over a channel and wait for the reply.

use bytes::Bytes;
use tessera_engine::Reply;
pub use tessera_net::{NodeConfig, NodeHandle};

use crate::{DMap, Error, Execute, PubSub, Subscription};

impl Execute for NodeHandle {
    fn execute(&self, args: Vec<Bytes>) -> Result<Reply, Error> {
        Ok(NodeHandle::execute(self, args))
    }
}

impl PubSub for NodeHandle {
    fn publish(&self, channel: impl AsRef<[u8]>, message: impl AsRef<[u8]>) -> Result<u64, Error> {
        let n = NodeHandle::publish(
            self,
            Bytes::copy_from_slice(channel.as_ref()),
            Bytes::copy_from_slice(message.as_ref()),
        );
        Ok(n as u64)
    }

    fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error> {
        let channels = channels
            .iter()
            .map(|c| Bytes::copy_from_slice(c.as_ref()))
            .collect();
        Ok(Subscription::new(
            NodeHandle::subscribe(self, channels),
            None,
        ))
    }
}

/// A running embedded node. Stop it with [`Node::shutdown`].
pub struct Node {
    inner: tessera_net::Node,
    handle: NodeHandle,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("cores", &self.inner.cores())
            .field("local_addr", &self.inner.local_addr())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node with `config` (validated first). Set `config.net.listen = false` for a node
    /// that serves only this process; `config.net.port = 0` picks a free port.
    pub fn start(config: NodeConfig) -> Result<Node, Error> {
        let inner = tessera_net::Node::start(config).map_err(|e| Error::Start(e.to_string()))?;
        let handle = inner.handle();
        Ok(Node { inner, handle })
    }

    /// A node that serves only this process (no listener) on `cores` executors (0 = one per CPU).
    pub fn start_embedded(cores: usize) -> Result<Node, Error> {
        let mut config = NodeConfig::default();
        config.net.listen = false;
        config.runtime.cores = cores;
        Node::start(config)
    }

    /// A cloneable handle usable from any application thread.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// A typed handle on map `name`.
    pub fn dmap(&self, name: impl AsRef<[u8]>) -> DMap<NodeHandle> {
        DMap::new(self.handle(), name)
    }

    /// Runs one command (RESP arguments, `args[0]` the name) on its owner core.
    pub fn execute(&self, args: Vec<Bytes>) -> Reply {
        self.handle.execute(args)
    }

    /// Publishes `message` on `channel` to subscribers on every core (and connection), and in
    /// cluster mode on every member, as the `PUBLISH` command does; returns how many received
    /// it. The same call as [`Client::publish`](crate::Client::publish).
    pub fn publish(
        &self,
        channel: impl AsRef<[u8]>,
        message: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        PubSub::publish(&self.handle, channel, message)
    }

    /// Subscribes to `channels`; `(channel, message)` pairs arrive on the [`Subscription`].
    /// Dropping it ends the subscription. The same call as
    /// [`Client::subscribe`](crate::Client::subscribe).
    pub fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error> {
        PubSub::subscribe(&self.handle, channels)
    }

    /// The address clients connect to, when the node listens.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    /// Number of executors.
    pub fn cores(&self) -> usize {
        self.inner.cores()
    }

    /// Stops accepting, finishes in-flight requests and joins every executor thread.
    pub fn shutdown(self) {
        self.inner.shutdown();
    }
}

impl PubSub for Node {
    fn publish(&self, channel: impl AsRef<[u8]>, message: impl AsRef<[u8]>) -> Result<u64, Error> {
        Node::publish(self, channel, message)
    }

    fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error> {
        Node::subscribe(self, channels)
    }
}
