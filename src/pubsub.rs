//! Pub/sub with one shape in both modes: [`PubSub`] is implemented by the embedded node
//! ([`Node`](crate::Node), [`NodeHandle`](crate::NodeHandle)) and by the remote
//! [`Client`](crate::Client), and both hand out the same [`Subscription`].
//!
//! Delivery is the same too: messages arrive in publish order on a bounded queue; when the
//! queue is full further messages are dropped for that subscriber (the embedded node's
//! `net.pubsub_pending_max`, the client's `ClientConfig::subscription_buffer`); dropping the
//! `Subscription` ends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, TryRecvError};

use crate::Error;

/// Publishing and subscribing, embedded or remote.
pub trait PubSub {
    /// Publishes `message` on `channel`; returns how many subscribers received it.
    fn publish(&self, channel: impl AsRef<[u8]>, message: impl AsRef<[u8]>) -> Result<u64, Error>;

    /// Subscribes to `channels`; returns once the subscription is active, so a message
    /// published after this returns is delivered.
    fn subscribe<C: AsRef<[u8]>>(&self, channels: &[C]) -> Result<Subscription, Error>;
}

/// An active subscription: `(channel, message)` pairs in publish order. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<(Bytes, Bytes)>,
    /// Set on drop; a remote subscription's reader thread leaves when it sees it.
    stop: Option<Arc<AtomicBool>>,
}

impl Subscription {
    /// A subscription fed by `rx`; `stop` (if any) is raised when it is dropped.
    pub(crate) fn new(rx: Receiver<(Bytes, Bytes)>, stop: Option<Arc<AtomicBool>>) -> Self {
        Subscription { rx, stop }
    }

    /// Waits for the next message. Fails once the subscription has ended (node shut down,
    /// connection lost) and every delivered message was taken.
    pub fn recv(&self) -> Result<(Bytes, Bytes), RecvError> {
        self.rx.recv()
    }

    /// Waits at most `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<(Bytes, Bytes), RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Result<(Bytes, Bytes), TryRecvError> {
        self.rx.try_recv()
    }

    /// The underlying receiver, e.g. for `crossbeam_channel::select!`.
    pub fn receiver(&self) -> &Receiver<(Bytes, Bytes)> {
        &self.rx
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Release);
        }
    }
}
