//! Limits on everything a writer sends (DESIGN.md, failure handling). A report past any of them
//! is rejected with an error naming the limit; the offending connection is dropped and nothing
//! of any other stream is affected.

use protocol::TIME_UNITS_PER_SEC;

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

/// Bytes a growing recording's file may hold beyond what its writer has reported, checked at
/// each progress report: room for the sample being written, no more.
pub const MAX_UNREPORTED_BYTES: u64 = 2 * MAX_SAMPLE_BYTES as u64;
