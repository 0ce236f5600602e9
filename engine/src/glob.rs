//! Redis's glob matching (`stringmatchlen`) for KEYS, SCAN MATCH and DM.SCAN MATCH.
//!
//! Same syntax as Redis: `*`, `?`, `[abc]`, `[^abc]`, `[a-z]` (reversed ranges are swapped),
//! `\x` escapes. Redis matches `*` by recursion, which is exponential on patterns such as
//! `*a*a*a*b`; here the pattern is compiled once and matched with the classic single-backtrack
//! algorithm, `O(len(pattern) * len(subject))` in the worst case, so no pattern can hang a shard.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Lit(u8),
    Class { negate: bool, items: Vec<(u8, u8)> },
}

impl Token {
    fn matches(&self, c: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Lit(l) => *l == c,
            Token::Class { negate, items } => {
                let hit = items.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                hit != *negate
            }
        }
    }
}

/// A compiled glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
    match_all: bool,
}

impl Glob {
    /// Compiles `pattern` with Redis's rules (every byte string is a valid pattern).
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    i += 1;
                    let negate = pattern.get(i) == Some(&b'^');
                    if negate {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    // An unterminated class ends at the end of the pattern, as in Redis.
                    while i < pattern.len() {
                        let c = pattern[i];
                        if c == b'\\' && i + 1 < pattern.len() {
                            i += 1;
                            items.push((pattern[i], pattern[i]));
                        } else if c == b']' {
                            break;
                        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                            let (a, b) = (c, pattern[i + 2]);
                            items.push((a.min(b), a.max(b)));
                            i += 2;
                        } else {
                            items.push((c, c));
                        }
                        i += 1;
                    }
                    tokens.push(Token::Class { negate, items });
                }
                b'\\' if i + 1 < pattern.len() => {
                    i += 1;
                    tokens.push(Token::Lit(pattern[i]));
                }
                c => tokens.push(Token::Lit(c)),
            }
            i += 1;
        }
        let match_all = tokens == [Token::Star];
        Glob { tokens, match_all }
    }

    /// True when the pattern is `*` (every key matches).
    pub fn matches_everything(&self) -> bool {
        self.match_all
    }

    /// True when `subject` matches the whole pattern.
    pub fn matches(&self, subject: &[u8]) -> bool {
        if self.match_all {
            return true;
        }
        let toks = &self.tokens;
        let (mut pi, mut si) = (0usize, 0usize);
        // Position of the last `*` and the subject index it is currently matched up to.
        let mut star: Option<(usize, usize)> = None;
        while si < subject.len() {
            if let Some(t) = toks.get(pi) {
                if *t == Token::Star {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                if t.matches(subject[si]) {
                    pi += 1;
                    si += 1;
                    continue;
                }
            }
            match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            }
        }
        while toks.get(pi) == Some(&Token::Star) {
            pi += 1;
        }
        pi == toks.len()
    }
}

/// One-shot match of `subject` against `pattern`.
pub fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    Glob::new(pattern).matches(subject)
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn redis_examples() {
        assert!(m(b"h?llo", b"hello"));
        assert!(m(b"h?llo", b"hallo"));
        assert!(!m(b"h?llo", b"hllo"));
        assert!(m(b"h*llo", b"hllo"));
        assert!(m(b"h*llo", b"heeeello"));
        assert!(m(b"h[ae]llo", b"hello"));
        assert!(!m(b"h[ae]llo", b"hillo"));
        assert!(m(b"h[^e]llo", b"hallo"));
        assert!(!m(b"h[^e]llo", b"hello"));
        assert!(m(b"h[a-b]llo", b"hbllo"));
        assert!(m(b"h[b-a]llo", b"hallo"));
        assert!(!m(b"h[a-b]llo", b"hcllo"));
        assert!(m(b"h\\*llo", b"h*llo"));
        assert!(!m(b"h\\*llo", b"hello"));
        assert!(m(b"*", b""));
        assert!(m(b"", b""));
        assert!(!m(b"", b"a"));
        assert!(m(b"a*", b"a"));
        assert!(m(b"*a*b", b"xxaxxb"));
        assert!(!m(b"*a*b", b"xxaxxbc"));
        assert!(m(b"[abc", b"b"));
        assert!(!m(b"[]", b"a"));
        assert!(m(b"\\", b"\\"));
        assert!(m(b"[\\]]", b"]"));
        assert!(m(b"user:*:name", b"user:42:name"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        let subject = vec![b'a'; 10_000];
        assert!(!m(&pattern, &subject));
    }
}
