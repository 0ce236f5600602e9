//! Cross-core mailboxes: how a core (or an application thread) hands work to another core.
//!
//! Each core owns one [`Inbox`]: a bounded crossbeam channel of requests, an unbounded crossbeam
//! channel of responses, and a doorbell. Any thread holds a cloneable [`MailboxTx`] to it.
//!
//! Why crossbeam and not glommio's channel mesh: the embedding API sends from plain application
//! threads, which glommio's channels cannot do; one mechanism serves both. Why two channels:
//! requests are bounded (a full channel is backpressure: the sender yields and retries), while
//! responses are bounded by construction (exactly one per request in flight) and must never
//! wait, so two cores replying to each other cannot deadlock.
//!
//! The doorbell wakes a parked executor. The inbox task *arms* it only when it has found both
//! channels empty; a sender rings (one loopback datagram, one syscall) only when it disarms an
//! armed doorbell, so a busy core receives messages with no syscall at all. The datagram's
//! completion arrives through the executor's io_uring, which both a spinning and a parked
//! executor watch.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

/// The sending side of one core's mailbox. Cheap to clone; usable from any thread.
pub struct MailboxTx<Q, P> {
    requests: Sender<Q>,
    responses: Sender<P>,
    armed: Arc<AtomicBool>,
    bell: Arc<StdUdpSocket>,
}

impl<Q, P> Clone for MailboxTx<Q, P> {
    fn clone(&self) -> Self {
        MailboxTx {
            requests: self.requests.clone(),
            responses: self.responses.clone(),
            armed: Arc::clone(&self.armed),
            bell: Arc::clone(&self.bell),
        }
    }
}

/// The receiving side before it is moved into its executor (it is `Send`).
pub struct InboxParts<Q, P> {
    requests: Receiver<Q>,
    responses: Receiver<P>,
    armed: Arc<AtomicBool>,
    bell: StdUdpSocket,
}

/// The receiving side, bound to its executor.
pub struct Inbox<Q, P> {
    requests: Receiver<Q>,
    responses: Receiver<P>,
    armed: Arc<AtomicBool>,
    bell: super::UdpSocket,
    spin: std::time::Duration,
}

/// One message taken from an inbox.
pub enum Received<Q, P> {
    Request(Q),
    Response(P),
}

/// Creates a mailbox whose request channel holds `capacity` messages.
pub fn mailbox<Q, P>(capacity: usize) -> io::Result<(MailboxTx<Q, P>, InboxParts<Q, P>)> {
    let (qtx, qrx) = crossbeam_channel::bounded(capacity);
    let (ptx, prx) = crossbeam_channel::unbounded();
    let receiver = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let sender = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sender.connect(receiver.local_addr()?)?;
    sender.set_nonblocking(true)?;
    let armed = Arc::new(AtomicBool::new(false));
    Ok((
        MailboxTx {
            requests: qtx,
            responses: ptx,
            armed: Arc::clone(&armed),
            bell: Arc::new(sender),
        },
        InboxParts {
            requests: qrx,
            responses: prx,
            armed,
            bell: receiver,
        },
    ))
}

impl<Q, P> MailboxTx<Q, P> {
    /// Queues a request. `Err(Full)` gives it back when the channel is full (the caller yields
    /// and retries); `Err(Disconnected)` when the core has stopped.
    pub fn try_send(&self, request: Q) -> Result<(), TrySendError<Q>> {
        self.requests.try_send(request)?;
        self.ring();
        Ok(())
    }

    /// Queues a request, blocking the calling (application) thread while the channel is full.
    /// Never call this on an executor thread.
    pub fn send_blocking(&self, request: Q) -> Result<(), Q> {
        self.requests.send(request).map_err(|e| e.0)?;
        self.ring();
        Ok(())
    }

    /// Queues a response; never waits. `Err` gives it back when the core has stopped.
    pub fn respond(&self, response: P) -> Result<(), P> {
        self.responses.send(response).map_err(|e| e.0)?;
        self.ring();
        Ok(())
    }

