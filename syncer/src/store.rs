//! The syncer's state machine: recordings from open to committed to deleted.
//!
//! [`Syncer`] owns the database and the sample dir (through the [`Dir`] seam) and tracks every
//! recording id it has handed out until that id is committed as a recording or as garbage.
//! DESIGN.md's "one recording's life" maps onto its methods:
//!
//! | step | method |
//! |---|---|
//! | 1. open | [`Syncer::open_recording`] |
//! | 2. progress | [`Syncer::progress`] |
//! | 4-5. close, verify, fsync, hash | [`Syncer::begin_close`], [`PendingSave::run`], [`Syncer::finish_save`] |
//! | writer gone: salvage or discard | [`Syncer::begin_salvage`], then as above |
//! | 6. flush | [`Syncer::flush`] (or [`Syncer::poll`] when planned) |
//! | 7. unlink garbage | [`Syncer::collect_garbage`] |
//!
//! The disk work of a save ([`PendingSave::run`]) needs no `&mut Syncer`, so a daemon can run it
//! on a per-stream worker while other streams proceed. [`Syncer::close_recording`] and
//! [`Syncer::abandon_recording`] do all three steps in line, for tests and simple callers.
//!
//! Invariants kept here (numbers from DESIGN.md):
//! - (4) A stream's ids only grow. `next_recording_id` (committed) advances over a contiguous
//!   prefix of resolved ids (synced or discarded) in the same transaction that inserts them or
//!   records them as garbage, so after any crash every id at or past it is abandoned, and every
//!   id below it is a recording, garbage, or already gone.
//! - (6) After each flush a stream's committed bytes, each rounded up to 4 KiB, fit its quota;
//!   usage is recomputed from the lists of recordings (and, in debug builds, from the database's
//!   rows) at every flush, never kept as a running counter that could drift.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use protocol::clock::Clock;
use protocol::{CompositeId, Duration, TIME_UNITS_PER_SEC, Time};
use tracing::{debug, error, info, warn};

use crate::db::{
    Database, FLAG_TRAILING_ZERO, FlushBatch, RecordingRow, RecordingToInsert, StreamConfig,
    StreamRow, validate_camera_name,
};
use crate::durability::{PendingSave, SaveFailure, SaveMode};
use crate::error::Error;
use crate::flush_plan::FlushPlan;
use crate::fs::{Dir, DirFile, OpenMode};
use crate::garbage::Garbage;
use crate::layout::sample_file_name;
use crate::limits;
use crate::meta::Open;
use crate::reported::ReportedSamples;
use crate::reserve;
use crate::retention::{oldest_to_delete, round_up};
use crate::throttle::Throttle;
use protocol::messages::{RecordingTimes, SampleReport};

/// Bound on the recordings waiting for deletion because the database is full, as a multiple of
/// the inserts the failing flush holds (see [`Syncer::shed_oldest_for_db`]).
const SHED_FOR_DB_FACTOR: usize = 4;

/// Most uncommitted recordings [`Syncer::discard_largest_synced`] gives up between two
/// commits that insert recordings: one usually frees megabytes for a commit that needs kilobytes, and a
/// database full for another reason (its page cap) must not take every recording in flight.
const MAX_DISCARDS_FOR_ROOM: usize = 2;

/// Tunables of a [`Syncer`].
#[derive(Clone, Debug)]
pub struct SyncerOptions {
    /// Size of the reserve file released on ENOSPC / `SQLITE_FULL` so that the transaction
    /// which frees space can commit; 0 disables it.
    pub reserve_bytes: u64,
    /// Delay before retrying a failed flush.
    pub flush_retry_delay: Duration,
    /// When the sample dir's file system has less than this free, the oldest recordings are
    /// deleted whatever the quotas say (they add up to more than the disk); 0 disables it.
    pub min_free_bytes: u64,
    /// Likewise for inodes (`statvfs` `f_favail`): below it the stream with the most
    /// recordings gives up its oldest, and below a quarter of it opens are refused, so that
    /// many tiny recordings cannot leave an honest camera unable to create its next file while
    /// bytes are free; 0 disables it.
    pub min_free_inodes: u64,
    /// Each stream's open budget when the syncer starts or the stream is added; by default
    /// `protocol::limits`' (the writer's mirror of it keeps honest writers within it).
    pub open_budget: limits::OpenBudget,
}

impl SyncerOptions {
    /// Checks the options against the sample dir's file system: [`Error::MinFreeTooLarge`]
    /// if `min_free_bytes` is at or above its size, [`Error::MinFreeInodesTooLarge`] if
    /// `min_free_inodes` is at or above its inodes. The guard would delete every recording as
    /// soon as it is committed.
    pub fn check_against(&self, fs: crate::layout::FsSize) -> Result<(), Error> {
        if self.min_free_bytes != 0 && self.min_free_bytes >= fs.bytes {
            return Err(Error::MinFreeTooLarge {
                min_free_bytes: self.min_free_bytes,
                size_bytes: fs.bytes,
            });
        }
        match fs.inodes {
            Some(inodes) if self.min_free_inodes != 0 && self.min_free_inodes >= inodes => {
                Err(Error::MinFreeInodesTooLarge {
                    min_free_inodes: self.min_free_inodes,
                    inodes,
                })
            }
            _ => Ok(()),
        }
    }
}

impl Default for SyncerOptions {
    fn default() -> Self {
        SyncerOptions {
            reserve_bytes: 1 << 20,
            flush_retry_delay: Duration(10 * TIME_UNITS_PER_SEC),
            min_free_bytes: 16 << 20,
            min_free_inodes: 1024,
            open_budget: limits::OpenBudget::default(),
        }
    }
}

/// Recordings of one stream made durable by one flush: the *committed* message of DESIGN.md
/// step 6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub stream_id: i32,
    /// Ids inserted as recordings, ascending.
    pub ids: Vec<CompositeId>,
}

/// A stream as `status` shows it; see [`Syncer::stream_summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub committed_recordings: usize,
    /// Rounded up to 4 KiB per recording, as quota accounting counts them.
    pub committed_bytes: i64,
    pub newest_committed: Option<CompositeId>,
    pub growing: Option<CompositeId>,
}

/// What a writer sends to close its recording.
#[derive(Clone, Debug)]
pub struct CloseRequest {
    /// Samples written since the last progress report.
    pub samples: Vec<SampleReport>,
    /// Duration of the last sample, 90 kHz, when the next pts is known; `None` stores 0 and
    /// sets the trailing-zero flag.
    pub last_sample_duration_90k: Option<i32>,
    pub times: RecordingTimes,
    pub end_reason: Option<String>,
    /// The writer's blake3 of what it wrote: a cross-check of the syncer's own.
    pub writer_blake3: [u8; 32],
}

/// A recording the syncer has handed out but not yet committed.
#[derive(Debug)]
enum InFlight<F> {
    Growing(Box<Growing<F>>),
    /// Its [`PendingSave`] is running; `bytes` as reported, with the sample entry its row
    /// will name (kept while it is in flight).
    Saving {
        bytes: u64,
        sample_entry_id: i32,
    },
    Synced(Box<RecordingToInsert>),
    /// Will be recorded as garbage: it may have left a file.
    Discarded,
}

