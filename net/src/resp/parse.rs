//! Request parsing: RESP multibulk (`*N\r\n$len\r\n...`) and inline commands.
//!
//! `Parser` keeps its progress through the request at the front of the buffer, so a large
//! request arriving in many reads is scanned once, not once per read. Nothing is allocated from a
//! declared length before the limits have been checked.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::split::split_args;
use super::Limits;

/// A request that cannot be parsed. `Display` is the exact error text Redis sends (without `-`);
/// after replying with it the connection is closed, because the framing is lost.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    #[error("ERR Protocol error: too big mbulk count string")]
    MultibulkHeaderTooLong,
    #[error("ERR Protocol error: too big bulk count string")]
    BulkHeaderTooLong,
    #[error("ERR Protocol error: too big inline request")]
    InlineTooLong,
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("ERR Protocol error: expected CRLF after bulk data")]
    MissingBulkTerminator,
    #[error("ERR Protocol error: request exceeds request_bytes_max")]
    RequestTooLarge,
}

/// Incremental request parser for one connection.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// Arguments still expected in the multibulk request being scanned; `None` between requests.
    remaining: Option<usize>,
    /// Offset in the buffer up to which the current request has been scanned.
    pos: usize,
    /// `(start, end)` offsets of the arguments scanned so far.
    args: Vec<(usize, usize)>,
}

/// Parses one request from the front of `buf` with a fresh parser (see [`Parser::parse`]).
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    Parser::new(limits.clone()).parse(buf)
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            remaining: None,
            pos: 0,
            args: Vec::new(),
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses one request from the front of `buf`.
    ///
    /// `Ok(Some(args))`: the request's bytes were split off `buf`; `args` are zero-copy slices
    /// (args\[0\] is the command name). `Ok(None)`: more bytes are needed; `buf` is untouched
    /// except that empty requests (blank inline lines, `*0`) at its front are dropped. The caller
    /// must only append to `buf` between calls until a request is returned.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let Some(remaining) = self.remaining else {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'*' {
                    match parse_inline(buf, &self.limits)? {
                        Inline::Incomplete => return Ok(None),
                        Inline::Empty => continue,
                        Inline::Request(args) => return Ok(Some(args)),
                    }
                }
                let Some(cr) = find_crlf(buf, 1) else {
                    if buf.len() > self.limits.inline_bytes_max {
                        return Err(ProtocolError::MultibulkHeaderTooLong);
                    }
                    return Ok(None);
                };
                let count = parse_int(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                if count > i64::from(i32::MAX) || count > self.limits.multibulk_len_max as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count <= 0 {
                    // An empty request: Redis ignores it.
                    let _ = buf.split_to(cr + 2);
                    continue;
                }
                let count = count as usize;
                self.remaining = Some(count);
                self.pos = cr + 2;
                self.args.clear();
                self.args.reserve(count.min(64));
                continue;
            };
            if remaining == 0 {
                return Ok(Some(self.take(buf)));
            }
            if self.pos >= buf.len() {
                return Ok(None);
            }
            if buf[self.pos] != b'$' {
                return Err(ProtocolError::ExpectedDollar(char::from(buf[self.pos])));
            }
            let Some(cr) = find_crlf(buf, self.pos + 1) else {
                if buf.len() - self.pos > self.limits.inline_bytes_max {
                    return Err(ProtocolError::BulkHeaderTooLong);
                }
                return Ok(None);
            };
            let len = parse_int(&buf[self.pos + 1..cr]).ok_or(ProtocolError::InvalidBulkLength)?;
            if len < 0 || len as u64 > self.limits.bulk_bytes_max as u64 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let start = cr + 2;
            let end = start + len as usize;
            if end + 2 > self.limits.request_bytes_max {
                return Err(ProtocolError::RequestTooLarge);
            }
            if buf.len() < end + 2 {
                // No reservation from the declared length: a client must send the bytes before
                // it makes the buffer grow.
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingBulkTerminator);
            }
            self.args.push((start, end));
            self.pos = end + 2;
            self.remaining = Some(remaining - 1);
        }
    }

    fn take(&mut self, buf: &mut BytesMut) -> Vec<Bytes> {
        let frame = buf.split_to(self.pos).freeze();
        let args = self.args.iter().map(|&(s, e)| frame.slice(s..e)).collect();
        self.remaining = None;
        self.pos = 0;
        self.args.clear();
        args
    }
}

/// Position of the `\r` of the first `\r\n` at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let cr = i + buf[i..].iter().position(|&b| b == b'\r')?;
        if cr + 1 >= buf.len() {
            return None;
        }
        if buf[cr + 1] == b'\n' {
            return Some(cr);
        }
        i = cr + 1;
    }
    None
}

/// A strict decimal integer (optional leading `-`, no spaces, no `+`), like Redis's `string2ll`.
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

