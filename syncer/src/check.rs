//! `nvr check`: verifies DESIGN.md's invariants against the database and the sample dir, and
//! applies the few fixes that are safe.
//!
//! [`check`] only reads. It takes one snapshot of the database (one read transaction, so a
//! running syncer's commits cannot make it inconsistent), then looks at the directory, then
//! (with `hash`) reads every committed file. What each invariant becomes:
//!
//! | invariant | checked as |
//! |---|---|
//! | meta binds dir and database | [`ViolationKind::MetaMismatch`] |
//! | 1. file, length, blake3 | `MissingFile`, `LengthMismatch`, `HashMismatch`, `UnreadableFile`, `OverAllocated` |
//! | 1. index decodes to the row | `MissingIndex`, `BadIndex`, `IndexMismatch` |
//! | time model: wall within 500 ppm | `WallDurationSkew` |
//! | 2. no stray sample file | `OrphanFile`, `AbandonedFile`, `UnknownStreamFile` |
//! | 4. ids below the stream's next id | `IdNotBelowNext` |
//! | 5. runs abut | `RunDiscontinuity` |
//! | 6. committed bytes fit the quota | `OverQuota` |
//! | rows name existing sample entries | `UnknownSampleEntry` |
//!
//! Things that are allowed and only noted: garbage rows with or without files (the syncer
//! unlinks them), rows flagged [`FLAG_FILE_MISSING`] whose file is gone (a loss already found
//! and recorded by [`repair`]), names in the sample dir that nvr never creates.
//!
//! A *live* check ([`CheckOptions::live`]) runs while a syncer records: files of ids at or past
//! a stream's next id are recordings in flight, and a recording deleted by retention between
//! the snapshot and the directory listing looks like a missing file; both become notes.
//!
//! [`repair`] needs the data dir locked (no syncer running) and refuses a dir whose meta does
//! not match the database. It only turns orphan files (below a known stream's next id) into
//! garbage and unlinks them (the syncer's two-phase order), and flags rows whose files are
//! gone; files at or past a next id, or of unknown streams, are left to the syncer's
//! recovery. It never touches a file whose length or hash is wrong: that is evidence, reported
//! only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

use protocol::CompositeId;
use protocol::sample_index::{IndexError, IndexSummary, summarize};

use crate::db::{
    Database, DbError, DbInfo, FLAG_FILE_MISSING, FLAG_TRAILING_ZERO, FlushBatch, RecordingRow,
    StreamRow,
};
use crate::error::Error;
use crate::fs::{Dir, DirFile, OpenMode};
use crate::layout::sample_file_name;
use crate::meta::{self, META_FILE_NAME};
use crate::reserve::RESERVE_FILE_NAME;
use crate::retention::round_up;

/// Bytes read per `read_at` while hashing.
const HASH_CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Recompute the blake3 of every committed file (reads every byte).
    pub hash: bool,
    /// A syncer is recording: the database is read through a read-only connection and the
    /// sample dir without its lock. See the module doc for what changes.
    pub live: bool,
}

/// How far [`check`] is. With `hash`, bytes and files count the hashing pass; without, files
/// count the files whose length is checked and the bytes stay 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub done_files: usize,
    pub total_files: usize,
}

