//! `Reply`: the protocol-neutral result of executing a command on a shard.
//!
//! The engine produces replies; `tessera-net` encodes them as RESP2 or RESP3 and the embedding
//! API converts them to typed values. A `Reply` owns its bytes so it can cross cores.

use bytes::Bytes;

use crate::error::CommandError;

/// The result of one command. RESP2/RESP3 encodings are given per variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A status line: `+text` (never contains CR or LF).
    Simple(Bytes),
    /// An error reply: `-` followed by the error's `Display` (which starts with the Redis
    /// prefix, e.g. `ERR`, `WRONGTYPE`, `OOM`).
    Error(CommandError),
    /// `:n`.
    Int(i64),
    /// `$len\r\nbytes`.
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// RESP2 `*-1`, RESP3 `_` (the null array some Redis commands return).
    NilArray,
    /// `*n` followed by the elements.
    Array(Vec<Reply>),
    /// RESP3 `%n` map; RESP2 a flat array of 2n elements.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `,` double; RESP2 a bulk string with Redis's float formatting.
    Double(f64),
}

impl Reply {
    /// A status reply from a static string.
    pub fn simple(text: &'static str) -> Reply {
        Reply::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// A bulk reply copied from a slice.
    pub fn bulk(bytes: &[u8]) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(bytes))
    }

    /// True for `Reply::Error`.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

impl From<CommandError> for Reply {
    fn from(e: CommandError) -> Reply {
        Reply::Error(e)
    }
}
