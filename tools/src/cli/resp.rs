//! The CLI's RESP2/RESP3 client codec: encodes a command as a RESP array of bulk strings and
//! parses one reply of any RESP2 or RESP3 type from a buffered byte stream.
//!
//! It is our own (about 200 lines) rather than the `redis` crate because the CLI must print every
//! reply exactly as the server sent it: the `redis` crate turns a top-level error reply into a
//! `RedisError` (its code mapped to an enum), folds `+OK` into `Value::Okay`, converts doubles to
//! `f64` (losing the server's text, e.g. `inf` or `3.0000000000000001`) and interprets the
//! connection state (HELLO, SUBSCRIBE, push frames) itself. Here a reply is plain data, kept
//! byte-for-byte, and the CLI decides what to do with it.
//!
//! Every length read from the wire is checked against [`ReplyLimits`] before anything is
//! allocated, so a hostile or broken server cannot make the CLI allocate without bound or recurse
//! without bound.

use std::io::{self, BufRead, Read, Write};

/// One reply from the server, as sent. Texts are bytes (RESP strings are binary-safe).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+text` simple string.
    Simple(Vec<u8>),
    /// `-CODE text` simple error or `!len` blob error (RESP3), without the leading `-`.
    Error(Vec<u8>),
    /// `:n` integer.
    Integer(i64),
    /// `$len` bulk string.
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3) null.
    Nil,
    /// `*n` array.
    Array(Vec<Reply>),
    /// `%n` map (RESP3), pairs in the order sent.
    Map(Vec<(Reply, Reply)>),
    /// `~n` set (RESP3).
    Set(Vec<Reply>),
    /// `>n` out-of-band push (RESP3): pub/sub messages, client-tracking invalidations.
    Push(Vec<Reply>),
    /// `,text` double (RESP3), kept as the server's text (`1.5`, `inf`, `-inf`, `nan`).
    Double(String),
    /// `#t` / `#f` boolean (RESP3).
    Boolean(bool),
    /// `(digits` big number (RESP3), kept as text.
    BigNumber(String),
    /// `=len` verbatim string (RESP3): a three-letter format (`txt`, `mkd`) and the text.
    Verbatim {
        /// The format tag, e.g. `txt`.
        format: String,
        /// The text after the `fmt:` prefix.
        text: Vec<u8>,
    },
    /// `|n` attributes (RESP3) followed by the reply they describe.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Reply, Reply)>,
        /// The reply the attributes belong to.
        reply: Box<Reply>,
    },
}

impl Reply {
    /// True for an error reply (`-ERR ...` or a blob error).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The reply as text when it is a string-like scalar (simple, bulk, verbatim, double, big
    /// number, integer), for callers that read values such as `INFO` or `DM.STATS` fields.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(b) | Reply::Bulk(b) | Reply::Verbatim { text: b, .. } => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            Reply::Double(s) | Reply::BigNumber(s) => Some(s.clone()),
            Reply::Integer(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Bounds on what a reply may claim, checked before allocating.
// The house style puts units and `_max` last in limit names, so every field ends alike.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone, Copy)]
pub struct ReplyLimits {
    /// Largest bulk string, blob error or verbatim string accepted. Default 512 MiB (Redis's own
    /// `proto-max-bulk-len`).
    pub bulk_bytes_max: usize,
    /// Largest element count of one aggregate (array, map pairs, set, push). Default 2^24.
    pub elements_max: usize,
    /// Deepest nesting of aggregates. Default 128.
    pub depth_max: usize,
    /// Longest header or simple-string line, CRLF included. Default 1 MiB.
    pub line_bytes_max: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            bulk_bytes_max: 512 * 1024 * 1024,
            elements_max: 1 << 24,
            depth_max: 128,
            line_bytes_max: 1024 * 1024,
        }
    }
}

/// Why a reply could not be read. A server error reply is not one of these: it is
/// [`Reply::Error`] data.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// The server closed the connection before or inside a reply.
    #[error("connection closed by the server")]
    Closed,
    /// No reply within the read timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The socket failed (reset, ...).
    #[error("{0}")]
    Io(io::Error),
    /// The bytes are not RESP, or break a [`ReplyLimits`] bound. The connection is unusable.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<io::Error> for RespError {
    fn from(e: io::Error) -> Self {
        // A socket read timeout surfaces as WouldBlock on Unix and TimedOut on Windows.
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RespError::Timeout,
            _ => RespError::Io(e),
        }
    }
}

/// Writes `args` as one RESP command (an array of bulk strings) into `out`.
pub fn encode_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
    // `write!` into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads exactly one reply from `r`.
pub fn read_reply<R: BufRead>(r: &mut R, limits: &ReplyLimits) -> Result<Reply, RespError> {
    read_at(r, limits, 0)
}

