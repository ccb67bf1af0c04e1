//! Rate limits for warnings that a persistent condition repeats at every event (a full disk
//! warns at every flush and every poll): the first is logged, then at most one summary per
//! [`SUMMARY_INTERVAL`], counting what was held back. Without it a full disk once wrote
//! 6.5 MB of log in 10 s, filling the disk it was warning about.

use protocol::{Duration, Time};

/// Least time between two lines of one [`Throttle`].
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// One kind of repeated warning.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Monotonic time before which occurrences are only counted; `None` before the first.
    quiet_until: Option<Time>,
    held_back: u64,
}

impl Throttle {
    /// Counts one occurrence at monotonic time `now`. Returns `Some(n)` when this one is to be
    /// logged, `n` being how many were held back since the last line; `None` when it is held
    /// back.
    pub fn occur(&mut self, now: Time) -> Option<u64> {
        if self.quiet_until.is_some_and(|t| now < t) {
            self.held_back += 1;
            return None;
        }
        self.quiet_until = Some(now + SUMMARY_INTERVAL);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_summary_a_minute() {
        let mut t = Throttle::default();
        let at = |s: i64| Time(0) + Duration::from_secs(s);
        assert_eq!(t.occur(at(0)), Some(0));
        for s in 1..60 {
            assert_eq!(t.occur(at(s)), None, "{s} s");
        }
        assert_eq!(t.occur(at(60)), Some(59));
        assert_eq!(t.occur(at(61)), None);
        // After a quiet spell the next one is logged at once.
        assert_eq!(t.occur(at(1000)), Some(1));
    }
}