/// What is wrong. [`ViolationKind::as_str`] gives the stable snake_case name used in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// The sample dir's meta file is missing, damaged, or belongs to another database or open.
    MetaMismatch,
    /// A committed recording has no file (and is not flagged [`FLAG_FILE_MISSING`]).
    MissingFile,
    /// A committed recording's file length differs from its row's byte count.
    LengthMismatch,
    /// A committed recording's file has another blake3 than its row (only with `hash`).
    HashMismatch,
    /// A committed recording's file could not be opened, stat'ed or read.
    UnreadableFile,
    /// A committed recording's file occupies more of the disk than its data needs (blocks
    /// preallocated past its end, which its stream's quota does not count).
    OverAllocated,
    /// A committed recording has no sample index.
    MissingIndex,
    /// A committed recording's sample index does not decode.
    BadIndex,
    /// A sample index decodes, but its totals differ from the row.
    IndexMismatch,
    /// Wall duration is not within 500 ppm (+1 tick) of media duration.
    WallDurationSkew,
    /// A recording continues a run (run offset + 1) but does not start where the previous
    /// recording of the stream ended.
    RunDiscontinuity,
    /// A committed recording's or garbage row's id is not below its stream's next id (or a
    /// recording's stream is gone): the id could be handed out again.
    IdNotBelowNext,
    /// A row names a video sample entry that does not exist, or is another stream's.
    UnknownSampleEntry,
    /// A stream's committed bytes, each rounded up to 4 KiB, exceed its quota.
    OverQuota,
    /// A file below its stream's next id that is neither a committed recording nor garbage.
    OrphanFile,
    /// A file at or past its stream's next id: opened, never committed, not yet recovered.
    AbandonedFile,
    /// A file of a stream the database does not know.
    UnknownStreamFile,
}

impl ViolationKind {
    pub const ALL: [ViolationKind; 17] = [
        ViolationKind::MetaMismatch,
        ViolationKind::MissingFile,
        ViolationKind::LengthMismatch,
        ViolationKind::HashMismatch,
        ViolationKind::UnreadableFile,
        ViolationKind::OverAllocated,
        ViolationKind::MissingIndex,
        ViolationKind::BadIndex,
        ViolationKind::IndexMismatch,
        ViolationKind::WallDurationSkew,
        ViolationKind::RunDiscontinuity,
        ViolationKind::IdNotBelowNext,
        ViolationKind::UnknownSampleEntry,
        ViolationKind::OverQuota,
        ViolationKind::OrphanFile,
        ViolationKind::AbandonedFile,
        ViolationKind::UnknownStreamFile,
    ];

    /// The snake_case name, as it appears in `nvr check --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::MetaMismatch => "meta_mismatch",
            ViolationKind::MissingFile => "missing_file",
            ViolationKind::LengthMismatch => "length_mismatch",
            ViolationKind::HashMismatch => "hash_mismatch",
            ViolationKind::UnreadableFile => "unreadable_file",
            ViolationKind::OverAllocated => "over_allocated",
            ViolationKind::MissingIndex => "missing_index",
            ViolationKind::BadIndex => "bad_index",
            ViolationKind::IndexMismatch => "index_mismatch",
            ViolationKind::WallDurationSkew => "wall_duration_skew",
            ViolationKind::RunDiscontinuity => "run_discontinuity",
            ViolationKind::IdNotBelowNext => "id_not_below_next",
            ViolationKind::UnknownSampleEntry => "unknown_sample_entry",
            ViolationKind::OverQuota => "over_quota",
            ViolationKind::OrphanFile => "orphan_file",
            ViolationKind::AbandonedFile => "abandoned_file",
            ViolationKind::UnknownStreamFile => "unknown_stream_file",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// What is wrong: a recording id / sample file name (the same 16 hex digits), a stream's
    /// name for [`ViolationKind::OverQuota`], `meta` for [`ViolationKind::MetaMismatch`].
    pub subject: String,
    /// A sentence saying what was expected and what was found.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.subject, self.message, self.kind)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Committed recordings (rows) checked.
    pub recordings: usize,
    /// Sample files (names of the 16-hex form) found in the sample dir.
    pub files: usize,
    pub bytes_hashed: u64,
    pub violations: Vec<Violation>,
    /// What is allowed but worth saying.
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, kind: ViolationKind, subject: impl fmt::Display, message: String) {
        self.violations.push(Violation {
            kind,
            subject: subject.to_string(),
            message,
        });
    }
}

/// What the database says, read in one transaction.
struct Snapshot {
    info: DbInfo,
    streams: BTreeMap<i32, StreamRow>,
    /// Ordered by id, so by stream and then by recording id.
    rows: Vec<RecordingRow>,
    /// Per row: its index's totals, `None` if it has no index.
    indexes: BTreeMap<CompositeId, Option<Result<IndexSummary, IndexError>>>,
    garbage: BTreeSet<CompositeId>,
    /// Each sample entry's stream.
    sample_entries: BTreeMap<i32, i32>,
}