fn read_at<R: BufRead>(r: &mut R, limits: &ReplyLimits, depth: usize) -> Result<Reply, RespError> {
    if depth > limits.depth_max {
        return Err(RespError::Protocol(format!(
            "replies nested deeper than {}",
            limits.depth_max
        )));
    }
    let line = read_line(r, limits)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| RespError::Protocol("empty reply line".into()))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Simple(rest.to_vec()),
        b'-' => Reply::Error(rest.to_vec()),
        b':' => Reply::Integer(parse_int(rest)?),
        b',' => Reply::Double(text()),
        b'(' => {
            let digits = rest.strip_prefix(b"-").unwrap_or(rest);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(RespError::Protocol(format!("bad big number {:?}", text())));
            }
            Reply::BigNumber(text())
        }
        b'#' => match rest {
            b"t" => Reply::Boolean(true),
            b"f" => Reply::Boolean(false),
            _ => return Err(RespError::Protocol(format!("bad boolean {:?}", text()))),
        },
        b'_' => Reply::Nil,
        b'$' | b'!' | b'=' => match blob(r, rest, limits)? {
            None => Reply::Nil,
            Some(b) if kind == b'$' => Reply::Bulk(b),
            Some(b) if kind == b'!' => Reply::Error(b),
            Some(b) => {
                if b.len() < 4 || b[3] != b':' {
                    return Err(RespError::Protocol("verbatim string without format".into()));
                }
                Reply::Verbatim {
                    format: String::from_utf8_lossy(&b[..3]).into_owned(),
                    text: b[4..].to_vec(),
                }
            }
        },
        b'*' | b'~' | b'>' => {
            let Some(n) = count(rest, limits)? else {
                return Ok(Reply::Nil);
            };
            let items = read_items(r, limits, depth, n)?;
            match kind {
                b'*' => Reply::Array(items),
                b'~' => Reply::Set(items),
                _ => Reply::Push(items),
            }
        }
        b'%' | b'|' => {
            let Some(n) = count(rest, limits)? else {
                return Ok(Reply::Nil);
            };
            let pairs = read_pairs(r, limits, depth, n)?;
            if kind == b'%' {
                Reply::Map(pairs)
            } else {
                let reply = Box::new(read_at(r, limits, depth + 1)?);
                Reply::Attribute {
                    attrs: pairs,
                    reply,
                }
            }
        }
        other => {
            return Err(RespError::Protocol(format!(
                "unknown reply type byte {:?}",
                char::from(other)
            )))
        }
    })
}

fn read_items<R: BufRead>(
    r: &mut R,
    limits: &ReplyLimits,
    depth: usize,
    n: usize,
) -> Result<Vec<Reply>, RespError> {
    // Never trust a claimed count for preallocation beyond a small bound.
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        items.push(read_at(r, limits, depth + 1)?);
    }
    Ok(items)
}

fn read_pairs<R: BufRead>(
    r: &mut R,
    limits: &ReplyLimits,
    depth: usize,
    n: usize,
) -> Result<Vec<(Reply, Reply)>, RespError> {
    let mut pairs = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let k = read_at(r, limits, depth + 1)?;
        let v = read_at(r, limits, depth + 1)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// Parses an aggregate count; `-1` is RESP2's null.
fn count(rest: &[u8], limits: &ReplyLimits) -> Result<Option<usize>, RespError> {
    if rest == b"?" {
        return Err(RespError::Protocol(
            "streamed aggregates are not supported".into(),
        ));
    }
    let n = parse_int(rest)?;
    if n == -1 {
        return Ok(None);
    }
    let n =
        usize::try_from(n).map_err(|_| RespError::Protocol(format!("bad aggregate length {n}")))?;
    if n > limits.elements_max {
        return Err(RespError::Protocol(format!(
            "aggregate of {n} elements exceeds the limit of {}",
            limits.elements_max
        )));
    }
    Ok(Some(n))
}

/// Reads a length-prefixed payload and its CRLF; `-1` is RESP2's null bulk.
fn blob<R: BufRead>(
    r: &mut R,
    rest: &[u8],
    limits: &ReplyLimits,
) -> Result<Option<Vec<u8>>, RespError> {
    if rest == b"?" {
        return Err(RespError::Protocol(
            "streamed strings are not supported".into(),
        ));
    }
    let n = parse_int(rest)?;
    if n == -1 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| RespError::Protocol(format!("bad bulk length {n}")))?;
    if n > limits.bulk_bytes_max {
        return Err(RespError::Protocol(format!(
            "bulk of {n} bytes exceeds the limit of {}",
            limits.bulk_bytes_max
        )));
    }
    let mut buf = Vec::with_capacity(n.min(1 << 20));
    let got = r.take(n as u64 + 2).read_to_end(&mut buf)?;
    if got < n + 2 {
        return Err(RespError::Closed);
    }
    if !buf.ends_with(b"\r\n") {
        return Err(RespError::Protocol("bulk not terminated by CRLF".into()));
    }
    buf.truncate(n);
    Ok(Some(buf))
}

