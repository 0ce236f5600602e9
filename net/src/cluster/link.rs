//! Peer links: TCP connections between nodes carrying `tessera_cluster::wire` frames, opened
//! by the cluster-secret handshake (`tessera_cluster::Handshake`) before anything else.
//!
//! Each node dials one *outgoing* link to every peer it has something to send to and sends all
//! its frames there; it reads frames from the links peers dialled to it (*incoming*). So a pair
//! of nodes has two links, each carrying one direction: no dial race decides which of two
//! simultaneous connections survives, and a reply simply goes out on the replier's own link.
//! Any error (I/O, a bad frame, a failed handshake, a timeout) closes that link and is logged;
//! nothing a peer sends can panic the node. An outgoing link also reads while it has nothing to
//! write: the peer never sends on it after the handshake, so end of stream means the peer closed
//! it and the link ends at once, instead of losing the next frames to a dead socket. Frames still
//! queued when a link ends stay in its queue for the driver ([`super::driver`]) to re-send or
//! fail. A message too large for a frame is logged and skipped, without closing the link. The listener is on `cluster_port`, never on the
//! client port, so clients can never send peer frames.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::LocalReceiver;
use rkyv::util::AlignedVec;
use tessera_cluster::wire::encode;
use tessera_cluster::{
    AuthError, FrameDecoder, FrameError, Handshake, HandshakeStep, Message, NodeId, WireConfig,
};
use thiserror::Error;

use crate::runtime::{self, TcpStream};

/// Bytes asked for per socket read.
const READ_BYTES: usize = 64 * 1024;
/// Frames taken from the queue into one socket write.
const FRAMES_PER_WRITE: usize = 64;

/// Why a link closed.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("timed out")]
    Timeout,
    #[error("closed by the peer")]
    Closed,
    #[error("the peer sent data on an outgoing link")]
    Unexpected,
    #[error("dialled {expected:?} but {got:?} answered")]
    WrongPeer { expected: NodeId, got: NodeId },
}

/// What a link needs to know about this node.
#[derive(Clone)]
pub struct LinkParams {
    pub me: NodeId,
    pub generation: u64,
    pub secret: Vec<u8>,
    pub wire: WireConfig,
    pub handshake_timeout: Duration,
}

/// Encodes and writes `msgs` in one write (a message too large for a frame is skipped).
async fn write_frames(
    stream: &mut TcpStream,
    msgs: &[Message],
    wire: &WireConfig,
    buf: &mut AlignedVec<16>,
) -> Result<(), LinkError> {
    buf.clear();
    for m in msgs {
        match encode(m, buf, wire) {
            Ok(()) => {}
            Err(FrameError::Oversized(n)) => {
                tracing::warn!(kind = ?m.kind(), bytes = n, "message over frame_bytes_max not sent");
            }
            Err(e) => return Err(e.into()),
        }
    }
    stream.write_all(buf).await?;
    Ok(())
}

/// Reads more bytes into the decoder; `Closed` on end of stream.
async fn fill(stream: &mut TcpStream, dec: &mut FrameDecoder) -> Result<(), LinkError> {
    let n = stream.read(dec.spare(READ_BYTES)).await?;
    if n == 0 {
        return Err(LinkError::Closed);
    }
    dec.filled(n);
    Ok(())
}

/// Runs the handshake on a fresh link; returns the authenticated peer and its generation. Frames
/// the peer sent right after its proof stay in `dec`.
async fn handshake(
    stream: &mut TcpStream,
    dec: &mut FrameDecoder,
    p: &LinkParams,
) -> Result<(NodeId, u64), LinkError> {
    let run = async {
        let mut hs = Handshake::new(&p.secret, p.me, p.generation, rand::random());
        let mut buf = AlignedVec::<16>::new();
        write_frames(stream, &[hs.hello()], &p.wire, &mut buf).await?;
        loop {
            while let Some(frame) = dec.next_frame()? {
                match hs.on_frame(frame.message)? {
                    HandshakeStep::Send(m) => write_frames(stream, &[m], &p.wire, &mut buf).await?,
                    HandshakeStep::Authenticated { node, generation } => {
                        return Ok((node, generation))
                    }
                }
            }
            fill(stream, dec).await?;
        }
    };
    let timeout = async {
        runtime::sleep(p.handshake_timeout).await;
        Err(LinkError::Timeout)
    };
    futures_lite::future::or(run, timeout).await
}

/// What an idle outgoing link woke up for.
enum Wake {
    Queued(Option<Message>),
    Read(std::io::Result<usize>),
}

/// Dials `addr`, authenticates as `expected` (then sets `up`), then writes every message queued
/// on `rx` until the queue's sender is dropped or the link fails. Returns why it ended; messages
/// not yet taken from `rx` stay there.
pub async fn outgoing(
    p: LinkParams,
    expected: NodeId,
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
    rx: &LocalReceiver<Message>,
    up: &std::cell::Cell<bool>,
) -> Result<(), LinkError> {
    let mut stream = TcpStream::connect_timeout(addr, connect_timeout)
        .await
        .map_err(|e| LinkError::Io(e.into()))?;
    let _ = stream.set_nodelay(true);
    let mut dec = FrameDecoder::new(p.wire.clone());
    let (got, _) = handshake(&mut stream, &mut dec, &p).await?;
    if got != expected {
        return Err(LinkError::WrongPeer { expected, got });
    }
    tracing::debug!(peer = ?got, %addr, "peer link up (outgoing)");
    up.set(true);
    let mut buf = AlignedVec::<16>::new();
    let mut batch = Vec::with_capacity(FRAMES_PER_WRITE);
    let mut probe = [0u8; 64];
    loop {
        let wake = futures_lite::future::or(async { Wake::Queued(rx.recv().await) }, async {
            Wake::Read(stream.read(&mut probe).await)
        })
        .await;
        let first = match wake {
            Wake::Queued(Some(m)) => m,
            Wake::Queued(None) => break,
            Wake::Read(Ok(0)) => return Err(LinkError::Closed),
            Wake::Read(Ok(_)) => return Err(LinkError::Unexpected),
            Wake::Read(Err(e)) => return Err(e.into()),
        };
        batch.push(first);
        while batch.len() < FRAMES_PER_WRITE {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        write_frames(&mut stream, &batch, &p.wire, &mut buf).await?;
        batch.clear();
        if buf.capacity() > tessera_cluster::wire::BUFFER_KEEP_BYTES {
            buf = AlignedVec::new();
        }
    }
    Ok(())
}

/// Serves a link a peer dialled: authenticates it, then hands every message to `deliver`
/// (with the authenticated sender) until the link closes or fails.
pub async fn incoming(
    p: LinkParams,
    mut stream: TcpStream,
    mut deliver: impl FnMut(NodeId, Message),
) -> Result<(), LinkError> {
    let _ = stream.set_nodelay(true);
    let mut dec = FrameDecoder::new(p.wire.clone());
    let (peer, _) = handshake(&mut stream, &mut dec, &p).await?;
    tracing::debug!(?peer, "peer link up (incoming)");
    loop {
        while let Some(frame) = dec.next_frame()? {
            let msg = frame.message.to_owned_message()?;
            deliver(peer, msg);
        }
        fill(&mut stream, &mut dec).await?;
    }
}
