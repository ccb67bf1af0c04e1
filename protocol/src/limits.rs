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
