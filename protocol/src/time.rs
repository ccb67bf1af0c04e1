//! 90 kHz time, the unit of every timestamp and duration nvr stores.
//!
//! 90 kHz is the RTP clock rate of video, so sample durations from the camera are whole ticks
//! and need no rounding. Two newtypes keep instants and spans apart: [`Time`] minus [`Time`] is
//! a [`Duration`], and adding two `Time`s does not compile.
//!
//! Arithmetic is plain `i64` arithmetic (panics on overflow in debug builds). An `i64` of ticks
//! spans about 3.2 million years either side of the epoch, so only corrupt input can overflow,
//! and code that handles input from outside (the sample index codec) uses checked arithmetic
//! before it makes a `Time` or `Duration`.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// Ticks per second of [`Time`] and [`Duration`].
pub const TIME_UNITS_PER_SEC: i64 = 90_000;

/// Ticks per millisecond; 90 kHz divides evenly into milliseconds.
const TIME_UNITS_PER_MILLI: i64 = TIME_UNITS_PER_SEC / 1_000;

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant as 90 kHz ticks since 1970-01-01T00:00:00Z (ignoring leap seconds, like
/// `CLOCK_REALTIME`).
///
/// Also used for monotonic instants (see [`crate::Clock::monotonic`]), whose origin is
/// arbitrary; such a value is only meaningful relative to another from the same clock.
///
/// `Display` is RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T04:48:38.123Z`, rounded
/// toward the past.
#[derive(
    Copy,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Time(pub i64);

/// A signed span of 90 kHz ticks.
///
/// `Display` is seconds with milliseconds, e.g. `1.500s` or `-0.250s`, truncated toward zero.
#[derive(
    Copy,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Duration(pub i64);

impl Time {
    /// Converts a `SystemTime`, rounding toward the past to a whole tick and saturating at the
    /// ends of the `i64` range. Times before the epoch are negative.
    pub fn from_system(t: std::time::SystemTime) -> Self {
        let nanos: i128 = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
            Err(before) => i128::try_from(before.duration().as_nanos())
                .map(|n| -n)
                .unwrap_or(i128::MIN),
        };
        Time(ticks_from_nanos(nanos))
    }
}

impl Time {
    /// Parses an RFC 3339 date-time: `2026-11-27T04:48:38Z`, with an optional fraction of a
    /// second (`.5`, `.123456789`; digits past the ninth are ignored) and a `Z` or `±HH:MM`
    /// offset; `t` or a space may stand for the `T`. Rounds toward the past to a whole tick, as
    /// `Display` does, so `Time::parse_rfc3339(&t.to_string())` is `t` to the millisecond.
    ///
    /// Leap seconds (`:60`) are refused: a `Time` does not represent them.
    pub fn parse_rfc3339(s: &str) -> Result<Time, ParseTimeError> {
        let bad = |what: &'static str| ParseTimeError {
            text: s.to_owned(),
            what,
        };
        let b = s.as_bytes();
        let digits = |range: std::ops::Range<usize>, what: &'static str| -> Result<i64, _> {
            let field = b.get(range).ok_or_else(|| bad(what))?;
            if !field.iter().all(u8::is_ascii_digit) {
                return Err(bad(what));
            }
            Ok(field.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let expect = |at: usize, allowed: &[u8], what: &'static str| match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad(what)),
        };
        let year = digits(0..4, "expected a four-digit year")?;
        expect(4, b"-", "expected '-' after the year")?;
        let month = digits(5..7, "expected a two-digit month")?;
        expect(7, b"-", "expected '-' after the month")?;
        let day = digits(8..10, "expected a two-digit day")?;
        expect(10, b"Tt ", "expected 'T' between date and time")?;
        let hour = digits(11..13, "expected a two-digit hour")?;
        expect(13, b":", "expected ':' after the hour")?;
        let minute = digits(14..16, "expected two-digit minutes")?;
        expect(16, b":", "expected ':' after the minutes")?;
        let second = digits(17..19, "expected two-digit seconds")?;
        if !(1..=12).contains(&month) {
            return Err(bad("month out of range"));
        }
        if day < 1 || day > i64::from(days_in_month(year, month as u32)) {
            return Err(bad("day out of range for its month"));
        }
        if hour > 23 || minute > 59 {
            return Err(bad("hour or minutes out of range"));
        }
        if second > 59 {
            return Err(bad(
                "seconds out of range (leap seconds are not represented)",
            ));
        }
        let mut at = 19;
        let mut fraction_ticks = 0;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let first = at;
            let mut nanos = 0i64;
            while let Some(d) = b.get(at).filter(|c| c.is_ascii_digit()) {
                if at - first < 9 {
                    nanos = nanos * 10 + i64::from(d - b'0');
                }
                at += 1;
            }
            if at == first {
                return Err(bad("expected digits after '.'"));
            }
            for _ in (at - first)..9 {
                nanos *= 10;
            }
            fraction_ticks = nanos * TIME_UNITS_PER_SEC / 1_000_000_000;
        }
        let offset_sec = match b.get(at) {
            Some(b'Z' | b'z') if b.len() == at + 1 => 0,
            Some(&sign @ (b'+' | b'-')) if b.len() == at + 6 => {
                let hours = digits(at + 1..at + 3, "expected a two-digit offset hour")?;
                expect(at + 3, b":", "expected ':' in the offset")?;
                let minutes = digits(at + 4..at + 6, "expected two-digit offset minutes")?;
                if hours > 23 || minutes > 59 {
                    return Err(bad("offset out of range"));
                }
                let magnitude = hours * 3600 + minutes * 60;
                if sign == b'+' { magnitude } else { -magnitude }
            }
            _ => return Err(bad("expected 'Z' or an offset like +01:00 at the end")),
        };
        let secs = days_from_civil(year, month as u32, day as u32) * SECS_PER_DAY
            + hour * 3600
            + minute * 60
            + second
            - offset_sec;
        Ok(Time(secs * TIME_UNITS_PER_SEC + fraction_ticks))
    }
}

