//! Turns a [`Reply`] into the text a person reads, the way `redis-cli` does.
//!
//! Two styles, as in `redis-cli`: [`human`] (the default on a terminal: `(integer) 1`, `(nil)`,
//! quoted strings with escapes, numbered and indented nested aggregates, `(error) ...`) and
//! [`raw`] (the default when stdout is not a terminal, for scripts: bare values, one per line).
//! Colour, when asked for, only marks errors, so copying output never copies escape codes into
//! data.

use super::resp::Reply;
use std::fmt::Write as _;

/// Escape sequence starting the error colour (bold red) and the one resetting it.
const ERROR_STYLE: (&str, &str) = ("\x1b[1;31m", "\x1b[0m");

/// `redis-cli`'s human-readable form of `reply`, ending in a newline. With `color`, error lines
/// are shown in bold red.
pub fn human(reply: &Reply, color: bool) -> String {
    let mut out = String::new();
    human_into(&mut out, reply, "", color);
    out
}

fn human_into(out: &mut String, reply: &Reply, prefix: &str, color: bool) {
    match reply {
        Reply::Error(e) => {
            let (on, off) = if color { ERROR_STYLE } else { ("", "") };
            let _ = writeln!(out, "{on}(error) {}{off}", String::from_utf8_lossy(e));
        }
        Reply::Simple(s) => {
            out.push_str(&String::from_utf8_lossy(s));
            out.push('\n');
        }
        Reply::Integer(n) => {
            let _ = writeln!(out, "(integer) {n}");
        }
        Reply::Double(d) => {
            let _ = writeln!(out, "(double) {d}");
        }
        Reply::BigNumber(n) => {
            let _ = writeln!(out, "(big number) {n}");
        }
        Reply::Boolean(b) => out.push_str(if *b { "(true)\n" } else { "(false)\n" }),
        Reply::Nil => out.push_str("(nil)\n"),
        Reply::Bulk(b) => {
            quote_into(out, b);
            out.push('\n');
        }
        Reply::Verbatim { text, .. } => {
            out.push_str(&String::from_utf8_lossy(text));
            out.push('\n');
        }
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            let (sep, empty) = match reply {
                Reply::Set(_) => ('~', "(empty set)\n"),
                Reply::Push(_) => (')', "(empty push)\n"),
                _ => (')', "(empty array)\n"),
            };
            if items.is_empty() {
                out.push_str(empty);
                return;
            }
            let width = digits(items.len());
            let inner = format!("{prefix}{}", " ".repeat(width + 2));
            for (i, item) in items.iter().enumerate() {
                // The first entry follows the index the caller already printed.
                let lead = if i == 0 { "" } else { prefix };
                let _ = write!(out, "{lead}{:>width$}{sep} ", i + 1);
                human_into(out, item, &inner, color);
            }
        }
        Reply::Map(pairs) => {
            if pairs.is_empty() {
                out.push_str("(empty hash)\n");
                return;
            }
            pairs_into(out, pairs, prefix, '#', color);
        }
        Reply::Attribute { attrs, reply } => {
            // redis-cli has no form for attributes; show them as a `|`-numbered map before the
            // reply they describe.
            pairs_into(out, attrs, prefix, '|', color);
            out.push_str(prefix);
            human_into(out, reply, prefix, color);
        }
    }
}

fn pairs_into(out: &mut String, pairs: &[(Reply, Reply)], prefix: &str, sep: char, color: bool) {
    let width = digits(pairs.len());
    let inner = format!("{prefix}{}", " ".repeat(width + 2));
    for (i, (k, v)) in pairs.iter().enumerate() {
        let lead = if i == 0 { "" } else { prefix };
        let _ = write!(out, "{lead}{:>width$}{sep} ", i + 1);
        human_into(out, k, &inner, color);
        out.pop(); // the key's newline: the value follows on the same line
        out.push_str(" => ");
        if is_multiline(v) {
            // A multi-line value starts on its own line so its entries align.
            out.push('\n');
            out.push_str(&inner);
        }
        human_into(out, v, &inner, color);
    }
}