#[derive(Debug)]
struct Growing<F> {
    /// The syncer's own descriptor.
    file: F,
    run_offset: i32,
    sample_entry_id: i32,
    samples: ReportedSamples,
    times: Option<RecordingTimes>,
    /// The `written_bytes` of the last report acknowledged: the file may hold at most
    /// [`limits::WRITE_WINDOW_BYTES`] more (the writer waits for an acknowledgement first).
    acknowledged_bytes: u64,
}

/// Where the current run of a stream stands, to check run continuity (invariant 5). A run
/// that cannot go on (a salvage, a rejected close, a restart) has none.
#[derive(Clone, Copy, Debug)]
struct RunTail {
    /// Run offset of the run's latest recording.
    run_offset: i32,
    /// Where that recording must start: the end of the one before it (none for offset 0).
    expected_start: Option<Time>,
    /// Where that recording ended, once its close was accepted.
    end: Option<Time>,
    /// That recording, when its accepted close was shorter than
    /// [`limits::MIN_RECORDING_DURATION_90K`]: it ended the run, which no open may continue.
    short: Option<ShortRecording>,
}

/// A recording shorter than [`limits::MIN_RECORDING_DURATION_90K`], which ended its run.
#[derive(Clone, Copy, Debug)]
struct ShortRecording {
    id: CompositeId,
    media_90k: i64,
}

impl RunTail {
    /// Checks an open at `run_offset` against the stream's run, `run`: 0 starts a new run; a
    /// positive offset must be one past the run's latest recording, whose close was accepted
    /// and which was not short. The reason of a refusal otherwise.
    fn check_open(run: Option<RunTail>, run_offset: i32) -> Result<(), String> {
        if run_offset == 0 {
            return Ok(());
        }
        match run {
            Some(RunTail { short: Some(r), .. }) if run_offset > 0 => Err(format!(
                "recording {} was shorter than the minimum duration ({} ticks < {}) and so ended \
                 its run; a recording continuing it (run offset {run_offset}) is refused",
                r.id,
                r.media_90k,
                limits::MIN_RECORDING_DURATION_90K
            )),
            Some(t) if t.end.is_some() && t.run_offset.checked_add(1) == Some(run_offset) => Ok(()),
            _ => Err(format!(
                "run offset {run_offset} does not continue the stream's current run"
            )),
        }
    }
}

#[derive(Debug)]
struct Stream<F> {
    row: StreamRow,
    /// The next id to hand out; at or past `row.next_recording_id`.
    next_alloc: i32,
    /// Committed recordings `(id, bytes)`, oldest first, not yet chosen for deletion.
    committed: VecDeque<(CompositeId, i64)>,
    /// Committed recordings chosen for deletion at the next flush.
    to_delete: Vec<(CompositeId, i64)>,
    inflight: BTreeMap<i32, InFlight<F>>,
    run: Option<RunTail>,
    /// Opens left to this stream (`protocol::limits::OpenBudget`): each costs an inode and
    /// an id, whoever asks.
    opens: limits::OpenBudget,
    /// Opens refused by the budget, warned about at most once a minute.
    opens_refused_log: Throttle,
}

impl<F> Stream<F> {
    fn new(row: StreamRow, committed: Vec<(CompositeId, i64)>, opens: limits::OpenBudget) -> Self {
        Stream {
            next_alloc: row.next_recording_id,
            row,
            committed: committed.into(),
            to_delete: Vec::new(),
            inflight: BTreeMap::new(),
            run: None,
            opens,
            opens_refused_log: Throttle::default(),
        }
    }

    /// Rounded bytes of everything handed out but not committed, as reported.
    fn inflight_bytes(&self) -> i64 {
        self.inflight
            .values()
            .map(|r| match r {
                InFlight::Growing(g) => round_up(g.samples.total_bytes as i64),
                InFlight::Saving { bytes, .. } => round_up(*bytes as i64),
                InFlight::Synced(r) => round_up(r.row.sample_file_bytes),
                InFlight::Discarded => 0,
            })
            .sum()
    }

    /// Chooses the oldest committed recordings for deletion so that committed plus in-flight
    /// bytes fit the quota.
    fn enforce_quota(&mut self) {
        let sizes: Vec<i64> = self.committed.iter().map(|&(_, b)| b).collect();
        let n = oldest_to_delete(&sizes, self.inflight_bytes(), self.row.config.retain_bytes);
        for _ in 0..n {
            let r = self.committed.pop_front().expect("n <= len");
            debug!(stream = self.row.id, recording = %r.0, "chosen for deletion by quota");
            self.to_delete.push(r);
        }
    }

    fn growing(&mut self, id: CompositeId) -> Result<&mut Growing<F>, Error> {
        match self.inflight.get_mut(&id.recording()) {
            Some(InFlight::Growing(g)) => Ok(g),
            _ => Err(Error::NotOpen(id)),
        }
    }
}

/// The syncer: see the module documentation.
pub struct Syncer<D: Dir> {
    pub(crate) dir: Arc<D>,
    pub(crate) db: Database,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) open: Open,
    streams: BTreeMap<i32, Stream<D::File>>,
    /// Garbage rows and the state of their files' unlinks.
    pub(crate) garbage: Garbage,
    plan: FlushPlan,
    stop: Arc<AtomicBool>,
    pub(crate) options: SyncerOptions,
    pub(crate) reserve_present: bool,
    /// Recordings [`Syncer::shed_oldest_for_db`] moved to `to_delete` since the last flush
    /// that committed: bounded, so that a database deletions cannot help (a file system too
    /// full even for the WAL) does not lose every recording to one outage.
    shed_for_db: usize,
    /// Recordings [`Syncer::discard_largest_synced`] gave up since the last commit that
    /// inserted recordings.
    discarded_for_room: usize,
    /// The free-space guard's warnings, which a full disk repeats at every event.
    disk_full_log: Throttle,
}

impl<D: Dir> std::fmt::Debug for Syncer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("open", &self.open)
            .field("streams", &self.streams.keys())
            .finish_non_exhaustive()
    }
}

impl<D: Dir> Syncer<D> {
    /// Builds a syncer over loaded state; [`crate::recovery`] calls this, then recovers.
    pub(crate) fn from_parts(
        dir: Arc<D>,
        db: Database,
        clock: Arc<dyn Clock>,
        open: Open,
        options: SyncerOptions,
    ) -> Result<Self, Error> {
        let mut streams = BTreeMap::new();
        for row in db.streams()? {
            let committed = db.recording_sizes(row.id)?;
            streams.insert(row.id, Stream::new(row, committed, options.open_budget));
        }
        let garbage = Garbage::new(db.garbage()?);
        Ok(Syncer {
            dir,
            db,
            clock,
            open,
            streams,
            garbage,
            plan: FlushPlan::default(),
            stop: Arc::new(AtomicBool::new(false)),
            options,
            reserve_present: false,
            shed_for_db: 0,
            discarded_for_room: 0,
            disk_full_log: Throttle::default(),
        })
    }

