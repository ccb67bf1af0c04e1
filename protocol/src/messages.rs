//! The messages nvr's processes exchange, as plain `serde` types.
//!
//! These types know nothing of the encoding ([`crate::codec`] turns them into frames) or of the
//! socket ([`crate::wire`] sends the frames and the descriptors that travel with some of them).
//!
//! # Conversations
//!
//! - **Ingest connection** (brokered by the syncer, fd 3 of `nvr-ingest`): the ingest sends a
//!   [`Hello`] with role [`ROLE_INGEST`]; the syncer answers with a [`HelloReply`] carrying its
//!   own version and the stream the connection is bound to. Then the ingest sends
//!   [`IngestRequest`]s. `AddSampleEntry`, `OpenRecording` and `Progress` are answered at once,
//!   in order (`Progress` by [`IngestReply::Progressed`], the write window's flow control; the
//!   ingest need not wait for it unless the window is full); `CloseRecording` is answered by
//!   [`IngestReply::Accepted`] once the recording is durable, which may come after the answers
//!   to later requests (the ingest may open the next recording meanwhile; at most one close is
//!   outstanding). The syncer pushes [`IngestReply::Committed`] whenever a flush commits
//!   recordings of the stream, and [`IngestReply::Error`] before dropping a connection that
//!   broke a rule. [`IngestReply::Opened`] is the one frame on this connection that carries a
//!   descriptor.
//! - **Admin socket** (`<data-dir>/syncer.sock`; the supervisor and the `nvr` command line): the
//!   client sends a [`Hello`] with role [`ROLE_ADMIN`], answered by [`AdminReply::Ok`]; then
//!   [`AdminRequest`]s, each answered by one [`AdminReply`]. [`AdminReply::IngestConnection`]
//!   is the one frame on this socket that carries a descriptor.
//!
//! Either side that sees a peer of another [`PROTOCOL_VERSION`] refuses it with
//! [`crate::wire::check_version`]'s error, which names both versions, and closes the connection.
//!
//! # Compatibility
//!
//! The encoding identifies fields by position and enum variants by index, so any change to
//! these types (adding, removing or reordering a field or a variant) changes the protocol and
//! must bump [`PROTOCOL_VERSION`]. [`Hello`] and [`HelloReply`] keep the version as their first
//! field in every version, so that a peer can always read the other side's version and say
//! which one it met.
//!
//! # Nothing received is trusted
//!
//! Decoding checks only the shape of a message, not its meaning: a received [`CompositeId`] may
//! name any stream or a negative recording id, and counts and sizes are whatever the peer sent.
//! The syncer compares every id with the ones the connection holds and checks every value
//! against its limits before it acts on it.

use serde::{Deserialize, Serialize};

use crate::id::CompositeId;
use crate::time::Time;

/// Longest end reason an ingest may give a recording, in bytes (it is stored in every row).
pub const MAX_END_REASON_BYTES: usize = 256;
/// Most recordings one [`AdminRequest::Recordings`] page may hold: a page of the longest
/// summaries (a 64-byte camera name, a [`MAX_END_REASON_BYTES`] end reason) stays well within
/// one frame ([`crate::codec::MAX_FRAME_BYTES`]).
pub const MAX_RECORDINGS_PER_PAGE: u32 = 2000;

/// The version of the protocol these types define. Both ends of a connection must speak the
/// same one: processes of one installation are always started from the same build, so a
/// mismatch means a stale process (e.g. an ingest left running across an upgrade).
///
/// 2: `IngestReply::CloseFailed`; `IngestReply::Error` always drops the connection; recordings
/// are listed in pages. 3: the write window (`Progress::written_bytes`, `Progressed`).
/// 4: a full disk costs a recording's unwritten tail, not the connection
/// (`IngestRequest::AbandonRecording`, `IngestReply::OpenRefused`).
/// 5: `AdminRequest::DroppedIngests`, so the supervisor ends an ingest the syncer dropped.
/// 6: `AdminRequest::IngestHolds`, the files ingests hold, for an unprivileged syncer.
pub const PROTOCOL_VERSION: u32 = 6;

/// [`Hello::role`] of an ingest on its brokered connection.
pub const ROLE_INGEST: &str = "ingest";

/// [`Hello::role`] of the supervisor or the `nvr` command line on the admin socket.
pub const ROLE_ADMIN: &str = "admin";

