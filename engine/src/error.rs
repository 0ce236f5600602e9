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
    /// The map has no arena table id left on this shard (see `Map`'s `table_ids_max`: at
    /// most 2^32 bytes of table space, 4096 tables of the default 1 MiB); nothing was written.
    #[error("ERR map is full on this shard: its arena tables reached the limit of 4 GiB (or 65536 tables) per map per shard")]
    MapFull,
    #[error("KEYNOTFOUND key not found")]
    KeyNotFound,
    #[error("KEYFOUND key found")]
    KeyFound,
    #[error("LOCKNOTACQUIRED lock not acquired")]
    LockNotAcquired,
    #[error("NOSUCHLOCK no such lock")]
    NoSuchLock,
    /// An error with its own prefix (`MOVED 3999 127.0.0.1:6381`, `CROSSSLOT ...`, `NOAUTH
    /// ...`, `EXECABORT ...`, `TRYAGAIN ...`, `CLUSTERDOWN ...`), sent as given.
    #[error("{0}")]
    Raw(RawError),
}

impl CommandError {
    /// An error sent with the prefix its text starts with; see `RawError::new`.
    pub fn raw(text: impl Into<String>) -> CommandError {
        CommandError::Raw(RawError::new(text))
    }
}

/// The text of an error reply that carries its own prefix (the first word, which clients map
/// to an error kind). Built by `RawError::new`, which makes any text safe to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawError(String);

impl RawError {
    /// `text` as an error reply: a leading `-` is dropped, CR and LF become spaces (an error
    /// reply is one line, as Redis's `addReplyError` makes it), and a text whose first word is
    /// not a prefix (an uppercase letter, then uppercase letters, digits, `_` or `-`) gets
    /// Redis's generic `ERR ` prefix.
    pub fn new(text: impl Into<String>) -> RawError {
        let text = text.into();
        let text = text.strip_prefix('-').unwrap_or(&text);
        let mut line: String = text
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        let word = line.split(' ').next().unwrap_or("");
        let is_prefix = word.starts_with(|c: char| c.is_ascii_uppercase())
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !is_prefix {
            line.insert_str(0, "ERR ");
        }
        RawError(line)
    }

    /// The prefix (first word), e.g. `MOVED`.
    pub fn prefix(&self) -> &str {
        self.0.split(' ').next().unwrap_or("")
    }

    /// The whole text, without the leading `-`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_errors_keep_their_prefix() {
        for text in [
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "CROSSSLOT Keys in request don't hash to the same slot",
            "NOAUTH Authentication required.",
            "EXECABORT Transaction discarded because of previous errors.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "ERR plain",
            "BUSY",
        ] {
            let e = CommandError::raw(text);
            assert_eq!(e.to_string(), text);
            let CommandError::Raw(r) = &e else {
                panic!("not raw")
            };
            assert_eq!(r.prefix(), text.split(' ').next().unwrap());
            assert_eq!(r.as_str(), text);
        }
    }

    #[test]
    fn raw_errors_are_one_line_with_a_prefix() {
        assert_eq!(CommandError::raw("-MOVED 1 h:1").to_string(), "MOVED 1 h:1");
        assert_eq!(
            CommandError::raw("CLUSTERDOWN a\r\nb\nc").to_string(),
            "CLUSTERDOWN a  b c"
        );
        // No prefix word: Redis's generic one.
        for (text, want) in [
            ("something failed", "ERR something failed"),
            ("Moved 1 h:1", "ERR Moved 1 h:1"),
            ("", "ERR "),
            ("1ABC x", "ERR 1ABC x"),
            ("\r\nMOVED 1", "ERR   MOVED 1"),
        ] {
            let e = CommandError::raw(text);
            assert_eq!(e.to_string(), want, "{text:?}");
            assert!(!e.to_string().contains(['\r', '\n']));
        }
        assert_eq!(RawError::new("x").prefix(), "ERR");
    }
}
