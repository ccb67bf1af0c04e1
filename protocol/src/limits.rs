//! Limits on everything a writer sends (DESIGN.md, failure handling): part of the contract
//! between the ingest and the syncer, so both sides read them from here. The syncer rejects a
//! request past any of them with an error naming the limit, drops the offending connection,
//! and nothing of any other stream is affected; the ingest's writer keeps within them (it
//! rotates or refuses a frame first), so that a well-behaved camera never meets a rejection.

use crate::time::TIME_UNITS_PER_SEC;

/// Largest single sample (an encoded video frame), in bytes.
pub const MAX_SAMPLE_BYTES: u32 = 16 << 20;

/// Samples in one recording: 5 minutes at 240 frames per second.
pub const MAX_SAMPLES_PER_RECORDING: u32 = 5 * 60 * 240;

/// Encoded sample index of one recording, in bytes.
pub const MAX_INDEX_BYTES: usize = 1 << 20;

/// One recording's sample file, in bytes.
pub const MAX_RECORDING_BYTES: u64 = 1 << 31;

/// Shortest sample duration but the last, 90 kHz (1/1000 s): no camera sends faster.
pub const MIN_SAMPLE_DURATION_90K: i64 = 90;

/// Longest recording, 90 kHz: writers rotate long before (DESIGN.md: 5 minutes of wall time).
pub const MAX_WALL_DURATION_90K: i64 = 5 * 60 * TIME_UNITS_PER_SEC;

/// Media duration may exceed the wall limit by the 500 ppm correction at most.
pub const MAX_MEDIA_DURATION_90K: i64 = MAX_WALL_DURATION_90K + MAX_WALL_DURATION_90K / 2000;

/// Shortest recording a run may go on from, in media duration (with the last sample's), 90
/// kHz: 1 s. Each recording costs an inode, a recording id and a row. This keeps runs made of
/// whole recordings; what bounds how many recordings a writer can make (each short one as a
/// run of its own) is the open budget ([`OpenBudget`]) and the inode reserve. An honest writer rotates
/// at most once per key frame past a rotate interval of at least 1 s, and its first recording
/// of a run is never shortened below this by the stagger. Only a run's last recording (the
/// camera session ended, a shutdown, an error, a full disk) may be shorter: the syncer accepts
/// a shorter recording, but it ends its run, and an open continuing that run is refused.
pub const MIN_RECORDING_DURATION_90K: i64 = TIME_UNITS_PER_SEC;

/// The write window: bytes a growing recording's file may hold beyond the last progress report
/// the syncer acknowledged ([`crate::messages::IngestReply::Progressed`]). The writer waits for
/// an acknowledgement rather than write past it; the syncer checks the file against it at each
/// report, and a file past it is over budget (its reported samples are salvaged, the rest cut).
/// 64 MiB rides out a 13 s syncer stall at 40 Mbit/s without the writer waiting; it must hold
/// at least one sample of [`MAX_SAMPLE_BYTES`] so that a writer with everything acknowledged
/// can always write its next sample.
pub const WRITE_WINDOW_BYTES: u64 = 64 << 20;

const _: () = assert!(WRITE_WINDOW_BYTES >= MAX_SAMPLE_BYTES as u64);

/// Distinct video sample entries one connection may add.
pub const MAX_SAMPLE_ENTRIES_PER_STREAM: usize = 16;

/// Sample entries one stream may hold before those no recording (committed or in flight) and
/// not its live connection uses are removed, as a new one is added.
pub const MAX_STORED_SAMPLE_ENTRIES_PER_STREAM: usize = 64;

/// Largest sample entry box accepted, in bytes.
pub const MAX_SAMPLE_ENTRY_BYTES: usize = 64 << 10;

/// Earliest recording start accepted, 90 kHz since the Unix epoch: 2000-01-01 00:00 UTC. A
/// camera clock before it is wrong, and a writer's time model starts from the local clock.
pub const MIN_START_90K: i64 = 946_684_800 * TIME_UNITS_PER_SEC;

/// Latest recording start accepted, 90 kHz since the Unix epoch: 2200-01-01 00:00 UTC. Far
/// enough that any real clock is below it, near enough that a start plus any duration or delta
/// the other limits allow cannot overflow.
pub const MAX_START_90K: i64 = 7_258_118_400 * TIME_UNITS_PER_SEC;

