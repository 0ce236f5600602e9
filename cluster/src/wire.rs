//! Peer-link frames: a 16-byte little-endian header and a validated rkyv body.
//!
//! ```text
//! offset  size  field
//!      0     4  magic         0x5453_5246 ("FRST" on the wire, little-endian "TSRF")
//!      4     2  wire_version  WIRE_VERSION; a peer speaking another version is refused
//!      6     2  kind          FrameKind, must match the body's message variant
//!      8     4  body_len      bytes of the rkyv archive, before padding; <= frame_bytes_max
//!     12     4  crc32c        CRC32C over header bytes 0..12 and the padded body
//!     16     *  body          rkyv archive of `Message`, zero-padded to a multiple of 16
//! ```
//!
//! Every frame starts 16-aligned in the decoder's buffer, so every body is 16-aligned and is read
//! in place through `rkyv::access` (bytecheck). The CRC is checked first: bytecheck alone accepts
//! many single-byte corruptions as a different valid message. `access_unchecked` is never used.
//! rkyv's format features are pinned in the workspace manifest (`little_endian`, `aligned`,
//! `pointer_width_32`), so feature unification cannot change this format.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::node::NodeId;
use crate::partition::{MigrationId, PartitionTable};
use crate::Slot;

/// First four bytes of every frame.
pub const MAGIC: u32 = 0x5453_5246;
/// Version of this header and schema; bumped on any incompatible change (2: stream entries
/// and deletes name their map; 3: a forwarded request names the protocol of its reply; 4:
/// migration stream messages name the source's attempt; 5: epoch hints carry the sender's clock
/// and the coordinator lease's echo).
pub const WIRE_VERSION: u16 = 5;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 16;
/// Bodies are padded to a multiple of this.
pub const BODY_ALIGN: usize = 16;
/// An idle decoder keeps at most this much buffer; more (after a large frame) is freed.
pub const BUFFER_KEEP_BYTES: usize = 1 << 20;
/// Default for [`WireConfig::frame_bytes_max`]: 16 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// Frame codec limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireConfig {
    /// Largest accepted body (before padding), in bytes. A header announcing more is garbage and
    /// is refused before any allocation. Must be at least 4096 and at most `u32::MAX - 16`.
    /// Default 16 MiB.
    pub frame_bytes_max: usize,
}

impl WireConfig {
    /// Checks the documented constraints.
    pub fn validate(&self) -> Result<(), FrameError> {
        if (4096..=u32::MAX as usize - HEADER_BYTES).contains(&self.frame_bytes_max) {
            Ok(())
        } else {
            Err(FrameError::TooLarge {
                len: self.frame_bytes_max,
                max: u32::MAX as usize - HEADER_BYTES,
            })
        }
    }
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

/// A key/value entry as it travels in a migration stream. Deadlines are absolute (milliseconds
/// of the cluster's wall clock), so a moved key expires at the same instant everywhere. A key is
/// identified by (map, key): plain Redis commands use the engine's `default` map, DMap
/// commands their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// The map (DMap name; `default` for plain Redis keys).
    pub map: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Version of the write that produced this entry (higher wins).
    pub version: u64,
    /// Absolute expiry, milliseconds; `None` for no expiry.
    pub deadline_ms: Option<u64>,
}

/// One operation of a migration stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum StreamOp {
    /// Set the key to this entry (a scanned entry or a teed write).
    Put(Entry),
    /// The key was deleted by the write of `version` (a tombstone: never lost to older data).
    Delete {
        /// The map.
        map: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// Version of the delete.
        version: u64,
    },
}

/// A batch of consecutive stream operations; `first_seq` numbers the first one.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct MigrateBatch {
    /// The migration.
    pub id: MigrationId,
    /// The slot.
    pub slot: Slot,
    /// The source's attempt (see [`Message::MigrateAck`]).
    pub attempt: u64,
    /// Sequence number of `ops[0]`; sequences start at 0 and have no gaps.
    pub first_seq: u64,
    /// The operations, in stream order.
    pub ops: Vec<StreamOp>,
}