    /// Wakes the receiving executor if it armed its doorbell.
    pub fn ring(&self) {
        // Pairs with the fence in `Inbox::recv`: either the receiver sees our message on its
        // re-check, or we see `armed` and ring.
        fence(Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            // A full socket buffer means a wake-up is already pending: ignoring it is right.
            let _ = self.bell.send(&[1]);
        }
    }

    /// Requests waiting in the channel.
    pub fn backlog(&self) -> usize {
        self.requests.len()
    }
}

impl<Q, P> InboxParts<Q, P> {
    /// Binds the inbox to the current executor. Must be called on the executor's thread.
    /// `spin`: how long [`Inbox::recv`] keeps looking (yielding to other tasks in between)
    /// before it arms the doorbell; while it looks, senders need no syscall.
    pub fn bind(self, spin: std::time::Duration) -> io::Result<Inbox<Q, P>> {
        self.bell.set_nonblocking(true)?;
        let socket = socket2::Socket::from(self.bell);
        Ok(Inbox {
            requests: self.requests,
            responses: self.responses,
            armed: self.armed,
            bell: super::UdpSocket::from(socket),
            spin,
        })
    }
}

impl<Q, P> Inbox<Q, P> {
    /// Takes one message if any is waiting (responses first: they unblock work in progress).
    pub fn try_recv(&self) -> Option<Received<Q, P>> {
        match self.responses.try_recv() {
            Ok(p) => return Some(Received::Response(p)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        match self.requests.try_recv() {
            Ok(q) => Some(Received::Request(q)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Waits for the next message without blocking the executor: arms the doorbell, re-checks
    /// the channels, then awaits a ring. `None` when woken without a message (a bare
    /// [`MailboxTx::ring`], used to make the owner re-check its state, or a stray datagram).
    pub async fn recv(&self) -> Option<Received<Q, P>> {
        let mut buf = [0u8; 16];
        if let Some(m) = self.try_recv() {
            return Some(m);
        }
        // Bounded spin: glommio polls the network between our yields, so connections are
        // served meanwhile; a message arriving now costs its sender no doorbell syscall.
        if !self.spin.is_zero() {
            let start = std::time::Instant::now();
            while start.elapsed() < self.spin {
                super::yield_now().await;
                if let Some(m) = self.try_recv() {
                    return Some(m);
                }
            }
        }
        self.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if let Some(m) = self.try_recv() {
            self.armed.store(false, Ordering::SeqCst);
            return Some(m);
        }
        if self.bell.recv_from(&mut buf).await.is_err() {
            super::yield_now().await;
        }
        self.try_recv()
    }

    /// Address of the doorbell (for tests and diagnostics).
    pub fn bell_addr(&self) -> Option<SocketAddr> {
        self.bell.local_addr().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{spawn_executor, RuntimeConfig};

    #[test]
    fn wakes_a_parked_executor_from_a_plain_thread() {
        let (tx, parts) = mailbox::<u64, u64>(16).unwrap();
        let cfg = RuntimeConfig {
            cores: 1,
            spin_before_park_us: 0,
            ..RuntimeConfig::default()
        };
        let cpu = cfg.cpus()[0];
        let ex = spawn_executor(0, cpu, &cfg, move || async move {
            let inbox = parts.bind(std::time::Duration::ZERO).unwrap();
            let mut sum = 0;
            let mut seen = 0;
            while seen < 1000 {
                match inbox.recv().await {
                    Some(Received::Request(q) | Received::Response(q)) => {
                        sum += q;
                        seen += 1;
                    }
                    None => {}
                }
            }
            sum
        })
        .unwrap();
        for i in 0..500u64 {
            tx.send_blocking(i).unwrap();
            tx.respond(i).unwrap();
            if i % 100 == 0 {
                // let the executor park between bursts
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        assert_eq!(ex.join().unwrap(), 2 * (0..500u64).sum::<u64>());
    }

    #[test]
    fn full_request_channel_is_backpressure() {
        let (tx, _parts) = mailbox::<u8, u8>(16).unwrap();
        for _ in 0..16 {
            tx.try_send(1).unwrap();
        }
        assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
        // responses are never refused while the inbox exists
        for _ in 0..100 {
            tx.respond(1).unwrap();
        }
    }
}
