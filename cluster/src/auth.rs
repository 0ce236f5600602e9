//! Peer-link authentication with the cluster secret: the first two frames in each direction.
//!
//! Each side sends `Hello { node, generation, nonce }`; on the peer's Hello it answers
//! `AuthProof { mac }` with `mac = HMAC-SHA256(secret, LABEL | peer_nonce | own_nonce | own_id)`,
//! which binds the proof to this link's two fresh challenges (a recorded proof cannot be
//! replayed) and to the sender's id (a reflected one does not verify). The MAC comparison is
//! constant-time (`hmac::Mac::verify_slice`). Until [`Handshake`] reports
//! [`HandshakeStep::Authenticated`], any other frame is an error and the link is closed.
//! Nonces are supplied by the caller (no entropy source is read here).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::node::NodeId;
use crate::wire::{ArchivedMessage, Message};

const LABEL: &[u8] = b"tessera-peer-auth-v1";

/// Why a link failed to authenticate. The link must be closed; the handshake is finished.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The peer's MAC is wrong: it does not know the cluster secret (or was tampered with).
    #[error("peer failed authentication")]
    BadProof,
    /// A frame other than the expected handshake frame arrived.
    #[error("unexpected frame during peer authentication")]
    Unexpected,
    /// The peer claims our own id or echoed our challenge (a loop or a reflection).
    #[error("peer link to ourselves or a reflected challenge")]
    SelfLink,
    /// The handshake already failed or finished.
    #[error("handshake already finished")]
    Finished,
}

/// What the driver does after feeding a frame to the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeStep {
    /// Send this frame to the peer and keep waiting.
    Send(Message),
    /// The peer proved the secret: the link may carry other frames from now on.
    Authenticated {
        /// The peer's id.
        node: NodeId,
        /// The peer's generation.
        generation: u64,
    },
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitProof {
        peer: NodeId,
        generation: u64,
        peer_nonce: [u8; 32],
    },
    Done,
}

/// One side of one link's handshake. Create it when the link opens, send
/// [`Handshake::hello`], then feed every received frame to [`Handshake::on_frame`].
pub struct Handshake {
    mac: Hmac<Sha256>,
    me: NodeId,
    generation: u64,
    nonce: [u8; 32],
    state: State,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("me", &self.me)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// A handshake for node `me` with a fresh random `nonce` (never reuse one).
    pub fn new(secret: &[u8], me: NodeId, generation: u64, nonce: [u8; 32]) -> Handshake {
        Handshake {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"),
            me,
            generation,
            nonce,
            state: State::AwaitHello,
        }
    }

    /// The first frame to send.
    pub fn hello(&self) -> Message {
        Message::Hello {
            node: self.me,
            generation: self.generation,
            nonce: self.nonce,
        }
    }

    fn proof(&self, first: &[u8; 32], second: &[u8; 32], sender: NodeId) -> Hmac<Sha256> {
        let mut m = self.mac.clone();
        m.update(LABEL);
        m.update(first);
        m.update(second);
        m.update(&sender.0);
        m
    }

