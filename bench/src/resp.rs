//! Client-side RESP codec: composes commands as arrays of bulk strings and parses replies
//! (RESP2 and RESP3) from a byte buffer without copying, one complete frame at a time, so that
//! pipelined replies can be consumed in order.
//!
//! The parser checks that a whole frame is present before it reports it (mini-redis's rule), and
//! a server's error reply is data (`Reply::Error`), not a Rust error: only malformed bytes are.

use crate::BenchError;

/// Largest bulk string or aggregate length the parser accepts (Redis's `proto-max-bulk-len`
/// default): a longer length header is treated as a protocol error, not allocated.
pub const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Deepest nesting of aggregates the parser follows before calling the reply malformed.
pub const DEPTH_MAX: usize = 32;
/// Longest simple line (`+`, `-`, `:`, ... up to CRLF) accepted.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// What a parsed reply was, reduced to what a load generator needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, integer, double, boolean, big number or verbatim string.
    Simple,
    /// A non-null bulk string.
    Bulk,
    /// A null (`$-1`, `*-1` or RESP3 `_`).
    Nil,
    /// An aggregate (array, map, set, push) with this many top-level elements.
    Aggregate(usize),
    /// An error reply (`-` or `!`); `not_found` is true for `-KEYNOTFOUND` (Tessera's `DM.GET`
    /// miss), which a harness counts as a miss rather than an error.
    Error { not_found: bool },
}

/// Appends `*N\r\n$len\r\narg\r\n...` for `args` to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut ib = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(ib.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        encode_bulk(out, a);
    }
}

