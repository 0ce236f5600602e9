//! Numbers in values and arguments with Redis's exact rules: `string2ll` (strict 64-bit
//! integers), `string2ld` (floats, no spaces, no NaN) and INCRBYFLOAT's output format.

use crate::error::CommandError;

/// Redis's `string2ll`: optional `-`, no `+`, no spaces, no leading zeros (except `0`), fits i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        if v > (i64::MAX as u64) + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// An integer argument, or `-ERR value is not an integer or out of range`.
pub fn arg_i64(s: &[u8]) -> Result<i64, CommandError> {
    parse_i64(s).ok_or(CommandError::NotInteger)
}

/// Redis's `string2ld` on a value or argument: no leading space, the whole string consumed,
/// not NaN. Infinity is accepted here (the caller rejects an infinite result).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 5 * 1024 {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    if text.starts_with(|c: char| c.is_ascii_whitespace())
        || text.ends_with(|c: char| c.is_ascii_whitespace())
    {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let (neg, unsigned) = match lower.as_bytes()[0] {
        b'-' => (true, &lower[1..]),
        b'+' => (false, &lower[1..]),
        _ => (false, &lower[..]),
    };
    if unsigned.starts_with("nan") {
        return None;
    }
    if let Some(hex) = unsigned.strip_prefix("0x") {
        // strtold's hexadecimal form (C99), which Redis accepts: `0x1p3` is 8.
        let v = parse_hex_float(hex.as_bytes())?;
        return Some(if neg { -v } else { v });
    }
    if decimal_out_of_long_double_range(unsigned.as_bytes()) {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// Largest binary exponent of a finite `long double` (x87 80-bit, Redis's type on x86-64).
const LD_MAX_EXP2: i64 = 16384;
/// Binary exponent below which a `long double` rounds to zero (smallest subnormal 2^-16445).
const LD_MIN_EXP2: i64 = -16446;

/// strtold sets ERANGE for a decimal whose magnitude is beyond a `long double` (overflow to
/// infinity or underflow to zero) and Redis's `string2ld` then rejects it. This checks the
/// decimal exponent of the leading digit against the `long double` range (about 1.19e4932
/// and 3.6e-4951); within it the value is parsed as an `f64` (see `incr_by_float`).
fn decimal_out_of_long_double_range(s: &[u8]) -> bool {
    let mut lead: Option<i64> = None; // position of the first nonzero digit relative to the dot
    let mut int_digits = 0i64;
    let mut frac_digits = 0i64;
    let mut seen_dot = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'0'..=b'9' => {
                if seen_dot {
                    frac_digits += 1;
                    if lead.is_none() && s[i] != b'0' {
                        lead = Some(-frac_digits);
                    }
                } else {
                    int_digits += 1;
                    if lead.is_none() && s[i] != b'0' {
                        lead = Some(int_digits);
                    }
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    let Some(lead) = lead else {
        return false; // zero (or not a number: the parse rejects it)
    };
    // Decimal exponent of the leading digit: `int_digits - lead` digits follow it before the
    // dot when it is in the integer part.
    let mut exp10 = if lead > 0 { int_digits - lead } else { lead };
    if let Some(&b'e') = s.get(i) {
        let tail = &s[i + 1..];
        let (eneg, digits) = match tail.first() {
            Some(b'-') => (true, &tail[1..]),
            Some(b'+') => (false, &tail[1..]),
            _ => (false, tail),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let mut e: i64 = 0;
        for &d in digits {
            e = (e * 10 + i64::from(d - b'0')).min(1 << 40);
        }
        exp10 += if eneg { -e } else { e };
    }
    // 1.18973e4932 is the largest long double; 3.6e-4951 the smallest subnormal.
    !(-4951..=4932).contains(&exp10)
}

/// The hexadecimal float after `0x` (`[hex digits][.hex digits][p[+-]digits]`, at least one
/// hex digit), as strtold reads it, or `None` when the whole text is not one, or when it is
/// beyond the range of a `long double` (strtold's ERANGE, which Redis rejects).
fn parse_hex_float(s: &[u8]) -> Option<f64> {
    let mut mantissa: u64 = 0;
    let mut exp2: i64 = 0;
    let mut digits = 0usize;
    let mut sticky = false;
    let mut seen_dot = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'.' if !seen_dot => {
                seen_dot = true;
                i += 1;
                continue;
            }
            _ => break,
        };
        digits += 1;
        if mantissa >> 60 == 0 {
            mantissa = (mantissa << 4) | u64::from(d);
            if seen_dot {
                exp2 -= 4;
            }
        } else {
            // Beyond 64 bits of mantissa: keep only whether something nonzero was dropped
            // (enough to round to an f64's 53 bits correctly).
            sticky |= d != 0;
            if !seen_dot {
                exp2 += 4;
            }
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if i < s.len() {
        if s[i] != b'p' {
            return None;
        }
        let tail = &s[i + 1..];
        let (eneg, ds) = match tail.first() {
            Some(b'-') => (true, &tail[1..]),
            Some(b'+') => (false, &tail[1..]),
            _ => (false, tail),
        };
        if ds.is_empty() || !ds.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut e: i64 = 0;
        for &d in ds {
            e = (e * 10 + i64::from(d - b'0')).min(1 << 40);
        }
        exp2 += if eneg { -e } else { e };
    }
    if mantissa == 0 {
        return Some(0.0);
    }
    // Magnitude check against the long double range: the top bit is 2^(exp2 + bits - 1).
    let top = exp2 + i64::from(64 - mantissa.leading_zeros()) - 1;
    if !(LD_MIN_EXP2..LD_MAX_EXP2).contains(&top) {
        return None;
    }
    if sticky {
        mantissa |= 1;
    }
    // One rounding to 53 bits here, then exact scaling by powers of two (except where the
    // result leaves the f64 range: infinity, or a subnormal that rounds again).
    let mut v = mantissa as f64;
    let mut e = exp2;
    while e > 1000 {
        v *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        v *= 2f64.powi(-1000);
        e += 1000;
    }
    Some(v * 2f64.powi(e as i32))
}

/// Formats a float the way INCRBYFLOAT replies: fixed notation (Redis's `%.17Lf` with trailing
/// zeros trimmed), never an exponent, `-0` printed as `0`. Digits come from the shortest
/// representation that round-trips the `f64`.
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's Display for f64 never uses an exponent and prints the shortest round-trip digits.
    format!("{v}")
}

/// A parsed plain decimal `[-+]digits[.digits][e[-+]digits]` as `mantissa * 10^exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decimal {
    neg: bool,
    mantissa: u128,
    exp: i32,
}

impl Decimal {
    fn parse(s: &[u8]) -> Option<Decimal> {
        let (neg, mut rest) = match s.first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let mut mantissa: u128 = 0;
        let mut exp: i32 = 0;
        let mut digits = 0usize;
        let mut seen_dot = false;
        while let Some(&c) = rest.first() {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa
                        .checked_mul(10)?
                        .checked_add(u128::from(c - b'0'))?;
                    if seen_dot {
                        exp -= 1;
                    }
                    digits += 1;
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => break,
            }
            rest = &rest[1..];
        }
        if digits == 0 {
            return None;
        }
        if let Some((&e, tail)) = rest.split_first() {
            if e != b'e' && e != b'E' {
                return None;
            }
            let (eneg, tail) = match tail.first()? {
                b'-' => (true, &tail[1..]),
                b'+' => (false, &tail[1..]),
                _ => (false, tail),
            };
            if tail.is_empty() || tail.len() > 4 || !tail.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let e: i32 = std::str::from_utf8(tail).ok()?.parse().ok()?;
            exp = exp.checked_add(if eneg { -e } else { e })?;
        }
        Some(Decimal { neg, mantissa, exp })
    }

    fn scaled_to(self, exp: i32) -> Option<i128> {
        let shift = u32::try_from(self.exp - exp).ok()?;
        let m = self.mantissa.checked_mul(10u128.checked_pow(shift)?)?;
        let m = i128::try_from(m).ok()?;
        Some(if self.neg { -m } else { m })
    }

    /// Exact sum when both fit in 38 digits at a common exponent.
    fn add(self, other: Decimal) -> Option<Decimal> {
        let exp = self.exp.min(other.exp);
        if exp < -40 || self.exp.max(other.exp) > 40 {
            return None;
        }
        let sum = self.scaled_to(exp)?.checked_add(other.scaled_to(exp)?)?;
        Some(Decimal {
            neg: sum < 0,
            mantissa: sum.unsigned_abs(),
            exp,
        })
    }

    /// Fixed notation with at most 17 fractional digits (rounded half away from zero) and
    /// trailing zeros trimmed, like Redis's `%.17Lf` output of a long double.
    fn format(self) -> Option<String> {
        let mut m = self.mantissa;
        let mut exp = self.exp;
        if exp < -17 {
            let drop = u32::try_from(-17 - exp).ok()?;
            let div = 10u128.checked_pow(drop)?;
            let rem = m % div;
            m /= div;
            if rem * 2 >= div {
                m += 1;
            }
            exp = -17;
        }
        while exp < 0 && m % 10 == 0 && m != 0 {
            m /= 10;
            exp += 1;
        }
        if m == 0 {
            return Some("0".to_owned());
        }
        let mut digits = m.to_string();
        if exp > 0 {
            digits.push_str(&"0".repeat(usize::try_from(exp).ok()?));
        } else if exp < 0 {
            let frac = usize::try_from(-exp).ok()?;
            if digits.len() <= frac {
                digits = format!("{}{}", "0".repeat(frac - digits.len() + 1), digits);
            }
            digits.insert(digits.len() - frac, '.');
        }
        Some(if self.neg {
            format!("-{digits}")
        } else {
            digits
        })
    }
}

/// INCRBYFLOAT: `current + delta` formatted as Redis replies and stores it.
///
/// Redis computes in `long double` and prints 17 fractional digits, so that `0.1 + 0.2` gives
/// `0.3`. Divergence: a sum beyond an `f64` but within a `long double` (e.g. `1e400`) is
/// refused here as infinite, where Redis prints it. When both operands are plain decimals the sum is computed exactly in decimal (what
/// Redis's 64-bit-mantissa result rounds to at 17 fractional digits for ordinary magnitudes);
/// otherwise (hex floats, huge exponents) it falls back to `f64`.
pub fn incr_by_float(current: &[u8], delta: &[u8]) -> Result<Vec<u8>, CommandError> {
    let a = parse_f64(current).ok_or(CommandError::NotFloat)?;
    let b = parse_f64(delta).ok_or(CommandError::NotFloat)?;
    let sum = a + b;
    if sum.is_nan() || sum.is_infinite() {
        return Err(CommandError::NanOrInfinity);
    }
    if let (Some(x), Some(y)) = (Decimal::parse(current), Decimal::parse(delta)) {
        if let Some(text) = x.add(y).and_then(Decimal::format) {
            return Ok(text.into_bytes());
        }
    }
    Ok(format_float(sum).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"1.0",
            b"abc",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn string2ld_rules() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"1 "), None);
        assert_eq!(parse_f64(b""), None);
        assert_eq!(parse_f64(b"1x"), None);
        assert_eq!(parse_f64(b"0x1p3"), Some(8.0));
        assert_eq!(parse_f64(b"-0x1.8"), Some(-1.5));
        assert_eq!(parse_f64(b"0x1p-1074"), Some(f64::from_bits(1)));
        // Rounding of a mantissa longer than 53 bits: ties to even, anything beyond breaks it.
        assert_eq!(parse_f64(b"0x1.00000000000008p0"), Some(1.0));
        assert_eq!(
            parse_f64(b"0x1.000000000000080000001p0"),
            Some(1.0 + f64::EPSILON)
        );
        assert_eq!(
            parse_f64(b"0x1.00000000000018p0"),
            Some(1.0 + 2.0 * f64::EPSILON)
        );
        // In a long double's range but not an f64's: infinity (the sum is then refused).
        assert_eq!(parse_f64(b"0x1p2000"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1e400"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"0.000e-99999"), Some(0.0));
    }

    fn incr(a: &str, b: &str) -> Result<String, CommandError> {
        incr_by_float(a.as_bytes(), b.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn incrbyfloat_formatting_matches_redis() {
        // The examples of Redis's INCRBYFLOAT documentation.
        assert_eq!(incr("10.50", "0.1").unwrap(), "10.6");
        assert_eq!(incr("10.6", "-5").unwrap(), "5.6");
        assert_eq!(incr("5.0e3", "2.0e2").unwrap(), "5200");
        // long double precision: 0.1 + 0.2 prints as 0.3 in Redis.
        assert_eq!(incr("0.1", "0.2").unwrap(), "0.3");
        assert_eq!(incr("17179869184", "1.5").unwrap(), "17179869185.5");
        assert_eq!(incr("1", "-1").unwrap(), "0");
        assert_eq!(incr("-0.5", "0.25").unwrap(), "-0.25");
        assert_eq!(incr("0", "1e20").unwrap(), "100000000000000000000");
        assert_eq!(incr("0", "1e-20").unwrap(), "0");
        assert_eq!(
            incr("0", "0.000000000000000015").unwrap(),
            "0.00000000000000002"
        );
        // Hex floats, as strtold reads them (replies checked against redis-server 7.0.15).
        for (delta, want) in [
            ("0x10", "19"),
            ("0X10", "19"),
            ("0x1p3", "11"),
            ("0x1P+3", "11"),
            ("0x1p-3", "3.125"),
            ("0x1.8p1", "6"),
            ("-0x10", "-13"),
            ("+0x10", "19"),
            ("0xA.8", "13.5"),
            ("0x.8", "3.5"),
            ("-0x0", "3"),
            ("0x1p-1074", "3"),
            ("0x1.fffffffffffffffffp0", "5"),
            ("1e-400", "3"),
            ("1e-320", "3"),
            (".5", "3.5"),
            ("5.", "8"),
        ] {
            assert_eq!(incr("3", delta).unwrap(), want, "3 + {delta}");
        }
        assert_eq!(incr("0x10", "1").unwrap(), "17");
        assert_eq!(incr("0x1p3", "0.5").unwrap(), "8.5");
        // Not a whole hex float, or beyond a long double's range (strtold's ERANGE).
        for delta in [
            "0x",
            "0x1p",
            "0x1g",
            "0x.p1",
            "0x.p",
            "0x1p+",
            "0x1.2.3",
            "0x1p3.5",
            " 0x1",
            "0x1 ",
            "1e-5000",
            "1e5000",
            "0x1p-20000",
            "0x1p20000",
        ] {
            assert_eq!(
                incr("3", delta).unwrap_err(),
                CommandError::NotFloat,
                "{delta}"
            );
        }
        assert_eq!(incr("abc", "1").unwrap_err(), CommandError::NotFloat);
        assert_eq!(incr("1", "+inf").unwrap_err(), CommandError::NanOrInfinity);
        assert_eq!(
            incr("1.7e308", "1.7e308").unwrap_err(),
            CommandError::NanOrInfinity
        );
    }
}
