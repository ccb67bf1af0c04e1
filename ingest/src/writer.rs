//! The writer state machine: turns a stream of frames into recordings, one after another, in
//! the sample-file descriptors the syncer hands out (DESIGN.md, "One recording's life").
//!
//! The writer talks to the syncer only through [`SyncerLink`], so that its rules can be tested
//! against an in-memory fake; [`crate::client::Client`] is the real link over the socket. The
//! syncer's power-loss suite (`syncer/tests/power_loss.rs`) drives it with a link to an
//! in-process syncer core whose descriptors write through the simulated file system.
//!
//! # A recording
//!
//! The first frame after an idle state opens a recording (adding the frame's sample entry first
//! if this connection has not yet). Each frame is written with `write(2)` (all its bytes, see
//! "Failures" below), then hashed and indexed. A sample is reported to the syncer only after its
//! bytes were written, so whatever the syncer has been told is on disk (in the page cache) and a
//! salvage after a crash of this process can keep it.
//!
//! Reports ([`SyncerLink::progress`]) go out at every key frame and whenever a frame's local
//! time is [`PROGRESS_INTERVAL`] or more after the previous report's (or before it: the clock
//! was set back). With key frames every few seconds at most, as cameras send them, that bounds
//! what a crash of the ingest loses to about one second (DESIGN.md, "Loss windows") at about
//! one small message a second. Each report carries every written sample not yet reported, the
//! time model for them with the last sample's duration counted as 0, and the file offset they
//! end at.
//!
//! # Write window
//!
//! The syncer answers each report ([`SyncerLink::wait_acknowledged`]), and the file never grows
//! past the last acknowledged offset plus [`WRITE_WINDOW_BYTES`]: a frame that would take it
//! further is first reported with everything before it, if it was not yet, and then written
//! only once the syncer has acknowledged enough (waiting up to the accept timeout, past which
//! the link has failed). The syncer checks files against this window, so however long it
//! stalls, an honest writer is never mistaken for one that writes past its budget; the window
//! is large enough that an ordinary stall never makes the writer wait.
//!
//! # Time model
//!
//! Each frame has a pts (media clock, 90 kHz) and a local time (when it arrived). Within a
//! recording:
//!
//! - the media duration is the last sample's pts minus the first's, plus the last sample's
//!   duration (the next pts minus its own, or 0 when the next pts is unknown: "trailing zero");
//! - the *local start* is the minimum over the frames of `local time - (pts - first pts)`: the
//!   local time at which the recording would have started had every frame arrived with the
//!   least delay seen;
//! - the first recording of a run starts at its local start, and its wall duration is its
//!   media duration;
//! - every later recording of the run starts exactly where the previous one ended (`start +
//!   wall duration`), and its wall duration is its media duration corrected toward the local
//!   clock by `local start - start`, clamped to ±1/2000 (500 ppm) of the media duration: a
//!   camera clock that runs fast or slow is followed slowly, never with a jump, and recordings
//!   of a run abut exactly (DESIGN.md invariant 5).
//!
//! A run ends when a recording is closed without the next pts (shutdown, drop, a gap too long
//! for one recording), and the next recording opens a new run at run offset 0.
//!
//! # Rotation
//!
//! A recording is closed, and the next one of the run opened with the same frame, at the first
//! key frame whose pts is at least the rotation target past the recording's first pts (media
//! duration, so that sources faster than real time rotate by their content). The target is
//! the rotate interval, except for the first recording of a run, which is shortened by the
//! stream's *stagger*: `rotate × frac(stream_id × 0x9E3779B9 / 2^32)` (Fibonacci hashing: the
//! fractional parts of multiples of the golden ratio spread evenly, so streams 1, 2, 3, ... get
//! offsets near 0.62, 0.24, 0.85, ... of the interval). Streams started together then rotate
//! at different moments instead of all fsyncing at once. Where the stagger would leave less
//! than [`MIN_RECORDING_DURATION_90K`] (1 s), the first target is one interval longer: the
//! syncer lets a run go on only from a recording at least that long.
//!
//! A rotation also waits for the stream's open budget (`protocol::limits::OpenBudget`, which
//! the syncer enforces by its monotonic clock; measured here by the writer's, not by the
//! frames' local times, which a source faster than real time computes from its pts): such a
//! source with a short interval gets longer recordings instead of refused opens.
//!
//! Other reasons to close: the frame's sample entry differs from the recording's (allowed only
//! on a key frame: the new recording must start decodable), and the syncer's limits, which a
//! recording must never break: a frame that would take the media duration past
//! [`MEDIA_DURATION_CAP_90K`] (no key frame for minutes, or a pts gap) closes the recording
//! without it, with a trailing zero, and ends the run; a frame that would exceed the samples
//! or bytes of one recording rotates on that frame.
//!
//! No recording shorter than [`MIN_RECORDING_DURATION_90K`] of media (with its last sample's
//! duration) continues its run: the syncer refuses to (each recording costs an inode, an id
//! and a row). Rotation targets are at least that long; a sample entry change or a bytes
//! limit that comes sooner (the sample limit cannot: it is over a minute of the shortest
//! samples) closes with a trailing zero and ends the run, like every close that is a run's
//! last (shutdown, drop, a source error, a full disk).
//!
//! # Closing
//!
//! At most one close is outstanding: before sending a close, the writer waits for the syncer to
//! accept the previous one ([`SyncerLink::wait_accepted`]). The syncer therefore holds at most
//! one growing and one closing recording of this connection.
//!
//! # Failures
//!
//! - A frame the syncer would reject (pts not increasing, a jump that does not fit `i32`, a
//!   sample shorter than [`MIN_SAMPLE_DURATION_90K`], a sample entry change on a non-key
//!   frame, a bad size) is refused with an error; nothing changes, and the caller may go on.
//! - `write(2)` errors that can be transient (`EIO`, `EAGAIN`) wrote nothing and are retried
//!   with [`protocol::retry()`]'s backoff; short writes continue where they stopped. If the
//!   stop flag is set while retrying, or the error is of another kind, the recording is
//!   *abandoned*: the file may end in part of a sample, so it cannot be closed; nothing more is
//!   sent for it and the syncer salvages the reported prefix when the connection ends. Any
//!   [`LinkError`] also abandons the growing recording.
//! - A full disk (`ENOSPC`, `EDQUOT` from a write, or the syncer refusing an open for it)
//!   *pauses* the writer instead of retrying a write that cannot succeed until something is
//!   deleted: the growing recording, if any, is reported through its last whole sample and
//!   given up to the syncer ([`SyncerLink::abandon`]), which keeps those samples, cuts the
//!   part of a sample after them and commits it, so the disk's space goes to the oldest
//!   recordings' deletion instead of to nothing; the connection goes on. Frames are dropped
//!   until a pause has passed and a key frame comes; that frame opens a new run. The pause is
//!   [`DISK_FULL_RETRY_MIN`], doubling up to [`DISK_FULL_RETRY_MAX`] while the disk stays full
//!   (a refused open, or a recording that ends before it has lasted as long as the pause
//!   before it). One warning starts a pause and one line ends it, with what it dropped.
//! - Dropping the writer with a recording open closes it with end reason `drop`.