/// Order-independent digest of a slot's live content: count and wrapping sum of per-entry hashes
/// of (map, key, version).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct SlotDigest {
    /// Live entries.
    pub count: u64,
    /// Wrapping sum of `xxh3(map_len_le32 || map || key || version_le)`.
    pub sum: u64,
}

/// Why a migration was abandoned before commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum AbortReason {
    /// The table changed: the migration is no longer planned.
    Replanned,
    /// A sequence gap or out-of-order batch.
    Sequence,
    /// The handoff digests differ.
    Digest,
    /// The peer link broke.
    LinkLost,
    /// The target refused (out of memory, shutting down).
    Refused,
}

/// The RESP version a forwarded request's reply is encoded in: the one the requesting client
/// speaks (`HELLO 3` switches a connection to RESP3), so a proxied reply is byte for byte what
/// the owner would have answered that client directly.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum ReplyProtocol {
    /// RESP2 (maps as flat arrays, doubles as bulk strings).
    Resp2,
    /// RESP3 (maps, doubles, nulls, sets).
    Resp3,
}

/// Every message a peer link carries.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Message {
    /// First frame on a link, both directions: who I am and a fresh challenge.
    Hello {
        /// Sender's id.
        node: NodeId,
        /// Sender's generation.
        generation: u64,
        /// Random challenge the peer must sign.
        nonce: [u8; 32],
    },
    /// Second frame: HMAC-SHA256 of the cluster secret over both nonces and the sender's id.
    AuthProof {
        /// The MAC.
        mac: [u8; 32],
    },
    /// "My table has this epoch, computed by this coordinator" (the cheap hint; fetch the body).
    /// Also the coordinator lease (wire version 5, `keeper` module docs): every hint carries the
    /// sender's clock, and a hint to the node the sender follows as coordinator echoes the
    /// newest clock value it heard from it.
    TableEpoch {
        /// Epoch.
        epoch: u64,
        /// Coordinator that computed it.
        coordinator: NodeId,
        /// The sender's clock when it sent this hint, milliseconds (at least 1).
        at_ms: u64,
        /// The `at_ms` of the newest hint the sender received from the receiver, if the sender
        /// sees the receiver as its coordinator; 0 otherwise.
        echo_ms: u64,
    },
    /// "Send me your table if its epoch is above `have_epoch`."
    TableFetch {
        /// The asker's epoch.
        have_epoch: u64,
    },
    /// A full table.
    TablePush(PartitionTable),
    /// "I leave gracefully: plan my slots away" (leaving node -> coordinator).
    Drain {
        /// The leaving node.
        node: NodeId,
    },
    /// Migration stream data (source -> target).
    MigrateBatch(MigrateBatch),
    /// Flow control: the target applied everything below `next_seq` (target -> source).
    ///
    /// Every stream message (batch, ack, handoff, verdict, abort) names the source's attempt:
    /// a source that starts a migration again (after a broken link, a refusal) streams from
    /// sequence 0 under a higher attempt, and each side ignores what belongs to an older one,
    /// which a slow relay or an old link may still deliver after the new stream began.
    MigrateAck {
        /// Migration.
        id: MigrationId,
        /// Slot.
        slot: Slot,
        /// The source's attempt this acknowledges.
        attempt: u64,
        /// First sequence not yet received.
        next_seq: u64,
    },
    /// End of stream: the source paused the slot; `end_seq` ops were sent in total
    /// (source -> target).
    Handoff {
        /// Migration.
        id: MigrationId,
        /// Slot.
        slot: Slot,
        /// The source's attempt.
        attempt: u64,
        /// Number of ops in the stream.
        end_seq: u64,
        /// Digest of the source's live content at `cutoff_ms`.
        digest: SlotDigest,
        /// Entries with a deadline at or before this are left out of the digest.
        cutoff_ms: u64,
    },
    /// Target's verdict on the handoff (target -> source).
    HandoffAck {
        /// Migration.
        id: MigrationId,
        /// Slot.
        slot: Slot,
        /// The source's attempt this judges.
        attempt: u64,
        /// Sequence and digest matched.
        ok: bool,
    },
    /// Source asks the coordinator to commit (publish a table naming the target).
    CommitRequest {
        /// Migration.
        id: MigrationId,
        /// Slot.
        slot: Slot,
    },
    /// Abandon a migration before commit (either direction).
    Abort {
        /// Migration.
        id: MigrationId,
        /// Slot.
        slot: Slot,
        /// The source's attempt abandoned.
        attempt: u64,
        /// Why.
        reason: AbortReason,
    },
    /// A client request forwarded to the owner (proxy routing): raw RESP bytes of one command.
    Forward {
        /// Sender-chosen id echoed in the reply.
        request_id: u64,
        /// Slot the command routes by.
        slot: Slot,
        /// Owning core on the receiver.
        core: u16,
        /// The protocol to encode the reply in.
        protocol: ReplyProtocol,
        /// The command, RESP-encoded.
        payload: Vec<u8>,
    },
    /// The owner's reply to a forwarded request: raw RESP bytes, in the request's protocol.
    ForwardReply {
        /// The request's id.
        request_id: u64,
        /// The reply, RESP-encoded.
        payload: Vec<u8>,
    },
    /// Liveness probe on an idle link.
    Ping {
        /// Echoed.
        nonce: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Frame kinds: the header's `kind` field, one per [`Message`] variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameKind {
    /// [`Message::Hello`]
    Hello = 1,
    /// [`Message::AuthProof`]
    AuthProof = 2,
    /// [`Message::TableEpoch`]
    TableEpoch = 10,
    /// [`Message::TableFetch`]
    TableFetch = 11,
    /// [`Message::TablePush`]
    TablePush = 12,
    /// [`Message::Drain`]
    Drain = 13,
    /// [`Message::MigrateBatch`]
    MigrateBatch = 20,
    /// [`Message::MigrateAck`]
    MigrateAck = 21,
    /// [`Message::Handoff`]
    Handoff = 22,
    /// [`Message::HandoffAck`]
    HandoffAck = 23,
    /// [`Message::CommitRequest`]
    CommitRequest = 24,
    /// [`Message::Abort`]
    Abort = 25,
    /// [`Message::Forward`]
    Forward = 30,
    /// [`Message::ForwardReply`]
    ForwardReply = 31,
    /// [`Message::Ping`]
    Ping = 40,
    /// [`Message::Pong`]
    Pong = 41,
}

