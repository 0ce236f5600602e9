//! Pub/sub on one core: the subscriptions of this core's connections (and of application
//! threads registered here), and delivery of a published message to them.
//!
//! A PUBLISH on any core is sent to every core (`Op::Publish`), and each delivers to its own
//! subscribers, so no subscription state is shared. A subscriber that does not keep up (its
//! queue holds `pubsub_pending_max` messages) is disconnected: its queue sender is dropped,
//! which ends the connection; the publisher and the node carry on.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use tessera_engine::glob::glob_match;

/// A message for one connection: `(pattern, channel, payload)`; `pattern` is set for pattern
/// subscriptions.
pub struct PushMsg {
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub message: Bytes,
}

/// The queue of one subscribed connection.
pub struct Subscriber {
    pub conn_id: u64,
    tx: LocalSender<PushMsg>,
}

/// A new subscriber queue for connection `conn_id` holding at most `capacity` messages.
pub fn subscriber(conn_id: u64, capacity: usize) -> (Rc<Subscriber>, LocalReceiver<PushMsg>) {
    let (tx, rx) = local_channel::new_bounded(capacity);
    (Rc::new(Subscriber { conn_id, tx }), rx)
}

/// An application thread's subscription (embedding API).
pub struct ThreadSubscriber {
    pub channels: Vec<Bytes>,
    pub tx: crossbeam_channel::Sender<(Bytes, Bytes)>,
}

/// This core's subscriptions.
#[derive(Default)]
pub struct PubSub {
    channels: HashMap<Bytes, Vec<Rc<Subscriber>>>,
    patterns: Vec<(Bytes, Rc<Subscriber>)>,
    threads: Vec<ThreadSubscriber>,
}

impl PubSub {
    pub fn subscribe(&mut self, channel: Bytes, sub: &Rc<Subscriber>) {
        let list = self.channels.entry(channel).or_default();
        if !list.iter().any(|s| s.conn_id == sub.conn_id) {
            list.push(Rc::clone(sub));
        }
    }

    pub fn unsubscribe(&mut self, channel: &[u8], conn_id: u64) {
        if let Some(list) = self.channels.get_mut(channel) {
            list.retain(|s| s.conn_id != conn_id);
            if list.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    pub fn psubscribe(&mut self, pattern: Bytes, sub: &Rc<Subscriber>) {
        if !self
            .patterns
            .iter()
            .any(|(p, s)| s.conn_id == sub.conn_id && *p == pattern)
        {
            self.patterns.push((pattern, Rc::clone(sub)));
        }
    }

    pub fn punsubscribe(&mut self, pattern: &[u8], conn_id: u64) {
        self.patterns
            .retain(|(p, s)| !(s.conn_id == conn_id && p.as_ref() == pattern));
    }

    /// Removes every subscription of a connection (it closed, reset, or fell behind).
    pub fn remove_conn(&mut self, conn_id: u64) {
        self.channels.retain(|_, list| {
            list.retain(|s| s.conn_id != conn_id);
            !list.is_empty()
        });
        self.patterns.retain(|(_, s)| s.conn_id != conn_id);
    }

    pub fn subscribe_thread(&mut self, sub: ThreadSubscriber) {
        self.threads.push(sub);
    }

    /// Delivers to every local subscriber; returns how many received it.
    pub fn publish(&mut self, channel: &Bytes, message: &Bytes) -> usize {
        let mut n = 0;
        let mut laggards: HashSet<u64> = HashSet::new();
        if let Some(list) = self.channels.get(channel) {
            for s in list {
                let m = PushMsg {
                    pattern: None,
                    channel: channel.clone(),
                    message: message.clone(),
                };
                if s.tx.try_send(m).is_ok() {
                    n += 1;
                } else {
                    laggards.insert(s.conn_id);
                }
            }
        }
        for (p, s) in &self.patterns {
            if glob_match(p, channel) {
                let m = PushMsg {
                    pattern: Some(p.clone()),
                    channel: channel.clone(),
                    message: message.clone(),
                };
                if s.tx.try_send(m).is_ok() {
                    n += 1;
                } else {
                    laggards.insert(s.conn_id);
                }
            }
        }
        self.threads.retain(|t| {
            if !t.channels.contains(channel) {
                return true;
            }
            match t.tx.try_send((channel.clone(), message.clone())) {
                Ok(()) => {
                    n += 1;
                    true
                }
                // A full application queue drops this message for it (it is told nothing, like
                // a Redis client that reconnects); a dropped receiver ends the subscription.
                Err(crossbeam_channel::TrySendError::Full(_)) => true,
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            }
        });
        for id in laggards {
            tracing::warn!(client = id, "subscriber fell behind; disconnecting it");
            self.remove_conn(id);
        }
        n
    }

    /// Channels with at least one subscriber, optionally filtered by a glob.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self
            .channels
            .keys()
            .filter(|c| pattern.map_or(true, |p| glob_match(p, c)))
            .cloned()
            .collect();
        for t in &self.threads {
            for c in &t.channels {
                if pattern.map_or(true, |p| glob_match(p, c)) && !v.contains(c) {
                    v.push(c.clone());
                }
            }
        }
        v
    }

    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, Vec::len)
            + self
                .threads
                .iter()
                .filter(|t| t.channels.iter().any(|c| c.as_ref() == channel))
                .count()
    }

    pub fn numpat(&self) -> usize {
        self.patterns.len()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}