/// A string that is not an RFC 3339 date-time ([`Time::parse_rfc3339`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time like 2026-11-27T04:48:38Z: {what}")]
pub struct ParseTimeError {
    text: String,
    what: &'static str,
}

impl Duration {
    /// `secs` whole seconds. Panics on overflow (`|secs|` above about 10^14).
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs * TIME_UNITS_PER_SEC)
    }

    /// `millis` milliseconds. Panics on overflow (`|millis|` above about 10^17).
    pub const fn from_millis(millis: i64) -> Self {
        Duration(millis * TIME_UNITS_PER_MILLI)
    }

    /// The span as a `std::time::Duration`, or `None` if it is negative. A tick is 11 111.1 ns,
    /// not a whole number of nanoseconds, so this truncates to the nanosecond.
    pub fn to_std(self) -> Option<std::time::Duration> {
        let ticks = u64::try_from(self.0).ok()?;
        let secs = ticks / TIME_UNITS_PER_SEC as u64;
        let rem_ticks = ticks % TIME_UNITS_PER_SEC as u64;
        // rem_ticks < 90_000, so the product fits and the quotient is below 10^9.
        let nanos = rem_ticks * 1_000_000_000 / TIME_UNITS_PER_SEC as u64;
        Some(std::time::Duration::new(secs, nanos as u32))
    }

    /// Converts a `std::time::Duration`, truncating to a whole tick and saturating at
    /// `i64::MAX` ticks.
    pub fn from_std(d: std::time::Duration) -> Self {
        let nanos = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        Duration(ticks_from_nanos(nanos))
    }
}

/// `floor(nanos * 90_000 / 10^9)`, saturated to `i64`.
fn ticks_from_nanos(nanos: i128) -> i64 {
    // Divide first to keep the multiplication in range for any i128 input.
    let secs = nanos.div_euclid(NANOS_PER_SEC);
    let sub_nanos = nanos.rem_euclid(NANOS_PER_SEC);
    let ticks = secs
        .saturating_mul(i128::from(TIME_UNITS_PER_SEC))
        .saturating_add(sub_nanos * i128::from(TIME_UNITS_PER_SEC) / NANOS_PER_SEC);
    i64::try_from(ticks).unwrap_or(if ticks < 0 { i64::MIN } else { i64::MAX })
}

impl Sub for Time {
    type Output = Duration;
    fn sub(self, rhs: Time) -> Duration {
        Duration(self.0 - rhs.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time(self.0 + rhs.0)
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, rhs: Duration) -> Time {
        Time(self.0 - rhs.0)
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs.0;
    }
}

impl SubAssign<Duration> for Time {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs.0;
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration(self.0 + rhs.0)
    }
}

impl Sub for Duration {
    type Output = Duration;
    fn sub(self, rhs: Duration) -> Duration {
        Duration(self.0 - rhs.0)
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs.0;
    }
}