    /// Set to stop accepting opens and to end retries promptly.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn dir(&self) -> &Arc<D> {
        &self.dir
    }

    /// Read access to the database (queries only; every change goes through the syncer).
    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn current_open(&self) -> Open {
        self.open
    }

    pub fn stream_rows(&self) -> Vec<StreamRow> {
        self.streams.values().map(|s| s.row.clone()).collect()
    }

    pub(crate) fn stream_ids(&self) -> Vec<i32> {
        self.streams.keys().copied().collect()
    }

    pub(crate) fn stream_next_ids(&self) -> BTreeMap<i32, i32> {
        self.streams
            .iter()
            .map(|(&id, s)| (id, s.row.next_recording_id))
            .collect()
    }

    /// Every committed recording id (recovery compares the directory against it).
    pub(crate) fn committed_ids(&self) -> BTreeSet<CompositeId> {
        self.streams
            .values()
            .flat_map(|s| s.committed.iter().chain(&s.to_delete).map(|&(id, _)| id))
            .collect()
    }

    pub(crate) fn enforce_quota_of(&mut self, stream_id: i32) {
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.enforce_quota();
        }
    }

    /// Commits recovery's batch of abandoned files and applies it: new garbage to unlink and
    /// next ids moved past the abandoned ids.
    pub(crate) fn commit_recovery_batch(&mut self, batch: &FlushBatch) -> Result<(), Error> {
        debug_assert!(batch.inserts.is_empty() && batch.deletions.is_empty());
        self.db.commit_batch(batch)?;
        for &(stream_id, next) in &batch.next_recording_ids {
            let s = self.stream_mut(stream_id)?;
            s.row.next_recording_id = next;
            s.next_alloc = next;
        }
        self.garbage.add(batch.new_garbage.iter().copied());
        Ok(())
    }

    fn stream_mut(&mut self, stream_id: i32) -> Result<&mut Stream<D::File>, Error> {
        self.streams
            .get_mut(&stream_id)
            .ok_or(Error::NoSuchStream(stream_id))
    }

    /// Bytes a stream's committed recordings use, rounded up to 4 KiB each.
    pub fn committed_bytes(&self, stream_id: i32) -> Option<i64> {
        self.streams.get(&stream_id).map(|s| {
            s.committed
                .iter()
                .chain(&s.to_delete)
                .map(|&(_, b)| round_up(b))
                .sum()
        })
    }

    /// What `status` shows of a stream: committed recordings (count, rounded bytes, newest)
    /// and the growing recording, if any.
    pub fn stream_summary(&self, stream_id: i32) -> Option<StreamSummary> {
        let s = self.streams.get(&stream_id)?;
        Some(StreamSummary {
            committed_recordings: s.committed.len() + s.to_delete.len(),
            committed_bytes: self.committed_bytes(stream_id).unwrap_or(0),
            newest_committed: s.committed.back().map(|&(id, _)| id),
            growing: s.inflight.iter().find_map(|(&r, f)| {
                matches!(f, InFlight::Growing(_)).then_some(CompositeId::new(stream_id, r))
            }),
        })
    }

    /// Adds a stream after checking its name and settings ([`validate_camera_name`],
    /// [`StreamConfig::validate`]).
    pub fn add_stream(&mut self, name: &str, config: StreamConfig) -> Result<i32, Error> {
        validate_camera_name(name)?;
        config.validate()?;
        let id = self.db.add_stream(name, &config)?;
        let row = StreamRow {
            id,
            name: name.to_owned(),
            config,
            next_recording_id: 0,
        };
        self.streams
            .insert(id, Stream::new(row, Vec::new(), self.options.open_budget));
        info!(stream = id, name, "stream added");
        Ok(id)
    }

    /// Changes a stream's settings. Lowering its quota deletes the excess at once: the
    /// deletions are committed and their files unlinked before this returns.
    pub fn set_stream_config(&mut self, stream_id: i32, config: StreamConfig) -> Result<(), Error> {
        self.stream_mut(stream_id)?;
        config.validate()?;
        self.db.update_stream_config(stream_id, &config)?;
        let s = self.stream_mut(stream_id)?;
        let lowered = config.retain_bytes < s.row.config.retain_bytes;
        s.row.config = config;
        if lowered {
            s.enforce_quota();
            self.flush("quota lowered")?;
            self.collect_garbage()?;
        }
        Ok(())
    }

    /// Whether a recording of the stream is growing or being saved (a close or salvage whose
    /// [`PendingSave`] has not finished): the stream cannot be removed now.
    pub fn stream_busy(&self, stream_id: i32) -> bool {
        self.busy_recording(stream_id).is_some()
    }

    fn busy_recording(&self, stream_id: i32) -> Option<CompositeId> {
        let s = self.streams.get(&stream_id)?;
        s.inflight.iter().find_map(|(&r, f)| {
            matches!(f, InFlight::Growing(_) | InFlight::Saving { .. })
                .then_some(CompositeId::new(stream_id, r))
        })
    }

    /// Removes a stream. Refused (nothing changes) if it has committed recordings, or synced
    /// ones about to be committed, and `delete_recordings` is false, or if a recording of it is
    /// growing or being saved. Otherwise pending work of every stream is flushed first, then
    /// ONE transaction moves all the stream's recordings to garbage and deletes its row
    /// ([`Database::remove_stream`]), and their files are unlinked before this returns.
    pub fn remove_stream(&mut self, stream_id: i32, delete_recordings: bool) -> Result<(), Error> {
        let s = self
            .streams
            .get(&stream_id)
            .ok_or(Error::NoSuchStream(stream_id))?;
        let recordings = s.committed.len()
            + s.to_delete.len()
            + s.inflight
                .values()
                .filter(|f| matches!(f, InFlight::Synced(_)))
                .count();
        if recordings > 0 && !delete_recordings {
            return Err(Error::HasRecordings {
                stream: stream_id,
                name: s.row.name.clone(),
                recordings,
            });
        }
        if let Some(recording) = self.busy_recording(stream_id) {
            return Err(Error::StreamBusy {
                stream: stream_id,
                name: s.row.name.clone(),
                recording,
            });
        }
        if !s.inflight.is_empty() {
            // Synced or discarded ids: committed (as recordings or garbage) first, so that the
            // removal below sees every recording and leaves no id untracked.
            self.flush("stream removal")?;
        }
        let s = self.stream_mut(stream_id)?;
        assert!(
            s.inflight.is_empty(),
            "stream {stream_id}: in-flight recordings left after the flush before removal"
        );
        let name = s.row.name.clone();
        let moved = self.db.remove_stream(stream_id)?;

        // Committed: now, and only now, change the state.
        let s = self.streams.remove(&stream_id).expect("checked above");
        debug_assert_eq!(
            moved.len(),
            s.committed.len() + s.to_delete.len(),
            "stream {stream_id}: database and memory disagree on its recordings"
        );
        info!(
            stream = stream_id,
            name,
            recordings = moved.len(),
            "stream removed; its recordings are garbage"
        );
        self.garbage.add(moved);
        self.collect_garbage()
    }

    /// Looks up `stream_id`'s sample entry with these box bytes, adding it if new. Entries
    /// belong to their stream, so an ingest can only register its own stream's. A stream at
    /// [`limits::MAX_STORED_SAMPLE_ENTRIES_PER_STREAM`] first loses the entries no committed
    /// recording, no recording in flight and none in `keep` (its connection's) uses; entries
    /// in use are never refused (a camera whose parameters change often must go on recording),
    /// and they are bounded by the recordings that use them.
    pub fn add_sample_entry(
        &mut self,
        stream_id: i32,
        keep: &[i32],
        width: u16,
        height: u16,
        rfc6381_codec: &str,
        data: &[u8],
    ) -> Result<i32, Error> {
        if let Some(id) = self.db.find_sample_entry(stream_id, data)? {
            return Ok(id);
        }
        let max = limits::MAX_STORED_SAMPLE_ENTRIES_PER_STREAM;
        if self.db.count_sample_entries(stream_id)? >= max {
            let mut keep = keep.to_vec();
            keep.extend(
                self.stream_mut(stream_id)?
                    .inflight
                    .values()
                    .filter_map(|r| match r {
                        InFlight::Growing(g) => Some(g.sample_entry_id),
                        InFlight::Saving {
                            sample_entry_id, ..
                        } => Some(*sample_entry_id),
                        InFlight::Synced(r) => Some(r.row.video_sample_entry_id),
                        InFlight::Discarded => None,
                    }),
            );
            self.db.delete_unused_sample_entries(stream_id, &keep)?;
        }
        Ok(self
            .db
            .insert_sample_entry(stream_id, width, height, rfc6381_codec, data)?)
    }

    /// Step 1: allocates the stream's next id, creates its file, and returns the id with a
    /// second, separate write-only descriptor for the writer.
    pub fn open_recording(
        &mut self,
        stream_id: i32,
        run_offset: i32,
        sample_entry_id: i32,
    ) -> Result<(CompositeId, D::File), Error> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let known_entry = self.db.has_sample_entry(stream_id, sample_entry_id)?;
        if self.options.reserve_bytes > 0 && !self.reserve_present {
            // Released for a commit that frees space: a new file would eat it first.
            self.restore_reserve();
            if !self.reserve_present {
                return Err(Error::ReserveReleased);
            }
        }
        let min_free_inodes = self.options.min_free_inodes;
        let free_inodes = self.free_or_max(min_free_inodes, Dir::free_inodes, "free inodes");
        if free_inodes < (min_free_inodes / 4).max(1) {
            // The rest is for the commit and the garbage that frees inodes.
            return Err(Error::NoFreeInodes { free_inodes });
        }
        let dir = self.dir.clone();
        let now = self.clock.monotonic();
        let s = self.stream_mut(stream_id)?;
        let reject = |reason: String| Error::Rejected {
            stream: stream_id,
            reason,
        };
        if !known_entry {
            return Err(reject(format!(
                "unknown video sample entry {sample_entry_id}"
            )));
        }
        if let Some(&r) = s
            .inflight
            .iter()
            .find_map(|(r, f)| matches!(f, InFlight::Growing(_)).then_some(r))
        {
            return Err(reject(format!(
                "recording {} is still growing; close it before opening another",
                CompositeId::new(stream_id, r)
            )));
        }
        RunTail::check_open(s.run, run_offset).map_err(reject)?;
        if s.next_alloc == i32::MAX {
            return Err(reject("recording ids exhausted".to_owned()));
        }
        if !s.opens.try_spend(now) {
            if let Some(held_back) = s.opens_refused_log.occur(now) {
                warn!(
                    stream = stream_id,
                    held_back, "opens refused: faster than the stream's open budget"
                );
            }
            return Err(Error::OpenTooSoon { stream: stream_id });
        }
        let id = CompositeId::new(stream_id, s.next_alloc);
        s.next_alloc += 1;
        let name = sample_file_name(id);
        let file = match dir.create_new(&name) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) => {
                // The id is past every committed or garbage id, so its file cannot exist
                // unless the state is wrong. Never try another id.
                s.inflight.insert(id.recording(), InFlight::Discarded);
                error!(recording = %id, "sample file already exists");
                return Err(Error::Bug(format!(
                    "sample file {name} already exists for newly allocated recording {id}"
                )));
            }
            Err(e) => {
                // The create may have left a directory entry: the id becomes garbage.
                s.inflight.insert(id.recording(), InFlight::Discarded);
                if e.kind() == std::io::ErrorKind::NotFound && dir.is_removed().unwrap_or(false) {
                    return Err(Error::SampleDirRemoved);
                }
                let full = is_enospc(&e);
                let err = Error::io("create", &name, e);
                self.plan_flush_now(id, "discarded after a failed create");
                if full {
                    self.release_reserve();
                }
                return Err(err);
            }
        };
        let writer = match dir.open(&name, OpenMode::Append) {
            Ok(w) => w,
            Err(e) => {
                s.inflight.insert(id.recording(), InFlight::Discarded);
                self.plan_flush_now(id, "discarded after a failed open");
                return Err(Error::io("open for writer", &name, e));
            }
        };
        s.run = Some(RunTail {
            run_offset,
            expected_start: if run_offset > 0 {
                s.run.and_then(|t| t.end)
            } else {
                None
            },
            end: None,
            short: None,
        });
        s.inflight.insert(
            id.recording(),
            InFlight::Growing(Box::new(Growing {
                file,
                run_offset,
                sample_entry_id,
                samples: ReportedSamples::default(),
                times: None,
                acknowledged_bytes: 0,
            })),
        );
        debug!(recording = %id, run_offset, "opened");
        Ok((id, writer))
    }

    /// Step 2: the writer has written these samples, through file offset `written_bytes`.
    /// Returns the offset to acknowledge ([`protocol::messages::IngestReply::Progressed`]).
    ///
    /// The file is compared with what the writer may have written by now: at least every
    /// reported byte, at most the window past the last acknowledged report (an honest writer
    /// waits rather than write further, so a report that waited in the socket during a stall is
    /// no breach). A report that breaks a rule, or a file past the window, is rejected: the
    /// caller drops the connection and the recording is salvaged ([`Syncer::begin_salvage`]) to
    /// the reported samples that passed their checks, as far as the file holds them whole; the
    /// unreported tail is cut. The time model is taken once its start and local-time delta
    /// are within their limits (the salvage derives the durations from the samples it keeps).
    pub fn progress(
        &mut self,
        id: CompositeId,
        samples: &[SampleReport],
        times: RecordingTimes,
        written_bytes: u64,
    ) -> Result<u64, Error> {
        let s = self.stream_mut(id.stream())?;
        let g = s.growing(id)?;
        let checked = check_start(&times)
            .map(|()| g.times = Some(times))
            .and_then(|()| g.samples.push_all(samples))
            .and_then(|()| check_written(g, written_bytes));
        match checked {
            Ok(()) => {
                g.acknowledged_bytes = written_bytes;
                Ok(written_bytes)
            }
            Err(reason) => Err(Error::Rejected {
                stream: id.stream(),
                reason: format!("recording {id}: {reason}"),
            }),
        }
    }

    /// Step 4: validates a close and hands back the durability work. On rejection the
    /// recording is discarded and its run ends. A recording shorter than
    /// [`limits::MIN_RECORDING_DURATION_90K`] (media, with the last sample's duration) is
    /// accepted, but only as its run's last: no open may continue the run.
    pub fn begin_close(
        &mut self,
        id: CompositeId,
        req: CloseRequest,
    ) -> Result<PendingSave<D::File>, Error> {
        let open_id = self.open.id;
        let s = self.stream_mut(id.stream())?;
        s.growing(id)?;
        let Some(InFlight::Growing(mut g)) = s.inflight.remove(&id.recording()) else {
            unreachable!("checked above");
        };
        let checked = (|| {
            for &sample in &req.samples {
                g.samples.push(sample)?;
            }
            if g.samples.is_empty() {
                return Err("closed with no samples".to_owned());
            }
            let last = match req.last_sample_duration_90k {
                None => 0,
                Some(d) if i64::from(d) >= limits::MIN_SAMPLE_DURATION_90K => d,
                Some(d) => return Err(format!("last sample duration {d} is too short")),
            };
            let media = g.samples.media_duration_90k() + i64::from(last);
            let wall = i64::from(req.times.wall_duration_90k);
            check_start(&req.times)?;
            check_times(media, wall)?;
            let expected = s.run.and_then(|t| t.expected_start);
            if g.run_offset > 0 && expected != Some(req.times.start) {
                return Err(format!(
                    "start {} does not abut the previous recording's end {:?}",
                    req.times.start.0,
                    expected.map(|t| t.0)
                ));
            }
            Ok((last, media, wall))
        })();
        let (last, media, wall) = match checked {
            Ok(v) => v,
            Err(reason) => {
                s.run = None;
                s.inflight.insert(id.recording(), InFlight::Discarded);
                self.plan_flush_now(id, "discarded after a rejected close");
                warn!(recording = %id, %reason, "close rejected; recording discarded");
                return Err(Error::Rejected {
                    stream: id.stream(),
                    reason: format!("recording {id}: {reason}"),
                });
            }
        };
        let row = RecordingRow {
            id,
            open_id,
            run_offset: g.run_offset,
            flags: if req.last_sample_duration_90k.is_none() {
                FLAG_TRAILING_ZERO
            } else {
                0
            },
            start: req.times.start,
            wall_duration_90k: wall as i32,
            media_duration_90k: media as i32,
            video_samples: g.samples.samples as i32,
            video_sync_samples: g.samples.key_samples as i32,
            sample_file_bytes: g.samples.total_bytes as i64,
            video_sample_entry_id: g.sample_entry_id,
            local_time_delta_90k: req.times.local_time_delta_90k,
            blake3: [0; 32],
            end_reason: req.end_reason,
        };
        if let Some(t) = s.run.as_mut() {
            t.end = Some(req.times.start + Duration(wall));
            t.short = (media < limits::MIN_RECORDING_DURATION_90K).then_some(ShortRecording {
                id,
                media_90k: media,
            });
        }
        s.inflight.insert(
            id.recording(),
            InFlight::Saving {
                bytes: g.samples.total_bytes,
                sample_entry_id: g.sample_entry_id,
            },
        );
        Ok(PendingSave {
            id,
            file: g.file,
            mode: SaveMode::Close {
                writer_blake3: req.writer_blake3,
            },
            row,
            index: g.samples.finish(last),
        })
    }

    /// The writer is gone mid-recording (crash, kill, bad frame, takeover). Returns the salvage
    /// work, or `None` when nothing was reported and the id was simply discarded.
    pub fn begin_salvage(
        &mut self,
        id: CompositeId,
        end_reason: &str,
    ) -> Result<Option<PendingSave<D::File>>, Error> {
        let open_id = self.open.id;
        let s = self.stream_mut(id.stream())?;
        s.growing(id)?;
        // Within a run the start is the previous end, whatever the departed writer reported.
        let expected_start = s.run.and_then(|t| t.expected_start);
        s.run = None;
        let Some(InFlight::Growing(g)) = s.inflight.remove(&id.recording()) else {
            unreachable!("checked above");
        };
        let Some(times) = g.times.filter(|_| !g.samples.is_empty()) else {
            s.inflight.insert(id.recording(), InFlight::Discarded);
            self.plan_flush_now(id, "discarded: writer gone before reporting a sample");
            info!(recording = %id, "writer gone with nothing reported; discarded");
            return Ok(None);
        };
        let media = g.samples.media_duration_90k();
        let row = RecordingRow {
            id,
            open_id,
            run_offset: g.run_offset,
            flags: FLAG_TRAILING_ZERO,
            start: if g.run_offset > 0 {
                expected_start.unwrap_or(times.start)
            } else {
                times.start
            },
            wall_duration_90k: times.wall_duration_90k,
            media_duration_90k: media as i32,
            video_samples: g.samples.samples as i32,
            video_sync_samples: g.samples.key_samples as i32,
            sample_file_bytes: g.samples.total_bytes as i64,
            video_sample_entry_id: g.sample_entry_id,
            local_time_delta_90k: times.local_time_delta_90k,
            blake3: [0; 32],
            end_reason: Some(end_reason.to_owned()),
        };
        s.inflight.insert(
            id.recording(),
            InFlight::Saving {
                bytes: g.samples.total_bytes,
                sample_entry_id: g.sample_entry_id,
            },
        );
        Ok(Some(PendingSave {
            id,
            file: g.file,
            mode: SaveMode::Salvage,
            row,
            index: g.samples.finish(0),
        }))
    }

    /// Step 5's conclusion: marks the recording synced (enqueuing quota deletions and planning
    /// its flush) or discards it. A failed directory fsync is returned as fatal.
    pub fn finish_save(
        &mut self,
        id: CompositeId,
        result: Result<RecordingToInsert, SaveFailure>,
    ) -> Result<(), Error> {
        let now = self.clock.monotonic();
        let s = self.stream_mut(id.stream())?;
        if !matches!(
            s.inflight.get(&id.recording()),
            Some(InFlight::Saving { .. })
        ) {
            return Err(Error::Bug(format!(
                "finish_save for {id}, which is not saving"
            )));
        }
        match result {
            Ok(rec) => {
                assert_eq!(rec.row.id, id);
                let wall = Duration(i64::from(rec.row.wall_duration_90k));
                let flush_if = Duration(i64::from(s.row.config.flush_if_sec) * TIME_UNITS_PER_SEC);
                s.inflight
                    .insert(id.recording(), InFlight::Synced(Box::new(rec)));
                s.enforce_quota();
                let reason = format!(
                    "{} s after the start of recording {id}",
                    s.row.config.flush_if_sec
                );
                self.plan.plan(now + flush_if - wall, id, reason);
                debug!(recording = %id, "synced");
                Ok(())
            }
            Err(f) => {
                s.inflight.insert(id.recording(), InFlight::Discarded);
                self.plan_flush_now(id, "discarded after a failed save");
                match f {
                    SaveFailure::NothingUsable => {
                        info!(recording = %id, "no whole sample on disk; discarded");
                        Ok(())
                    }
                    SaveFailure::Rejected(reason) => {
                        warn!(recording = %id, %reason, "save rejected; discarded");
                        Err(Error::Rejected {
                            stream: id.stream(),
                            reason: format!("recording {id}: {reason}"),
                        })
                    }
                    SaveFailure::SyncFailed(e) => {
                        error!(recording = %id, error = %e, "fsync failed; recording discarded (io-error)");
                        Err(Error::SyncFailed { id, source: e })
                    }
                    SaveFailure::DirSyncFailed(e) => {
                        error!(recording = %id, error = %e, "fsync of the sample dir failed");
                        Err(Error::DirSyncFailed(e))
                    }
                    SaveFailure::Io(op, e) => {
                        error!(recording = %id, op, error = %e, "save failed; discarded");
                        Err(Error::io(op, sample_file_name(id), e))
                    }
                }
            }
        }
    }

    /// Close in line: [`Syncer::begin_close`], [`PendingSave::run`], [`Syncer::finish_save`].
    pub fn close_recording(&mut self, id: CompositeId, req: CloseRequest) -> Result<(), Error> {
        let pending = self.begin_close(id, req)?;
        let result = pending.run(&*self.dir);
        self.finish_save(id, result)
    }

    /// Salvage in line: [`Syncer::begin_salvage`], [`PendingSave::run`], [`Syncer::finish_save`].
    pub fn abandon_recording(&mut self, id: CompositeId, end_reason: &str) -> Result<(), Error> {
        match self.begin_salvage(id, end_reason)? {
            None => Ok(()),
            Some(pending) => {
                let result = pending.run(&*self.dir);
                self.finish_save(id, result)
            }
        }
    }

    fn plan_flush_now(&mut self, id: CompositeId, why: &str) {
        let now = self.clock.monotonic();
        self.plan.plan(now, id, format!("recording {id} {why}"));
    }

    /// Monotonic time of the next planned flush, if any.
    pub fn next_deadline(&self) -> Option<Time> {
        match (self.plan.next_deadline(), self.garbage.next_retry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails with the fatal [`Error::SampleDirRemoved`] once the sample dir has been removed
    /// (an operator's `rm -r`, a lazy unmount): recording into it would lose everything, so the
    /// daemon checks this at least every second and stops.
    pub fn check_sample_dir(&self) -> Result<(), Error> {
        match self.dir.is_removed() {
            Ok(true) => Err(Error::SampleDirRemoved),
            Ok(false) => Ok(()),
            Err(e) => {
                warn!(error = %e, "cannot stat the sample dir");
                Ok(())
            }
        }
    }

    /// True when a planned flush or a garbage retry is due now: [`Syncer::poll`] has work.
    pub fn poll_due(&self) -> bool {
        self.next_deadline()
            .is_some_and(|d| d <= self.clock.monotonic())
    }

    /// Runs a planned flush if one is due (skipping plans another flush made unnecessary), then
    /// collects garbage. A failed flush is retried later; only fatal errors are returned.
    pub fn poll(&mut self) -> Result<Vec<Committed>, Error> {
        let now = self.clock.monotonic();
        let streams = &self.streams;
        let committed = |id: CompositeId| {
            streams
                .get(&id.stream())
                .is_none_or(|s| id.recording() < s.row.next_recording_id)
        };
        let Some(reason) = self.plan.due(now, committed) else {
            self.collect_garbage()?;
            retry_later(self.ensure_free_space(), "freeing space")?;
            return Ok(Vec::new());
        };
        match self.flush(&reason) {
            Ok(c) => {
                retry_later(self.collect_garbage(), "collecting garbage")?;
                self.restore_reserve();
                retry_later(self.ensure_free_space(), "freeing space")?;
                Ok(c)
            }
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => {
                let full = matches!(&e, Error::Db(d) if d.is_full());
                let delay = if full && self.reserve_present {
                    self.release_reserve();
                    // At once if that made room; a failed unlink is retried after the delay.
                    if self.reserve_present {
                        self.options.flush_retry_delay
                    } else {
                        Duration(0)
                    }
                } else if full && self.shed_oldest_for_db() {
                    Duration(0)
                } else {
                    self.options.flush_retry_delay
                };
                warn!(%reason, error = %e, retry_in = %delay, "flush failed; will retry");
                self.plan.failed(now + delay);
                Ok(Vec::new())
            }
        }
    }

    /// Step 6: one transaction inserts synced recordings, records discards as garbage, advances
    /// next ids, moves deleted recordings to garbage and forgets garbage whose unlink is
    /// durable. State changes only after COMMIT returns.
    pub fn flush(&mut self, reason: &str) -> Result<Vec<Committed>, Error> {
        struct StreamFlush {
            stream_id: i32,
            next: i32,
            inserted: Vec<(CompositeId, i64)>,
            /// How many of (committed ++ inserted) the quota deletes beyond `to_delete`.
            extra_deletions: usize,
        }
        let mut batch = FlushBatch::default();
        let mut plans = Vec::new();
        for (&stream_id, s) in &self.streams {
            let mut next = s.row.next_recording_id;
            let mut inserted = Vec::new();
            while let Some(r) = s.inflight.get(&next) {
                let id = CompositeId::new(stream_id, next);
                match r {
                    InFlight::Synced(rec) => {
                        inserted.push((id, rec.row.sample_file_bytes));
                        batch.inserts.push((**rec).clone());
                    }
                    InFlight::Discarded => batch.new_garbage.push(id),
                    InFlight::Growing(_) | InFlight::Saving { .. } => break,
                }
                next += 1;
            }
            if next != s.row.next_recording_id {
                batch.next_recording_ids.push((stream_id, next));
            }
            batch
                .deletions
                .extend(s.to_delete.iter().map(|&(id, _)| id));
            let after: Vec<(CompositeId, i64)> =
                s.committed.iter().chain(&inserted).copied().collect();
            let sizes: Vec<i64> = after.iter().map(|&(_, b)| b).collect();
            let extra_deletions = oldest_to_delete(&sizes, 0, s.row.config.retain_bytes);
            batch
                .deletions
                .extend(after[..extra_deletions].iter().map(|&(id, _)| id));
            plans.push(StreamFlush {
                stream_id,
                next,
                inserted,
                extra_deletions,
            });
        }
        batch.garbage_removed = self.garbage.unlinked().collect();
        if batch.is_empty() {
            self.plan.flushed();
            return Ok(Vec::new());
        }
        self.db.commit_batch(&batch)?;

        // Committed: now, and only now, change the state.
        self.shed_for_db = 0;
        if !batch.inserts.is_empty() {
            // Recordings commit again: what was discarded made the room it was for.
            self.discarded_for_room = 0;
        }
        info!(
            reason,
            inserted = batch.inserts.len(),
            deleted = batch.deletions.len(),
            new_garbage = batch.new_garbage.len(),
            "flushed"
        );
        let mut out = Vec::new();
        for p in plans {
            let s = self.streams.get_mut(&p.stream_id).expect("stream exists");
            for r in s.row.next_recording_id..p.next {
                s.inflight.remove(&r);
            }
            s.row.next_recording_id = p.next;
            self.garbage.add(s.to_delete.drain(..).map(|(id, _)| id));
            s.committed.extend(p.inserted.iter().copied());
            for _ in 0..p.extra_deletions {
                let (id, _) = s.committed.pop_front().expect("counted above");
                self.garbage.add([id]);
            }
            if !p.inserted.is_empty() {
                out.push(Committed {
                    stream_id: p.stream_id,
                    ids: p.inserted.iter().map(|&(id, _)| id).collect(),
                });
            }
        }
        self.garbage.add(batch.new_garbage.iter().copied());
        self.garbage.forgot_unlinked();
        self.plan.flushed();
        self.assert_quota();
        Ok(out)
    }

    /// Invariant 6, checked after every flush: committed bytes fit each stream's quota, and
    /// (debug builds) the in-memory accounting equals the database's rows.
    fn assert_quota(&self) {
        for s in self.streams.values() {
            let used: i64 = s.committed.iter().map(|&(_, b)| round_up(b)).sum();
            assert!(
                used <= s.row.config.retain_bytes,
                "stream {}: committed {used} bytes exceed quota {}",
                s.row.id,
                s.row.config.retain_bytes
            );
            assert!(s.to_delete.is_empty());
            #[cfg(debug_assertions)]
            {
                let rows = self
                    .db
                    .recording_sizes(s.row.id)
                    .expect("read recordings to check quota accounting");
                let mine: Vec<(CompositeId, i64)> = s.committed.iter().copied().collect();
                assert_eq!(rows, mine, "stream {}: accounting drifted", s.row.id);
            }
        }
    }

    /// Step 7: unlinks the garbage files that are due (see [`crate::garbage`]: one attempt
    /// each, a failing file retried later with backoff, never waited for), then fsyncs the
    /// directory so the next flush may forget those rows. A failed directory fsync is fatal.
    pub fn collect_garbage(&mut self) -> Result<(), Error> {
        self.garbage.collect(&*self.dir, self.clock.monotonic())
    }

    /// Disk nearly full: while less than [`SyncerOptions::min_free_bytes`] is free, the stream
    /// using the most bytes gives up its oldest committed recording; the deletions are
    /// committed and unlinked at once, so recording keeps going on a full disk instead of
    /// failing its writes. Quotas normally keep usage below this; it matters when they add up
    /// to more than the disk.
    pub fn ensure_free_space(&mut self) -> Result<(), Error> {
        let min_free = self.options.min_free_bytes;
        let free = self.free_or_max(min_free, Dir::free_bytes, "free space");
        let min_free_inodes = self.options.min_free_inodes;
        let free_inodes = self.free_or_max(min_free_inodes, Dir::free_inodes, "free inodes");
        if free >= min_free && free_inodes >= min_free_inodes {
            return Ok(());
        }
        // Files already given up that cannot be unlinked free nothing: deleting more would
        // take recording after recording for space that never comes (a disk failing every
        // unlink would lose the whole archive). Wait for their retries instead.
        if self.garbage.has_failing() {
            debug!(
                free,
                min_free, "disk nearly full, but garbage unlinks are failing"
            );
            return Ok(());
        }
        let mut needed = min_free.saturating_sub(free) as i64;
        let mut needed_inodes = min_free_inodes.saturating_sub(free_inodes);
        let mut chosen = Vec::new();
        while needed > 0 || needed_inodes > 0 {
            // Short of inodes, the stream with the most files gives up its oldest; else the
            // stream holding the most bytes, its recordings in flight included (so that a
            // stream's growing files cost its own archive, not another's).
            let candidates = self
                .streams
                .values_mut()
                .filter(|s| !s.committed.is_empty());
            let s = if needed_inodes > 0 {
                candidates.max_by_key(|s| s.committed.len() + s.inflight.len())
            } else {
                candidates.max_by_key(|s| {
                    s.committed.iter().map(|&(_, b)| round_up(b)).sum::<i64>() + s.inflight_bytes()
                })
            };
            let Some(s) = s else {
                break;
            };
            let r = s.committed.pop_front().expect("filtered on non-empty");
            needed -= round_up(r.1);
            needed_inodes = needed_inodes.saturating_sub(1);
            chosen.push(r.0);
            s.to_delete.push(r);
        }
        let held_back = self.disk_full_log.occur(self.clock.monotonic());
        if chosen.is_empty() {
            if let Some(held_back) = held_back {
                warn!(
                    free,
                    min_free,
                    free_inodes,
                    min_free_inodes,
                    held_back,
                    "disk nearly full and nothing committed left to delete"
                );
            }
            return Ok(());
        }
        match held_back {
            Some(held_back) => warn!(
                free,
                min_free,
                free_inodes,
                min_free_inodes,
                deleting = chosen.len(),
                held_back,
                "disk nearly full: deleting the oldest recordings beyond their quotas"
            ),
            None => debug!(
                free,
                min_free,
                free_inodes,
                min_free_inodes,
                deleting = chosen.len(),
                "disk nearly full: deleting the oldest recordings beyond their quotas"
            ),
        }
        self.flush("disk nearly full")?;
        self.collect_garbage()
    }

    /// Whether the sample dir's file system is below `min_free_bytes` or `min_free_inodes`:
    /// [`Syncer::ensure_free_space`] would delete recordings.
    pub fn short_of_space(&self) -> bool {
        let (min, min_inodes) = (self.options.min_free_bytes, self.options.min_free_inodes);
        self.free_or_max(min, Dir::free_bytes, "free space") < min
            || self.free_or_max(min_inodes, Dir::free_inodes, "free inodes") < min_inodes
    }

    /// What `read` says is free, or `u64::MAX` (nothing to do) when `minimum` is 0 (the guard
    /// is off), the file system sets no limit, or it cannot be read (warned about).
    fn free_or_max(
        &self,
        minimum: u64,
        read: fn(&D) -> std::io::Result<Option<u64>>,
        what: &str,
    ) -> u64 {
        if minimum == 0 {
            return u64::MAX;
        }
        match read(&self.dir) {
            Ok(f) => f.unwrap_or(u64::MAX),
            Err(e) => {
                warn!(error = %e, "cannot read the sample dir's {what}");
                u64::MAX
            }
        }
    }

    /// The database cannot grow (`SQLITE_FULL`) although the reserve file is gone: its file
    /// system is full for other reasons, or the database hit its own cap (`max_page_count`).
    /// Like [`Syncer::ensure_free_space`] for sample files, the stream with the most committed
    /// recordings (of equals, the lowest id, as [`crate::db::Database::oldest_of_the_largest_stream`]
    /// picks at startup) gives up its oldest ones, in addition to what its quota deletes: as
    /// many as the failed flush would insert (at least one), so each retry deletes at least as
    /// many rows as it adds and the retries soon free whole pages. They are chosen before the
    /// commit and wait in `to_delete` until one succeeds. At most [`SHED_FOR_DB_FACTOR`] times
    /// that many wait at once: when deleting does not help (the file system is too full even
    /// for the deletions' WAL frames), shedding stops and the flush is retried after the delay.
    /// Returns false when it shed nothing.
    fn shed_oldest_for_db(&mut self) -> bool {
        let inserts = self
            .streams
            .values()
            .flat_map(|s| s.inflight.values())
            .filter(|f| matches!(f, InFlight::Synced(_)))
            .count()
            .max(1);
        let room = (SHED_FOR_DB_FACTOR * inserts).saturating_sub(self.shed_for_db);
        let mut shed = 0;
        while shed < inserts.min(room) {
            let Some(s) = self
                .streams
                .values_mut()
                .filter(|s| !s.committed.is_empty())
                .max_by_key(|s| (s.committed.len(), std::cmp::Reverse(s.row.id)))
            else {
                break;
            };
            let r = s.committed.pop_front().expect("filtered on non-empty");
            s.to_delete.push(r);
            shed += 1;
        }
        self.shed_for_db += shed;
        if shed == 0 {
            if self.discard_largest_synced() {
                return true;
            }
            warn!(
                waiting = self.shed_for_db,
                "database full; deleting more recordings would not help, or none is left"
            );
            return false;
        }
        warn!(
            deleting = shed,
            "database full: deleting the oldest recordings beyond their quotas"
        );
        true
    }

    /// The last resort of a full file system that nothing committed can relieve (growing
    /// files filled it before anything was committed, and the database cannot take the
    /// commit): the largest synced recording not yet committed is discarded and its file
    /// unlinked at once, which needs no database write (its id is past the stream's durable
    /// next id, so recovery would take the file for abandoned anyway). It was accepted, never
    /// reported committed, so nothing acknowledged is lost. Only when the file system is what
    /// is full: a database at its own page cap gains nothing from it; and at most
    /// [`MAX_DISCARDS_FOR_ROOM`] until recordings commit again. Returns whether it discarded one.
    fn discard_largest_synced(&mut self) -> bool {
        let low = self.options.min_free_bytes.max(self.options.reserve_bytes);
        if self.discarded_for_room >= MAX_DISCARDS_FOR_ROOM {
            return false;
        }
        if !matches!(self.dir.free_bytes(), Ok(Some(free)) if free < low) {
            return false;
        }
        let Some((bytes, id)) = self
            .streams
            .iter()
            .flat_map(|(&sid, s)| {
                s.inflight.iter().filter_map(move |(&r, f)| match f {
                    InFlight::Synced(rec) => Some((
                        rec.row.sample_file_bytes,
                        std::cmp::Reverse(CompositeId::new(sid, r)),
                    )),
                    _ => None,
                })
            })
            .max()
            .map(|(b, std::cmp::Reverse(id))| (b, id))
        else {
            return false;
        };
        if let Err(e) = self.dir.unlink(&sample_file_name(id)) {
            warn!(recording = %id, error = %e, "cannot unlink an uncommitted recording to make room");
            return false;
        }
        let s = self.streams.get_mut(&id.stream()).expect("found above");
        s.inflight.insert(id.recording(), InFlight::Discarded);
        self.discarded_for_room += 1;
        self.plan_flush_now(id, "discarded to make room on a full disk");
        error!(
            recording = %id,
            bytes,
            "disk and database full with nothing committed to delete: discarded this \
             uncommitted recording to make room"
        );
        true
    }

    /// [`Syncer::flush`], tried again at once while the database is full and the reserve file
    /// or the oldest recordings can make room ([`Syncer::shed_oldest_for_db`]): for the last
    /// flush of a graceful stop, which has no later retry.
    pub(crate) fn flush_making_room(&mut self, reason: &str) -> Result<Vec<Committed>, Error> {
        loop {
            match self.flush(reason) {
                Err(Error::Db(e)) if e.is_full() => {
                    let room = if self.reserve_present {
                        self.release_reserve();
                        !self.reserve_present
                    } else {
                        self.shed_oldest_for_db()
                    };
                    if !room {
                        return Err(Error::Db(e));
                    }
                }
                r => return r,
            }
        }
    }

    /// Garbage rows whose unlink is durable and which the next flush forgets.
    pub fn garbage_pending_removal(&self) -> usize {
        self.garbage.unlinked().count()
    }

    /// The garbage files and their unlinks, for `nvr status`.
    pub fn garbage_status(&self) -> protocol::messages::GarbageStatus {
        self.garbage.status()
    }

    fn release_reserve(&mut self) {
        if !self.reserve_present {
            return;
        }
        match reserve::release(&*self.dir) {
            Ok(()) => {
                warn!("disk full: released the reserve file so space can be freed");
                self.reserve_present = false;
            }
            Err(e) => error!(error = %e, "could not release the reserve file"),
        }
    }

    /// Re-creates the reserve file after it was released, once space allows.
    fn restore_reserve(&mut self) {
        if self.reserve_present || self.options.reserve_bytes == 0 {
            return;
        }
        match reserve::ensure(&*self.dir, self.options.reserve_bytes) {
            Ok(()) => self.reserve_present = true,
            Err(e) => debug!(error = %e, "reserve file not restored yet"),
        }
    }

    /// Graceful stop: refuses new opens, salvages whatever is still growing, then flushes and
    /// collects garbage until nothing is pending.
    pub fn shutdown(&mut self) -> Result<Vec<Committed>, Error> {
        self.stop.store(true, Ordering::SeqCst);
        let growing: Vec<CompositeId> = self
            .streams
            .iter()
            .flat_map(|(&sid, s)| {
                s.inflight.iter().filter_map(move |(&r, f)| {
                    matches!(f, InFlight::Growing(_)).then_some(CompositeId::new(sid, r))
                })
            })
            .collect();
        for id in growing {
            if let Err(e) = self.abandon_recording(id, "shutdown") {
                if e.is_fatal() {
                    return Err(e);
                }
                warn!(recording = %id, error = %e, "salvage at shutdown failed");
            }
        }
        let mut out = self.flush_making_room("shutdown")?;
        // One last attempt at each garbage file; what is left stays garbage in the database
        // and the next start collects it.
        self.garbage.retry_all_now(self.clock.monotonic());
        match self.collect_garbage() {
            Ok(()) => out.extend(self.flush("shutdown: forget collected garbage")?),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => warn!(error = %e, "garbage left for the next start"),
        }
        Ok(out)
    }
}

/// Checks a progress report's offset against its samples and the file (see
/// [`Syncer::progress`]). `g.samples` already holds the report's samples.
fn check_written<F: DirFile>(g: &Growing<F>, written_bytes: u64) -> Result<(), String> {
    if written_bytes != g.samples.total_bytes {
        return Err(format!(
            "report ends at offset {written_bytes}, but its samples end at {}",
            g.samples.total_bytes
        ));
    }
    let allowed = g.acknowledged_bytes + limits::WRITE_WINDOW_BYTES;
    match g.file.stat() {
        Ok(st) if st.size_bytes < written_bytes => Err(format!(
            "file holds {} bytes, fewer than the {written_bytes} reported",
            st.size_bytes
        )),
        Ok(st) if st.size_bytes > allowed => Err(format!(
            "file grew to {} bytes, past its budget: {} acknowledged + a window of {}",
            st.size_bytes,
            g.acknowledged_bytes,
            limits::WRITE_WINDOW_BYTES
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("fstat failed: {e}")),
    }
}

/// Wall and media durations (90 kHz) must agree within the 500 ppm correction and the limit.
/// The start and local-time delta a writer reports are within `protocol::limits`, so that no
/// arithmetic on them (end times, listings) can overflow.
fn check_start(times: &RecordingTimes) -> Result<(), String> {
    let start = times.start.0;
    if !(limits::MIN_START_90K..=limits::MAX_START_90K).contains(&start) {
        return Err(format!(
            "start {start} is outside {}..={} (years 2000 to 2200)",
            limits::MIN_START_90K,
            limits::MAX_START_90K
        ));
    }
    let delta = times.local_time_delta_90k;
    if delta.unsigned_abs() > limits::MAX_LOCAL_TIME_DELTA_90K.unsigned_abs() {
        return Err(format!(
            "local time delta {delta} exceeds the maximum {}",
            limits::MAX_LOCAL_TIME_DELTA_90K
        ));
    }
    Ok(())
}

fn check_times(media_90k: i64, wall_90k: i64) -> Result<(), String> {
    if media_90k > limits::MAX_MEDIA_DURATION_90K || wall_90k > limits::MAX_WALL_DURATION_90K {
        return Err(format!(
            "duration (media {media_90k}, wall {wall_90k}) exceeds the maximum {}",
            limits::MAX_WALL_DURATION_90K
        ));
    }
    if (wall_90k - media_90k).abs() > media_90k / 2000 + 1 || wall_90k < 0 {
        return Err(format!(
            "wall duration {wall_90k} is not within 500 ppm of media duration {media_90k}"
        ));
    }
    Ok(())
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32)
}
/// `r`, unless it failed with an error that is not fatal: that is logged (`what` failed; the
/// next poll tries again) and the caller goes on. For the work `poll` does after a flush.
fn retry_later(r: Result<(), Error>, what: &str) -> Result<(), Error> {
    match r {
        Err(e) if !e.is_fatal() => {
            warn!(error = %e, "{what} failed; will retry");
            Ok(())
        }
        r => r,
    }
}