impl Snapshot {
    fn read(db: &Database) -> Result<Snapshot, DbError> {
        let rows = db.recordings(None)?;
        let mut indexes = BTreeMap::new();
        for r in &rows {
            // Decoded here so that only the totals are kept, not every blob.
            let summary = db.video_index(r.id)?.map(|blob| summarize(&blob));
            indexes.insert(r.id, summary);
        }
        Ok(Snapshot {
            info: db.info()?,
            streams: db.streams()?.into_iter().map(|s| (s.id, s)).collect(),
            rows,
            indexes,
            garbage: db.garbage()?.into_iter().collect(),
            sample_entries: db
                .sample_entries()?
                .into_iter()
                .map(|e| (e.id, e.stream_id))
                .collect(),
        })
    }
}

/// A committed recording whose file has the right length, to hash.
struct ToHash {
    id: CompositeId,
    len_bytes: u64,
    blake3: [u8; 32],
}

/// Checks the data dir whose database is `db` and sample dir is `dir`; see the module doc.
///
/// Violations are findings, not errors: `Err` means the check itself could not run (the
/// database could not be read, the directory not listed).
pub fn check<D: Dir>(
    db: &Database,
    dir: &D,
    opts: CheckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport, Error> {
    let snap = db.read_snapshot(Snapshot::read)?;
    let mut report = CheckReport {
        recordings: snap.rows.len(),
        ..Default::default()
    };
    if opts.live {
        report.notes.push(
            "recording was active: checked read-only; recordings in flight may show as files \
             without rows"
                .to_owned(),
        );
    }
    check_meta(dir, &snap, &mut report);
    check_rows(&snap, &mut report);
    let to_hash = check_files(db, dir, &snap, opts, &mut report, progress)?;
    if opts.hash {
        hash_files(dir, &to_hash, &mut report, progress);
    }
    if opts.live {
        forgive_deleted_while_checking(db, &mut report)?;
    }
    Ok(report)
}

fn check_meta<D: Dir>(dir: &D, snap: &Snapshot, report: &mut CheckReport) {
    let i = &snap.info;
    let found = meta::read_meta(dir)
        .and_then(|m| m.check_against(i.db_uuid, i.dir_uuid, i.last_complete_open));
    if let Err(e) = found {
        report.violation(ViolationKind::MetaMismatch, META_FILE_NAME, e.to_string());
    }
}

/// Everything that needs only the database.
fn check_rows(snap: &Snapshot, report: &mut CheckReport) {
    for r in &snap.rows {
        match snap.streams.get(&r.id.stream()) {
            None => report.violation(
                ViolationKind::IdNotBelowNext,
                r.id,
                format!("its stream {} is not in the database", r.id.stream()),
            ),
            Some(s) if r.id.recording() >= s.next_recording_id => report.violation(
                ViolationKind::IdNotBelowNext,
                r.id,
                format!(
                    "recording id {} is not below stream {:?}'s next id {}",
                    r.id.recording(),
                    s.name,
                    s.next_recording_id
                ),
            ),
            Some(_) => {}
        }
        match snap.sample_entries.get(&r.video_sample_entry_id) {
            None => report.violation(
                ViolationKind::UnknownSampleEntry,
                r.id,
                format!(
                    "video sample entry {} does not exist",
                    r.video_sample_entry_id
                ),
            ),
            Some(&owner) if owner != r.id.stream() => report.violation(
                ViolationKind::UnknownSampleEntry,
                r.id,
                format!(
                    "video sample entry {} belongs to stream {owner}, not to the recording's",
                    r.video_sample_entry_id
                ),
            ),
            Some(_) => {}
        }
        let media = i64::from(r.media_duration_90k);
        let wall = i64::from(r.wall_duration_90k);
        if wall < 0 || (wall - media).abs() > media / 2000 + 1 {
            report.violation(
                ViolationKind::WallDurationSkew,
                r.id,
                format!(
                    "wall duration {wall} is not within 500 ppm of media duration {media} \
                     (90 kHz)"
                ),
            );
        }
        match &snap.indexes[&r.id] {
            None => report.violation(
                ViolationKind::MissingIndex,
                r.id,
                "has no sample index".to_owned(),
            ),
            Some(Err(e)) => report.violation(
                ViolationKind::BadIndex,
                r.id,
                format!("sample index does not decode: {e}"),
            ),
            Some(Ok(sum)) => {
                let diffs = index_differences(r, sum);
                if !diffs.is_empty() {
                    report.violation(
                        ViolationKind::IndexMismatch,
                        r.id,
                        format!("sample index disagrees with its row: {}", diffs.join(", ")),
                    );
                }
            }
        }
    }
    for &id in &snap.garbage {
        // Garbage of unknown streams is allowed: recovery records their files so.
        if let Some(s) = snap.streams.get(&id.stream())
            && id.recording() >= s.next_recording_id
        {
            report.violation(
                ViolationKind::IdNotBelowNext,
                id,
                format!(
                    "garbage row's recording id {} is not below stream {:?}'s next id {}, \
                     so the id could be handed out again",
                    id.recording(),
                    s.name,
                    s.next_recording_id
                ),
            );
        }
    }
    for w in snap.rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let a_end = a.start.0 + i64::from(a.wall_duration_90k);
        if a.id.stream() == b.id.stream() && b.run_offset == a.run_offset + 1 && b.start.0 != a_end
        {
            report.violation(
                ViolationKind::RunDiscontinuity,
                b.id,
                format!(
                    "run offset {} starts at {} but the previous recording of its run, {}, \
                     ended at {a_end} (90 kHz since the epoch)",
                    b.run_offset, b.start.0, a.id
                ),
            );
        }
    }
    for s in snap.streams.values() {
        let used: i64 = snap
            .rows
            .iter()
            .filter(|r| r.id.stream() == s.id)
            .map(|r| round_up(r.sample_file_bytes))
            .sum();
        if used > s.config.retain_bytes {
            report.violation(
                ViolationKind::OverQuota,
                &s.name,
                format!(
                    "committed recordings use {used} bytes (4 KiB blocks), over the quota of {}",
                    s.config.retain_bytes
                ),
            );
        }
    }
}