use std::io::{self, Write};
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use protocol::limits::{
    MAX_RECORDING_BYTES, MAX_SAMPLE_ENTRIES_PER_STREAM, MAX_SAMPLES_PER_RECORDING,
    MAX_WALL_DURATION_90K, MIN_RECORDING_DURATION_90K, MIN_SAMPLE_DURATION_90K, OpenBudget,
    WRITE_WINDOW_BYTES,
};
use protocol::messages::{RecordingTimes, SampleReport};
use protocol::{Clock, CompositeId, Duration, RetryStopped, TIME_UNITS_PER_SEC, Time, retry};
use tracing::{debug, info, warn};

use crate::h264::{self, SampleEntry};
use crate::source::Frame;

/// Longest media duration the writer lets a recording reach, 90 kHz: the largest `m` with `m +
/// m / 2000 <= MAX_WALL_DURATION_90K`, so that no 500 ppm correction can take the wall
/// duration past the syncer's limit (which allows media of [`protocol::limits::MAX_MEDIA_DURATION_90K`],
/// a little more).
pub const MEDIA_DURATION_CAP_90K: i64 = MAX_WALL_DURATION_90K * 2000 / 2001;

/// Longest rotate interval, in seconds: it leaves 30 s of the 5-minute limit for the key frame
/// that ends a recording to arrive.
pub const MAX_ROTATE_SEC: u32 = 270;

// The shortest rotate interval, 1 s, is a recording the syncer lets a run go on from.
const _: () = assert!(TIME_UNITS_PER_SEC >= MIN_RECORDING_DURATION_90K);

/// Longest local time between two progress reports of a recording (see the module docs).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long the writer waits for the syncer to accept a close before it sends the next close,
/// or to acknowledge a report before it writes past the window (see
/// [`WriterConfig::accept_timeout`]).
pub const DEFAULT_ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Shortest pause after a full disk (see the module docs, "Failures").
pub const DISK_FULL_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest pause after a full disk.
pub const DISK_FULL_RETRY_MAX: Duration = Duration::from_secs(30);

/// End reasons this crate gives recordings (shown by `nvr recordings`). A rotation has none.
pub mod end_reason {
    /// The disk was full: the recording ends at its last whole sample.
    pub const DISK_FULL: &str = "disk-full";
    /// Closed on SIGTERM or SIGINT.
    pub const SHUTDOWN: &str = "shutdown";
    /// The writer was dropped with the recording open.
    pub const DROP: &str = "drop";
    /// The next frame has other video parameters (a new sample entry).
    pub const SAMPLE_ENTRY_CHANGE: &str = "sample-entry-change";
    /// The next frame would take the recording past the maximum duration; the run ends.
    pub const MAX_DURATION: &str = "max-duration";
    /// The next frame would take the recording past the syncer's samples or bytes limit.
    pub const SIZE_LIMIT: &str = "size-limit";
    /// The source failed or produced a frame the writer refused.
    pub const SOURCE_ERROR: &str = "source-error";
}

/// The syncer side of a connection, as the writer needs it. [`crate::client::Client`] speaks
/// it over the socket; tests use an in-memory fake that checks every rule, or an in-process
/// syncer core (the power-loss suite).
///
/// Every call may fail with a [`LinkError`]; the writer then abandons the growing recording
/// (the syncer salvages it when the connection ends).
pub trait SyncerLink {
    /// The write-only descriptor of a new recording's sample file (offset 0).
    type File: Write;