impl SubAssign for Duration {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs.0;
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(TIME_UNITS_PER_SEC);
        let millis = self.0.rem_euclid(TIME_UNITS_PER_SEC) / TIME_UNITS_PER_MILLI;
        let days = secs.div_euclid(SECS_PER_DAY);
        let sec_of_day = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            sec_of_day / 3600,
            sec_of_day / 60 % 60,
            sec_of_day % 60,
        )
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let ticks = self.0.unsigned_abs();
        let secs = ticks / TIME_UNITS_PER_SEC as u64;
        let millis = ticks % TIME_UNITS_PER_SEC as u64 / TIME_UNITS_PER_MILLI as u64;
        write!(f, "{sign}{secs}.{millis:03}s")
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month 1..=12, day 1..=31)`.
///
/// Counts in 400-year eras (146 097 days each, the period of the leap-year rule), with years
/// starting on March 1st so that the leap day is the last day of its year; this is Howard
/// Hinnant's `civil_from_days`. Valid for every `days` a [`Time`] can produce (about
/// ±1.2 × 10^9).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    /// Days from 0000-03-01 (the start of an era) to 1970-01-01.
    const EPOCH_SHIFT: i64 = 719_468;
    const DAYS_PER_ERA: i64 = 146_097;

    let days = days + EPOCH_SHIFT;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days.rem_euclid(DAYS_PER_ERA); // 0..=146_096
    // Subtract the leap days before this day of the era (one per 4 years, none per 100, one
    // per 400) so that dividing by 365 gives the year of the era.
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524
        - day_of_era / (DAYS_PER_ERA - 1))
        / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, (28|29); five-month runs
    // of 153 days make this linear.
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // 1..=31
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days in `month` (1..=12) of a proleptic Gregorian `year`.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The inverse of [`civil_from_days`]: days since 1970-01-01 of a proleptic Gregorian date
/// (Howard Hinnant's `days_from_civil`, with the same March-based eras).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // 0..=399
    let month_from_march = i64::from((month + 9) % 12); // 0..=11
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: i64) -> Time {
        Time(secs * TIME_UNITS_PER_SEC + millis * TIME_UNITS_PER_MILLI)
    }

    #[test]
    fn displays_known_instants_as_rfc3339_utc() {
        assert_eq!(at(0, 0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 0).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            at(1_795_754_918, 123).to_string(),
            "2026-11-27T04:48:38.123Z"
        );
        assert_eq!(at(-14_182_940, 0).to_string(), "1969-07-20T20:17:40.000Z");
    }

    #[test]
    fn display_rounds_toward_the_past() {
        assert_eq!(Time(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Time(89).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Time(90).to_string(), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn civil_from_days_advances_one_calendar_day_at_a_time() {
        // 1600-01-01 is day -135_140; walk 1600..=2400, which covers every leap-year rule.
        let mut expected = (1600, 1, 1);
        for days in -135_140..=157_419 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
        assert_eq!(expected, (2401, 1, 1));
    }

    #[test]
    fn display_survives_extreme_times() {
        // Not valid RFC 3339 (years past 9999), but must not panic.
        Time(i64::MAX).to_string();
        Time(i64::MIN).to_string();
    }

    #[test]
    fn arithmetic_keeps_instants_and_spans_apart() {
        let t = Time(1_000);
        let d = Duration(250);
        assert_eq!(t + d, Time(1_250));
        assert_eq!(t - d, Time(750));
        assert_eq!((t + d) - t, d);
        assert_eq!(d + d, Duration(500));
        assert_eq!(d - Duration(300), Duration(-50));
        let mut u = t;
        u += d;
        u -= Duration(50);
        assert_eq!(u, Time(1_200));
        let mut e = d;
        e += Duration(1);
        e -= Duration(2);
        assert_eq!(e, Duration(249));
    }

    #[test]
    fn duration_constructors_use_90k_ticks() {
        assert_eq!(Duration::from_secs(2), Duration(180_000));
        assert_eq!(Duration::from_millis(100), Duration(9_000));
    }

    #[test]
    fn duration_display_shows_sign_seconds_and_millis() {
        assert_eq!(Duration(135_000).to_string(), "1.500s");
        assert_eq!(Duration(0).to_string(), "0.000s");
        assert_eq!(Duration(-22_500).to_string(), "-0.250s");
        assert_eq!(Duration(89).to_string(), "0.000s");
        Duration(i64::MIN).to_string();
    }

    #[test]
    fn to_std_converts_non_negative_spans() {
        assert_eq!(
            Duration(135_000).to_std(),
            Some(std::time::Duration::from_millis(1_500))
        );
        assert_eq!(
            Duration(1).to_std(),
            Some(std::time::Duration::from_nanos(11_111))
        );
        assert_eq!(Duration(0).to_std(), Some(std::time::Duration::ZERO));
        assert_eq!(Duration(-1).to_std(), None);
    }

    #[test]
    fn from_std_truncates_and_saturates() {
        assert_eq!(
            Duration::from_std(std::time::Duration::from_millis(1_500)),
            Duration(135_000)
        );
        assert_eq!(
            Duration::from_std(std::time::Duration::from_nanos(11_111)),
            Duration(0)
        );
        assert_eq!(
            Duration::from_std(std::time::Duration::from_nanos(11_112)),
            Duration(1)
        );
        assert_eq!(
            Duration::from_std(std::time::Duration::MAX),
            Duration(i64::MAX)
        );
    }

    #[test]
    fn from_system_counts_from_the_epoch() {
        use std::time::{Duration as StdDuration, UNIX_EPOCH};
        assert_eq!(Time::from_system(UNIX_EPOCH), Time(0));
        assert_eq!(
            Time::from_system(UNIX_EPOCH + StdDuration::from_secs(951_782_400)),
            at(951_782_400, 0)
        );
        assert_eq!(
            Time::from_system(UNIX_EPOCH - StdDuration::from_millis(1)),
            Time(-90)
        );
        // Rounds toward the past before the epoch too.
        assert_eq!(
            Time::from_system(UNIX_EPOCH - StdDuration::from_nanos(1)),
            Time(-1)
        );
    }

    #[test]
    fn parse_rfc3339_reads_utc_fractions_and_offsets() {
        assert_eq!(
            Time::parse_rfc3339("2026-11-27T04:48:38Z"),
            Ok(at(1_795_754_918, 0))
        );
        assert_eq!(
            Time::parse_rfc3339("2026-11-27T04:48:38.123Z"),
            Ok(at(1_795_754_918, 123))
        );
        assert_eq!(
            Time::parse_rfc3339("2026-11-27t05:48:38.123+01:00"),
            Ok(at(1_795_754_918, 123))
        );
        assert_eq!(
            Time::parse_rfc3339("2026-11-26 23:18:38.123-05:30"),
            Ok(at(1_795_754_918, 123))
        );
        assert_eq!(Time::parse_rfc3339("1970-01-01T00:00:00Z"), Ok(Time(0)));
        assert_eq!(
            Time::parse_rfc3339("1969-07-20T20:17:40Z"),
            Ok(at(-14_182_940, 0))
        );
        assert_eq!(
            Time::parse_rfc3339("2000-02-29T00:00:00Z"),
            Ok(at(951_782_400, 0))
        );
    }

    #[test]
    fn parse_rfc3339_rounds_fractions_toward_the_past() {
        // One tick is 11 111.1 ns.
        assert_eq!(
            Time::parse_rfc3339("1970-01-01T00:00:00.000011111Z"),
            Ok(Time(0))
        );
        assert_eq!(
            Time::parse_rfc3339("1970-01-01T00:00:00.000011112Z"),
            Ok(Time(1))
        );
        assert_eq!(
            Time::parse_rfc3339("1970-01-01T00:00:00.5000000009999Z"),
            Ok(Time(45_000))
        );
        assert_eq!(
            Time::parse_rfc3339("1969-12-31T23:59:59.999Z"),
            Ok(Time(-90))
        );
    }

    #[test]
    fn parse_rfc3339_inverts_display() {
        for t in [0, 1, -1, 89, 90, 161_618_558_703_210, -1_276_464_600_000] {
            let shown = Time(t).to_string();
            let back = Time::parse_rfc3339(&shown).unwrap();
            assert_eq!(back.to_string(), shown);
            assert!(back <= Time(t) && Time(t) - back < Duration(90), "{t}");
        }
    }

    #[test]
    fn parse_rfc3339_refuses_malformed_text() {
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27T04:48:38",
            "2026-11-27T04:48Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T04:60:00Z",
            "2026-11-27T04:48:60Z",
            "2026-11-27T04:48:38.Z",
            "2026-11-27T04:48:38+0100",
            "2026-11-27T04:48:38+24:00",
            "2026-11-27T04:48:38Zjunk",
            "+026-11-27T04:48:38Z",
            "2026/11/27T04:48:38Z",
        ] {
            let e = Time::parse_rfc3339(bad).unwrap_err();
            assert!(e.to_string().contains("not an RFC 3339 time"), "{bad}: {e}");
        }
    }
}
