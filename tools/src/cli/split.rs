//! Splits a typed line into command arguments with `redis-cli`'s quoting rules (its
//! `sdssplitargs`): whitespace separates arguments; `"..."` allows `\n \r \t \b \a \\ \"` and
//! `\xHH` escapes; `'...'` is literal except `\'`; a closing quote must end the argument.

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A quote was opened and never closed.
    #[error("unbalanced quotes in request")]
    Unbalanced,
    /// A closing quote was followed by something other than whitespace.
    #[error("closing quote must be followed by a space or nothing at all")]
    TrailingAfterQuote,
}

/// Splits `line` into arguments (bytes, since `\xHH` may produce any byte).
pub fn split_args(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        // 0: bare, b'"': in double quotes, b'\'': in single quotes
        let mut quote = 0u8;
        loop {
            let Some(&c) = bytes.get(i) else {
                if quote != 0 {
                    return Err(SplitError::Unbalanced);
                }
                break;
            };
            match quote {
                b'"' => {
                    if c == b'\\' && i + 3 < bytes.len() && bytes[i + 1] == b'x' {
                        if let (Some(h), Some(l)) = (hex(bytes[i + 2]), hex(bytes[i + 3])) {
                            cur.push(h * 16 + l);
                            i += 4;
                            continue;
                        }
                    }
                    if c == b'\\' && i + 1 < bytes.len() {
                        cur.push(match bytes[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    if c == b'"' {
                        i += 1;
                        if bytes.get(i).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return Err(SplitError::TrailingAfterQuote);
                        }
                        break;
                    }
                    cur.push(c);
                }
                b'\'' => {
                    if c == b'\\' && bytes.get(i + 1) == Some(&b'\'') {
                        cur.push(b'\'');
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        i += 1;
                        if bytes.get(i).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return Err(SplitError::TrailingAfterQuote);
                        }
                        break;
                    }
                    cur.push(c);
                }
                _ => {
                    if c.is_ascii_whitespace() {
                        break;
                    }
                    if c == b'"' || c == b'\'' {
                        quote = c;
                    } else {
                        cur.push(c);
                    }
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split_args(line)
            .unwrap()
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(s("  SET  k\tv  "), ["SET", "k", "v"]);
        assert!(s("   ").is_empty());
    }

    #[test]
    fn double_quotes_take_escapes() {
        assert_eq!(s(r#"set "a b" "c\n\"d\"""#), ["set", "a b", "c\n\"d\""]);
        assert_eq!(
            split_args(r#""\x41\xff\x4""#).unwrap(),
            [b"A\xffx4".to_vec()]
        );
        assert_eq!(s(r#""""#), [""]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(s(r"'a\nb' 'it\'s'"), [r"a\nb", "it's"]);
    }

    #[test]
    fn bad_quoting_is_an_error() {
        assert_eq!(split_args(r#"get "abc"#), Err(SplitError::Unbalanced));
        assert_eq!(split_args("get 'abc"), Err(SplitError::Unbalanced));
        assert_eq!(
            split_args(r#"get "a"b"#),
            Err(SplitError::TrailingAfterQuote)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::cli::format::quote_into;
    use proptest::prelude::*;

    proptest! {
        /// A string as the REPL prints it ("quoted" with escapes) can be typed back as an
        /// argument and means the same bytes.
        #[test]
        fn printed_strings_type_back_as_the_same_bytes(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5)
        ) {
            let mut line = String::new();
            for a in &args {
                quote_into(&mut line, a);
                line.push(' ');
            }
            prop_assert_eq!(split_args(&line).unwrap(), args);
        }

        /// No typed line panics.
        #[test]
        fn any_line_splits_or_errs(line in "\\PC{0,40}") {
            let _ = split_args(&line);
        }
    }
}