/// One sample the ingest has written, reported only after `write(2)` returned for its bytes
/// (DESIGN.md step 2): the reported samples are exactly what a salvage may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleReport {
    /// Presentation time in 90 kHz ticks, relative to the recording's first sample: the first
    /// sample's is 0 and each later one is strictly greater. A sample's duration is the next
    /// sample's `pts_90k` minus its own.
    pub pts_90k: i64,
    /// Size of the sample in the sample file, in bytes; `> 0`.
    pub bytes: u32,
    /// Whether the sample is a key frame (decodable without the samples before it).
    pub is_key: bool,
}

/// The ingest's time model for the samples reported so far; each report replaces the previous
/// one, so a salvage uses the latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingTimes {
    /// Start of the recording, 90 kHz ticks since the Unix epoch. Within a run, exactly the
    /// previous recording's end.
    pub start: Time,
    /// Wall duration in 90 kHz ticks: the media duration corrected by at most 500 ppm toward
    /// the local clock.
    pub wall_duration_90k: i32,
    /// The local clock's start minus `start`, in 90 kHz ticks.
    pub local_time_delta_90k: i64,
}

/// First frame from the client on every connection. Its layout never changes (see the module
/// docs, "Compatibility").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// [`ROLE_INGEST`] or [`ROLE_ADMIN`]; the syncer refuses a role that does not match the
    /// socket it arrived on.
    pub role: String,
}

impl Hello {
    /// A hello of this build's [`PROTOCOL_VERSION`] in `role`.
    pub fn new(role: &str) -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            role: role.to_owned(),
        }
    }
}

/// The syncer's answer to an ingest's [`Hello`]: its version, and the stream the connection is
/// bound to. Sent whatever the ingest's version, so that both sides can name both versions;
/// the syncer closes the connection right after it if the versions differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The syncer's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Id of the stream this connection records.
    pub stream_id: i32,
    /// Name of that stream (for the ingest's logs and errors).
    pub stream_name: String,
    /// Rotate to a new recording at the first key frame past this media duration, in seconds.
    pub rotate_sec: u32,
}

/// What an ingest may ask the syncer: the whole table (privilege-separation monitor style).
///
/// No request names a stream: an ingest's stream is its connection, bound by the syncer when it
/// brokered it, so an ingest cannot reach another stream however it forges a request. The
/// syncer checks every request against the connection's state (e.g. at most one growing
/// recording) and re-derives or verifies every id, size and offset it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestRequest {
    /// Looks up, or adds, a video sample entry of the stream; answered by
    /// [`IngestReply::SampleEntry`]. Asking again for an identical entry returns the same id.
    AddSampleEntry {
        /// Coded width in pixels.
        width: u16,
        /// Coded height in pixels.
        height: u16,
        /// RFC 6381 codec string, e.g. `avc1.64001f`.
        rfc6381_codec: String,
        /// The ISO/IEC 14496-12 sample entry box (e.g. `avc1` with its `avcC`), whole.
        data: Vec<u8>,
    },

    /// Opens the stream's next recording; answered by [`IngestReply::Opened`] with the
    /// write-only descriptor of its new, empty sample file.
    OpenRecording {
        /// Position within the run: 0 for the first recording of a run, then one more each.
        run_offset: i32,
        /// Id of the video sample entry (from [`IngestReply::SampleEntry`]) of every sample of
        /// the recording.
        sample_entry_id: i32,
    },

    /// Reports samples written since the previous report of the growing recording `id`; not
    /// answered. Sent at least at every key frame and every second.
    Progress {
        /// The growing recording, as [`IngestReply::Opened`] named it.
        id: CompositeId,
        /// The newly written samples, in order.
        samples: Vec<SampleReport>,
        /// The time model including these samples.
        times: RecordingTimes,
        /// The file offset this report describes: the bytes of every sample reported so far
        /// for `id`, these included. The syncer checks that it agrees with the samples and
        /// compares the file against the window it acknowledged, not against the report, which
        /// may have waited in the socket while the writer wrote on.
        written_bytes: u64,
    },

    /// Closes the growing recording `id`; answered by [`IngestReply::Accepted`] once the
    /// syncer has verified, fsynced and hashed it. Durable only when
    /// [`IngestReply::Committed`] names it.
    CloseRecording {
        /// The growing recording, as [`IngestReply::Opened`] named it.
        id: CompositeId,
        /// The samples written since the last [`IngestRequest::Progress`], in order.
        samples: Vec<SampleReport>,
        /// Duration of the last sample in 90 kHz ticks, or `None` if the next pts is unknown
        /// (the recording is then flagged "trailing zero" and its last duration stored as 0).
        last_sample_duration_90k: Option<i32>,
        /// The final time model.
        times: RecordingTimes,
        /// Why the recording ended (e.g. `drop` when the writer was dropped), shown by
        /// `nvr recordings`; `None` if there is nothing to say. At most
        /// [`MAX_END_REASON_BYTES`], one line without control characters.
        end_reason: Option<String>,
        /// blake3 of every byte the ingest wrote, a cross-check: the syncer hashes the file
        /// itself and rejects the recording on a mismatch.
        writer_blake3: [u8; 32],
    },

    /// Gives up the growing recording `id` because its file cannot take the next sample (the
    /// disk is full): the syncer salvages it now, as if the connection had ended, keeping the
    /// samples reported so far and cutting whatever part of a sample follows them; answered by
    /// [`IngestReply::Accepted`] (also when nothing was reported and the file is discarded).
    /// Counts as the outstanding close. The connection goes on.
    AbandonRecording {
        /// The growing recording, as [`IngestReply::Opened`] named it.
        id: CompositeId,
        /// Why, as for [`IngestRequest::CloseRecording::end_reason`].
        end_reason: String,
    },
}