/// The row's totals that the index's contradict, as phrases.
fn index_differences(r: &RecordingRow, sum: &IndexSummary) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |what: &str, index: i64, row: i64| {
        if index != row {
            d.push(format!("{what} {index} in the index, {row} in the row"));
        }
    };
    cmp("bytes", sum.total_bytes as i64, r.sample_file_bytes);
    cmp("samples", sum.samples.into(), r.video_samples.into());
    cmp(
        "key samples",
        sum.key_samples.into(),
        r.video_sync_samples.into(),
    );
    cmp(
        "media duration",
        sum.media_duration_90k,
        r.media_duration_90k.into(),
    );
    let trailing_zero = r.flags & FLAG_TRAILING_ZERO != 0;
    if trailing_zero != (sum.last_sample_duration_90k == 0) {
        d.push(format!(
            "last sample duration {} but the trailing-zero flag is {}",
            sum.last_sample_duration_90k,
            if trailing_zero { "set" } else { "clear" }
        ));
    }
    d
}

/// Compares the directory with the rows: each committed recording's file and its length, and
/// every sample file that is not a recording. Returns the files to hash.
fn check_files<D: Dir>(
    db: &Database,
    dir: &D,
    snap: &Snapshot,
    opts: CheckOptions,
    report: &mut CheckReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<ToHash>, Error> {
    let mut files = BTreeSet::new();
    for name in dir.list().map_err(|e| Error::io("list", "sample dir", e))? {
        match CompositeId::parse_file_name(name.as_bytes()) {
            Some(id) => {
                files.insert(id);
            }
            None if name == META_FILE_NAME || name == RESERVE_FILE_NAME => {}
            None => report.notes.push(format!(
                "ignored {name:?}: not a name nvr gives a sample file"
            )),
        }
    }
    report.files = files.len();

    let mut to_hash = Vec::new();
    let mut p = Progress {
        total_files: snap.rows.len(),
        ..Default::default()
    };
    for r in &snap.rows {
        let flagged = r.flags & FLAG_FILE_MISSING != 0;
        let stat = if files.contains(&r.id) {
            dir.open(&sample_file_name(r.id), OpenMode::ReadOnly)
                .and_then(|f| f.stat())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        };
        match stat {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if flagged {
                    report.notes.push(format!(
                        "{}: file is missing, as recorded by an earlier repair",
                        r.id
                    ));
                } else {
                    report.violation(
                        ViolationKind::MissingFile,
                        r.id,
                        format!(
                            "committed recording of {} bytes has no file",
                            r.sample_file_bytes
                        ),
                    );
                }
            }
            Err(e) => report.violation(
                ViolationKind::UnreadableFile,
                r.id,
                format!("cannot open or stat the file: {e}"),
            ),
            Ok(st) => {
                if flagged {
                    report.notes.push(format!(
                        "{}: flagged as missing its file, but the file is present",
                        r.id
                    ));
                }
                if st.size_bytes as i64 != r.sample_file_bytes {
                    report.violation(
                        ViolationKind::LengthMismatch,
                        r.id,
                        format!(
                            "file has {} bytes, the row says {}",
                            st.size_bytes, r.sample_file_bytes
                        ),
                    );
                } else {
                    let allowed = crate::durability::allocation_allowed(st.size_bytes);
                    if st.allocated_bytes > allowed {
                        report.violation(
                            ViolationKind::OverAllocated,
                            r.id,
                            format!(
                                "file occupies {} bytes on disk for {} bytes of data (at most \
                                 {allowed})",
                                st.allocated_bytes, st.size_bytes
                            ),
                        );
                    }
                    to_hash.push(ToHash {
                        id: r.id,
                        len_bytes: st.size_bytes,
                        blake3: r.blake3,
                    });
                }
            }
        }
        p.done_files += 1;
        if !opts.hash {
            progress(p);
        }
    }

    let rows: BTreeSet<CompositeId> = snap.rows.iter().map(|r| r.id).collect();
    // Streams as they are now: in a live check, one added after the snapshot is not unknown.
    let streams_now: BTreeSet<i32> = if opts.live {
        db.streams()?.into_iter().map(|s| s.id).collect()
    } else {
        snap.streams.keys().copied().collect()
    };
    let mut garbage_files = 0;
    for &id in files.difference(&rows) {
        if snap.garbage.contains(&id) {
            garbage_files += 1;
            continue;
        }
        match snap.streams.get(&id.stream()) {
            None if opts.live && streams_now.contains(&id.stream()) => report.notes.push(format!(
                "{id}: file of stream {}, added while checking",
                id.stream()
            )),
            None => report.violation(
                ViolationKind::UnknownStreamFile,
                id,
                format!(
                    "file of stream {}, which the database does not know",
                    id.stream()
                ),
            ),
            Some(s) if id.recording() >= s.next_recording_id => {
                if opts.live {
                    report.notes.push(format!(
                        "{id}: recording in flight (at or past stream {:?}'s next id {})",
                        s.name, s.next_recording_id
                    ));
                } else {
                    report.violation(
                        ViolationKind::AbandonedFile,
                        id,
                        format!(
                            "file at or past stream {:?}'s next id {}: opened but never \
                             committed, and not yet recovered",
                            s.name, s.next_recording_id
                        ),
                    );
                }
            }
            Some(_) => report.violation(
                ViolationKind::OrphanFile,
                id,
                "file is neither a committed recording nor garbage".to_owned(),
            ),
        }
    }
    if !snap.garbage.is_empty() {
        report.notes.push(format!(
            "{} garbage rows ({garbage_files} still with a file): deleted or abandoned ids \
             whose files the syncer unlinks",
            snap.garbage.len()
        ));
    }
    Ok(to_hash)
}

