//! Numbers in values and arguments with Redis's exact rules: `string2ll` (strict 64-bit
//! integers), `string2ld` (floats, no spaces, no NaN) and INCRBYFLOAT's output format.

use rustc_apfloat::ieee::{Double, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use crate::error::CommandError;

/// C's `long double` on x86-64 (Redis's INCRBYFLOAT type): the x87 80-bit extended format.
pub type LongDouble = X87DoubleExtended;

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

/// Redis's `string2ld` on a value or argument, as an `f64` (rounded from the `long double`):
/// no leading or trailing space, the whole string consumed, not NaN, not beyond a `long
/// double`'s range. Infinity is accepted here (the caller rejects an infinite result).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let v = parse_long_double(s)?;
    let d: Double = v.convert(&mut false).value;
    Some(f64::from_bits(d.to_bits() as u64))
}

/// Redis's `string2ld`: strtold on the whole string, in x87 80-bit precision (`long double`
/// on x86-64, Redis's type), rounded to nearest. Rejected like Redis: empty or over 5 KiB, a
/// leading or trailing space, anything after the number, NaN, and strtold's `ERANGE` when the
/// result is infinite or zero (a decimal or hex float beyond the range, or rounding to zero).
/// The literal `inf`/`infinity` is accepted (no `ERANGE`).
pub fn parse_long_double(s: &[u8]) -> Option<LongDouble> {
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
    let parsed = if unsigned == "inf" || unsigned == "infinity" {
        let inf = LongDouble::INFINITY;
        return Some(if neg { -inf } else { inf });
    } else if let Some(hex) = unsigned.strip_prefix("0x") {
        // strtold's hexadecimal form (C99), which Redis accepts: `0x1p3` is 8.
        parse_hex_float(hex.as_bytes())?
    } else if unsigned
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        // Digits, one dot and an exponent with digits (strtold would stop before a bare `e`,
        // leaving text unconsumed): apfloat checks the rest of the grammar and rounds
        // correctly (nearest, ties to even, like glibc's strtold).
        if let Some((_, exp)) = unsigned.split_once('e') {
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
        }
        LongDouble::from_str_r(unsigned, Round::NearestTiesToEven).ok()?
    } else {
        return None; // NaN, or not a number
    };
    let v = parsed.value;
    if v.is_nan() || v.is_infinite() || (v.is_zero() && parsed.status.contains(Status::UNDERFLOW)) {
        return None; // ERANGE with HUGE_VAL or zero
    }
    Some(if neg { -v } else { v })
}

