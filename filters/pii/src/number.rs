//! The integers a JSON number denotes to its readers, by exact decimal arithmetic on its text
//! (no floats): `4.111111111111111e15`, `4111111111111111E0`, `41111111111111110e-1` and
//! `-4111111111111111.0` all denote 4111111111111111, and a client parsing any of them gets
//! a card number. A fraction rounds either way in a reader's float, so a non-integer denotes
//! both integers around it.

/// Most integer digits a view may have: longer numbers are no card, phone or account number
/// (and a huge exponent never turns into a huge string).
pub const MAX_DIGITS: usize = 19;

/// Decimal digit strings (no sign, no leading zeros) of the integers `text` denotes: its exact
/// value when that is an integer, else the integers just below and above its magnitude. Empty
/// when `text` is not a JSON number, denotes zero, or has more than [`MAX_DIGITS`] integer
/// digits.
pub fn integer_views(text: &str) -> Vec<String> {
    let Some((digits, exp)) = significand(text) else {
        return Vec::new();
    };
    if digits.is_empty() {
        return Vec::new();
    }
    // Value = digits × 10^exp, `digits` without leading or trailing zeros.
    let int_len = i64::try_from(digits.len())
        .unwrap_or(i64::MAX)
        .saturating_add(exp);
    if int_len > MAX_DIGITS as i64 {
        return Vec::new();
    }
    if exp >= 0 {
        let zeros = usize::try_from(exp).unwrap_or(0);
        return vec![format!("{digits}{}", "0".repeat(zeros))];
    }
    // A fraction: the integer part (truncated toward zero), and the next integer up.
    let below = match usize::try_from(int_len) {
        Ok(n) if n > 0 => digits.get(..n).unwrap_or("0").to_string(),
        _ => "0".to_string(),
    };
    let above = increment(&below);
    [below, above].into_iter().filter(|v| v != "0").collect()
}

/// A JSON number's significant digits (no leading or trailing zeros; empty for zero) and the
/// power of ten that scales them (saturating), or `None` when `text` is not a JSON number.
fn significand(text: &str) -> Option<(String, i64)> {
    let t = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exp_text) = match t.find(['e', 'E']) {
        Some(i) => (t.get(..i)?, Some(t.get(i + 1..)?)),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) if !f.is_empty() => (i, f),
        Some(_) => return None,
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let mut exp = match exp_text {
        None => 0,
        Some(e) => parse_exponent(e)?,
    };
    exp = exp.saturating_sub(i64::try_from(frac.len()).unwrap_or(i64::MAX));
    let joined = format!("{int}{frac}");
    let significant = joined.trim_start_matches('0');
    let digits = significant.trim_end_matches('0');
    let trailing = significant.len() - digits.len();
    exp = exp.saturating_add(i64::try_from(trailing).unwrap_or(i64::MAX));
    Some((digits.to_string(), exp))
}

/// An exponent's value, saturating (`e+000016` is 16; `e99999999999999999999` is huge).
fn parse_exponent(e: &str) -> Option<i64> {
    let (negative, digits) = match e.as_bytes().first() {
        Some(b'-') => (true, e.get(1..)?),
        Some(b'+') => (false, e.get(1..)?),
        _ => (false, e),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = digits.bytes().fold(0i64, |acc, b| {
        acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Some(if negative { -value } else { value })
}

/// `n + 1` for a decimal digit string.
fn increment(n: &str) -> String {
    let mut digits: Vec<u8> = n.bytes().collect();
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8_lossy(&digits).into_owned();
        }
    }
    format!("1{}", String::from_utf8_lossy(&digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_integer_agree() {
        for t in [
            "4111111111111111",
            "4.111111111111111e15",
            "4.111111111111111E+15",
            "4111111111111111E0",
            "4111111111111111e-0",
            "4111111111111111.0",
            "4111111111111111.000000",
            "-4111111111111111",
            "-4111111111111111.0",
            "-0.4111111111111111e16",
            "41111111111111110e-1",
            "411111111111111100000e-5",
            "0.0000004111111111111111e22",
            "4111111111111111e+00000000000000000000000",
        ] {
            assert_eq!(integer_views(t), ["4111111111111111"], "{t}");
        }
    }

    #[test]
    fn fractions_denote_both_neighbours() {
        assert_eq!(
            integer_views("4111111111111110.9999"),
            ["4111111111111110", "4111111111111111"]
        );
        assert_eq!(
            integer_views("4111111111111111.5e0"),
            ["4111111111111111", "4111111111111112"]
        );
        assert_eq!(integer_views("0.5"), ["1"]);
        assert_eq!(integer_views("9.5"), ["9", "10"]);
    }

    #[test]
    fn zero_huge_and_invalid_numbers_have_no_views() {
        for t in [
            "0",
            "-0",
            "0.000",
            "0e99",
            "1e19",
            "1e99999999999999999999999",
            "12345678901234567890",
            "",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "abc",
        ] {
            assert!(integer_views(t).is_empty(), "{t}: {:?}", integer_views(t));
        }
        assert_eq!(integer_views("1e18"), [format!("1{}", "0".repeat(18))]);
        // Tiny, yet it rounds up to 1 in a float reader's hands.
        assert_eq!(integer_views("1e-999999999999999999999"), ["1"]);
    }
}