/// Whether [`human`] renders `reply` on more than one line.
fn is_multiline(reply: &Reply) -> bool {
    match reply {
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => match items.as_slice() {
            [] => false,
            [only] => is_multiline(only),
            _ => true,
        },
        Reply::Map(pairs) => match pairs.as_slice() {
            [] => false,
            [(_, v)] => is_multiline(v),
            _ => true,
        },
        Reply::Attribute { .. } => true,
        _ => false,
    }
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Appends `bytes` in double quotes with `redis-cli`'s escapes (`\n`, `\r`, `\t`, `\a`, `\b`,
/// `\\`, `\"`, and `\xHH` for any other non-printable byte).
pub fn quote_into(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &c in bytes {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(char::from(c)),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push('"');
}

/// `redis-cli --raw`'s form of `reply`: strings as their bytes, numbers bare, nil as an empty
/// line, aggregate elements one per line, map pairs as key line then value line. Ends in a
/// newline.
pub fn raw(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    raw_into(&mut out, reply);
    out.push(b'\n');
    out
}

fn raw_into(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Simple(b) | Reply::Bulk(b) | Reply::Error(b) | Reply::Verbatim { text: b, .. } => {
            out.extend_from_slice(b);
        }
        Reply::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Reply::Double(s) | Reply::BigNumber(s) => out.extend_from_slice(s.as_bytes()),
        Reply::Boolean(b) => out.push(if *b { b'1' } else { b'0' }),
        Reply::Nil => {}
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw_into(out, item);
            }
        }
        Reply::Map(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw_into(out, k);
                out.push(b'\n');
                raw_into(out, v);
            }
        }
        Reply::Attribute { reply, .. } => raw_into(out, reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn h(r: &Reply) -> String {
        human(r, false)
    }

    fn r(reply: &Reply) -> String {
        String::from_utf8(raw(reply)).unwrap()
    }

    #[test]
    fn scalars_print_like_redis_cli() {
        assert_eq!(h(&Reply::Simple(b"OK".to_vec())), "OK\n");
        assert_eq!(h(&Reply::Integer(-7)), "(integer) -7\n");
        assert_eq!(h(&Reply::Nil), "(nil)\n");
        assert_eq!(h(&Reply::Double("3.14".into())), "(double) 3.14\n");
        assert_eq!(h(&Reply::Double("inf".into())), "(double) inf\n");
        assert_eq!(h(&Reply::Boolean(true)), "(true)\n");
        assert_eq!(h(&Reply::Boolean(false)), "(false)\n");
        assert_eq!(
            h(&Reply::BigNumber("123456789012345678901234".into())),
            "(big number) 123456789012345678901234\n"
        );
        assert_eq!(
            h(&Reply::Verbatim {
                format: "txt".into(),
                text: b"line1\nline2".to_vec()
            }),
            "line1\nline2\n"
        );
        assert_eq!(
            h(&Reply::Error(b"ERR unknown command".to_vec())),
            "(error) ERR unknown command\n"
        );
    }

    #[test]
    fn errors_are_styled_only_when_asked() {
        let e = Reply::Error(b"WRONGTYPE nope".to_vec());
        assert_eq!(human(&e, true), "\x1b[1;31m(error) WRONGTYPE nope\x1b[0m\n");
        assert!(!human(&e, false).contains('\x1b'));
    }

    #[test]
    fn bulk_strings_are_quoted_with_escapes() {
        assert_eq!(h(&bulk("hello")), "\"hello\"\n");
        assert_eq!(h(&bulk("")), "\"\"\n");
        assert_eq!(
            h(&Reply::Bulk(b"a\"b\\c\n\r\t\x07\x08\x00\xff".to_vec())),
            "\"a\\\"b\\\\c\\n\\r\\t\\a\\b\\x00\\xff\"\n"
        );
        // UTF-8 is shown as bytes, as redis-cli does.
        assert_eq!(h(&bulk("é")), "\"\\xc3\\xa9\"\n");
    }

    #[test]
    fn nested_arrays_are_numbered_and_indented() {
        let reply = Reply::Array(vec![
            bulk("a"),
            Reply::Array(vec![Reply::Integer(1), Reply::Nil]),
            Reply::Array(vec![]),
        ]);
        assert_eq!(
            h(&reply),
            "1) \"a\"\n2) 1) (integer) 1\n   2) (nil)\n3) (empty array)\n"
        );
    }

    #[test]
    fn index_width_follows_the_largest_index() {
        let reply = Reply::Array((0..10).map(Reply::Integer).collect());
        let text = h(&reply);
        assert!(
            text.starts_with(" 1) (integer) 0\n 2) (integer) 1\n"),
            "{text}"
        );
        assert!(text.ends_with("10) (integer) 9\n"), "{text}");
        let nested = Reply::Array(vec![Reply::Array((0..10).map(Reply::Integer).collect())]);
        let text = h(&nested);
        assert!(
            text.starts_with("1)  1) (integer) 0\n    2) (integer) 1\n"),
            "{text}"
        );
        assert!(text.ends_with("   10) (integer) 9\n"), "{text}");
    }

    #[test]
    fn maps_sets_and_pushes() {
        let map = Reply::Map(vec![
            (bulk("keys"), Reply::Integer(3)),
            (
                bulk("cores"),
                Reply::Array(vec![Reply::Integer(1), Reply::Integer(2)]),
            ),
        ]);
        assert_eq!(
            h(&map),
            "1# \"keys\" => (integer) 3\n2# \"cores\" => \n   1) (integer) 1\n   2) (integer) 2\n"
        );
        // A one-entry aggregate value stays on the key's line.
        let one = Reply::Map(vec![(
            bulk("spec"),
            Reply::Map(vec![(bulk("index"), Reply::Array(vec![Reply::Integer(1)]))]),
        )]);
        assert_eq!(h(&one), "1# \"spec\" => 1# \"index\" => 1) (integer) 1\n");
        assert_eq!(h(&Reply::Map(vec![])), "(empty hash)\n");
        assert_eq!(
            h(&Reply::Set(vec![bulk("x"), bulk("y")])),
            "1~ \"x\"\n2~ \"y\"\n"
        );
        assert_eq!(h(&Reply::Set(vec![])), "(empty set)\n");
        assert_eq!(
            h(&Reply::Push(vec![bulk("message"), bulk("ch"), bulk("hi")])),
            "1) \"message\"\n2) \"ch\"\n3) \"hi\"\n"
        );
        assert_eq!(h(&Reply::Push(vec![])), "(empty push)\n");
    }

    #[test]
    fn attributes_precede_their_reply() {
        let reply = Reply::Attribute {
            attrs: vec![(bulk("ttl"), Reply::Integer(5))],
            reply: Box::new(bulk("v")),
        };
        assert_eq!(h(&reply), "1| \"ttl\" => (integer) 5\n\"v\"\n");
    }

    #[test]
    fn raw_style_prints_bare_values() {
        assert_eq!(r(&bulk("a b")), "a b\n");
        assert_eq!(r(&Reply::Integer(5)), "5\n");
        assert_eq!(r(&Reply::Nil), "\n");
        assert_eq!(r(&Reply::Error(b"ERR x".to_vec())), "ERR x\n");
        assert_eq!(r(&Reply::Boolean(true)), "1\n");
        assert_eq!(r(&Reply::Double("1.5".into())), "1.5\n");
        assert_eq!(
            r(&Reply::Array(vec![
                bulk("a"),
                Reply::Array(vec![bulk("b"), bulk("c")])
            ])),
            "a\nb\nc\n"
        );
        assert_eq!(
            r(&Reply::Map(vec![
                (bulk("k"), bulk("v")),
                (bulk("k2"), Reply::Integer(2))
            ])),
            "k\nv\nk2\n2\n"
        );
        assert_eq!(r(&Reply::Array(vec![])), "\n");
    }
}