    /// Adds (or looks up) a sample entry of the stream; returns its id. Called once per
    /// distinct entry per connection, before the first open with it.
    fn add_sample_entry(&mut self, entry: &SampleEntry) -> Result<i32, LinkError>;

    /// Opens the stream's next recording. `run_offset` is 0 for a new run and one more than
    /// the previous recording's for a continued run.
    fn open(
        &mut self,
        run_offset: i32,
        sample_entry_id: i32,
    ) -> Result<Opened<Self::File>, LinkError>;

    /// Reports samples written since the previous report, which end at file offset
    /// `written_bytes`. The syncer's acknowledgement arrives later (see
    /// [`SyncerLink::wait_acknowledged`]).
    fn progress(
        &mut self,
        id: CompositeId,
        samples: Vec<SampleReport>,
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<(), LinkError>;

    /// Waits up to `timeout` until the syncer has acknowledged a report of `id` through file
    /// offset `written_bytes` or further (at once if it has already). The writer calls it only
    /// for an offset it has reported.
    fn wait_acknowledged(
        &mut self,
        id: CompositeId,
        written_bytes: u64,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError>;

    /// Sends the close of the growing recording. The writer calls it only when no other close
    /// is outstanding.
    fn close(&mut self, close: Close) -> Result<(), LinkError>;

    /// Gives up the growing recording `id`: the syncer keeps its reported samples and cuts the
    /// rest. Counts as the outstanding close ([`SyncerLink::wait_accepted`]); the writer calls
    /// it only when no other close is outstanding.
    fn abandon(&mut self, id: CompositeId, end_reason: &str) -> Result<(), LinkError>;

    /// Waits up to `timeout` until the syncer has accepted the close of `id` (at once if it
    /// has already).
    fn wait_accepted(
        &mut self,
        id: CompositeId,
        timeout: std::time::Duration,
    ) -> Result<(), LinkError>;
}

/// What [`SyncerLink::open`] gave.
#[derive(Debug)]
pub enum Opened<F> {
    /// The new recording and its write-only descriptor (offset 0).
    Recording(CompositeId, F),
    /// The sample dir cannot take a new file now (the disk is full); nothing is open.
    Refused { message: String },
}

/// The close of a recording, as [`protocol::messages::IngestRequest::CloseRecording`] carries
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The growing recording.
    pub id: CompositeId,
    /// Samples written since the last progress report, in order.
    pub samples: Vec<SampleReport>,
    /// The last sample's duration in 90 kHz ticks (`>= MIN_SAMPLE_DURATION_90K`), or `None`
    /// for a trailing zero.
    pub last_sample_duration_90k: Option<i32>,
    /// The final time model.
    pub times: RecordingTimes,
    /// Why the recording ended; `None` for a rotation.
    pub end_reason: Option<String>,
    /// blake3 of every byte written to the sample file.
    pub writer_blake3: [u8; 32],
}

/// Why the syncer side of the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection failed or ended (socket error, end of file, bad frame, or an error from
    /// the syncer, which then drops the connection). The supervisor restarts the ingest with
    /// a fresh connection.
    #[error("syncer connection lost: {reason}")]
    Lost { reason: String },

    /// The handshake failed, e.g. on a protocol version mismatch (restarting the same binary
    /// would not help).
    #[error("handshake with the syncer failed: {0}")]
    Handshake(#[source] protocol::WireError),

    /// The syncer sent something the conversation does not allow at that point.
    #[error("protocol violation by the syncer: {what}")]
    Protocol { what: String },

    /// The syncer did not accept a close in time.
    #[error("the syncer did not accept recording {id} within {waited:?}")]
    AcceptTimeout {
        id: CompositeId,
        waited: std::time::Duration,
    },

    /// The syncer did not acknowledge enough of a recording in time for the writer to write
    /// on within the window.
    #[error(
        "the syncer did not acknowledge recording {id} through offset {written_bytes} within {waited:?}"
    )]
    AcknowledgeTimeout {
        id: CompositeId,
        written_bytes: u64,
        waited: std::time::Duration,
    },
}

