//! Client-side memcached text-protocol codec: composes `get`, `set`, `incr` and `delete` and
//! parses their replies from a byte buffer, one complete reply at a time (pipelining-safe).
//!
//! memcached's replies are not self-describing (`VALUE ... END` vs a single line), so the parser
//! is told which command the reply answers.

use crate::BenchError;

/// Longest reply line accepted (a `VALUE` header or status line).
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// Largest value a `VALUE` header may announce (memcached's item size limit is 1 MiB by
/// default; allow generous headroom for servers started with `-I`).
pub const VALUE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The command a reply answers, which decides how the reply is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McCommand {
    /// `get k1 [k2 ...]`: zero or more `VALUE` blocks, then `END`.
    Get,
    /// `set`: one status line.
    Set,
    /// `incr`: a number or `NOT_FOUND`.
    Incr,
    /// `delete`: `DELETED` or `NOT_FOUND`.
    Delete,
}

/// A parsed memcached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McReply {
    /// `get` found this many values (0 is a miss).
    Values(usize),
    /// `STORED`, `DELETED`, `TOUCHED`, or an `incr` result.
    Ok,
    /// `NOT_FOUND` or `NOT_STORED`.
    NotFound,
    /// `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`, or an unexpected status line.
    Error,
}

/// Appends `get <key>\r\n` (several keys for a multi-get).
pub fn encode_get<'a>(out: &mut Vec<u8>, keys: impl IntoIterator<Item = &'a [u8]>) {
    out.extend_from_slice(b"get");
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> 0 <exptime_s> <len>\r\n<value>\r\n`.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], exptime_s: u64) {
    let mut ib = itoa::Buffer::new();
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" 0 ");
    out.extend_from_slice(ib.format(exptime_s).as_bytes());
    out.push(b' ');
    out.extend_from_slice(ib.format(value.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `incr <key> <delta>\r\n`.
pub fn encode_incr(out: &mut Vec<u8>, key: &[u8], delta: u64) {
    let mut ib = itoa::Buffer::new();
    out.extend_from_slice(b"incr ");
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(ib.format(delta).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>\r\n`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// Parses one complete reply to `cmd` from the front of `buf`: `Ok(None)` if incomplete.
pub fn parse_reply(cmd: McCommand, buf: &[u8]) -> Result<Option<(McReply, usize)>, BenchError> {
    let mut pos = 0;
    let mut values = 0;
    loop {
        let Some((line, after)) = line_at(buf, pos)? else {
            return Ok(None);
        };
        if is_error(line) {
            return Ok(Some((McReply::Error, after)));
        }
        match cmd {
            McCommand::Get => {
                if line == b"END" {
                    return Ok(Some((McReply::Values(values), after)));
                }
                let Some(header) = line.strip_prefix(b"VALUE ") else {
                    return Err(BenchError::Protocol(format!(
                        "unexpected get reply line {:?}",
                        String::from_utf8_lossy(line)
                    )));
                };
                let len = value_len(header)?;
                let end = after + len + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(BenchError::Protocol("value not ended by CRLF".into()));
                }
                values += 1;
                pos = end;
            }
            McCommand::Set | McCommand::Delete => {
                let r = match line {
                    b"STORED" | b"DELETED" | b"TOUCHED" => McReply::Ok,
                    b"NOT_STORED" | b"NOT_FOUND" | b"EXISTS" => McReply::NotFound,
                    _ => McReply::Error,
                };
                return Ok(Some((r, after)));
            }
            McCommand::Incr => {
                let r = if line == b"NOT_FOUND" {
                    McReply::NotFound
                } else if !line.is_empty() && line.iter().all(u8::is_ascii_digit) {
                    McReply::Ok
                } else {
                    McReply::Error
                };
                return Ok(Some((r, after)));
            }
        }
    }
}

fn is_error(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

/// `<key> <flags> <bytes> [<cas>]` -> bytes.
fn value_len(header: &[u8]) -> Result<usize, BenchError> {
    let bad = || {
        BenchError::Protocol(format!(
            "bad VALUE header {:?}",
            String::from_utf8_lossy(header)
        ))
    };
    let field = header.split(|&b| b == b' ').nth(2).ok_or_else(bad)?;
    let n: usize = std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if n > VALUE_BYTES_MAX {
        return Err(bad());
    }
    Ok(n)
}

fn line_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, BenchError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(LINE_BYTES_MAX + 1)];
    match memchr::memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some((&window[..i - 1], pos + i + 1))),
        Some(_) => Err(BenchError::Protocol("line not ended by CRLF".into())),
        None if window.len() > LINE_BYTES_MAX => Err(BenchError::Protocol(format!(
            "reply line longer than {LINE_BYTES_MAX} bytes"
        ))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_set(&mut out, b"k", b"abc", 5);
        encode_get(&mut out, [&b"k"[..], b"j"]);
        encode_incr(&mut out, b"c", 1);
        encode_delete(&mut out, b"k");
        assert_eq!(
            out,
            b"set k 0 5 3\r\nabc\r\nget k j\r\nincr c 1\r\ndelete k\r\n".as_slice()
        );
    }

    #[test]
    fn parses_replies_and_every_prefix_is_incomplete() {
        let cases: &[(McCommand, &[u8], McReply)] = &[
            (McCommand::Get, b"END\r\n", McReply::Values(0)),
            (
                McCommand::Get,
                b"VALUE k 0 3\r\nabc\r\nEND\r\n",
                McReply::Values(1),
            ),
            (
                McCommand::Get,
                b"VALUE k 0 2 9\r\nab\r\nVALUE j 0 0\r\n\r\nEND\r\n",
                McReply::Values(2),
            ),
            (McCommand::Set, b"STORED\r\n", McReply::Ok),
            (McCommand::Set, b"NOT_STORED\r\n", McReply::NotFound),
            (McCommand::Incr, b"17\r\n", McReply::Ok),
            (McCommand::Incr, b"NOT_FOUND\r\n", McReply::NotFound),
            (McCommand::Delete, b"DELETED\r\n", McReply::Ok),
            (
                McCommand::Get,
                b"SERVER_ERROR out of memory\r\n",
                McReply::Error,
            ),
            (McCommand::Set, b"ERROR\r\n", McReply::Error),
        ];
        for (cmd, bytes, want) in cases {
            let (got, used) = parse_reply(*cmd, bytes).unwrap().unwrap();
            assert_eq!((got, used), (*want, bytes.len()));
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(*cmd, &bytes[..cut]).unwrap(), None);
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_reply(McCommand::Get, b"VALUE k 0 x\r\n").is_err());
        assert!(parse_reply(McCommand::Get, b"HELLO\r\n").is_err());
        assert!(parse_reply(McCommand::Get, b"VALUE k 0 1\r\nab\r\nEND\r\n").is_err());
        let long = vec![b'a'; LINE_BYTES_MAX + 10];
        assert!(parse_reply(McCommand::Set, &long).is_err());
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic, and a reported reply never claims more than the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for cmd in [McCommand::Get, McCommand::Set, McCommand::Incr, McCommand::Delete] {
                if let Ok(Some((_, used))) = parse_reply(cmd, &bytes) {
                    prop_assert!(used > 0 && used <= bytes.len());
                }
            }
        }
    }
}