impl FrameKind {
    /// The kind for a header value, if it is one.
    pub fn from_u16(v: u16) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Hello,
            2 => FrameKind::AuthProof,
            10 => FrameKind::TableEpoch,
            11 => FrameKind::TableFetch,
            12 => FrameKind::TablePush,
            13 => FrameKind::Drain,
            20 => FrameKind::MigrateBatch,
            21 => FrameKind::MigrateAck,
            22 => FrameKind::Handoff,
            23 => FrameKind::HandoffAck,
            24 => FrameKind::CommitRequest,
            25 => FrameKind::Abort,
            30 => FrameKind::Forward,
            31 => FrameKind::ForwardReply,
            40 => FrameKind::Ping,
            41 => FrameKind::Pong,
            _ => return None,
        })
    }
}

impl Message {
    /// This message's frame kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Message::Hello { .. } => FrameKind::Hello,
            Message::AuthProof { .. } => FrameKind::AuthProof,
            Message::TableEpoch { .. } => FrameKind::TableEpoch,
            Message::TableFetch { .. } => FrameKind::TableFetch,
            Message::TablePush(_) => FrameKind::TablePush,
            Message::Drain { .. } => FrameKind::Drain,
            Message::MigrateBatch(_) => FrameKind::MigrateBatch,
            Message::MigrateAck { .. } => FrameKind::MigrateAck,
            Message::Handoff { .. } => FrameKind::Handoff,
            Message::HandoffAck { .. } => FrameKind::HandoffAck,
            Message::CommitRequest { .. } => FrameKind::CommitRequest,
            Message::Abort { .. } => FrameKind::Abort,
            Message::Forward { .. } => FrameKind::Forward,
            Message::ForwardReply { .. } => FrameKind::ForwardReply,
            Message::Ping { .. } => FrameKind::Ping,
            Message::Pong { .. } => FrameKind::Pong,
        }
    }
}

