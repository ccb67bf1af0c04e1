//! Sizes (`500MiB`, `10GiB`) and durations (`30s`, `2m`) on the command line.
//!
//! Sizes take binary units (`KiB` ... `EiB`: powers of 1024) and SI units (`KB` ... `EB`:
//! powers of 1000), case-insensitively, or a plain number of
//! bytes (`B` optional). A decimal fraction is allowed with a unit (`1.5GiB`); the result is
//! rounded down to whole bytes. Every size nvr stores is an SQLite integer, so a size is at most
//! `i64::MAX` bytes.

use std::fmt;
use std::str::FromStr;

/// A number of bytes, at most [`Size::MAX_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

/// The units a size may have, with their multipliers, longest first so that `KiB` is tried
/// before `B`. Matched case-insensitively.
const UNITS: &[(&str, u64)] = &[
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
    ("eib", 1 << 60),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("eb", 1_000_000_000_000_000_000),
    ("b", 1),
];

/// What a size may look like, for error messages.
const ACCEPTED: &str = "a whole number of bytes (e.g. 4096) or a number with a unit: \
                        KiB, MiB, GiB, TiB, PiB, EiB (powers of 1024) or KB, MB, GB, TB, \
                        PB, EB (powers of 1000), e.g. 500MiB, 1.5GiB, 10GB";

/// The most fraction digits a size may have (more cannot change a whole number of bytes below
/// `i64::MAX` in a meaningful way, and this keeps the arithmetic exact in `u128`).
const MAX_FRACTION_DIGITS: usize = 18;

impl Size {
    /// The largest size: SQLite integers are `i64`.
    pub const MAX_BYTES: u64 = i64::MAX as u64;

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size as the `i64` the database stores; always fits (see [`Size::MAX_BYTES`]).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).expect("sizes are at most i64::MAX bytes")
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let bad = |why: &str| format!("invalid size {text:?}: {why}; expected {ACCEPTED}");
        let s = text.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.starts_with('-') {
            return Err(bad("a size cannot be negative"));
        }
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(number_end);
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| unit.eq_ignore_ascii_case(name))
                .map(|&(_, m)| m)
                .ok_or_else(|| bad(&format!("unknown unit {unit:?}")))?
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(bad(
                "expected digits (with an optional fraction) before the unit",
            ));
        }
        if fraction.contains('.') {
            return Err(bad("more than one decimal point"));
        }
        if !fraction.is_empty() && multiplier == 1 {
            return Err(bad("a number of bytes must be whole"));
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(bad(&format!(
                "more than {MAX_FRACTION_DIGITS} digits after the decimal point"
            )));
        }
        let too_large = || {
            bad(&format!(
                "larger than the maximum of {} bytes",
                Size::MAX_BYTES
            ))
        };
        let whole: u128 = whole.parse().map_err(|_| too_large())?;
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let digits: u128 = fraction.parse().expect("only ASCII digits");
            let scale = 10u128.pow(fraction.len() as u32);
            bytes += digits * u128::from(multiplier) / scale;
        }
        if bytes > u128::from(Size::MAX_BYTES) {
            return Err(too_large());
        }
        Ok(Size(bytes as u64))
    }
}

/// The largest binary unit the size is at least one of: `10 GiB`, `1.5 GiB`, `117.7 MiB`,
/// `512 B`. Whole multiples print without a fraction; others with one decimal (rounded), so
/// the text is for people, not an exact round trip.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const BINARY: &[(&str, u64)] = &[
            ("EiB", 1 << 60),
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        let b = self.0;
        let Some(&(name, unit)) = BINARY.iter().find(|&&(_, u)| b >= u) else {
            return write!(f, "{b} B");
        };
        if b.is_multiple_of(unit) {
            return write!(f, "{} {name}", b / unit);
        }
        // Tenths of the unit, rounded half up, in integers so nothing is lost to floats.
        let tenths = (u128::from(b) * 10 + u128::from(unit) / 2) / u128::from(unit);
        if tenths.is_multiple_of(10) {
            write!(f, "{} {name}", tenths / 10)
        } else {
            write!(f, "{}.{} {name}", tenths / 10, tenths % 10)
        }
    }
}

/// What a duration may look like, for error messages.
const ACCEPTED_DURATION: &str =
    "a whole number with a unit ms, s, m or h (e.g. 500ms, 30s, 2m, 1h), or of seconds (90)";