/// Hashes each file and compares with its row. Read errors are violations, not failures.
fn hash_files<D: Dir>(
    dir: &D,
    to_hash: &[ToHash],
    report: &mut CheckReport,
    progress: &mut dyn FnMut(Progress),
) {
    let mut p = Progress {
        total_bytes: to_hash.iter().map(|h| h.len_bytes).sum(),
        total_files: to_hash.len(),
        ..Default::default()
    };
    progress(p);
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    for h in to_hash {
        let start_bytes = p.done_bytes;
        let hashed = (|| -> io::Result<[u8; 32]> {
            let f = dir.open(&sample_file_name(h.id), OpenMode::ReadOnly)?;
            let mut hasher = blake3::Hasher::new();
            let mut pos = 0u64;
            while pos < h.len_bytes {
                let want = buf.len().min((h.len_bytes - pos) as usize);
                let n = f.read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ended after {pos} of {} bytes", h.len_bytes),
                    ));
                }
                hasher.update(&buf[..n]);
                pos += n as u64;
                p.done_bytes += n as u64;
                report.bytes_hashed += n as u64;
                if pos < h.len_bytes {
                    progress(p);
                }
            }
            Ok(*hasher.finalize().as_bytes())
        })();
        match hashed {
            Ok(hash) if hash == h.blake3 => {}
            Ok(hash) => report.violation(
                ViolationKind::HashMismatch,
                h.id,
                format!(
                    "file's blake3 is {}, the row says {}",
                    hex(&hash),
                    hex(&h.blake3)
                ),
            ),
            Err(e) => report.violation(
                ViolationKind::UnreadableFile,
                h.id,
                format!("reading the file failed: {e}"),
            ),
        }
        // Keep the totals consistent even when a read stopped early.
        p.done_bytes = start_bytes + h.len_bytes;
        p.done_files += 1;
        progress(p);
    }
}

