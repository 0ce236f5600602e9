//! `Error`: what a typed Tessera call can fail with.

use thiserror::Error;

/// The error of a typed call, embedded or remote.
#[derive(Debug, Error)]
pub enum Error {
    /// The server answered with an error reply (the full Redis-style text, e.g.
    /// `ERR value is not an integer or out of range` or `OOM command not allowed ...`).
    #[error("{0}")]
    Reply(String),
    /// `DM.LOCK` did not get the lock before its wait deadline.
    #[error("lock not acquired")]
    LockNotAcquired,
    /// `DM.UNLOCK`/`DM.LOCKLEASE` named a lock that is not held with that token.
    #[error("no such lock")]
    NoSuchLock,
    /// The reply had a shape this call does not expect (a server of another kind or version).
    #[error("unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        command: &'static str,
        reply: String,
    },
    /// An embedded node could not start (bad configuration, no CPUs, a port in use ...).
    #[error("node did not start: {0}")]
    Start(String),
    /// The node is shut down or unreachable.
    #[error("node unavailable: {0}")]
    Unavailable(String),
    /// A typed value could not be encoded, or a stored value could not be decoded as the type
    /// asked for (feature `serde`).
    #[error("value codec: {0}")]
    Codec(String),
}

impl Error {
    /// Classifies an error reply's text.
    pub fn from_reply_text(text: &str) -> Error {
        if text.starts_with("LOCKNOTACQUIRED") {
            Error::LockNotAcquired
        } else if text.starts_with("NOSUCHLOCK") {
            Error::NoSuchLock
        } else {
            Error::Reply(text.to_owned())
        }
    }
}
