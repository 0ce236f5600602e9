//! Splits a typed line into command arguments with `redis-cli`'s quoting rules (its
//! `sdssplitargs`): whitespace separates arguments; `"..."` allows `\n \r \t \b \a \\ \"` and
//! `\xHH` escapes; `'...'` is literal except `\'`; a closing quote must end the argument.

pub use tessera_net::resp::SplitError;

/// Splits `line` into arguments (bytes, since `\xHH` may produce any byte). The rules are the
/// server's own (`tessera_net::resp::split_args`), so a line means the same typed here as sent
/// inline.
pub fn split_args(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    tessera_net::resp::split_args(line.as_bytes())
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