impl ArchivedMessage {
    /// The frame kind of this archived message.
    pub fn kind(&self) -> FrameKind {
        match self {
            ArchivedMessage::Hello { .. } => FrameKind::Hello,
            ArchivedMessage::AuthProof { .. } => FrameKind::AuthProof,
            ArchivedMessage::TableEpoch { .. } => FrameKind::TableEpoch,
            ArchivedMessage::TableFetch { .. } => FrameKind::TableFetch,
            ArchivedMessage::TablePush(_) => FrameKind::TablePush,
            ArchivedMessage::Drain { .. } => FrameKind::Drain,
            ArchivedMessage::MigrateBatch(_) => FrameKind::MigrateBatch,
            ArchivedMessage::MigrateAck { .. } => FrameKind::MigrateAck,
            ArchivedMessage::Handoff { .. } => FrameKind::Handoff,
            ArchivedMessage::HandoffAck { .. } => FrameKind::HandoffAck,
            ArchivedMessage::CommitRequest { .. } => FrameKind::CommitRequest,
            ArchivedMessage::Abort { .. } => FrameKind::Abort,
            ArchivedMessage::Forward { .. } => FrameKind::Forward,
            ArchivedMessage::ForwardReply { .. } => FrameKind::ForwardReply,
            ArchivedMessage::Ping { .. } => FrameKind::Ping,
            ArchivedMessage::Pong { .. } => FrameKind::Pong,
        }
    }

    /// An owned copy (for messages that outlive the receive buffer, such as tables).
    pub fn to_owned_message(&self) -> Result<Message, FrameError> {
        rkyv::deserialize::<Message, rancor::Error>(self)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

/// Why bytes from a peer are not a frame. Every variant means the link is unusable: the caller
/// logs it and closes the link; the decoder refuses further input after one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`] (not a Tessera peer, or lost framing).
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    /// The peer speaks another wire version.
    #[error("unsupported wire version {0}")]
    Version(u16),
    /// The kind field names no frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    /// The announced body exceeds `frame_bytes_max` (nothing was allocated for it).
    #[error("frame body of {len} bytes exceeds the cap of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The CRC32C does not match: corruption.
    #[error("frame checksum mismatch: header {header:#010x}, computed {computed:#010x}")]
    Checksum {
        /// From the header.
        header: u32,
        /// Over the received bytes.
        computed: u32,
    },
    /// The body is not a valid archive (bytecheck refused it).
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The header's kind and the body's message variant differ.
    #[error("frame kind {header:?} does not match body {body:?}")]
    KindMismatch {
        /// Header kind.
        header: FrameKind,
        /// Body variant.
        body: FrameKind,
    },
    /// The message is too large to frame (encoder side).
    #[error("message of {0} bytes exceeds the frame cap")]
    Oversized(usize),
    /// A previous error already condemned this stream.
    #[error("decoder stopped after an earlier error")]
    Poisoned,
}

fn padded(len: usize) -> usize {
    len.div_ceil(BODY_ALIGN) * BODY_ALIGN
}

fn frame_crc(header12: &[u8], body_padded: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header12), body_padded)
}