    /// Feeds a received frame. On `Err` close the link.
    pub fn on_frame(&mut self, msg: &ArchivedMessage) -> Result<HandshakeStep, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, msg) {
            (
                State::AwaitHello,
                ArchivedMessage::Hello {
                    node,
                    generation,
                    nonce,
                },
            ) => {
                let peer = NodeId(node.0);
                if peer == self.me || *nonce == self.nonce {
                    return Err(AuthError::SelfLink);
                }
                let mac = self
                    .proof(nonce, &self.nonce, self.me)
                    .finalize()
                    .into_bytes();
                self.state = State::AwaitProof {
                    peer,
                    generation: generation.to_native(),
                    peer_nonce: *nonce,
                };
                Ok(HandshakeStep::Send(Message::AuthProof { mac: mac.into() }))
            }
            (
                State::AwaitProof {
                    peer,
                    generation,
                    peer_nonce,
                },
                ArchivedMessage::AuthProof { mac },
            ) => {
                self.proof(&self.nonce, &peer_nonce, peer)
                    .verify_slice(mac)
                    .map_err(|_| AuthError::BadProof)?;
                Ok(HandshakeStep::Authenticated {
                    node: peer,
                    generation,
                })
            }
            (State::Done, _) => Err(AuthError::Finished),
            _ => Err(AuthError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, FrameDecoder, WireConfig};
    use rkyv::util::AlignedVec;

    /// Sends `msg` through the real codec and feeds it to `hs`.
    fn deliver(msg: &Message, hs: &mut Handshake) -> Result<HandshakeStep, AuthError> {
        let mut buf = AlignedVec::<16>::new();
        encode(msg, &mut buf, &WireConfig::default()).unwrap();
        let mut dec = FrameDecoder::new(WireConfig::default());
        dec.extend(&buf);
        let frame = dec.next_frame().unwrap().unwrap();
        hs.on_frame(frame.message)
    }

    fn pair(
        secret_a: &[u8],
        secret_b: &[u8],
    ) -> (
        Result<HandshakeStep, AuthError>,
        Result<HandshakeStep, AuthError>,
    ) {
        let a_id = NodeId([1; 20]);
        let b_id = NodeId([2; 20]);
        let mut a = Handshake::new(secret_a, a_id, 1, [0xA; 32]);
        let mut b = Handshake::new(secret_b, b_id, 7, [0xB; 32]);
        let (ha, hb) = (a.hello(), b.hello());
        let HandshakeStep::Send(pa) = deliver(&hb, &mut a).unwrap() else {
            panic!()
        };
        let HandshakeStep::Send(pb) = deliver(&ha, &mut b).unwrap() else {
            panic!()
        };
        (deliver(&pb, &mut a), deliver(&pa, &mut b))
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (a, b) = pair(b"s3cret", b"s3cret");
        assert_eq!(
            a,
            Ok(HandshakeStep::Authenticated {
                node: NodeId([2; 20]),
                generation: 7
            })
        );
        assert_eq!(
            b,
            Ok(HandshakeStep::Authenticated {
                node: NodeId([1; 20]),
                generation: 1
            })
        );
    }

    #[test]
    fn wrong_secret_is_refused() {
        let (a, b) = pair(b"s3cret", b"other");
        assert_eq!(a, Err(AuthError::BadProof));
        assert_eq!(b, Err(AuthError::BadProof));
    }

    #[test]
    fn frames_before_auth_and_reflection_are_refused() {
        let mut a = Handshake::new(b"k", NodeId([1; 20]), 1, [0xA; 32]);
        assert_eq!(
            deliver(&Message::Ping { nonce: 1 }, &mut a),
            Err(AuthError::Unexpected)
        );
        let mut a = Handshake::new(b"k", NodeId([1; 20]), 1, [0xA; 32]);
        let own = a.hello();
        assert_eq!(deliver(&own, &mut a), Err(AuthError::SelfLink));
        // A proof replayed from another link (other nonces) does not verify.
        let mut b = Handshake::new(b"k", NodeId([2; 20]), 1, [0xB; 32]);
        let mut c = Handshake::new(b"k", NodeId([3; 20]), 1, [0xC; 32]);
        let HandshakeStep::Send(proof_for_c) = deliver(&c.hello(), &mut b).unwrap() else {
            panic!()
        };
        let _ = deliver(&b.hello(), &mut c).unwrap();
        let mut a2 = Handshake::new(b"k", NodeId([1; 20]), 1, [0xD; 32]);
        let b_hello = Message::Hello {
            node: NodeId([2; 20]),
            generation: 1,
            nonce: [0xB; 32],
        };
        let _ = deliver(&b_hello, &mut a2).unwrap();
        assert_eq!(deliver(&proof_for_c, &mut a2), Err(AuthError::BadProof));
    }
}