/// The hexadecimal float after `0x` (`[hex digits][.hex digits][p[+-]digits]`, at least one
/// hex digit), as strtold reads it (with the rounding status), or `None` when the whole text
/// is not one.
fn parse_hex_float(s: &[u8]) -> Option<StatusAnd<LongDouble>> {
    let mut mantissa: u128 = 0;
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
        if mantissa >> 120 == 0 {
            mantissa = (mantissa << 4) | u128::from(d);
            if seen_dot {
                exp2 -= 4;
            }
        } else {
            // Beyond 120 bits of mantissa: keep only whether something nonzero was dropped
            // (enough to round to a long double's 64 bits correctly).
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
    // Rounded once by apfloat, from an exact hex form: the kept mantissa, a nibble holding the
    // sticky bit below it, and the exponent (clamped far beyond the range either way).
    let m = (mantissa << 4) | u128::from(sticky);
    let e = (exp2 - 4).clamp(-100_000, 100_000);
    LongDouble::from_str_r(&format!("0x{m:x}p{e}"), Round::NearestTiesToEven).ok()
}

/// Formats a finite `long double` the way INCRBYFLOAT replies: Redis's `ld2string` in
/// `LD_STR_HUMAN` mode, that is `%.17Lf` (fixed notation, 17 fractional digits, the exact
/// binary value rounded to nearest with ties to even as glibc's printf does), trailing zeros
/// and a trailing dot removed, and `-0` printed as `0`.
pub fn format_long_double(v: LongDouble) -> String {
    debug_assert!(v.is_finite());
    let bits = v.to_bits();
    let neg = (bits >> 79) & 1 == 1;
    let biased = ((bits >> 64) & 0x7FFF) as i64;
    let sig = bits as u64; // explicit integer bit included
                           // value = sig * 2^e2 (a denormal has biased exponent 0 and scales like 1).
    let e2 = biased.max(1) - 16383 - 63;
    let mut text = if sig == 0 {
        "0".to_owned()
    } else if e2 >= 0 {
        big_shl_decimal(sig, e2 as u32)
    } else {
        // Round sig * 10^17 / 2^k to an integer (< 2^121, so k beyond 122 rounds to 0).
        let k = (-e2) as u32;
        let num = u128::from(sig) * 10u128.pow(17);
        let q = if k > 122 {
            0
        } else {
            let q = num >> k;
            let r = num & ((1u128 << k) - 1);
            let half = 1u128 << (k - 1);
            if r > half || (r == half && q & 1 == 1) {
                q + 1
            } else {
                q
            }
        };
        let (int, frac) = (q / 10u128.pow(17), q % 10u128.pow(17));
        let mut s = format!("{int}.{frac:017}");
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
        s
    };
    if neg && text != "0" {
        text.insert(0, '-');
    }
    text
}

/// `sig * 2^shift` in decimal, with base-10^9 limbs (a `long double` has at most 4933 digits).
fn big_shl_decimal(sig: u64, shift: u32) -> String {
    use std::fmt::Write;
    const BASE: u64 = 1_000_000_000;
    let mut limbs: Vec<u64> = Vec::new(); // little-endian, each < BASE
    let mut s = sig;
    while s > 0 {
        limbs.push(s % BASE);
        s /= BASE;
    }
    let mut left = shift;
    while left > 0 {
        let step = left.min(29); // a limb times 2^29 plus a carry stays below 2^64
        let mut carry = 0u64;
        for l in &mut limbs {
            let x = (*l << step) + carry;
            *l = x % BASE;
            carry = x / BASE;
        }
        while carry > 0 {
            limbs.push(carry % BASE);
            carry /= BASE;
        }
        left -= step;
    }
    let mut out = limbs.last().map_or_else(String::new, u64::to_string);
    for l in limbs.iter().rev().skip(1) {
        let _ = write!(out, "{l:09}"); // writing to a String cannot fail
    }
    out
}

/// INCRBYFLOAT: `current + delta` formatted as Redis replies and stores it.
///
/// Exactly Redis's arithmetic: both operands parsed by `string2ld` into an x87 80-bit `long
/// double` (64-bit mantissa, 15-bit exponent, Redis's type on x86-64), added with round to
/// nearest, refused when the sum is NaN or infinite, printed by `format_long_double`. So
/// `0.1 + 0.2` gives `0.3`, and a sum beyond an `f64` but within a `long double` (`1e400`)
/// prints all its digits, as Redis does.
pub fn incr_by_float(current: &[u8], delta: &[u8]) -> Result<Vec<u8>, CommandError> {
    let a = parse_long_double(current).ok_or(CommandError::NotFloat)?;
    let b = parse_long_double(delta).ok_or(CommandError::NotFloat)?;
    let sum = a.add_r(b, Round::NearestTiesToEven).value;
    if sum.is_nan() || sum.is_infinite() {
        return Err(CommandError::NanOrInfinity);
    }
    Ok(format_long_double(sum).into_bytes())
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
        // Rounding of a mantissa longer than a long double's 64 bits: ties to even, anything
        // beyond breaks the tie.
        let ld = |s: &str| parse_long_double(s.as_bytes()).map(Float::to_bits);
        let one = ld("1").unwrap();
        // One ulp at 1 is 2^-63 (hex digit 16 = 2), half of it 2^-64 (digit 16 = 1).
        assert_eq!(ld("0x1.0000000000000002p0"), Some(one + 1));
        assert_eq!(ld("0x1.0000000000000001p0"), Some(one));
        assert_eq!(ld("0x1.0000000000000003p0"), Some(one + 2));
        assert_eq!(ld("0x1.00000000000000010001p0"), Some(one + 1));
        // A nonzero digit beyond the 120 bits kept still breaks the tie (the sticky bit).
        assert_eq!(
            ld("0x1.0000000000000001000000000000000000000000001p0"),
            Some(one + 1)
        );
        // The f64 view rounds the long double again.
        assert_eq!(parse_f64(b"0x1.00000000000008p0"), Some(1.0));
        assert_eq!(
            parse_f64(b"0x1.00000000000018p0"),
            Some(1.0 + 2.0 * f64::EPSILON)
        );
        // In a long double's range but not an f64's: finite as a long double.
        assert_eq!(parse_f64(b"0x1p2000"), Some(f64::INFINITY));
        assert!(parse_long_double(b"0x1p2000").unwrap().is_finite());
        assert!(parse_long_double(b"1e400").unwrap().is_finite());
        assert_eq!(parse_f64(b"0.000e-99999"), Some(0.0));
        // strtold's ERANGE counts only when the result is infinite or zero: a subnormal long
        // double is accepted, a value that rounds to zero is not (an exact zero is).
        assert!(parse_long_double(b"1e-4945").is_some());
        assert!(parse_long_double(b"3.6e-4951").is_some());
        assert!(parse_long_double(b"1e-4951").is_none());
        assert!(parse_long_double(b"0x1p-16446").is_none());
        assert!(parse_long_double(b"0x1p16384").is_none());
        assert!(parse_long_double(b"0x0p99999").is_some());
        // strtold stops before an exponent without digits, leaving text: not a float.
        for bad in [
            "1e", "1e+", "1e-", ".", "e5", "1..2", "--1", "+-1", "1e5.5", "0x1p",
        ] {
            assert!(parse_long_double(bad.as_bytes()).is_none(), "{bad}");
        }
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
            incr("1e4932", "1e4932").unwrap_err(),
            CommandError::NanOrInfinity
        );
        assert_eq!(
            incr("inf", "-inf").unwrap_err(),
            CommandError::NanOrInfinity
        );
    }

    #[test]
    fn incrbyfloat_computes_in_long_double_like_redis() {
        // Replies of redis-server 7.0.15 (x86-64, `long double` = x87 80-bit), observed with
        // `SET k a` then `INCRBYFLOAT k b`; 985 such pairs (these and random decimals, hex
        // floats and exponents up to 1e4930) gave the same replies here.
        for (a, b, want) in [
            ("0.1", "0.2", "0.3"),
            ("10.5", "0.1", "10.6"),
            ("1.1", "2.2", "3.3"),
            ("0.3", "0.6", "0.9"),
            ("-0.1", "-0.2", "-0.3"),
            ("1e17", "0.1", "100000000000000000.1015625"),
            (
                "123456789.123456789",
                "0.000000001",
                "123456789.12345678999554366",
            ),
            ("0", "1e-17", "0.00000000000000001"),
            ("0", "5e-18", "0"),
            ("0", "1.5e-17", "0.00000000000000002"),
            ("2.5e-17", "0", "0.00000000000000002"),
            // Negative results that print as zero, and negative zero, print `0`.
            ("0", "-5e-18", "0"),
            ("0", "-1e-20", "0"),
            ("-0", "-0", "0"),
            ("0", "3.6e-4951", "0"),
            ("3", "1e-4940", "3"),
            (
                "1e300",
                "1",
                "1000000000000000000008997324079559193870523944273290747938260082321265646596180\
                9357558491520837504971903503725086142748359035925561846729839130962605207486462\
                8732713564184365329408425510760601678972665293237003055138294762099454029477278\
                1889620606179267611627097410650567187386105690089424915104006144",
            ),
            // Beyond an f64 (which would refuse these as infinite), within a long double.
            (
                "1e308",
                "1e308",
                "1999999999999999999933717593116912913211201996948311344155940959898434697376761\
                2374420025384377707864089349445010802644630426949918792116719484162886039283753\
                5918200039206381557326219209014213335878306791577877829121087126122536729803237\
                260434173178506889763247582601711514636284849020905456510092687857156096",
            ),
            (
                "3",
                "1e400",
                "1000000000000000000028188068394758651458645343362905203862591069353968553400862\
                9862039363994848324160522094053927317616200295822777259255734023828976593340661\
                0177974474345461739178624481166749717237789438243915933380474706750262466844013\
                5923751360383034373548550524495596497902182503828009106841494740245689865304095\
                1017512658092615827588920183472511643316591362664138176309734806343732497430221\
                946880",
            ),
            (
                "3",
                "0x1p2000",
                "1148130695274254524232833201177681984022317702088695200477642736825766261392370\
                3138566594863165062699184459646389874627734471189608630553314259313561666531853\
                9129989145312280000688779148240044871428926990063486244781615463646388363947317\
                0260404663539709049965581623988089446296056233116495361642219703326813441689089\
                8445850560237948480791405890093477650042900271670662583052200813223628129176126\
                7883317206598995396418127021779858404042159853183251540889433902091920554957783\
                5896720391600819572166305827553804255837260155283487864194320545089152757838826\
                25175435528800822842770817965453762184851149029376",
            ),
            // Hex floats with more than 64 bits of mantissa, rounded once.
            (
                "0x6665e7e4236472f1a3p1",
                "-36954.36366961058",
                "3777821968152970744576",
            ),
            (
                "0x6ba2f7e7f9c9bf34cap-48",
                "3.855854155585284e3",
                "7057927.76031079881295227",
            ),
        ] {
            assert_eq!(incr(a, b).unwrap(), want, "{a} + {b}");
        }
        // The largest long double prints its 4933 digits; one more ulp overflows the parse.
        let max = incr("0", "0x1.fffffffffffffffep16383").unwrap();
        assert_eq!(max.len(), 4933);
        assert!(
            max.starts_with(
                "11897314953572317650212638530309702051690633222946242004403237338917370055229707"
            ),
            "{}",
            &max[..80]
        );
        assert_eq!(
            incr("0", "0x1.ffffffffffffffffp16383").unwrap_err(),
            CommandError::NotFloat
        );
        assert_eq!(incr("0", "1e-4951").unwrap_err(), CommandError::NotFloat);
        assert_eq!(incr("3", "1e").unwrap_err(), CommandError::NotFloat);
        assert_eq!(incr("3", "1e+").unwrap_err(), CommandError::NotFloat);
    }
}