/// What the syncer sends an ingest: one answer per [`IngestRequest`] that has one (see the
/// module docs for their order), plus [`IngestReply::Committed`] pushed at any time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestReply {
    /// Answer to [`IngestRequest::AddSampleEntry`].
    SampleEntry {
        /// The sample entry's id, for [`IngestRequest::OpenRecording`].
        id: i32,
    },

    /// Answer to [`IngestRequest::OpenRecording`]. The frame carries the recording's
    /// write-only descriptor via `SCM_RIGHTS` in the same `sendmsg`: a separate open of the
    /// file, not a dup of the syncer's, so the two do not share a file offset or fsync errors.
    Opened {
        /// The new recording; the stream's next id, never reused.
        id: CompositeId,
    },

    /// Answer to [`IngestRequest::Progress`]: the syncer has recorded the samples of `id`
    /// through `written_bytes`. The writer may then let the file grow to `written_bytes +`
    /// [`crate::limits::WRITE_WINDOW_BYTES`] and no further until a later answer (flow
    /// control: however long the syncer stalls, an honest writer stays within the window it
    /// was given, so a file past it is a hostile or broken writer, never a slow syncer).
    Progressed {
        /// The growing recording the report was about.
        id: CompositeId,
        /// The report's [`IngestRequest::Progress::written_bytes`].
        written_bytes: u64,
    },

    /// Answer to [`IngestRequest::CloseRecording`]: the recording is synced and will be
    /// committed by a later flush.
    Accepted {
        /// The closed recording.
        id: CompositeId,
    },

    /// Pushed after a flush's SQLite COMMIT returned (DESIGN.md step 6): these recordings of
    /// the stream are durable. Only this means durable.
    Committed {
        /// The recordings the flush committed, in id order.
        ids: Vec<CompositeId>,
    },

    /// Pushed instead of [`IngestReply::Accepted`] when a close could not be made durable
    /// (its file's fsync failed, and Linux has dropped the data): the recording is discarded,
    /// never committed (end reason `io-error`). Not the ingest's fault: the connection goes on,
    /// and so does the recording that is growing meanwhile.
    CloseFailed {
        /// The recording whose close failed.
        id: CompositeId,
        /// What failed, naming the file.
        message: String,
    },

    /// The request was refused, and the syncer closes the connection after this reply: the
    /// ingest exits and the supervisor restarts it with a fresh connection (its growing
    /// recording is salvaged to what it reported).
    Error {
        /// What was wrong, naming the object (recording id, limit) and what was expected.
        message: String,
    },

    /// Answer to [`IngestRequest::OpenRecording`] when the sample dir cannot take a new file
    /// now (`ENOSPC`, `EDQUOT`): nothing is open, and no fault of the ingest's, so the
    /// connection goes on. The ingest tries again later, after a backoff.
    OpenRefused {
        /// What failed, naming the file and the error.
        message: String,
    },
}