enum Inline {
    Incomplete,
    Empty,
    Request(Vec<Bytes>),
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Inline, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.inline_bytes_max {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(Inline::Incomplete);
    };
    if nl > limits.inline_bytes_max {
        return Err(ProtocolError::InlineTooLong);
    }
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line).map_err(|_| ProtocolError::UnbalancedQuotes)?;
    if args.is_empty() {
        return Ok(Inline::Empty);
    }
    if args.len() > limits.multibulk_len_max {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    Ok(Inline::Request(args.into_iter().map(Bytes::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = Parser::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = parser.parse(&mut buf)? {
            out.push(args);
        }
        Ok(out)
    }

    fn strs(args: &[Bytes]) -> Vec<&str> {
        args.iter()
            .map(|a| std::str::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn multibulk_and_pipeline() {
        let reqs =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n")
                .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(strs(&reqs[0]), ["GET", "k"]);
        assert_eq!(strs(&reqs[1]), ["SET", "k", ""]);
    }

    #[test]
    fn binary_safe_arguments() {
        let reqs = parse_all(b"*2\r\n$4\r\na\r\nb\r\n$2\r\n\x00\xff\r\n").unwrap();
        assert_eq!(&reqs[0][0][..], b"a\r\nb");
        assert_eq!(&reqs[0][1][..], b"\x00\xff");
    }

    #[test]
    fn every_split_point_gives_the_same_requests() {
        let input: &[u8] =
            b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nworld\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        let whole = parse_all(input).unwrap();
        assert_eq!(whole.len(), 3);
        for split in 0..=input.len() {
            let mut parser = Parser::new(Limits::default());
            let mut buf = BytesMut::from(&input[..split]);
            let mut got = Vec::new();
            while let Some(args) = parser.parse(&mut buf).unwrap() {
                got.push(args);
            }
            buf.extend_from_slice(&input[split..]);
            while let Some(args) = parser.parse(&mut buf).unwrap() {
                got.push(args);
            }
            assert_eq!(got, whole, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_at_a_time() {
        let input: &[u8] = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
        let mut parser = Parser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input {
            assert!(got.is_none());
            buf.extend_from_slice(&[b]);
            got = parser.parse(&mut buf).unwrap();
        }
        assert_eq!(strs(&got.unwrap()), ["ECHO", "hello world"]);
    }

    #[test]
    fn inline_commands() {
        let reqs = parse_all(b"PING\r\nset k \"a b\\x41\\n\"\n  \r\nget 'it''s'\r\n");
        assert_eq!(reqs, Err(ProtocolError::UnbalancedQuotes));
        let reqs = parse_all(b"PING\r\nset k \"a b\\x41\\n\"\n  \r\nget 'it\\'s'\r\n").unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(strs(&reqs[0]), ["PING"]);
        assert_eq!(strs(&reqs[1]), ["set", "k", "a bA\n"]);
        assert_eq!(strs(&reqs[2]), ["get", "it's"]);
        assert_eq!(
            parse_all(b"get \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn empty_requests_are_skipped() {
        let reqs = parse_all(b"*0\r\n*-1\r\n\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(reqs.len(), 1);
    }

    #[test]
    fn protocol_errors_with_redis_texts() {
        let cases: &[(&[u8], &str)] = &[
            (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
            (
                b"*99999999999\r\n",
                "ERR Protocol error: invalid multibulk length",
            ),
            (
                b"*1\r\n+PING\r\n",
                "ERR Protocol error: expected '$', got '+'",
            ),
            (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
            (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
            (
                b"*1\r\n$99999999999\r\n",
                "ERR Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$4\r\nPINGxx",
                "ERR Protocol error: expected CRLF after bulk data",
            ),
        ];
        for (input, text) in cases {
            let err = parse_all(input).unwrap_err();
            assert_eq!(err.to_string(), *text, "input {input:?}");
        }
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating() {
        let limits = Limits {
            bulk_bytes_max: 1024,
            request_bytes_max: 4096,
            ..Limits::default()
        };
        let mut parser = Parser::new(limits);
        let mut buf = BytesMut::from(&b"*1\r\n$1025\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::InvalidBulkLength)
        );
        let mut parser = Parser::new(Limits {
            request_bytes_max: 100,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*2\r\n$50\r\n"[..]);
        buf.extend_from_slice(&[b'a'; 50]);
        buf.extend_from_slice(b"\r\n$60\r\n");
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::RequestTooLarge));
        let mut parser = Parser::new(Limits {
            multibulk_len_max: 10,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn overlong_header_lines_are_errors() {
        let limits = Limits {
            inline_bytes_max: 16,
            ..Limits::default()
        };
        let mut parser = Parser::new(limits.clone());
        let mut buf = BytesMut::from(&[b'a'; 17][..]);
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::InlineTooLong));
        let mut parser = Parser::new(limits.clone());
        let mut buf = BytesMut::from(&b"*11111111111111111111"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::MultibulkHeaderTooLong)
        );
        let mut parser = Parser::new(limits);
        let mut buf = BytesMut::from(&b"*1\r\n$11111111111111111111"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::BulkHeaderTooLong)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of pseudo-random inputs (the fuzz target covers this deeper).
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let alphabet = b"*$\r\n0123456789-abc \"'\\x";
        for _ in 0..20_000 {
            let len = (state % 40) as usize;
            let mut input = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let mut parser = Parser::new(Limits::default());
            let mut buf = BytesMut::from(&input[..]);
            for _ in 0..64 {
                match parser.parse(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