/// Why [`Writer`] refused a frame or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// A frame that is empty or larger than a sample may be. Nothing changed.
    #[error(
        "frame at pts {pts_90k} is {bytes} bytes; a sample must be 1..={} bytes",
        h264::MAX_FRAME_BYTES
    )]
    BadSampleSize { pts_90k: i64, bytes: usize },

    /// A frame whose pts is not after the previous frame's. Nothing changed.
    #[error(
        "recording {id}: pts {pts_90k} does not increase from the previous frame's {prev_pts_90k}"
    )]
    PtsNotIncreasing {
        id: CompositeId,
        prev_pts_90k: i64,
        pts_90k: i64,
    },

    /// A frame whose pts is more than `i32::MAX` ticks after the previous frame's. Nothing
    /// changed.
    #[error("recording {id}: pts jumps from {prev_pts_90k} to {pts_90k}, more than i32::MAX ticks")]
    PtsJump {
        id: CompositeId,
        prev_pts_90k: i64,
        pts_90k: i64,
    },

    /// A frame less than [`MIN_SAMPLE_DURATION_90K`] after the previous one. Nothing changed.
    #[error(
        "recording {id}: pts {pts_90k} is only {duration_90k} ticks after the previous frame; \
         the minimum is {MIN_SAMPLE_DURATION_90K}"
    )]
    SampleTooShort {
        id: CompositeId,
        pts_90k: i64,
        duration_90k: i64,
    },

    /// The video parameters changed on a frame that is not a key frame. Nothing changed.
    #[error("recording {id}: the sample entry changes at pts {pts_90k}, which is not a key frame")]
    SampleEntryChangeNotOnKeyFrame { id: CompositeId, pts_90k: i64 },

    /// The stream used more distinct sample entries than a connection may add. Nothing changed.
    #[error("more than {MAX_SAMPLE_ENTRIES_PER_STREAM} distinct sample entries on one connection")]
    TooManySampleEntries,

    /// A rotate interval outside `1..=MAX_ROTATE_SEC`.
    #[error("rotate interval of {rotate_sec} s is outside 1..={MAX_ROTATE_SEC} s")]
    BadRotateInterval { rotate_sec: u32 },

    /// A write kept failing until the stop flag was set; the recording is abandoned.
    #[error("recording {id}: write aborted by shutdown (last error: {source}); abandoned")]
    WriteAborted {
        id: CompositeId,
        #[source]
        source: io::Error,
    },

    /// A write failed with an error that is not transient; the recording is abandoned.
    #[error("recording {id}: write failed: {source}; abandoned")]
    Write {
        id: CompositeId,
        #[source]
        source: io::Error,
    },

    /// A write found the disk full (`ENOSPC`, `EDQUOT`). The writer handles it by pausing
    /// (see the module docs); it never reaches the caller.
    #[error("recording {id}: the disk is full: {source}")]
    DiskFull {
        id: CompositeId,
        #[source]
        source: io::Error,
    },

    /// The recording was abandoned earlier; only a new connection can record again.
    #[error("recording {id} was abandoned; nothing more can be written on this connection")]
    Abandoned { id: CompositeId },

    /// The syncer side failed (see [`LinkError`]).
    #[error(transparent)]
    Link(#[from] LinkError),
}

impl WriterError {
    /// Whether the error refused one frame and left the writer as it was, so that the caller
    /// may go on with other frames.
    pub fn is_frame_refused(&self) -> bool {
        matches!(
            self,
            WriterError::BadSampleSize { .. }
                | WriterError::PtsNotIncreasing { .. }
                | WriterError::PtsJump { .. }
                | WriterError::SampleTooShort { .. }
                | WriterError::SampleEntryChangeNotOnKeyFrame { .. }
                | WriterError::TooManySampleEntries
        )
    }
}

/// What a [`Writer`] needs to know of its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// The stream's id (from the syncer's `HelloReply`); picks the rotation stagger.
    pub stream_id: i32,
    /// Rotate at the first key frame this many seconds of media into a recording;
    /// `1..=MAX_ROTATE_SEC`.
    pub rotate_sec: u32,
    /// How long to wait for the syncer to accept a close before sending the next one (past
    /// it, [`LinkError::AcceptTimeout`]), or to acknowledge a report before writing past the
    /// window ([`LinkError::AcknowledgeTimeout`]).
    pub accept_timeout: std::time::Duration,
    /// The syncer's open budget for the stream, which rotations keep within:
    /// `OpenBudget::default()`, unless the syncer was configured otherwise.
    pub open_budget: OpenBudget,
}

/// The rotation stagger of `stream_id` for a `rotate_90k` interval: see the module docs.
/// In `0..rotate_90k`.
pub fn stagger_90k(stream_id: i32, rotate_90k: i64) -> i64 {
    const GOLDEN_RATIO_32: u32 = 0x9e37_79b9;
    let fraction = u64::from((stream_id as u32).wrapping_mul(GOLDEN_RATIO_32));
    let rotate = u64::try_from(rotate_90k).expect("rotate interval is positive");
    // fraction < 2^32 and rotate < 2^32 (at most MAX_ROTATE_SEC s), so the product fits.
    ((fraction * rotate) >> 32) as i64
}

/// The rotation target of a run's first recording, 90 kHz: `rotate_90k` less the stream's
/// stagger, or one interval more where that is less than [`MIN_RECORDING_DURATION_90K`] (the
/// recording would end its run). In `MIN_RECORDING_DURATION_90K..2 * rotate_90k`.
fn first_rotate_90k(stream_id: i32, rotate_90k: i64) -> i64 {
    let target = rotate_90k - stagger_90k(stream_id, rotate_90k);
    if target < MIN_RECORDING_DURATION_90K {
        target + rotate_90k
    } else {
        target
    }
}

/// The writer state machine; see the module docs.
pub struct Writer<L: SyncerLink> {
    link: L,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    /// Rotation target of every recording but a run's first, 90 kHz.
    rotate_90k: i64,
    /// Rotation target of a run's first recording: the interval minus the stagger (see
    /// [`first_rotate_90k`]), 90 kHz.
    first_rotate_90k: i64,
    accept_timeout: std::time::Duration,
    /// Sample entries added on this connection, with their ids.
    entries: Vec<(Arc<SampleEntry>, i32)>,
    state: State<L::File>,
    /// The recording whose close was sent and not yet accepted.
    closing: Option<CompositeId>,
    /// The next pause after a full disk, unless the disk took a recording as long as the
    /// last pause since.
    disk_full_backoff: Duration,
    /// The last pause after a full disk.
    last_pause: Duration,
    /// This writer's mirror of the syncer's open budget for the stream.
    opens: OpenBudget,
}