/// Appends the array header `*n\r\n` (use with [`encode_bulk`] to avoid building a slice).
pub fn encode_array_header(out: &mut Vec<u8>, n: usize) {
    let mut ib = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(ib.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string `$len\r\narg\r\n`.
pub fn encode_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    let mut ib = itoa::Buffer::new();
    out.push(b'$');
    out.extend_from_slice(ib.format(arg.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Parses one complete reply from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, `Ok(Some((reply, consumed)))` when a
/// whole frame is present, and an error when the bytes cannot be RESP.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, BenchError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, BenchError> {
    if depth > DEPTH_MAX {
        return Err(BenchError::Protocol(format!(
            "reply nested deeper than {DEPTH_MAX}"
        )));
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, after)) = line_at(buf, pos + 1)? else {
        return Ok(None);
    };
    match tag {
        b'+' | b':' | b'#' | b',' | b'(' => Ok(Some((Reply::Simple, after))),
        b'_' => Ok(Some((Reply::Nil, after))),
        b'-' => Ok(Some((
            Reply::Error {
                not_found: line.starts_with(b"KEYNOTFOUND"),
            },
            after,
        ))),
        b'$' | b'!' | b'=' => {
            let len = parse_len(line)?;
            let Some(len) = len else {
                return Ok(Some((Reply::Nil, after)));
            };
            let end = after + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(BenchError::Protocol("bulk string not ended by CRLF".into()));
            }
            let reply = if tag == b'!' {
                Reply::Error {
                    not_found: buf[after..].starts_with(b"KEYNOTFOUND"),
                }
            } else if tag == b'$' {
                Reply::Bulk
            } else {
                Reply::Simple
            };
            Ok(Some((reply, end)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = parse_len(line)? else {
                return Ok(Some((Reply::Nil, after)));
            };
            let elems = if matches!(tag, b'%' | b'|') {
                n.checked_mul(2)
                    .ok_or_else(|| BenchError::Protocol("map length overflows".into()))?
            } else {
                n
            };
            let mut p = after;
            for _ in 0..elems {
                match parse_at(buf, p, depth + 1)? {
                    Some((_, next)) => p = next,
                    None => return Ok(None),
                }
            }
            if tag == b'|' {
                // An attribute map precedes the real reply: the reply is the next frame.
                return parse_at(buf, p, depth + 1);
            }
            Ok(Some((Reply::Aggregate(n), p)))
        }
        other => Err(BenchError::Protocol(format!(
            "unknown RESP type byte 0x{other:02x}"
        ))),
    }
}

/// Finds the CRLF-terminated line starting at `pos`; returns the line (without CRLF) and the
/// position after the CRLF.
fn line_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, BenchError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(LINE_BYTES_MAX + 1)];
    match memchr::memchr(b'\n', window) {
        Some(i) => {
            if i == 0 || window[i - 1] != b'\r' {
                return Err(BenchError::Protocol("line not ended by CRLF".into()));
            }
            Ok(Some((&window[..i - 1], pos + i + 1)))
        }
        None if window.len() > LINE_BYTES_MAX => Err(BenchError::Protocol(format!(
            "reply line longer than {LINE_BYTES_MAX} bytes"
        ))),
        None => Ok(None),
    }
}

/// Parses a length header; `-1` is null (`None`).
fn parse_len(line: &[u8]) -> Result<Option<usize>, BenchError> {
    if line == b"-1" {
        return Ok(None);
    }
    let s = std::str::from_utf8(line)
        .map_err(|_| BenchError::Protocol("length is not ASCII".into()))?;
    let n: usize = s
        .parse()
        .map_err(|_| BenchError::Protocol(format!("bad length {s:?}")))?;
    if n > BULK_BYTES_MAX {
        return Err(BenchError::Protocol(format!(
            "length {n} exceeds {BULK_BYTES_MAX}"
        )));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_command() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"vv"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }

    #[test]
    fn parses_each_type_and_reports_consumed() {
        let cases: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple),
            (b":42\r\n", Reply::Simple),
            (b"$-1\r\n", Reply::Nil),
            (b"_\r\n", Reply::Nil),
            (b"$3\r\nabc\r\n", Reply::Bulk),
            (b"$0\r\n\r\n", Reply::Bulk),
            (b"-ERR x\r\n", Reply::Error { not_found: false }),
            (
                b"-KEYNOTFOUND key not found\r\n",
                Reply::Error { not_found: true },
            ),
            (b"*2\r\n$1\r\na\r\n$-1\r\n", Reply::Aggregate(2)),
            (b"%1\r\n+a\r\n:1\r\n", Reply::Aggregate(1)),
            (b"*-1\r\n", Reply::Nil),
            (b"|1\r\n+k\r\n+v\r\n:7\r\n", Reply::Simple),
        ];
        for (bytes, want) in cases {
            let (got, used) = parse_reply(bytes).unwrap().unwrap();
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(used, bytes.len());
            // Every strict prefix is incomplete, never an error or a bogus frame.
            for cut in 0..bytes.len() {
                assert_eq!(parse_reply(&bytes[..cut]).unwrap(), None, "cut {cut}");
            }
        }
    }

    #[test]
    fn parses_pipelined_replies_in_order() {
        let buf = b"+OK\r\n$1\r\nx\r\n:3\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((r, used)) = parse_reply(&buf[pos..]).unwrap() {
            got.push(r);
            pos += used;
        }
        assert_eq!(got, vec![Reply::Simple, Reply::Bulk, Reply::Simple]);
        assert_eq!(pos, buf.len());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\n",
            b"$999999999999\r\n",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(DEPTH_MAX + 2);
        assert!(parse_reply(deep.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic, and a reported frame never claims more than the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, used))) = parse_reply(&bytes) {
                prop_assert!(used > 0 && used <= bytes.len());
            }
        }

        /// Any command we encode parses back as one frame of exactly its length.
        #[test]
        fn encoded_commands_round_trip(args in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 1..6)) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut out = Vec::new();
            encode_command(&mut out, &refs);
            prop_assert_eq!(parse_reply(&out).unwrap(), Some((Reply::Aggregate(args.len()), out.len())));
        }
    }
}
