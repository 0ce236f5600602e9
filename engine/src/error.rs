//! `CommandError`: every error a client can receive from a data command.
//!
//! Client errors are reply data, not failures of the node: each variant's `Display` is the exact
//! text Redis (or Olric, for DMap commands) sends after the `-`, prefix included, so client
//! libraries map them correctly. Executing a command that returns an error changes nothing.

use thiserror::Error;

/// An error reply. `Display` is the full RESP error text without the leading `-`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    #[error("ERR unknown command '{0}', with args beginning with: {1}")]
    UnknownCommand(String, String),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpireTime(String),
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    #[error("ERR key exceeds maximum allowed size")]
    KeyTooLong,
    #[error("ERR no such key")]
    NoSuchKey,
    #[error("ERR invalid cursor")]
    InvalidCursor,
    #[error("ERR {0}")]
    Other(String),
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("OOM command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    #[error("KEYNOTFOUND key not found")]
    KeyNotFound,
    #[error("KEYFOUND key found")]
    KeyFound,
    #[error("LOCKNOTACQUIRED lock not acquired")]
    LockNotAcquired,
    #[error("NOSUCHLOCK no such lock")]
    NoSuchLock,
}