/// What the supervisor or the `nvr` command line may ask the syncer on the admin socket. Only
/// the syncer's own uid and root may connect (checked with `SO_PEERCRED`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Asks for a fresh connection bound to the stream `stream_name`, to hand to its ingest
    /// as fd 3. Closes the stream's previous connection first (explicit takeover).
    ConnectIngest {
        /// The stream (camera) name.
        stream_name: String,
    },
    /// Asks for [`AdminReply::Status`].
    Status,
    /// Asks for one page of the committed recordings, as [`AdminReply::Recordings`]: up to
    /// `limit` of them, in id order, after `after`. A page shorter than the limit is the last.
    /// (A month of one-minute recordings is over 40,000 rows: more than one frame may hold.)
    Recordings {
        /// Only this stream's, or every stream's if `None`.
        stream_name: Option<String>,
        /// Only recordings with a greater id (the last of the previous page), or from the
        /// first if `None`.
        after: Option<CompositeId>,
        /// Most recordings in the page, `1..=MAX_RECORDINGS_PER_PAGE`.
        limit: u32,
    },
    /// Asks the syncer to shut down as on SIGTERM: stop taking opens, let ingests close, flush,
    /// exit 0. Answered by [`AdminReply::Ok`] before the shutdown starts.
    Shutdown,
    /// Asks for every camera and its settings, as [`AdminReply::Cameras`] in id order.
    ListCameras,
    /// Adds a camera; answered by [`AdminReply::Cameras`] with the new camera alone. Refused if
    /// the name is taken or the name or settings are invalid.
    AddCamera {
        /// The new camera's name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with `-`.
        name: String,
        /// Its settings.
        config: CameraConfig,
    },
    /// Changes settings of the camera `name`; `None` keeps a setting as it is. Answered by
    /// [`AdminReply::Cameras`] with the changed camera alone. Lowering `retain_bytes` deletes
    /// the excess recordings before the answer.
    SetCamera {
        /// The camera to change.
        name: String,
        /// New source (`file:`, `synthetic:`, `rtsp://`), if any.
        source: Option<String>,
        /// New quota in bytes, if any.
        retain_bytes: Option<i64>,
        /// New longest delay from a recording's start to its commit, in seconds, if any.
        flush_if_sec: Option<u32>,
        /// New rotation interval of media time, in seconds, if any.
        rotate_sec: Option<u32>,
    },
    /// Removes the camera `name`, answered by [`AdminReply::Ok`] once its row is gone and its
    /// recordings' files are unlinked. A live ingest connection of the camera is dropped first
    /// (its recording salvaged) when `delete_recordings` is set.
    RemoveCamera {
        /// The camera to remove.
        name: String,
        /// Also delete its recordings; without it, a camera that has any (or one being
        /// written) is refused.
        delete_recordings: bool,
    },
    /// Asks for the ingests the syncer dropped for breaking a rule since `after` (a
    /// [`DroppedIngest::seq`]; 0 for every one it still keeps, the latest
    /// [`MAX_DROPPED_INGESTS_KEPT`]), as [`AdminReply::DroppedIngests`]. The supervisor ends
    /// each such process: a dropped connection does not take back the descriptors it holds.
    DroppedIngests {
        /// The last sequence number the client has seen.
        after: u64,
    },
    /// Tells an unprivileged syncer (`nvr-syncer --holds-relayed`), which may not list an
    /// ingest's descriptors, which files each ingest process holds open, as listed by the
    /// supervisor (root) just before; answered by [`AdminReply::Ok`]. The syncer then looks at
    /// every file it handed the process and forgets those it settled that are not held.
    IngestHolds {
        /// One listing per ingest process.
        holds: Vec<IngestHolds>,
    },
}

/// The files one ingest process holds open, by device and inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestHolds {
    /// The ingest process.
    pub pid: i32,
    /// Its open files, or `None` if the listing was incomplete (a descriptor could not be
    /// followed: the table changed while it was read).
    pub files: Option<Vec<FileKey>>,
}

/// A file, by device and inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// Most [`DroppedIngest`]s a syncer keeps (the latest).
pub const MAX_DROPPED_INGESTS_KEPT: usize = 64;

/// An ingest connection the syncer dropped because the ingest broke a rule (a refused
/// request, a file grown past what it may hold), or an ingest process found writing after its
/// connection was gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedIngest {
    /// Numbered from 1 in the order they happened, within one syncer process.
    pub seq: u64,
    /// The camera (stream) name.
    pub stream_name: String,
    /// The ingest process, as the kernel recorded it when it said hello; `None` if unknown.
    pub pid: Option<i32>,
    /// What it did.
    pub reason: String,
}

