//! Splitting of a command line into arguments with Redis's quoting rules (`sdssplitargs`).
//!
//! One implementation for the server's inline requests and the `tessera` CLI's typed lines.

use thiserror::Error;

/// Why a line could not be split.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SplitError {
    /// A quote was opened and never closed.
    #[error("unbalanced quotes in request")]
    Unbalanced,
    /// A closing quote was followed by something other than whitespace.
    #[error("closing quote must be followed by a space or nothing at all")]
    TrailingAfterQuote,
}

/// Splits a command line (an inline request, or a line typed in the CLI) like Redis's `sdssplitargs`: whitespace-separated words,
/// `"double quotes"` with `\n \r \t \b \a \\ \" \xHH` escapes, `'single quotes'` with `\'`.
/// A closing quote must be followed by whitespace or the end of the line.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                let Some(&c) = line.get(i) else {
                    return Err(SplitError::Unbalanced);
                };
                if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        current.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    current.push(match line[i + 1] {
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
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return Err(SplitError::TrailingAfterQuote);
                    }
                    i += 1;
                    break;
                }
                current.push(c);
                i += 1;
            } else if in_single {
                let Some(&c) = line.get(i) else {
                    return Err(SplitError::Unbalanced);
                };
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    current.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return Err(SplitError::TrailingAfterQuote);
                    }
                    i += 1;
                    break;
                }
                current.push(c);
                i += 1;
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(&c) => current.push(c),
                }
                i += 1;
            }
        }
        args.push(current);
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
