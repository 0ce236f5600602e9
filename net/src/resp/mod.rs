//! The RESP2/RESP3 codec: requests in, replies out.
//!
//! Owns the wire format only. Parsing is zero-copy: a complete request is split off the read
//! buffer and its arguments are `Bytes` slices of it. Encoding appends to a `BytesMut` write
//! buffer. What a command means is decided elsewhere (`tessera_engine::Command`, the command
//! table in this crate).

mod encode;
mod parse;
mod split;

pub use encode::{encode, encode_bulk, encode_error, encode_push};
pub use parse::{parse_request, Parser, ProtocolError};
pub use split::{split_args, SplitError};

use serde::Deserialize;

/// Which RESP version a connection speaks (`HELLO 3` switches to RESP3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default for every new connection.
    #[default]
    Resp2,
    /// RESP3 (maps, doubles, nulls, push messages).
    Resp3,
}

/// Request-size limits enforced while parsing, before anything is allocated for a request.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest whole request in bytes (all arguments plus framing). Default 512 MiB + 64 KiB.
    /// A request declaring more is a protocol error and closes the connection.
    pub request_bytes_max: usize,
    /// Largest single bulk argument in bytes (Redis's `proto-max-bulk-len`). Default 512 MiB.
    pub bulk_bytes_max: usize,
    /// Largest number of arguments in one request (Redis's multibulk limit). Default 1048576.
    pub multibulk_len_max: usize,
    /// Longest inline command line, and longest `*`/`$` header line, in bytes. Default 64 KiB.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_bytes_max: 512 * 1024 * 1024 + 64 * 1024,
            bulk_bytes_max: 512 * 1024 * 1024,
            multibulk_len_max: 1024 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}