/// Live check: a recording that retention deleted after the snapshot looks like a missing
/// file. If its row is gone now, that is the syncer at work: a note.
fn forgive_deleted_while_checking(db: &Database, report: &mut CheckReport) -> Result<(), Error> {
    if !report
        .violations
        .iter()
        .any(|v| v.kind == ViolationKind::MissingFile)
    {
        return Ok(());
    }
    let rows_now: BTreeSet<String> = db
        .recordings(None)?
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    let mut notes = Vec::new();
    report.violations.retain(|v| {
        let deleted = v.kind == ViolationKind::MissingFile && !rows_now.contains(&v.subject);
        if deleted {
            notes.push(format!(
                "{}: deleted by retention while checking",
                v.subject
            ));
        }
        !deleted
    });
    report.notes.extend(notes);
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One thing [`repair`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepairActionKind {
    /// A stray file became a garbage row, was unlinked, and the row was forgotten.
    TrashedFile,
    /// A row whose file is gone got [`FLAG_FILE_MISSING`].
    MarkedFileMissing,
}

impl RepairActionKind {
    /// The snake_case name, as it appears in `nvr check --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairActionKind::TrashedFile => "trashed_file",
            RepairActionKind::MarkedFileMissing => "marked_file_missing",
        }
    }
}

impl fmt::Display for RepairActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairAction {
    pub kind: RepairActionKind,
    /// The recording id / file name.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for RepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.subject, self.message, self.kind)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// What was done, per file or recording.
    pub actions: Vec<RepairAction>,
    /// The violations of the check that remain: those repair must not fix (wrong length or
    /// hash, bad index, ...) and any whose premise no longer held when repair looked again.
    pub left: Vec<Violation>,
}