/// Reads one CRLF-terminated line and returns it without the CRLF.
fn read_line<R: BufRead>(r: &mut R, limits: &ReplyLimits) -> Result<Vec<u8>, RespError> {
    let mut line = Vec::new();
    let got = r
        .take(limits.line_bytes_max as u64)
        .read_until(b'\n', &mut line)?;
    if got == 0 {
        return Err(RespError::Closed);
    }
    if !line.ends_with(b"\n") {
        return Err(if got >= limits.line_bytes_max {
            RespError::Protocol(format!(
                "reply line longer than {} bytes",
                limits.line_bytes_max
            ))
        } else {
            RespError::Closed
        });
    }
    if !line.ends_with(b"\r\n") {
        return Err(RespError::Protocol("line not terminated by CRLF".into()));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            RespError::Protocol(format!(
                "bad integer {:?}",
                String::from_utf8_lossy(b).into_owned()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, RespError> {
        read_reply(&mut &bytes[..], &ReplyLimits::default())
    }

    fn b(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(
            &[b"SET".to_vec(), b"k".to_vec(), b"a b\r\n".to_vec()],
            &mut out,
        );
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\r\n\r\n");
    }

    #[test]
    fn parses_resp2_types() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple(b"OK".to_vec()));
        assert_eq!(
            parse(b"-ERR bad thing\r\n").unwrap(),
            Reply::Error(b"ERR bad thing".to_vec())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Integer(-42));
        assert_eq!(parse(b"$3\r\na\r\n\r\n").unwrap(), b("a\r\n"));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), b(""));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b"*0\r\n").unwrap(), Reply::Array(vec![]));
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Reply::Array(vec![b("a"), Reply::Array(vec![Reply::Integer(1)])])
        );
    }

    #[test]
    fn parses_resp3_types() {
        assert_eq!(parse(b"_\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b",1.5\r\n").unwrap(), Reply::Double("1.5".into()));
        assert_eq!(parse(b",-inf\r\n").unwrap(), Reply::Double("-inf".into()));
        assert_eq!(parse(b"#t\r\n").unwrap(), Reply::Boolean(true));
        assert_eq!(parse(b"#f\r\n").unwrap(), Reply::Boolean(false));
        assert_eq!(
            parse(b"(-12345678901234567890\r\n").unwrap(),
            Reply::BigNumber("-12345678901234567890".into())
        );
        assert_eq!(
            parse(b"!9\r\nERR oops!\r\n").unwrap(),
            Reply::Error(b"ERR oops!".to_vec())
        );
        assert_eq!(
            parse(b"=7\r\ntxt:a\nb\r\n").unwrap(),
            Reply::Verbatim {
                format: "txt".into(),
                text: b"a\nb".to_vec()
            }
        );
        assert_eq!(
            parse(b"%1\r\n+k\r\n:1\r\n").unwrap(),
            Reply::Map(vec![(Reply::Simple(b"k".to_vec()), Reply::Integer(1))])
        );
        assert_eq!(
            parse(b"~2\r\n:1\r\n:2\r\n").unwrap(),
            Reply::Set(vec![Reply::Integer(1), Reply::Integer(2)])
        );
        assert_eq!(
            parse(b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n").unwrap(),
            Reply::Push(vec![b("message"), b("x")])
        );
        assert_eq!(
            parse(b"|1\r\n+ttl\r\n:3\r\n:7\r\n").unwrap(),
            Reply::Attribute {
                attrs: vec![(Reply::Simple(b"ttl".to_vec()), Reply::Integer(3))],
                reply: Box::new(Reply::Integer(7)),
            }
        );
    }

    #[test]
    fn reads_consecutive_replies_from_one_stream() {
        let mut r: &[u8] = b"+OK\r\n:1\r\n";
        let l = ReplyLimits::default();
        assert_eq!(
            read_reply(&mut r, &l).unwrap(),
            Reply::Simple(b"OK".to_vec())
        );
        assert_eq!(read_reply(&mut r, &l).unwrap(), Reply::Integer(1));
        assert!(matches!(read_reply(&mut r, &l), Err(RespError::Closed)));
    }

    #[test]
    fn truncated_input_is_closed_not_a_panic() {
        for input in [
            &b"$5\r\nab"[..],
            b"*2\r\n:1\r\n",
            b"+OK",
            b":1\r",
            b"%1\r\n:1\r\n",
        ] {
            assert!(
                matches!(parse(input), Err(RespError::Closed)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn malformed_input_is_a_protocol_error() {
        for input in [
            &b"?\r\n"[..],
            b":abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde\r\n",
            b"#x\r\n",
            b"(12a\r\n",
            b"=2\r\nab\r\n",
            b"+OK\n",
            b"\r\n",
            b"$?\r\n",
            b"*?\r\n",
        ] {
            assert!(
                matches!(parse(input), Err(RespError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_allocating() {
        let limits = ReplyLimits {
            bulk_bytes_max: 4,
            elements_max: 2,
            depth_max: 2,
            line_bytes_max: 16,
        };
        let p = |b: &[u8]| read_reply(&mut &b[..], &limits);
        assert!(matches!(p(b"$5\r\nabcde\r\n"), Err(RespError::Protocol(_))));
        assert!(matches!(
            p(b"$9223372036854775807\r\n"),
            Err(RespError::Protocol(_))
        ));
        assert!(matches!(
            p(b"*3\r\n:1\r\n:1\r\n:1\r\n"),
            Err(RespError::Protocol(_))
        ));
        assert!(matches!(
            p(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(RespError::Protocol(_))
        ));
        assert!(matches!(
            p(b"+0123456789abcdefghij\r\n"),
            Err(RespError::Protocol(_))
        ));
        assert_eq!(
            p(b"*1\r\n*1\r\n:1\r\n").unwrap(),
            Reply::Array(vec![Reply::Array(vec![Reply::Integer(1)])])
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes a reply the way a server would (test-only; the CLI never sends replies).
    fn encode(r: &Reply, out: &mut Vec<u8>) {
        let agg = |out: &mut Vec<u8>, t: char, n: usize| {
            out.extend_from_slice(format!("{t}{n}\r\n").as_bytes());
        };
        let blob = |out: &mut Vec<u8>, t: char, b: &[u8]| {
            out.extend_from_slice(format!("{t}{}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        };
        match r {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(e) => blob(out, '!', e),
            Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(b) => blob(out, '$', b),
            Reply::Nil => out.extend_from_slice(b"_\r\n"),
            Reply::Double(d) => out.extend_from_slice(format!(",{d}\r\n").as_bytes()),
            Reply::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::BigNumber(n) => out.extend_from_slice(format!("({n}\r\n").as_bytes()),
            Reply::Verbatim { format, text } => {
                let mut b = format!("{format}:").into_bytes();
                b.extend_from_slice(text);
                blob(out, '=', &b);
            }
            Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
                let t = match r {
                    Reply::Array(_) => '*',
                    Reply::Set(_) => '~',
                    _ => '>',
                };
                agg(out, t, items.len());
                for i in items {
                    encode(i, out);
                }
            }
            Reply::Map(pairs) => {
                agg(out, '%', pairs.len());
                for (k, v) in pairs {
                    encode(k, out);
                    encode(v, out);
                }
            }
            Reply::Attribute { attrs, reply } => {
                agg(out, '|', attrs.len());
                for (k, v) in attrs {
                    encode(k, out);
                    encode(v, out);
                }
                encode(reply, out);
            }
        }
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Simple(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Reply::Bulk),
            Just(Reply::Nil),
            prop_oneof![
                any::<f64>().prop_map(|d| d.to_string()),
                Just("inf".to_string()),
                Just("-inf".to_string())
            ]
            .prop_map(Reply::Double),
            any::<bool>().prop_map(Reply::Boolean),
            "-?[1-9][0-9]{0,40}".prop_map(Reply::BigNumber),
            ("[a-z]{3}", proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(format, text)| Reply::Verbatim { format, text }),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..4);
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Array),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Set),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Push),
                pairs.clone().prop_map(Reply::Map),
                (pairs, inner).prop_map(|(attrs, r)| Reply::Attribute {
                    attrs,
                    reply: Box::new(r)
                }),
            ]
        })
    }

    proptest! {
        /// Every reply a server can send is read back exactly, and split anywhere it is
        /// simply incomplete (closed), never misread.
        #[test]
        fn replies_round_trip(r in reply(), cut in any::<prop::sample::Index>()) {
            let mut bytes = Vec::new();
            encode(&r, &mut bytes);
            let limits = ReplyLimits::default();
            prop_assert_eq!(read_reply(&mut &bytes[..], &limits).unwrap(), r);
            let cut = cut.index(bytes.len());
            let truncated = read_reply(&mut &bytes[..cut], &limits);
            prop_assert!(matches!(truncated, Err(RespError::Closed)), "{:?}", truncated);
        }

        /// Arbitrary bytes never panic or loop: a reply, a protocol error or "closed".
        #[test]
        fn arbitrary_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let limits = ReplyLimits { bulk_bytes_max: 1 << 16, elements_max: 1 << 10, depth_max: 8, line_bytes_max: 1 << 10 };
            let _ = read_reply(&mut &bytes[..], &limits);
        }
    }
}