enum State<F> {
    /// No recording is growing; the next frame opens one, continuing `run` if it is `Some`.
    Idle {
        run: Option<RunTail>,
    },
    Open(Box<Recording<F>>),
    /// The growing recording was given up (see the module docs, "Failures"); only the
    /// syncer's salvage can end it, when the connection ends.
    Abandoned(CompositeId),
    /// The disk was full: frames are dropped until the pause ends (see the module docs).
    Paused(Pause),
}

/// A pause after a full disk.
#[derive(Clone, Copy, Debug)]
struct Pause {
    /// Local time of the frame that found the disk full.
    since: Time,
    /// The first key frame at or after this local time ends the pause.
    resume_at: Time,
    dropped_frames: u64,
}

/// Where the next recording of a run goes.
#[derive(Clone, Copy, Debug)]
struct RunTail {
    next_run_offset: i32,
    /// The previous recording's end: the next one's start.
    start: Time,
}

/// The growing recording.
struct Recording<F> {
    id: CompositeId,
    file: F,
    run_offset: i32,
    sample_entry_id: i32,
    /// The start the run fixes (the previous recording's end), or `None` for a run's first
    /// recording, which starts at its local start.
    run_start: Option<Time>,
    /// Media duration from which the next key frame rotates, 90 kHz.
    rotate_at_90k: i64,
    /// pts of the first sample, on the source's timeline.
    first_pts_90k: i64,
    /// pts of the last sample written, on the source's timeline.
    last_pts_90k: i64,
    samples: u32,
    bytes: u64,
    /// File offset through which samples were reported.
    reported_bytes: u64,
    /// Minimum over the samples of local time minus the media duration before the sample.
    local_start: Time,
    /// Samples written but not yet reported, with pts relative to `first_pts_90k`.
    unreported: Vec<SampleReport>,
    /// Local time of the frame at the last progress report (or of the first frame).
    last_report_local: Time,
    hasher: blake3::Hasher,
}

/// What a frame does to the growing recording.
enum Step {
    Append,
    /// Close first: with the frame's pts as the next pts (the run continues), or with a
    /// trailing zero (the run ends).
    Close {
        next_pts_90k: Option<i64>,
        reason: Option<&'static str>,
    },
}

impl<F> Recording<F> {
    /// Media duration through the last sample written, counting that sample as 0.
    fn media_90k(&self) -> i64 {
        self.last_pts_90k - self.first_pts_90k
    }

    /// The time model for the samples through a media duration of `media_90k`.
    fn times(&self, media_90k: i64) -> RecordingTimes {
        assert!(
            (0..=MEDIA_DURATION_CAP_90K).contains(&media_90k),
            "recording {} media duration {media_90k} outside 0..={MEDIA_DURATION_CAP_90K}",
            self.id
        );
        let start = self.run_start.unwrap_or(self.local_start);
        let delta = self.local_start - start;
        let limit = media_90k / 2000;
        let wall = media_90k + delta.0.clamp(-limit, limit);
        RecordingTimes {
            start,
            wall_duration_90k: i32::try_from(wall).expect("at most MAX_WALL_DURATION_90K"),
            local_time_delta_90k: delta.0,
        }
    }

    /// Checks `frame` against the recording and decides whether to close first; a rotation
    /// only if `may_rotate` (the open budget allows the next recording's open). A close before
    /// [`MIN_RECORDING_DURATION_90K`] of media ends the run (see the module docs, "Rotation").
    fn next_step(
        &self,
        frame: &Frame,
        entry_id: i32,
        may_rotate: bool,
    ) -> Result<Step, WriterError> {
        let (id, prev_pts_90k, pts_90k) = (self.id, self.last_pts_90k, frame.pts_90k);
        let duration_90k = match pts_90k.checked_sub(prev_pts_90k) {
            Some(d) if d <= 0 => {
                return Err(WriterError::PtsNotIncreasing {
                    id,
                    prev_pts_90k,
                    pts_90k,
                });
            }
            Some(d) if d <= i64::from(i32::MAX) => d,
            _ => {
                return Err(WriterError::PtsJump {
                    id,
                    prev_pts_90k,
                    pts_90k,
                });
            }
        };
        if duration_90k < MIN_SAMPLE_DURATION_90K {
            return Err(WriterError::SampleTooShort {
                id,
                pts_90k,
                duration_90k,
            });
        }
        let entry_changed = entry_id != self.sample_entry_id;
        if entry_changed && !frame.is_key {
            return Err(WriterError::SampleEntryChangeNotOnKeyFrame { id, pts_90k });
        }
        let media_90k = self.media_90k() + duration_90k;
        // Only a recording at least this long may continue its run (rotation targets are).
        let next = (media_90k >= MIN_RECORDING_DURATION_90K).then_some(pts_90k);
        Ok(if media_90k > MEDIA_DURATION_CAP_90K {
            Step::Close {
                next_pts_90k: None,
                reason: Some(end_reason::MAX_DURATION),
            }
        } else if entry_changed {
            Step::Close {
                next_pts_90k: next,
                reason: Some(end_reason::SAMPLE_ENTRY_CHANGE),
            }
        } else if frame.is_key && media_90k >= self.rotate_at_90k && may_rotate {
            Step::Close {
                next_pts_90k: next,
                reason: None,
            }
        } else if self.samples >= MAX_SAMPLES_PER_RECORDING
            || self.bytes + frame.data.len() as u64 > MAX_RECORDING_BYTES
        {
            Step::Close {
                next_pts_90k: next,
                reason: Some(end_reason::SIZE_LIMIT),
            }
        } else {
            Step::Append
        })
    }
}

