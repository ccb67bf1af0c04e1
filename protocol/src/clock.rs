//! The clock seam: every process reads time and sleeps through a [`Clock`], so simulation
//! tests can run hours of schedule (flush deadlines, retry backoff, rotation) in no real time
//! and replay exactly.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::time::{Duration, Time};

/// Source of time for everything that schedules or stamps. Tests use [`SimClock`] so no test
/// sleeps for real.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time (`CLOCK_REALTIME`): what recordings are stamped with. May jump in either
    /// direction when the system clock is set.
    fn realtime(&self) -> Time;

    /// Monotonic time with an arbitrary origin, for measuring spans and scheduling: never goes
    /// backwards. Only differences between two readings of the same clock are meaningful.
    fn monotonic(&self) -> Time;

    /// Sleeps for `d` (returns at once if `d <= 0`); a simulated clock advances instead.
    fn sleep(&self, d: Duration);
}

/// The operating system's clocks, via `std::time`.
///
/// `monotonic` is `std::time::Instant` (`CLOCK_MONOTONIC` on Linux, which stops while the
/// system is suspended), measured from the first monotonic reading in the process.
#[derive(Copy, Clone, Debug, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn realtime(&self) -> Time {
        Time::from_system(std::time::SystemTime::now())
    }

    fn monotonic(&self) -> Time {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        Time(Duration::from_std(origin.elapsed()).0)
    }

    fn sleep(&self, d: Duration) {
        if let Some(d) = d.to_std() {
            std::thread::sleep(d);
        }
    }
}

/// A simulated clock: time moves only when a test calls [`SimClock::advance`] or something
/// sleeps, and then realtime and monotonic move together by exactly that amount.
///
/// Clones share one clock, so a test can hand a clone to the code under test and observe or
/// advance time from outside. Sleeping never blocks, which makes tests deterministic but means
/// a thread that waits for another by sleeping only spins the clock forward.
#[derive(Clone, Debug)]
pub struct SimClock(Arc<Mutex<SimTimes>>);

#[derive(Debug)]
struct SimTimes {
    realtime: Time,
    /// Starts at `Time(0)`.
    monotonic: Time,
}

impl SimClock {
    /// A clock whose realtime reads `start_realtime` and whose monotonic time reads `Time(0)`.
    pub fn new(start_realtime: Time) -> Self {
        SimClock(Arc::new(Mutex::new(SimTimes {
            realtime: start_realtime,
            monotonic: Time(0),
        })))
    }

    /// Moves both clocks forward by `d`.
    ///
    /// Panics if `d` is negative: monotonic time never goes backwards, and a test that tries
    /// to make it is wrong.
    pub fn advance(&self, d: Duration) {
        assert!(d >= Duration(0), "cannot advance a clock by negative {d}");
        // The times are plain values, consistent even if another thread panicked mid-test.
        let mut times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        times.realtime += d;
        times.monotonic += d;
    }

    fn times(&self) -> (Time, Time) {
        let times = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (times.realtime, times.monotonic)
    }
}

impl Clock for SimClock {
    fn realtime(&self) -> Time {
        self.times().0
    }

    fn monotonic(&self) -> Time {
        self.times().1
    }

    fn sleep(&self, d: Duration) {
        self.advance(d.max(Duration(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_starts_where_told() {
        let clock = SimClock::new(Time(123));
        assert_eq!(clock.realtime(), Time(123));
        assert_eq!(clock.monotonic(), Time(0));
    }

    #[test]
    fn sim_clock_sleep_and_advance_move_both_clocks_together() {
        let clock = SimClock::new(Time(1_000));
        clock.sleep(Duration::from_secs(2));
        clock.advance(Duration(5));
        assert_eq!(clock.realtime(), Time(1_000 + 180_005));
        assert_eq!(clock.monotonic(), Time(180_005));
    }

    #[test]
    fn sim_clock_clones_share_time() {
        let clock = SimClock::new(Time(0));
        let other = clock.clone();
        other.sleep(Duration(7));
        assert_eq!(clock.monotonic(), Time(7));
    }

    #[test]
    fn sim_clock_negative_sleep_does_nothing() {
        let clock = SimClock::new(Time(0));
        clock.sleep(Duration(-5));
        assert_eq!(clock.monotonic(), Time(0));
    }

    #[test]
    #[should_panic(expected = "negative")]
    fn sim_clock_refuses_to_go_backwards() {
        SimClock::new(Time(0)).advance(Duration(-1));
    }

    #[test]
    fn real_clock_monotonic_does_not_go_backwards() {
        let a = RealClock.monotonic();
        let b = RealClock.monotonic();
        assert!(b >= a, "{a:?} then {b:?}");
    }

    #[test]
    fn real_clock_negative_sleep_returns_at_once() {
        RealClock.sleep(Duration(i64::MIN));
    }

    #[test]
    fn real_clock_realtime_is_after_2020() {
        assert!(RealClock.realtime() > Time(1_577_836_800 * crate::time::TIME_UNITS_PER_SEC));
    }
}
