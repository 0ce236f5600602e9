//! Reply encoding into a connection's write buffer, RESP2 or RESP3.

use bytes::{BufMut, BytesMut};
use tessera_engine::Reply;

use super::Protocol;

/// Appends the encoding of `reply` in `proto` to `out`.
pub fn encode(reply: &Reply, proto: Protocol, out: &mut BytesMut) {
    match reply {
        Reply::Ok => out.put_slice(b"+OK\r\n"),
        Reply::Simple(text) => line(out, b'+', text),
        Reply::Error(err) => encode_error(&err.to_string(), out),
        Reply::Int(n) => {
            out.put_u8(b':');
            out.put_slice(itoa::Buffer::new().format(*n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Reply::Bulk(bytes) => encode_bulk(bytes, out),
        Reply::Nil => match proto {
            Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.put_slice(b"_\r\n"),
        },
        Reply::NilArray => match proto {
            Protocol::Resp2 => out.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => out.put_slice(b"_\r\n"),
        },
        Reply::Array(items) => {
            header(out, b'*', items.len());
            for item in items {
                encode(item, proto, out);
            }
        }
        Reply::Map(pairs) => {
            match proto {
                Protocol::Resp2 => header(out, b'*', pairs.len() * 2),
                Protocol::Resp3 => header(out, b'%', pairs.len()),
            }
            for (k, v) in pairs {
                encode(k, proto, out);
                encode(v, proto, out);
            }
        }
        Reply::Double(d) => {
            let text = format_double(*d);
            match proto {
                Protocol::Resp2 => encode_bulk(text.as_bytes(), out),
                Protocol::Resp3 => line(out, b',', text.as_bytes()),
            }
        }
    }
}

/// Appends `-{text}\r\n`; CR and LF inside `text` become spaces so framing cannot break.
pub fn encode_error(text: &str, out: &mut BytesMut) {
    out.reserve(text.len() + 3);
    out.put_u8(b'-');
    for &b in text.as_bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// Appends a bulk string `$len\r\n{bytes}\r\n`.
pub fn encode_bulk(bytes: &[u8], out: &mut BytesMut) {
    header(out, b'$', bytes.len());
    out.reserve(bytes.len() + 2);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// Appends a pub/sub message of bulk strings: a RESP3 push (`>`) or a RESP2 array.
pub fn encode_push(items: &[&[u8]], proto: Protocol, out: &mut BytesMut) {
    let kind = match proto {
        Protocol::Resp2 => b'*',
        Protocol::Resp3 => b'>',
    };
    header(out, kind, items.len());
    for item in items {
        encode_bulk(item, out);
    }
}

fn header(out: &mut BytesMut, kind: u8, len: usize) {
    out.reserve(24);
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    for &b in text {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// Redis's double formatting: `inf`, `-inf`, `nan`, integers without a fraction, otherwise the
/// shortest representation that round-trips.
fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tessera_engine::CommandError;

    fn enc(reply: &Reply, proto: Protocol) -> String {
        let mut out = BytesMut::new();
        encode(reply, proto, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn scalars() {
        for proto in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(enc(&Reply::Ok, proto), "+OK\r\n");
            assert_eq!(enc(&Reply::Int(-42), proto), ":-42\r\n");
            assert_eq!(
                enc(&Reply::Bulk(Bytes::from_static(b"hi")), proto),
                "$2\r\nhi\r\n"
            );
            assert_eq!(enc(&Reply::simple("PONG"), proto), "+PONG\r\n");
            assert_eq!(
                enc(&Reply::Error(CommandError::NotInteger), proto),
                "-ERR value is not an integer or out of range\r\n"
            );
        }
        assert_eq!(enc(&Reply::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, Protocol::Resp3), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(enc(&Reply::Double(1.5), Protocol::Resp2), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Reply::Double(1.5), Protocol::Resp3), ",1.5\r\n");
        assert_eq!(
            enc(&Reply::Double(f64::INFINITY), Protocol::Resp3),
            ",inf\r\n"
        );
        assert_eq!(enc(&Reply::Double(3.0), Protocol::Resp3), ",3\r\n");
    }

    #[test]
    fn aggregates() {
        let arr = Reply::Array(vec![Reply::Int(1), Reply::Nil]);
        assert_eq!(enc(&arr, Protocol::Resp2), "*2\r\n:1\r\n$-1\r\n");
        let map = Reply::Map(vec![(Reply::simple("a"), Reply::Int(1))]);
        assert_eq!(enc(&map, Protocol::Resp2), "*2\r\n+a\r\n:1\r\n");
        assert_eq!(enc(&map, Protocol::Resp3), "%1\r\n+a\r\n:1\r\n");
    }

    #[test]
    fn push_and_errors_cannot_break_framing() {
        let mut out = BytesMut::new();
        encode_push(&[b"message", b"ch", b"x"], Protocol::Resp3, &mut out);
        assert_eq!(&out[..], b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n");
        let mut out = BytesMut::new();
        encode_error("ERR bad\r\nthing", &mut out);
        assert_eq!(&out[..], b"-ERR bad  thing\r\n");
    }
}