/// Largest difference between a recording's local-clock start and its start, 90 kHz, either
/// way: a day. Within a run the two drift apart by at most the 500 ppm the wall correction
/// leaves; a writer starts a new run long before a day's difference.
pub const MAX_LOCAL_TIME_DELTA_90K: i64 = 24 * 60 * 60 * TIME_UNITS_PER_SEC;

/// Opens one stream may make at once, after a quiet spell: see [`OpenBudget`].
pub const OPEN_BURST: u32 = 8;

/// How often one stream may open a recording beyond [`OPEN_BURST`], 90 kHz: once a second.
/// Every open costs an inode and a recording id (32 bits per stream), so a stream that opens
/// without pause would exhaust a file system's inodes in a minute, or its ids in months; an
/// honest writer rotates at most once per key frame past a rotate interval of at least 1 s.
pub const OPEN_INTERVAL_90K: i64 = TIME_UNITS_PER_SEC;

/// The open rate of one stream, as a token bucket: by default ([`OpenBudget::default`])
/// [`OPEN_BURST`] opens, refilled by one every [`OPEN_INTERVAL_90K`]. The syncer keeps one per
/// stream and refuses opens beyond it; the writer keeps its own and postpones a rotation
/// rather than meet a refusal.
///
/// Times come from the caller's clock and may go backwards (a wall clock being set): such a
/// step refills nothing and never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenBudget {
    /// Cost of one open, 90 kHz: the refill interval. 0 makes the budget unlimited.
    interval_90k: i64,
    /// Most credit held: `burst * interval_90k`.
    full_90k: i64,
    /// Credit in 90 kHz units, at most `full_90k`.
    credit_90k: i64,
    /// When `credit_90k` was last brought up to date; `None` before the first use.
    as_of: Option<crate::Time>,
}

impl Default for OpenBudget {
    fn default() -> Self {
        OpenBudget::new(OPEN_BURST, OPEN_INTERVAL_90K)
    }
}

impl OpenBudget {
    /// `burst` opens at once, then one every `interval_90k` (0: no limit at all).
    pub fn new(burst: u32, interval_90k: i64) -> Self {
        let interval_90k = interval_90k.max(0);
        let full_90k = i64::from(burst).saturating_mul(interval_90k);
        OpenBudget {
            interval_90k,
            full_90k,
            credit_90k: full_90k,
            as_of: None,
        }
    }

    fn refill(&mut self, now: crate::Time) {
        if let Some(then) = self.as_of {
            let elapsed = now.0.saturating_sub(then.0).max(0);
            self.credit_90k = self.credit_90k.saturating_add(elapsed).min(self.full_90k);
        }
        self.as_of = Some(now);
    }

    /// Whether an open at `now` is within the budget; spends nothing.
    pub fn allows(&mut self, now: crate::Time) -> bool {
        self.refill(now);
        self.credit_90k >= self.interval_90k
    }

    /// Spends one open at `now`; `false`, and nothing spent, when over the budget.
    pub fn try_spend(&mut self, now: crate::Time) -> bool {
        if !self.allows(now) {
            return false;
        }
        self.credit_90k -= self.interval_90k;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Time;

    #[test]
    fn a_burst_then_one_a_second() {
        let mut b = OpenBudget::default();
        let t0 = Time(1_000_000);
        for _ in 0..OPEN_BURST {
            assert!(b.try_spend(t0));
        }
        assert!(!b.try_spend(t0));
        assert!(!b.allows(Time(t0.0 + OPEN_INTERVAL_90K - 1)));
        assert!(b.try_spend(Time(t0.0 + OPEN_INTERVAL_90K)));
        assert!(!b.try_spend(Time(t0.0 + OPEN_INTERVAL_90K)));
        // A long quiet spell refills the burst, no more.
        let later = Time(t0.0 + 1000 * OPEN_INTERVAL_90K);
        let opens = (0..100).filter(|_| b.try_spend(later)).count();
        assert_eq!(opens, OPEN_BURST as usize);
    }

    #[test]
    fn clocks_that_go_backwards_or_to_the_ends_refill_nothing_and_never_panic() {
        let mut b = OpenBudget::default();
        for _ in 0..OPEN_BURST {
            assert!(b.try_spend(Time(i64::MAX)));
        }
        assert!(!b.try_spend(Time(i64::MIN)), "backwards: no refill");
        assert!(b.try_spend(Time(i64::MAX)), "saturating, a full refill");
        let mut unlimited = OpenBudget::new(0, 0);
        assert!((0..1000).all(|_| unlimited.try_spend(Time(0))));
    }
}