/// Applies the safe fixes for `report`'s violations (see the module doc). The caller holds the
/// sample dir's lock; no syncer runs.
///
/// Refused ([`Error::RepairRefused`]) unless the sample dir's meta matches the database: a
/// database restored from an older backup, or another data dir's, does not know the newer
/// files, and "fixing" them would unlink the archive. Even with a matching meta, only orphans
/// (files below a known stream's next id) are trashed: a file at or past the next id, or of a
/// stream the database does not know, could belong to a newer database, so it is left to the
/// syncer's recovery, which checks the meta itself.
///
/// Each violation's premise is re-verified against the database and directory as they are now
/// before anything is changed, so a stale report cannot trash a committed recording's file.
/// Stray files are handled as the syncer's garbage collection does: one transaction records
/// them as garbage (advancing a stream's next id past any abandoned id, so ids are never
/// reused), then the unlinks, a directory fsync, and a transaction that forgets the rows. An
/// error partway leaves garbage rows that the next syncer start collects.
pub fn repair<D: Dir>(
    db: &mut Database,
    dir: &D,
    report: &CheckReport,
) -> Result<RepairReport, Error> {
    let info = db.info()?;
    meta::read_meta(dir)
        .and_then(|m| m.check_against(info.db_uuid, info.dir_uuid, info.last_complete_open))
        .map_err(|e| Error::RepairRefused(e.to_string()))?;
    let next_ids: BTreeMap<i32, i32> = db
        .streams()?
        .into_iter()
        .map(|s| (s.id, s.next_recording_id))
        .collect();
    let rows: BTreeSet<CompositeId> = db.recordings(None)?.iter().map(|r| r.id).collect();
    let garbage: BTreeSet<CompositeId> = db.garbage()?.into_iter().collect();
    let names: BTreeSet<String> = dir
        .list()
        .map_err(|e| Error::io("list", "sample dir", e))?
        .into_iter()
        .collect();

    let mut out = RepairReport::default();
    let mut trash = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for v in &report.violations {
        let id = CompositeId::parse_file_name(v.subject.as_bytes());
        match id {
            Some(id)
                if v.kind == ViolationKind::OrphanFile
                    && next_ids
                        .get(&id.stream())
                        .is_some_and(|&next| id.recording() < next)
                    && !rows.contains(&id)
                    && !garbage.contains(&id)
                    && names.contains(&v.subject) =>
            {
                trash.insert(id);
            }
            Some(id)
                if v.kind == ViolationKind::MissingFile
                    && rows.contains(&id)
                    && file_is_gone(dir, id)? =>
            {
                missing.insert(id);
            }
            _ => out.left.push(v.clone()),
        }
    }

    if !trash.is_empty() {
        // Orphans are below their stream's next id: no id advances.
        db.commit_batch(&FlushBatch {
            new_garbage: trash.iter().copied().collect(),
            ..Default::default()
        })?;
        for &id in &trash {
            let name = sample_file_name(id);
            match dir.unlink(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("unlink", name, e)),
            }
        }
        dir.sync()
            .map_err(|e| Error::io("fsync", "sample dir", e))?;
        db.commit_batch(&FlushBatch {
            garbage_removed: trash.iter().copied().collect(),
            ..Default::default()
        })?;
        out.actions.extend(trash.iter().map(|&id| RepairAction {
            kind: RepairActionKind::TrashedFile,
            subject: id.to_string(),
            message: "recorded as garbage and unlinked".to_owned(),
        }));
    }

    if !missing.is_empty() {
        let ids: Vec<CompositeId> = missing.iter().copied().collect();
        db.mark_files_missing(&ids)?;
        out.actions.extend(ids.iter().map(|&id| RepairAction {
            kind: RepairActionKind::MarkedFileMissing,
            subject: id.to_string(),
            message: "row flagged as missing its file; the recording is lost".to_owned(),
        }));
    }
    Ok(out)
}

/// True when `id`'s file does not exist (any other error is returned: it may well exist).
fn file_is_gone<D: Dir>(dir: &D, id: CompositeId) -> Result<bool, Error> {
    let name = sample_file_name(id);
    match dir.open(&name, OpenMode::ReadOnly) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("open", name, e)),
    }
}