/// Appends one frame carrying `msg` to `out`, whose length must be a multiple of 16 (frames
/// are laid end to end, each 16-aligned). Nothing is appended on error.
pub fn encode(msg: &Message, out: &mut AlignedVec<16>, cfg: &WireConfig) -> Result<(), FrameError> {
    assert_eq!(
        out.len() % BODY_ALIGN,
        0,
        "frames are appended at 16-byte boundaries"
    );
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    // rkyv's writer positions are relative to the vector start, and the body starts 16-aligned,
    // so the archive is laid out exactly as it would be in a buffer of its own.
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, &mut *out) {
        out.resize(start, 0);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let body_len = out.len() - start - HEADER_BYTES;
    if body_len > cfg.frame_bytes_max {
        out.resize(start, 0);
        return Err(FrameError::Oversized(body_len));
    }
    out.resize(start + HEADER_BYTES + padded(body_len), 0);
    let frame = &mut out[start..];
    frame[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    frame[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
    frame[6..8].copy_from_slice(&(msg.kind() as u16).to_le_bytes());
    frame[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
    let crc = frame_crc(&frame[0..12], &frame[HEADER_BYTES..]);
    frame[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A decoded frame, borrowed from the decoder's buffer until the next call.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The header's kind (equal to the body's variant).
    pub kind: FrameKind,
    /// The validated archive, read in place.
    pub message: &'a ArchivedMessage,
}

/// Incremental frame decoder over a byte stream from one peer link.
///
/// Feed bytes with [`FrameDecoder::extend`] (or read straight into [`FrameDecoder::spare`] and
/// call [`FrameDecoder::filled`]), then call [`FrameDecoder::next_frame`] until it returns
/// `Ok(None)` ("need more bytes"). `Err` means garbage: close the link.
pub struct FrameDecoder {
    buf: AlignedVec<16>,
    start: usize,
    end: usize,
    cfg: WireConfig,
    poisoned: bool,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &(self.end - self.start))
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl FrameDecoder {
    /// A decoder with the given limits.
    pub fn new(cfg: WireConfig) -> FrameDecoder {
        FrameDecoder {
            buf: AlignedVec::new(),
            start: 0,
            end: 0,
            cfg,
            poisoned: false,
        }
    }

    /// Bytes received but not yet consumed as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// At least `min` writable bytes after the buffered data (for a socket read).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end && self.buf.len() > BUFFER_KEEP_BYTES {
            // A large frame passed: give its memory back instead of holding it per link.
            self.buf = AlignedVec::new();
            self.start = 0;
            self.end = 0;
        }
        // Move unconsumed bytes to offset 0 (keeps 16-alignment) when it frees useful room.
        if self.start > 0 && (self.start == self.end || self.buf.len() - self.end < min) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`FrameDecoder::spare`] as received.
    pub fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "filled more than spare");
        self.end += n;
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, `Err` on garbage.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        let (kind, body_at, body_len, total) = match self.parse() {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        // Disjoint field borrows: the archive borrows `buf` while `start`/`poisoned` change.
        let body = &self.buf[body_at..body_at + body_len];
        let result = match rkyv::access::<ArchivedMessage, rancor::Error>(body) {
            Ok(m) if m.kind() == kind => Ok(m),
            Ok(m) => Err(FrameError::KindMismatch {
                header: kind,
                body: m.kind(),
            }),
            Err(e) => Err(FrameError::Malformed(e.to_string())),
        };
        match result {
            Ok(message) => {
                self.start += total;
                Ok(Some(Frame { kind, message }))
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// Checks the frame at `start`: `(kind, body offset, body length, frame length)`.
    fn parse(&self) -> Result<Option<(FrameKind, usize, usize, usize)>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER_BYTES {
            // Reject a wrong magic as soon as it is visible, without waiting for a header.
            let n = avail.len().min(4);
            if avail[..n] != MAGIC.to_le_bytes()[..n] {
                let mut m = [0u8; 4];
                m[..n].copy_from_slice(&avail[..n]);
                return Err(FrameError::BadMagic(u32::from_le_bytes(m)));
            }
            return Ok(None);
        }
        let word = |at: usize| {
            u32::from_le_bytes([avail[at], avail[at + 1], avail[at + 2], avail[at + 3]])
        };
        let magic = word(0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = u16::from_le_bytes([avail[4], avail[5]]);
        if version != WIRE_VERSION {
            return Err(FrameError::Version(version));
        }
        let kind_raw = u16::from_le_bytes([avail[6], avail[7]]);
        let kind = FrameKind::from_u16(kind_raw).ok_or(FrameError::UnknownKind(kind_raw))?;
        let body_len = word(8) as usize;
        if body_len > self.cfg.frame_bytes_max {
            return Err(FrameError::TooLarge {
                len: body_len,
                max: self.cfg.frame_bytes_max,
            });
        }
        let total = HEADER_BYTES + padded(body_len);
        if avail.len() < total {
            return Ok(None);
        }
        let header_crc = word(12);
        let computed = frame_crc(&avail[..12], &avail[HEADER_BYTES..total]);
        if header_crc != computed {
            return Err(FrameError::Checksum {
                header: header_crc,
                computed,
            });
        }
        Ok(Some((kind, self.start + HEADER_BYTES, body_len, total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        let table = crate::planner::plan(
            None,
            &[
                crate::planner::test_node(1, 2),
                crate::planner::test_node(2, 1),
            ],
            crate::planner::test_node(1, 2).id,
            &crate::planner::PlannerConfig { replica_count: 1 },
        );
        vec![
            Message::Hello {
                node: NodeId([7; 20]),
                generation: 3,
                nonce: [9; 32],
            },
            Message::AuthProof { mac: [1; 32] },
            Message::TableEpoch {
                epoch: 5,
                coordinator: NodeId([2; 20]),
                at_ms: 1234,
                echo_ms: 1200,
            },
            Message::TableFetch { have_epoch: 4 },
            Message::TablePush(table),
            Message::Drain {
                node: NodeId([4; 20]),
            },
            Message::MigrateBatch(MigrateBatch {
                id: MigrationId(77),
                slot: 12,
                attempt: 3,
                first_seq: 40,
                ops: vec![
                    StreamOp::Put(Entry {
                        map: b"default".to_vec(),
                        key: b"k1".to_vec(),
                        value: vec![0xAB; 300],
                        version: 9,
                        deadline_ms: Some(1_700_000_000_000),
                    }),
                    StreamOp::Delete {
                        map: b"users".to_vec(),
                        key: b"k2".to_vec(),
                        version: 10,
                    },
                ],
            }),
            Message::MigrateAck {
                id: MigrationId(77),
                slot: 12,
                attempt: 3,
                next_seq: 42,
            },
            Message::Handoff {
                id: MigrationId(77),
                slot: 12,
                attempt: 3,
                end_seq: 42,
                digest: SlotDigest { count: 3, sum: 99 },
                cutoff_ms: 5,
            },
            Message::HandoffAck {
                id: MigrationId(77),
                slot: 12,
                attempt: 3,
                ok: true,
            },
            Message::CommitRequest {
                id: MigrationId(77),
                slot: 12,
            },
            Message::Abort {
                id: MigrationId(77),
                slot: 12,
                attempt: 3,
                reason: AbortReason::Digest,
            },
            Message::Forward {
                request_id: 1,
                slot: 3,
                core: 1,
                protocol: ReplyProtocol::Resp3,
                payload: b"*1\r\n$4\r\nPING\r\n".to_vec(),
            },
            Message::ForwardReply {
                request_id: 1,
                payload: b"+PONG\r\n".to_vec(),
            },
            Message::Ping { nonce: 1 },
            Message::Pong { nonce: 1 },
        ]
    }

    fn frame(msg: &Message) -> Vec<u8> {
        let mut out = AlignedVec::<16>::new();
        encode(msg, &mut out, &WireConfig::default()).unwrap();
        out.to_vec()
    }

    #[test]
    fn round_trip_every_kind_in_one_stream() {
        let msgs = samples();
        let mut out = AlignedVec::<16>::new();
        for m in &msgs {
            encode(m, &mut out, &WireConfig::default()).unwrap();
            assert_eq!(out.len() % 16, 0);
        }
        // Fed in odd-sized pieces: frames come out whole and in order.
        let mut dec = FrameDecoder::new(WireConfig::default());
        let mut got = Vec::new();
        for piece in out.chunks(7) {
            dec.extend(piece);
            while let Some(f) = dec.next_frame().unwrap() {
                assert_eq!(f.kind, f.message.kind());
                got.push(f.message.to_owned_message().unwrap());
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn every_single_byte_corruption_is_rejected() {
        let cfg = WireConfig {
            frame_bytes_max: 1 << 16,
        };
        for msg in samples()
            .iter()
            .filter(|m| !matches!(m, Message::TablePush(_)))
        {
            let bytes = frame(msg);
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut bad = bytes.clone();
                    bad[i] ^= flip;
                    let mut dec = FrameDecoder::new(cfg.clone());
                    dec.extend(&bad);
                    match dec.next_frame() {
                        Err(_) => {}
                        Ok(Some(f)) => panic!("corruption at {i} accepted as {:?}", f.kind),
                        Ok(None) => {
                            // A larger length: the frame is incomplete. Complete it: rejected.
                            dec.extend(&vec![0u8; cfg.frame_bytes_max + 16]);
                            assert!(dec.next_frame().is_err(), "byte {i} flip {flip:#x}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_frames_need_more_bytes() {
        let bytes = frame(&samples()[5]);
        for cut in 0..bytes.len() {
            let mut dec = FrameDecoder::new(WireConfig::default());
            dec.extend(&bytes[..cut]);
            assert!(matches!(dec.next_frame(), Ok(None)), "cut at {cut}");
            dec.extend(&bytes[cut..]);
            assert!(matches!(dec.next_frame(), Ok(Some(_))));
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
        header[6..8].copy_from_slice(&(FrameKind::Ping as u16).to_le_bytes());
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut dec = FrameDecoder::new(WireConfig::default());
        dec.extend(&header);
        assert_eq!(
            dec.next_frame().unwrap_err(),
            FrameError::TooLarge {
                len: u32::MAX as usize,
                max: FRAME_BYTES_MAX_DEFAULT
            }
        );
        assert!(dec.buffered() < 64);
        assert_eq!(dec.next_frame().unwrap_err(), FrameError::Poisoned);
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let msg = Message::ForwardReply {
            request_id: 1,
            payload: vec![0; 10_000],
        };
        let mut out = AlignedVec::<16>::new();
        let cfg = WireConfig {
            frame_bytes_max: 4096,
        };
        assert!(matches!(
            encode(&msg, &mut out, &cfg),
            Err(FrameError::Oversized(_))
        ));
        assert_eq!(out.len(), 0);
    }

    #[test]
    fn wrong_magic_is_garbage_immediately() {
        let mut dec = FrameDecoder::new(WireConfig::default());
        dec.extend(b"*1\r\n");
        assert!(matches!(dec.next_frame(), Err(FrameError::BadMagic(_))));
    }

    #[test]
    fn header_kind_must_match_body() {
        let mut bytes = frame(&Message::Ping { nonce: 5 });
        bytes[6..8].copy_from_slice(&(FrameKind::Pong as u16).to_le_bytes());
        let crc = frame_crc(&bytes[..12], &bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        let mut dec = FrameDecoder::new(WireConfig::default());
        dec.extend(&bytes);
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::KindMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8), prefix in any::<bool>()) {
            let mut dec = FrameDecoder::new(WireConfig { frame_bytes_max: 4096 });
            if prefix {
                // A valid header start so the fuzz reaches the CRC and bytecheck paths.
                let mut h = MAGIC.to_le_bytes().to_vec();
                h.extend_from_slice(&WIRE_VERSION.to_le_bytes());
                dec.extend(&h);
            }
            for c in chunks {
                dec.extend(&c);
                while let Ok(Some(_)) = dec.next_frame() {}
            }
        }

        #[test]
        fn valid_header_with_random_body_never_panics(kind in 0u16..50, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            // The CRC is made valid so the body reaches bytecheck.
            let mut bytes = vec![0u8; 16];
            bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            bytes[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
            bytes[6..8].copy_from_slice(&kind.to_le_bytes());
            bytes[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
            bytes.resize(16 + padded(body.len()), 0);
            let crc = frame_crc(&bytes[..12], &bytes[16..]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
            let mut dec = FrameDecoder::new(WireConfig::default());
            dec.extend(&bytes);
            if let Ok(Some(f)) = dec.next_frame() {
                prop_assert_eq!(f.kind, f.message.kind());
            }
        }
    }
}