impl<L: SyncerLink> Writer<L> {
    /// A writer for one connection's stream. `clock` paces write retries; `stop` (set on
    /// shutdown) ends them.
    pub fn new(
        link: L,
        config: WriterConfig,
        clock: Arc<dyn Clock>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, WriterError> {
        if !(1..=MAX_ROTATE_SEC).contains(&config.rotate_sec) {
            return Err(WriterError::BadRotateInterval {
                rotate_sec: config.rotate_sec,
            });
        }
        let rotate_90k = i64::from(config.rotate_sec) * TIME_UNITS_PER_SEC;
        let first_rotate_90k = first_rotate_90k(config.stream_id, rotate_90k);
        assert!(first_rotate_90k >= MIN_RECORDING_DURATION_90K);
        Ok(Writer {
            link,
            clock,
            stop,
            rotate_90k,
            first_rotate_90k,
            accept_timeout: config.accept_timeout,
            entries: Vec::new(),
            state: State::Idle { run: None },
            closing: None,
            disk_full_backoff: DISK_FULL_RETRY_MIN,
            last_pause: Duration(0),
            opens: config.open_budget,
        })
    }

    /// The syncer link (e.g. for its counters).
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The growing recording, if any.
    pub fn growing(&self) -> Option<CompositeId> {
        match &self.state {
            State::Open(r) => Some(r.id),
            State::Idle { .. } | State::Abandoned(_) | State::Paused(_) => None,
        }
    }

    /// Writes one frame: closes the growing recording first if the frame calls for it (see the
    /// module docs), opens one if none is growing, writes the bytes, and reports progress
    /// when due. On a refused frame ([`WriterError::is_frame_refused`]) nothing changed.
    pub fn write(&mut self, frame: &Frame) -> Result<(), WriterError> {
        if let State::Abandoned(id) = self.state {
            return Err(WriterError::Abandoned { id });
        }
        let bytes = frame.data.len();
        if bytes == 0 || bytes > h264::MAX_FRAME_BYTES {
            return Err(WriterError::BadSampleSize {
                pts_90k: frame.pts_90k,
                bytes,
            });
        }
        if !self.resume(frame) {
            return Ok(());
        }
        let entry_id = self.sample_entry_id(&frame.sample_entry)?;
        let may_rotate = self.opens.allows(self.clock.monotonic());
        if let State::Open(r) = &self.state
            && let Step::Close {
                next_pts_90k,
                reason,
            } = r.next_step(frame, entry_id, may_rotate)?
        {
            if reason.is_some() {
                info!(recording = %r.id, pts_90k = frame.pts_90k, reason, "closing early");
            }
            self.close_recording(next_pts_90k, reason)?;
        }
        if let State::Idle { run } = self.state {
            self.open(run, entry_id, frame)?;
        }
        match self.append(frame) {
            Err(WriterError::DiskFull { id, source }) => self.pause(
                frame.local_time,
                &format!("recording {id}: write: {source}"),
            ),
            other => other,
        }
    }

    /// Whether `frame` may be written: false while a pause lasts (the frame is dropped); at
    /// its first key frame past the pause's end with the open budget allowing an open (a
    /// refused open pauses again, longer), the pause ends.
    fn resume(&mut self, frame: &Frame) -> bool {
        let State::Paused(p) = &mut self.state else {
            return true;
        };
        if frame.local_time < p.resume_at
            || !frame.is_key
            || !self.opens.allows(self.clock.monotonic())
        {
            p.dropped_frames += 1;
            return false;
        }
        info!(
            dropped_frames = p.dropped_frames,
            paused_90k = (frame.local_time - p.since).0,
            "recording again after the disk was full"
        );
        self.state = State::Idle { run: None };
        true
    }

    /// The disk is full (`what` failed): gives up the growing recording at its last whole
    /// sample and pauses (see the module docs, "Failures").
    fn pause(&mut self, now: Time, what: &str) -> Result<(), WriterError> {
        if matches!(&self.state, State::Open(r) if r.media_90k() >= self.last_pause.0) {
            self.disk_full_backoff = DISK_FULL_RETRY_MIN; // the disk took data again
        }
        let pause = self.disk_full_backoff;
        self.disk_full_backoff = Duration((pause.0 * 2).min(DISK_FULL_RETRY_MAX.0));
        self.last_pause = pause;
        warn!(
            error = what,
            pause_90k = pause.0,
            "recording paused (the disk is full, or the syncer refused an open): the \
             recording ends at its last whole sample, and frames are dropped until the pause \
             ends at a key frame"
        );
        if let State::Open(r) = &self.state {
            let id = r.id;
            if !r.unreported.is_empty() {
                self.report()?;
            }
            self.wait_accepted(self.accept_timeout)?;
            if let Err(e) = self.link.abandon(id, end_reason::DISK_FULL) {
                return Err(self.link_failed(e));
            }
            self.closing = Some(id);
        }
        self.state = State::Paused(Pause {
            since: now,
            resume_at: now + pause,
            dropped_frames: 0,
        });
        Ok(())
    }

    /// Closes the growing recording, if any, with a trailing zero (the next pts is unknown)
    /// and end reason `reason`; the run ends. Waits first for the previous close to be
    /// accepted (up to the configured timeout), but not for this one: see
    /// [`Writer::wait_accepted`].
    pub fn close(&mut self, reason: &str) -> Result<(), WriterError> {
        match self.state {
            State::Open(_) => self.close_recording(None, Some(reason)),
            State::Idle { .. } | State::Abandoned(_) | State::Paused(_) => Ok(()),
        }
    }

    /// Waits up to `timeout` until the syncer has accepted the outstanding close, if any.
    pub fn wait_accepted(&mut self, timeout: std::time::Duration) -> Result<(), WriterError> {
        let Some(id) = self.closing else {
            return Ok(());
        };
        if let Err(e) = self.link.wait_accepted(id, timeout) {
            return Err(self.link_failed(e));
        }
        self.closing = None;
        debug!(recording = %id, "close accepted");
        Ok(())
    }

    /// The id of `entry` on this connection, adding it first if it is new.
    fn sample_entry_id(&mut self, entry: &Arc<SampleEntry>) -> Result<i32, WriterError> {
        if let Some((_, id)) = self
            .entries
            .iter()
            .find(|(e, _)| Arc::ptr_eq(e, entry) || **e == **entry)
        {
            return Ok(*id);
        }
        if self.entries.len() >= MAX_SAMPLE_ENTRIES_PER_STREAM {
            return Err(WriterError::TooManySampleEntries);
        }
        let id = match self.link.add_sample_entry(entry) {
            Ok(id) => id,
            Err(e) => return Err(self.link_failed(e)),
        };
        info!(
            sample_entry = id,
            codec = %entry.rfc6381_codec,
            width = entry.width,
            height = entry.height,
            "sample entry added"
        );
        self.entries.push((entry.clone(), id));
        Ok(id)
    }

    /// Opens a recording whose first sample will be `frame`.
    fn open(
        &mut self,
        run: Option<RunTail>,
        sample_entry_id: i32,
        frame: &Frame,
    ) -> Result<(), WriterError> {
        let (run_offset, run_start) = match run {
            Some(t) => (t.next_run_offset, Some(t.start)),
            None => (0, None),
        };
        // Spent even when the mirror says the budget is gone (an entry change, or a fresh
        // writer after a restart): the syncer's budget decides.
        self.opens.try_spend(self.clock.monotonic());
        let (id, file) = match self.link.open(run_offset, sample_entry_id) {
            Ok(Opened::Recording(id, file)) => (id, file),
            Ok(Opened::Refused { message }) => return self.pause(frame.local_time, &message),
            Err(e) => return Err(self.link_failed(e)),
        };
        info!(recording = %id, run_offset, sample_entry = sample_entry_id, "opened");
        self.state = State::Open(Box::new(Recording {
            id,
            file,
            run_offset,
            sample_entry_id,
            run_start,
            rotate_at_90k: if run_offset == 0 {
                self.first_rotate_90k
            } else {
                self.rotate_90k
            },
            first_pts_90k: frame.pts_90k,
            last_pts_90k: frame.pts_90k,
            samples: 0,
            bytes: 0,
            reported_bytes: 0,
            local_start: frame.local_time,
            unreported: Vec::new(),
            last_report_local: frame.local_time,
            hasher: blake3::Hasher::new(),
        }));
        Ok(())
    }

    /// Writes `frame` into the growing recording (checked by `next_step`, or its first), then
    /// indexes it and reports progress if due.
    fn append(&mut self, frame: &Frame) -> Result<(), WriterError> {
        if let State::Paused(_) = self.state {
            return Ok(()); // The open found the disk full; the frame is dropped.
        }
        self.wait_window(frame.data.len() as u64)?;
        let State::Open(r) = &mut self.state else {
            unreachable!("append without a growing recording");
        };
        let id = r.id;
        match write_all(&mut r.file, &frame.data, &*self.clock, &self.stop, id) {
            Ok(()) => {}
            Err(e @ WriterError::DiskFull { .. }) => return Err(e),
            Err(e) => {
                warn!(recording = %id, error = %e, "abandoning the recording to the syncer's salvage");
                self.state = State::Abandoned(id);
                return Err(e);
            }
        }
        r.hasher.update(&frame.data);
        let media_90k = frame.pts_90k - r.first_pts_90k;
        r.local_start = r.local_start.min(frame.local_time - Duration(media_90k));
        r.unreported.push(SampleReport {
            pts_90k: media_90k,
            bytes: u32::try_from(frame.data.len()).expect("at most MAX_FRAME_BYTES"),
            is_key: frame.is_key,
        });
        r.samples += 1;
        r.bytes += frame.data.len() as u64;
        r.last_pts_90k = frame.pts_90k;
        let since_report = frame.local_time - r.last_report_local;
        let due = frame.is_key || since_report >= PROGRESS_INTERVAL || since_report < Duration(0);
        if !due {
            return Ok(());
        }
        r.last_report_local = frame.local_time;
        self.report()
    }

    /// Makes room in the write window for `bytes` more (see the module docs): reports what is
    /// unreported if the syncer must acknowledge part of it, then waits for the syncer.
    fn wait_window(&mut self, bytes: u64) -> Result<(), WriterError> {
        let State::Open(r) = &self.state else {
            unreachable!("write without a growing recording");
        };
        let (id, needed) = (r.id, (r.bytes + bytes).saturating_sub(WRITE_WINDOW_BYTES));
        if needed == 0 {
            return Ok(());
        }
        if needed > r.reported_bytes {
            self.report()?;
        }
        debug!(recording = %id, needed, "write window full; waiting for the syncer");
        match self.link.wait_acknowledged(id, needed, self.accept_timeout) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.link_failed(e)),
        }
    }

    /// Reports the unreported samples of the growing recording.
    fn report(&mut self) -> Result<(), WriterError> {
        let State::Open(r) = &mut self.state else {
            unreachable!("report without a growing recording");
        };
        let samples = mem::take(&mut r.unreported);
        let times = r.times(r.media_90k());
        r.reported_bytes = r.bytes;
        let (id, written_bytes) = (r.id, r.bytes);
        if let Err(e) = self.link.progress(id, samples, times, written_bytes) {
            return Err(self.link_failed(e));
        }
        Ok(())
    }

    /// Closes the growing recording (see [`Step::Close`]).
    fn close_recording(
        &mut self,
        next_pts_90k: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), WriterError> {
        // One close outstanding at most: the previous one must be accepted first.
        self.wait_accepted(self.accept_timeout)?;
        let State::Open(r) = mem::replace(&mut self.state, State::Idle { run: None }) else {
            unreachable!("close without a growing recording");
        };
        let r = *r;
        let last_sample_duration_90k = next_pts_90k.map(|next| {
            i32::try_from(next - r.last_pts_90k).expect("checked against i32 by next_step")
        });
        let media_90k = r.media_90k() + i64::from(last_sample_duration_90k.unwrap_or(0));
        let times = r.times(media_90k);
        let close = Close {
            id: r.id,
            samples: r.unreported,
            last_sample_duration_90k,
            times,
            end_reason: reason.map(str::to_owned),
            writer_blake3: *r.hasher.finalize().as_bytes(),
        };
        info!(
            recording = %r.id,
            samples = r.samples,
            bytes = r.bytes,
            media_90k,
            wall_90k = times.wall_duration_90k,
            reason,
            "closing"
        );
        if let Err(e) = self.link.close(close) {
            self.state = State::Abandoned(r.id);
            return Err(self.link_failed(e));
        }
        self.closing = Some(r.id);
        let end = times.start + Duration(i64::from(times.wall_duration_90k));
        let run = match (last_sample_duration_90k, r.run_offset.checked_add(1)) {
            (Some(_), Some(next_run_offset)) => Some(RunTail {
                next_run_offset,
                start: end,
            }),
            _ => None,
        };
        self.state = State::Idle { run };
        Ok(())
    }

    /// Abandons the growing recording after a link failure and returns the error.
    fn link_failed(&mut self, e: LinkError) -> WriterError {
        if let State::Open(r) = &self.state {
            warn!(recording = %r.id, error = %e, "syncer link failed; abandoning the recording");
            self.state = State::Abandoned(r.id);
        }
        WriterError::Link(e)
    }
}

