//! Retrying an operation whose failure is expected to be transient (a camera that is not up
//! yet, `write` returning `ENOSPC` while retention frees space), with capped exponential
//! backoff and prompt shutdown.
//!
//! Not for `fsync`: a failed fsync must never be retried as if nothing happened (DESIGN.md,
//! "Failure handling").

use crate::clock::Clock;
use crate::time::Duration;

/// Delay after the first failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest delay between attempts; the delay doubles after each failure until it reaches this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Longest time a sleeping [`retry`] goes without checking `stop`, so that shutdown waits at
/// most this long even during a [`MAX_BACKOFF`] delay.
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// [`retry`] gave up because `stop` returned true; holds the error of the last attempt.
#[derive(Debug, thiserror::Error)]
#[error("stopped while retrying; last error: {0}")]
pub struct RetryStopped<E>(pub E);

/// Calls `f` until it succeeds or `stop()` returns true.
///
/// `f` is called at least once. After its `n`th consecutive failure (`n` from 1),
/// `on_error(&err, n)` is called (the caller logs there, with its own context), then, unless
/// `stop()` is true, `retry` sleeps on `clock` for [`INITIAL_BACKOFF`] × 2^(n-1), at most
/// [`MAX_BACKOFF`]: 100 ms, 200 ms, 400 ms, ... 6.4 s, 10 s, 10 s, .... The sleep is cut into
/// slices of at most [`STOP_POLL_INTERVAL`] with `stop()` checked before each, so a shutdown
/// during a long delay returns `RetryStopped` with the last error within one slice.
pub fn retry<T, E>(
    clock: &dyn Clock,
    stop: &dyn Fn() -> bool,
    mut on_error: impl FnMut(&E, u32),
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, RetryStopped<E>> {
    let mut backoff = INITIAL_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        let err = match f() {
            Ok(t) => return Ok(t),
            Err(err) => err,
        };
        failures = failures.saturating_add(1);
        on_error(&err, failures);
        let mut remaining = backoff;
        while remaining > Duration(0) {
            if stop() {
                return Err(RetryStopped(err));
            }
            let slice = remaining.min(STOP_POLL_INTERVAL);
            clock.sleep(slice);
            remaining -= slice;
        }
        backoff = (backoff + backoff).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimClock;
    use crate::time::Time;
    use std::cell::Cell;

    #[test]
    fn retries_until_success() {
        let clock = SimClock::new(Time(0));
        let mut calls = 0;
        let mut reported = Vec::new();
        let result = retry(
            &clock,
            &|| false,
            |e: &String, n| reported.push((e.clone(), n)),
            || {
                calls += 1;
                if calls < 3 {
                    Err(format!("fail {calls}"))
                } else {
                    Ok(calls)
                }
            },
        );
        assert_eq!(result.ok(), Some(3));
        assert_eq!(
            reported,
            [("fail 1".to_owned(), 1), ("fail 2".to_owned(), 2)]
        );
    }

    #[test]
    fn success_on_first_call_does_not_sleep() {
        let clock = SimClock::new(Time(0));
        let result: Result<u8, RetryStopped<String>> = retry(&clock, &|| true, |_, _| (), || Ok(7));
        assert_eq!(result.ok(), Some(7));
        assert_eq!(clock.monotonic(), Time(0));
    }

    #[test]
    fn backoff_doubles_from_100ms_and_caps_at_10s() {
        let clock = SimClock::new(Time(0));
        let mut attempts_at = Vec::new();
        let result = retry(
            &clock,
            &|| false,
            |_: &(), _| (),
            || {
                attempts_at.push(clock.monotonic());
                if attempts_at.len() < 10 {
                    Err(())
                } else {
                    Ok(())
                }
            },
        );
        assert!(result.is_ok());
        let delays_ms: Vec<i64> = attempts_at
            .windows(2)
            .map(|w| (w[1] - w[0]).0 / 90)
            .collect();
        assert_eq!(
            delays_ms,
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]
        );
    }

    #[test]
    fn stops_before_sleeping_when_stop_is_set() {
        let clock = SimClock::new(Time(0));
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(
            &clock,
            &|| calls.get() >= 2,
            |_, _| (),
            || {
                calls.set(calls.get() + 1);
                Err(calls.get())
            },
        );
        assert_eq!(result.err().map(|RetryStopped(e)| e), Some(2));
        assert_eq!(calls.get(), 2);
        assert_eq!(clock.monotonic(), Time(0) + INITIAL_BACKOFF);
    }

    #[test]
    fn stop_during_a_long_backoff_returns_within_one_poll_interval() {
        let clock = SimClock::new(Time(0));
        // After the 8th failure the delay is 10 s; ask to stop 2 s into it.
        let stop_at = Time(0) + Duration::from_millis(12_700 + 2_000);
        let result: Result<(), _> = retry(
            &clock,
            &|| clock.monotonic() >= stop_at,
            |_, _| (),
            || Err("down"),
        );
        assert_eq!(result.err().map(|RetryStopped(e)| e), Some("down"));
        assert!(clock.monotonic() >= stop_at);
        assert!(clock.monotonic() < stop_at + STOP_POLL_INTERVAL);
    }

    #[test]
    fn stopped_error_names_the_last_error() {
        assert_eq!(
            RetryStopped("disk full").to_string(),
            "stopped while retrying; last error: disk full"
        );
    }
}