/// Parses a command-line duration: `500ms`, `30s`, `2m`, `1h`, or plain seconds (`90`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why}; expected {ACCEPTED_DURATION}");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.starts_with('-') {
        return Err(bad("a duration cannot be negative"));
    }
    let number_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    if number.is_empty() {
        return Err(bad("expected digits before the unit"));
    }
    let unit = unit.trim_start();
    let millis_per_unit: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    let too_long = || bad("too long");
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    Ok(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_parse_in_binary_si_and_plain_bytes() {
        const GIB: u64 = 1 << 30;
        for (text, bytes) in [
            ("4096", 4096),
            ("0", 0),
            ("4096B", 4096),
            ("10KiB", 10 << 10),
            ("500MiB", 500 << 20),
            ("10GiB", 10 * GIB),
            ("1.5GiB", 3 * GIB / 2),
            ("2TiB", 2 << 40),
            ("1PiB", 1 << 50),
            ("10MB", 10_000_000),
            ("10GB", 10_000_000_000),
            ("3kb", 3_000),
            ("10gib", 10 * GIB),
            ("10GIB", 10 * GIB),
            ("10 GiB", 10 * GIB),
            (" 7MiB ", 7 << 20),
            ("0.5KiB", 512),
            // Rounded down to whole bytes.
            ("0.1KiB", 102),
            ("1.000000000000000001GiB", GIB),
        ] {
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text:?}");
        }
        assert_eq!(
            "8191.5PiB".parse::<Size>().map(Size::bytes),
            Ok((1 << 63) - (1 << 49))
        );
        assert_eq!("1EiB".parse::<Size>(), Ok(Size(1 << 60)));
    }

    #[test]
    fn bad_sizes_name_the_text_and_the_accepted_forms() {
        for (text, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("-5GiB", "negative"),
            ("-1", "negative"),
            ("10XB", "unknown unit \"XB\""),
            ("10 gigs", "unknown unit \"gigs\""),
            ("GiB", "expected digits"),
            (".5GiB", "expected digits"),
            ("5.GiB", "expected digits"),
            ("1.2.3GiB", "more than one decimal point"),
            ("1.5", "whole"),
            ("1.5B", "whole"),
            ("10GiB5", "unknown unit"),
            ("9223372036854775808", "larger than the maximum"),
            ("8EiB", "larger than the maximum"),
            ("8192PiB", "larger than the maximum"),
            (
                "99999999999999999999999999999999999999999GiB",
                "larger than the maximum",
            ),
            ("1.0000000000000000001GiB", "digits after the decimal point"),
        ] {
            let e = text.parse::<Size>().unwrap_err();
            assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("500MiB") && e.contains("KiB"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_largest_size_is_i64_max() {
        let max = i64::MAX.to_string();
        assert_eq!(max.parse::<Size>().unwrap().as_i64(), i64::MAX);
    }

    #[test]
    fn sizes_display_in_the_largest_whole_binary_unit() {
        for (bytes, text) in [
            (0, "0 B"),
            (512, "512 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (10 << 30, "10 GiB"),
            (3 << 29, "1.5 GiB"),
            (500 << 20, "500 MiB"),
            (123_456_789, "117.7 MiB"),
            // Rounds to a whole number of the unit: no ".0".
            ((1 << 20) - 1, "1024 KiB"),
            (2 << 40, "2 TiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(Size(bytes).to_string(), text, "{bytes}");
        }
    }

    #[test]
    fn whole_sizes_round_trip_through_display() {
        for bytes in [0, 4096, 10 << 30, 500 << 20, 3 << 29, 2 << 40] {
            let s = Size(bytes);
            assert_eq!(s.to_string().parse::<Size>(), Ok(s));
        }
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        for (text, d) in [
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("90", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
            ("10 S", Duration::from_secs(10)),
            ("3M", Duration::from_secs(180)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_name_the_text_and_the_accepted_forms() {
        for (text, why) in [
            ("", "empty"),
            ("-5s", "negative"),
            ("5d", "unknown unit \"d\""),
            ("1.5s", "unknown unit \".5s\""),
            ("s", "expected digits"),
            ("99999999999999999999h", "too long"),
            ("9999999999999999h", "too long"),
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("30s"), "{text:?}: {e}");
        }
    }
}