impl<L: SyncerLink> Drop for Writer<L> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = self.close(end_reason::DROP) {
            warn!(error = %e, "closing on drop failed; the syncer salvages the recording");
        }
    }
}

/// Whether a `write(2)` error may go away by itself, having written nothing.
fn is_transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || errno_in(e, &[Errno::EIO, Errno::EAGAIN])
}

/// Whether a `write(2)` error says the disk is full, which only deleting something can change.
fn is_disk_full(e: &io::Error) -> bool {
    errno_in(e, &[Errno::ENOSPC, Errno::EDQUOT])
}

fn errno_in(e: &io::Error, errnos: &[Errno]) -> bool {
    e.raw_os_error()
        .is_some_and(|n| errnos.iter().any(|&errno| errno as i32 == n))
}

/// Writes all of `data` to `file`, retrying transient errors with backoff until `stop` is set.
/// A full disk is not retried ([`WriterError::DiskFull`]); the file may then end in part of
/// `data`.
fn write_all<F: Write>(
    file: &mut F,
    mut data: &[u8],
    clock: &dyn Clock,
    stop: &AtomicBool,
    id: CompositeId,
) -> Result<(), WriterError> {
    while !data.is_empty() {
        let attempt = retry(
            clock,
            &|| stop.load(Ordering::SeqCst),
            |e: &io::Error, attempt| {
                warn!(recording = %id, error = %e, attempt, "sample file write failed; retrying");
            },
            || {
                loop {
                    // Ok(Err(_)): a permanent failure, which retrying cannot fix.
                    return match file.write(data) {
                        Ok(0) => Ok(Err(io::Error::from(io::ErrorKind::WriteZero))),
                        Ok(n) => Ok(Ok(n)),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if is_disk_full(&e) => Ok(Err(e)),
                        Err(e) if is_transient(&e) => Err(e),
                        Err(e) => Ok(Err(e)),
                    };
                }
            },
        );
        let written = match attempt {
            Ok(Ok(n)) => n,
            Ok(Err(source)) if is_disk_full(&source) => {
                return Err(WriterError::DiskFull { id, source });
            }
            Ok(Err(source)) => return Err(WriterError::Write { id, source }),
            Err(RetryStopped(source)) => return Err(WriterError::WriteAborted { id, source }),
        };
        data = data
            .get(written..)
            .expect("write(2) reports at most the bytes it was given");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