/// The syncer's answer to one [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Answer to [`AdminRequest::ConnectIngest`]. The frame carries one descriptor via
    /// `SCM_RIGHTS`: the client's end of a fresh socketpair whose other end the syncer has
    /// bound to the stream.
    IngestConnection,
    /// Answer to [`AdminRequest::Status`].
    Status(StatusReport),
    /// Answer to [`AdminRequest::Recordings`]: one page, in id order.
    Recordings(Vec<RecordingSummary>),
    /// Answer to a [`Hello`] and to [`AdminRequest::Shutdown`].
    Ok,
    /// The request was refused.
    Error {
        /// What was wrong, naming the object (stream name, version) and what was expected.
        message: String,
    },
    /// Answer to [`AdminRequest::ListCameras`] (every camera, in id order), and to
    /// [`AdminRequest::AddCamera`] and [`AdminRequest::SetCamera`] (the one camera, as it is
    /// now).
    Cameras(Vec<CameraInfo>),
    /// Answer to [`AdminRequest::DroppedIngests`], in sequence order.
    DroppedIngests(Vec<DroppedIngest>),
}

/// A camera's settings, as a user configures them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraConfig {
    /// Where its ingest reads from: `file:PATH[?...]`, `synthetic:[?...]` or `rtsp://HOST...`.
    pub source: String,
    /// Quota in bytes: retention keeps the camera's committed recordings, each rounded up to
    /// 4 KiB, at or below it by deleting the oldest.
    pub retain_bytes: i64,
    /// Longest delay from a recording's start to its commit, in seconds (`0..=3600`).
    pub flush_if_sec: u32,
    /// Rotate to a new recording at the first key frame past this much media time, in seconds
    /// (`1..=270`).
    pub rotate_sec: u32,
}

/// One camera in [`AdminReply::Cameras`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraInfo {
    /// The camera's stream id (the high 32 bits of its recordings' ids); never reused.
    pub id: i32,
    /// The camera's name.
    pub name: String,
    /// Its settings.
    pub config: CameraConfig,
}

/// The syncer's view of every stream, as committed (what `nvr status` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// One entry per configured stream, in id order.
    pub streams: Vec<StreamStatus>,
    /// Garbage files not yet unlinked.
    pub garbage: GarbageStatus,
}

/// Garbage files in a [`StatusReport`]: files of deleted or discarded recordings that are not
/// unlinked yet. A file whose unlink fails stays garbage and is retried with backoff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageStatus {
    /// Garbage files that may still exist.
    pub files: u64,
    /// Of those, files whose last unlink failed.
    pub failing_unlinks: u64,
    /// The most recent unlink failure, naming its file, if any is failing.
    pub newest_error: Option<String>,
}

/// One stream in a [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// The stream's id.
    pub id: i32,
    /// The stream's (camera's) name.
    pub name: String,
    /// Number of committed recordings the stream has now (after retention deletions).
    pub committed_recordings: u64,
    /// Bytes of those recordings' sample files, each rounded up to 4 KiB as quota accounting
    /// counts them.
    pub committed_bytes: i64,
    /// The stream's quota in bytes: retention keeps `committed_bytes` at or below it.
    pub retain_bytes: i64,
    /// The newest committed recording, if any.
    pub newest_committed: Option<CompositeId>,
    /// The recording the stream's ingest is writing now, if any.
    pub growing: Option<CompositeId>,
    /// Start of `newest_committed`, 90 kHz ticks since the Unix epoch.
    pub newest_committed_start: Option<Time>,
}

/// One committed recording (what `nvr recordings` lists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSummary {
    /// The recording's id.
    pub id: CompositeId,
    /// Name of its stream.
    pub stream_name: String,
    /// Start, 90 kHz ticks since the Unix epoch.
    pub start: Time,
    /// Wall duration in 90 kHz ticks: media duration corrected by at most 500 ppm toward the
    /// local clock.
    pub wall_duration_90k: i32,
    /// Media duration (the sum of the sample durations) in 90 kHz ticks.
    pub media_duration_90k: i32,
    /// Size of the sample file in bytes.
    pub sample_file_bytes: i64,
    /// Number of samples.
    pub video_samples: i32,
    /// Number of key-frame samples.
    pub video_sync_samples: i32,
    /// Position within its run (0 = first recording of a run).
    pub run_offset: i32,
    /// The recording's flag bits as stored (bit 0: trailing zero, the last sample's duration
    /// is unknown and counted as 0).
    pub flags: i32,
    /// Why the recording ended, if recorded.
    pub end_reason: Option<String>,
    /// blake3 of the sample file, as the syncer computed it from its own descriptor.
    pub blake3: [u8; 32],
}
