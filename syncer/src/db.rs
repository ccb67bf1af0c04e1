//! The SQLite database: schema, migrations and every statement the syncer runs.
//!
//! Only the syncer process opens the database. It runs in WAL mode with `synchronous=FULL`, so a
//! transaction whose COMMIT returned survives power loss. Each batch of changes the syncer makes
//! (a flush) is exactly one transaction, written by [`Database::commit_batch`].
//!
//! The schema version lives in `PRAGMA user_version`; [`MIGRATIONS`] holds one entry per
//! version, applied in order inside one transaction when an older database is opened.

use std::io;
use std::path::Path;

use protocol::messages::{CameraConfig, CameraInfo, RecordingSummary};
use protocol::{CompositeId, Time};
use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;
use uuid::Uuid;

use crate::meta::Open;

/// Flag bit of `recording.flags`: the last sample's duration is unknown and stored as 0.
pub const FLAG_TRAILING_ZERO: i32 = 1;

/// Flag bit of `recording.flags`: the sample file is known to be gone. `nvr check --repair`
/// sets it on a row whose file it found missing, so later checks report the loss as a note
/// instead of a violation; the row keeps its place in quota accounting until retention deletes
/// it (its unlink then finds nothing, which garbage collection tolerates).
pub const FLAG_FILE_MISSING: i32 = 2;

/// The migrations, index `i` taking a database from `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("schema_v1.sql"), include_str!("schema_v2.sql")];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

#[derive(Debug, Error)]
pub enum DbError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this nvr understands ({SCHEMA_VERSION})"
    )]
    TooNew { found: i32 },
    #[error("database is not initialized (schema version 0); run `nvr init`")]
    NotInitialized,
    #[error(
        "database schema version {found} needs a migration to {SCHEMA_VERSION}, which a \
         read-only open cannot do: any nvr command that takes the data dir (`nvr status` with \
         nothing running) or `nvr run` migrates it"
    )]
    NeedsMigration { found: i32 },
    #[error("COMMIT failed: {0}")]
    Commit(#[source] io::Error),
    #[error("database row is corrupt: {0}")]
    Corrupt(String),
    #[error("no stream with id {0}")]
    NoSuchStream(i32),
    #[error("a stream named {0:?} already exists")]
    DuplicateStream(String),
    #[error(
        "the data dir is read-only and its write-ahead log {wal} holds commits not yet in the \
         database file: make the dir writable once (any nvr command folds the log in), then it \
         can be read read-only"
    )]
    ReadOnlyWithWal { wal: String },
}

/// Whether this process may create files in the directory holding `path` (what SQLite needs
/// for its WAL index).
fn dir_is_writable(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal` and `-shm` files).
pub(crate) fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// `path` percent-encoded for an SQLite `file:` URI (all but unreserved characters and `/`).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl DbError {
    /// True when the database could not grow (`SQLITE_FULL`, or an injected ENOSPC at COMMIT):
    /// the caller releases its reserve file and retries.
    pub fn is_full(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            DbError::Commit(e) => e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32),
            _ => false,
        }
    }
}

/// Called right before each COMMIT; an error rolls the transaction back. The simulation uses
/// it to make COMMIT an atomic crash point and to inject commit failures.
pub type CommitHook = Box<dyn FnMut() -> io::Result<()> + Send>;

/// Per-stream settings a user configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Where the ingest reads from (`file:`, `synthetic:`, `rtsp://`).
    pub source: String,
    /// Quota: committed bytes, each recording rounded up to 4 KiB, kept at or below this.
    pub retain_bytes: i64,
    /// Commit a recording at most this many seconds after its start.
    pub flush_if_sec: u32,
    /// Rotate to a new recording at the first key frame past this media duration.
    pub rotate_sec: u32,
}

/// Longest rotation interval, in seconds: a recording must stay within the duration limits of
/// [`crate::limits`] (five minutes) with room for the key frame after it.
pub const MAX_ROTATE_SEC: u32 = 270;

/// Longest `flush_if_sec`: an hour of accepted recordings is the most a syncer crash may lose.
pub const MAX_FLUSH_IF_SEC: u32 = 3600;

/// Longest camera name, in bytes.
pub const MAX_CAMERA_NAME_LEN: usize = 64;

/// A camera name or setting that nvr does not accept. Checked in one place
/// ([`validate_camera_name`], [`StreamConfig::validate`]) for every path that adds or changes
/// a camera: the daemon's admin socket and the offline command line alike.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error(
        "camera name {0:?} is invalid: expected 1 to {MAX_CAMERA_NAME_LEN} of the characters \
         A-Z a-z 0-9 _ . -, not starting with -"
    )]
    BadName(String),
    /// `text` has its password, if any, replaced by `***`.
    #[error(
        "camera source {text:?} is invalid: {why}; expected file:PATH, synthetic:[?OPTIONS] \
         or rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[?transport=tcp|udp][&stall_sec=N]"
    )]
    BadSource { text: String, why: String },
    #[error("rotate_sec {0} is out of range: expected 1 to {MAX_ROTATE_SEC} seconds")]
    BadRotate(u32),
    #[error("flush_if_sec {0} is out of range: expected 0 to {MAX_FLUSH_IF_SEC} seconds")]
    BadFlushIf(u32),
    #[error("retain_bytes {0} is negative: expected a quota of 0 bytes or more")]
    NegativeRetain(i64),
}

/// Checks a camera (stream) name: 1 to [`MAX_CAMERA_NAME_LEN`] of `[A-Za-z0-9_.-]`, not
/// starting with `-` (it is passed as `nvr-ingest --camera NAME`, where it must not look like
/// an option).
pub fn validate_camera_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CAMERA_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName(name.to_owned()))
    }
}

/// Checks a source's form (not whether it can be read: that is the ingest's job).
fn validate_source(source: &str) -> Result<(), ConfigError> {
    let bad = |why| ConfigError::BadSource {
        text: protocol::source_url::redact(source),
        why,
    };
    if source.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "it contains whitespace or a control character".to_owned()
        ));
    }
    if source.starts_with("file:") || source.starts_with("synthetic:") {
        // The ingest's own parse: what is accepted here, the ingest runs.
        return protocol::source_spec::SourceUrl::parse(source)
            .map(drop)
            .map_err(|e| bad(e.reason));
    }
    if !source.starts_with("rtsp:") {
        return Err(bad("unknown scheme".to_owned()));
    }
    protocol::source_url::RtspUrl::parse(source)
        .map(drop)
        .map_err(|e| bad(e.reason))
}

impl StreamConfig {
    /// Checks every setting: the source's form, `rotate_sec` in `1..=`[`MAX_ROTATE_SEC`],
    /// `flush_if_sec` at most [`MAX_FLUSH_IF_SEC`], `retain_bytes` not negative.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_source(&self.source)?;
        if !(1..=MAX_ROTATE_SEC).contains(&self.rotate_sec) {
            return Err(ConfigError::BadRotate(self.rotate_sec));
        }
        if self.flush_if_sec > MAX_FLUSH_IF_SEC {
            return Err(ConfigError::BadFlushIf(self.flush_if_sec));
        }
        if self.retain_bytes < 0 {
            return Err(ConfigError::NegativeRetain(self.retain_bytes));
        }
        Ok(())
    }
}

impl From<CameraConfig> for StreamConfig {
    fn from(c: CameraConfig) -> Self {
        StreamConfig {
            source: c.source,
            retain_bytes: c.retain_bytes,
            flush_if_sec: c.flush_if_sec,
            rotate_sec: c.rotate_sec,
        }
    }
}

impl From<StreamConfig> for CameraConfig {
    fn from(c: StreamConfig) -> Self {
        CameraConfig {
            source: c.source,
            retain_bytes: c.retain_bytes,
            flush_if_sec: c.flush_if_sec,
            rotate_sec: c.rotate_sec,
        }
    }
}

/// A camera as the admin socket and `nvr camera list` show it.
impl From<&StreamRow> for CameraInfo {
    fn from(row: &StreamRow) -> Self {
        CameraInfo {
            id: row.id,
            name: row.name.clone(),
            config: row.config.clone().into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRow {
    pub id: i32,
    pub name: String,
    pub config: StreamConfig,
    /// The next recording id to be committed: every id below it is a committed recording,
    /// garbage, or gone. Called `cum_recordings` in the schema, as in Moonfire NVR.
    pub next_recording_id: i32,
}

/// A committed recording (all but its index, which is in [`RecordingToInsert`] / `recording_playback`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingRow {
    pub id: CompositeId,
    /// The syncer start during which this recording was written.
    pub open_id: u32,
    /// Position within its run (0 = first recording of a run).
    pub run_offset: i32,
    /// Bit set of `FLAG_*`.
    pub flags: i32,
    /// Start, 90 kHz since the Unix epoch.
    pub start: Time,
    /// Wall duration, 90 kHz: media duration corrected by at most 500 ppm toward the local clock.
    pub wall_duration_90k: i32,
    /// Sum of the sample durations, 90 kHz.
    pub media_duration_90k: i32,
    pub video_samples: i32,
    pub video_sync_samples: i32,
    pub sample_file_bytes: i64,
    pub video_sample_entry_id: i32,
    /// Local clock's start minus `start`, 90 kHz.
    pub local_time_delta_90k: i64,
    /// blake3 of the sample file, computed by the syncer from its own descriptor.
    pub blake3: [u8; 32],
    pub end_reason: Option<String>,
}

impl RecordingRow {
    /// What `nvr recordings` shows of this row, `stream_name` being its stream's name (the
    /// same from the running syncer and from the database).
    pub fn summary(self, stream_name: String) -> RecordingSummary {
        RecordingSummary {
            id: self.id,
            stream_name,
            start: self.start,
            wall_duration_90k: self.wall_duration_90k,
            media_duration_90k: self.media_duration_90k,
            sample_file_bytes: self.sample_file_bytes,
            video_samples: self.video_samples,
            video_sync_samples: self.video_sync_samples,
            run_offset: self.run_offset,
            flags: self.flags,
            end_reason: self.end_reason,
            blake3: self.blake3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingToInsert {
    pub row: RecordingRow,
    /// The sample index (see `protocol::sample_index`).
    pub video_index: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleEntry {
    pub id: i32,
    /// The stream it belongs to: only that stream's recordings may use it.
    pub stream_id: i32,
    pub width: u16,
    pub height: u16,
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub rfc6381_codec: String,
    /// The ISO/IEC 14496-12 sample entry box (e.g. `avc1` with its `avcC`).
    pub data: Vec<u8>,
}

/// Identity of the database and of the one sample dir it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbInfo {
    pub db_uuid: Uuid,
    pub dir_uuid: Uuid,
    pub last_complete_open: Option<Open>,
}

/// Everything one flush changes, applied as one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushBatch {
    /// Synced recordings to insert, in id order per stream.
    pub inserts: Vec<RecordingToInsert>,
    /// Ids that left a trace but will never be committed (discarded, abandoned): new garbage.
    pub new_garbage: Vec<CompositeId>,
    /// Committed recordings to delete: rows removed, ids moved to garbage.
    pub deletions: Vec<CompositeId>,
    /// Garbage rows whose files are unlinked and the unlink made durable: forgotten.
    pub garbage_removed: Vec<CompositeId>,
    /// New `cum_recordings` per stream (never lower than before).
    pub next_recording_ids: Vec<(i32, i32)>,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        *self == FlushBatch::default()
    }
}

pub struct Database {
    conn: Connection,
    commit_hook: Option<CommitHook>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

fn set_pragmas(conn: &Connection) -> Result<(), DbError> {
    let mode: String = conn.query_row("pragma journal_mode = wal", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::Corrupt(format!(
            "could not enable WAL mode (got {mode:?})"
        )));
    }
    conn.execute_batch(
        "pragma synchronous = full;
         pragma foreign_keys = on;
         pragma busy_timeout = 5000;",
    )?;
    Ok(())
}

fn uuid_from(blob: Vec<u8>, what: &str) -> Result<Uuid, DbError> {
    Uuid::from_slice(&blob).map_err(|_| DbError::Corrupt(format!("{what} is not a 16-byte uuid")))
}

impl Database {
    /// Creates a new database at `path` (which must not hold one) with the given identities.
    pub fn create(path: &Path, db_uuid: Uuid, dir_uuid: Uuid) -> Result<Database, DbError> {
        let conn = Connection::open(path)?;
        set_pragmas(&conn)?;
        let mut db = Database {
            conn,
            commit_hook: None,
        };
        let version: i32 = db.conn.query_row("pragma user_version", [], |r| r.get(0))?;
        if version != 0 {
            return Err(DbError::Corrupt(format!(
                "{} already holds a database (schema version {version})",
                path.display()
            )));
        }
        // Schema and identity in one transaction: an interrupted create leaves version 0.
        // Foreign keys off as for any migration (see `migrate`), and on again below.
        db.conn.execute_batch("pragma foreign_keys = off")?;
        let tx = db.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i32 + 1)?;
        }
        tx.execute(
            "insert into db_info (id, uuid) values (1, ?)",
            params![db_uuid.as_bytes().as_slice()],
        )?;
        tx.execute(
            "insert into sample_file_dir (id, uuid) values (1, ?)",
            params![dir_uuid.as_bytes().as_slice()],
        )?;
        tx.commit()?;
        // The migrations rebuild tables; a new database starts without their free pages.
        db.conn.execute_batch("pragma foreign_keys = on; vacuum")?;
        Ok(db)
    }

    /// Opens an existing database, migrating an older schema.
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        set_pragmas(&conn)?;
        let mut db = Database {
            conn,
            commit_hook: None,
        };
        let version: i32 = db.conn.query_row("pragma user_version", [], |r| r.get(0))?;
        if version == 0 {
            return Err(DbError::NotInitialized);
        }
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew { found: version });
        }
        db.migrate(version)?;
        Ok(db)
    }

    /// Applies the migrations past `from` in one transaction. Foreign keys are off meanwhile
    /// (a migration may rebuild a table others reference, as SQLite's own procedure for schema
    /// changes does) and checked whole before the commit: a violation rolls everything back.
    fn migrate(&mut self, from: i32) -> Result<(), DbError> {
        if from == SCHEMA_VERSION {
            return Ok(());
        }
        self.conn.execute_batch("pragma foreign_keys = off")?;
        let result = self.migrate_in_transaction(from);
        self.conn.execute_batch("pragma foreign_keys = on")?;
        result
    }

    fn migrate_in_transaction(&mut self, from: i32) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i32 + 1)?;
        }
        let violations: i64 =
            tx.query_row("select count(*) from pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if violations > 0 {
            return Err(DbError::Corrupt(format!(
                "migrating from schema version {from} would leave {violations} broken \
                 references; nothing was changed"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// Caps the database at `pages` pages of this connection (`PRAGMA max_page_count`; not
    /// stored in the file, never below its current size) and returns the cap SQLite applied. A
    /// transaction that would grow past it fails with `SQLITE_FULL` ([`DbError::is_full`]),
    /// exactly as on a full disk: the tests fill the database this way while recording.
    pub fn set_max_page_count(&self, pages: u32) -> Result<u32, DbError> {
        Ok(self
            .conn
            .pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?)
    }

    /// The database's size in pages (`PRAGMA page_count`).
    pub fn page_count(&self) -> Result<u32, DbError> {
        Ok(self.conn.query_row("pragma page_count", [], |r| r.get(0))?)
    }

    pub fn set_commit_hook(&mut self, hook: Option<CommitHook>) {
        self.commit_hook = hook;
    }

    /// Runs `f` in a transaction and commits it, calling the commit hook right before COMMIT.
    fn transact<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let tx = self.conn.transaction()?;
        let out = f(&tx)?;
        if let Some(hook) = self.commit_hook.as_mut() {
            hook().map_err(DbError::Commit)?;
        }
        tx.commit()?;
        Ok(out)
    }

    pub fn info(&self) -> Result<DbInfo, DbError> {
        let db_uuid: Vec<u8> =
            self.conn
                .query_row("select uuid from db_info where id = 1", [], |r| r.get(0))?;
        let (dir_uuid, open_id, open_uuid): (Vec<u8>, Option<u32>, Option<Vec<u8>>) =
            self.conn.query_row(
                "select d.uuid, o.id, o.uuid from sample_file_dir d
                 left join open o on o.id = d.last_complete_open_id where d.id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let last_complete_open = match (open_id, open_uuid) {
            (Some(id), Some(u)) => Some(Open {
                id,
                uuid: uuid_from(u, "open.uuid")?,
            }),
            _ => None,
        };
        Ok(DbInfo {
            db_uuid: uuid_from(db_uuid, "db_info.uuid")?,
            dir_uuid: uuid_from(dir_uuid, "sample_file_dir.uuid")?,
            last_complete_open,
        })
    }

    /// The id the next open will get.
    pub fn next_open_id(&self) -> Result<u32, DbError> {
        let max: Option<u32> = self
            .conn
            .query_row("select max(id) from open", [], |r| r.get(0))?;
        Ok(max.map_or(1, |m| m + 1))
    }

    /// Records a syncer start and makes it the sample dir's last complete open (one COMMIT).
    pub fn record_open(&mut self, open: Open, start: Time) -> Result<(), DbError> {
        self.transact(|tx| {
            tx.execute(
                "insert into open (id, uuid, start_time_90k) values (?, ?, ?)",
                params![open.id, open.uuid.as_bytes().as_slice(), start.0],
            )?;
            tx.execute(
                "update sample_file_dir set last_complete_open_id = ? where id = 1",
                params![open.id],
            )?;
            Ok(())
        })
    }

    pub fn streams(&self) -> Result<Vec<StreamRow>, DbError> {
        let mut stmt = self.conn.prepare_cached(
            "select id, name, source, retain_bytes, flush_if_sec, rotate_sec, cum_recordings
             from stream order by id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StreamRow {
                id: r.get(0)?,
                name: r.get(1)?,
                config: StreamConfig {
                    source: r.get(2)?,
                    retain_bytes: r.get(3)?,
                    flush_if_sec: r.get(4)?,
                    rotate_sec: r.get(5)?,
                },
                next_recording_id: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a stream, returning its id (never reused: ids come from `autoincrement`).
    pub fn add_stream(&mut self, name: &str, config: &StreamConfig) -> Result<i32, DbError> {
        self.transact(|tx| {
            let exists: Option<i32> = tx
                .query_row("select id from stream where name = ?", [name], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(DbError::DuplicateStream(name.to_owned()));
            }
            tx.execute(
                "insert into stream (name, source, retain_bytes, flush_if_sec, rotate_sec,
                                     cum_recordings)
                 values (?, ?, ?, ?, ?, 0)",
                params![
                    name,
                    config.source,
                    config.retain_bytes,
                    config.flush_if_sec,
                    config.rotate_sec
                ],
            )?;
            Ok(tx.last_insert_rowid() as i32)
        })
    }

    pub fn update_stream_config(&mut self, id: i32, config: &StreamConfig) -> Result<(), DbError> {
        self.transact(|tx| {
            let n = tx.execute(
                "update stream set source = ?, retain_bytes = ?, flush_if_sec = ?, rotate_sec = ?
                 where id = ?",
                params![
                    config.source,
                    config.retain_bytes,
                    config.flush_if_sec,
                    config.rotate_sec,
                    id
                ],
            )?;
            if n == 0 {
                return Err(DbError::NoSuchStream(id));
            }
            Ok(())
        })
    }

    /// Committed recordings of a stream as `(id, sample_file_bytes)`, oldest first.
    pub fn recording_sizes(&self, stream_id: i32) -> Result<Vec<(CompositeId, i64)>, DbError> {
        let mut stmt = self.conn.prepare_cached(
            "select composite_id, sample_file_bytes from recording
             where stream_id = ? order by composite_id",
        )?;
        let rows = stmt.query_map([stream_id], |r| Ok((CompositeId(r.get(0)?), r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Committed recordings, optionally of one stream, oldest first.
    pub fn recordings(&self, stream_id: Option<i32>) -> Result<Vec<RecordingRow>, DbError> {
        self.select_recordings(
            "where ?1 is null or r.stream_id = ?1 order by r.composite_id",
            [stream_id],
        )
    }

    /// One page of [`Database::recordings`]: at most `limit` rows with ids after `after` (from
    /// the first if `None`), in id order.
    pub fn recordings_page(
        &self,
        stream_id: Option<i32>,
        after: Option<CompositeId>,
        limit: u32,
    ) -> Result<Vec<RecordingRow>, DbError> {
        self.select_recordings(
            "where (?1 is null or r.stream_id = ?1) and r.composite_id > ?2
             order by r.composite_id limit ?3",
            (stream_id, after.map_or(i64::MIN, |a| a.0), limit),
        )
    }

    /// The oldest recording of the stream with the most recordings (of equals, the lowest
    /// stream id), if there is any: what gives way first when the database cannot grow.
    pub fn oldest_of_the_largest_stream(&self) -> Result<Option<CompositeId>, DbError> {
        Ok(self
            .conn
            .query_row(
                "select min(composite_id) from recording where stream_id =
                   (select stream_id from recording group by stream_id
                    order by count(*) desc, stream_id limit 1)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(CompositeId))
    }

    /// The newest committed recording of a stream, if it has any.
    pub fn newest_recording(&self, stream_id: i32) -> Result<Option<RecordingRow>, DbError> {
        Ok(self
            .select_recordings(
                // A range of the primary key (the stream id is its high 32 bits), so that
                // SQLite reads one row rather than scanning the other streams' rows.
                "where r.composite_id >= (?1 << 32) and r.composite_id < ((?1 + 1) << 32)
                 order by r.composite_id desc limit 1",
                [stream_id],
            )?
            .pop())
    }

    /// Recording rows selected by `filter` (a `where ... order by ...` tail using `params`).
    fn select_recordings(
        &self,
        filter: &'static str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<RecordingRow>, DbError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "select r.composite_id, r.open_id, r.run_offset, r.flags, r.start_time_90k,
                    r.wall_duration_90k, r.media_duration_90k, r.video_samples,
                    r.video_sync_samples, r.sample_file_bytes, r.video_sample_entry_id,
                    r.local_time_delta_90k, r.sample_file_blake3, r.end_reason
             from recording r {filter}"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                RecordingRow {
                    id: CompositeId(r.get(0)?),
                    open_id: r.get(1)?,
                    run_offset: r.get(2)?,
                    flags: r.get(3)?,
                    start: Time(r.get(4)?),
                    wall_duration_90k: r.get(5)?,
                    media_duration_90k: r.get(6)?,
                    video_samples: r.get(7)?,
                    video_sync_samples: r.get(8)?,
                    sample_file_bytes: r.get(9)?,
                    video_sample_entry_id: r.get(10)?,
                    local_time_delta_90k: r.get(11)?,
                    blake3: [0; 32],
                    end_reason: r.get(13)?,
                },
                r.get::<_, Vec<u8>>(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut row, hash) = row?;
            row.blake3 = hash.as_slice().try_into().map_err(|_| {
                DbError::Corrupt(format!("recording {} has a malformed blake3", row.id))
            })?;
            out.push(row);
        }
        Ok(out)
    }

    /// Removes a stream in one transaction: its recordings' rows and indexes are deleted and
    /// their ids become garbage, its sample entries go, then its row. Returns the ids moved to garbage. Stream
    /// ids come from `autoincrement`, so the id is never given to another stream; recovery
    /// treats any file of it left behind as a file of an unknown stream (garbage).
    pub fn remove_stream(&mut self, stream_id: i32) -> Result<Vec<CompositeId>, DbError> {
        self.transact(|tx| {
            let ids: Vec<CompositeId> = {
                let mut stmt = tx.prepare_cached(
                    "select composite_id from recording where stream_id = ? order by composite_id",
                )?;
                let rows = stmt.query_map([stream_id], |r| Ok(CompositeId(r.get(0)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            tx.execute(
                "insert into garbage (composite_id)
                 select composite_id from recording where stream_id = ?",
                [stream_id],
            )?;
            tx.execute(
                "delete from recording_playback where composite_id in
                 (select composite_id from recording where stream_id = ?)",
                [stream_id],
            )?;
            tx.execute("delete from recording where stream_id = ?", [stream_id])?;
            tx.execute(
                "delete from video_sample_entry where stream_id = ?",
                [stream_id],
            )?;
            if tx.execute("delete from stream where id = ?", [stream_id])? != 1 {
                return Err(DbError::NoSuchStream(stream_id));
            }
            Ok(ids)
        })
    }

    /// The sample index of a committed recording.
    pub fn video_index(&self, id: CompositeId) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self
            .conn
            .query_row(
                "select video_index from recording_playback where composite_id = ?",
                [id.0],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn garbage(&self) -> Result<Vec<CompositeId>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("select composite_id from garbage order by composite_id")?;
        let rows = stmt.query_map([], |r| Ok(CompositeId(r.get(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `stream_id`'s sample entry with exactly these box bytes, if it has one.
    pub fn find_sample_entry(&self, stream_id: i32, data: &[u8]) -> Result<Option<i32>, DbError> {
        Ok(self
            .conn
            .query_row(
                "select id from video_sample_entry where stream_id = ? and data = ?",
                params![stream_id, data],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Adds a sample entry of `stream_id` (which must not have one with these bytes).
    pub fn insert_sample_entry(
        &mut self,
        stream_id: i32,
        width: u16,
        height: u16,
        rfc6381_codec: &str,
        data: &[u8],
    ) -> Result<i32, DbError> {
        self.transact(|tx| {
            tx.execute(
                "insert into video_sample_entry (stream_id, width, height, rfc6381_codec, data)
                 values (?, ?, ?, ?, ?)",
                params![stream_id, width, height, rfc6381_codec, data],
            )?;
            Ok(tx.last_insert_rowid() as i32)
        })
    }

    /// How many sample entries `stream_id` has.
    pub fn count_sample_entries(&self, stream_id: i32) -> Result<usize, DbError> {
        let n: i64 = self.conn.query_row(
            "select count(*) from video_sample_entry where stream_id = ?",
            [stream_id],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Removes the sample entries of `stream_id` that no committed recording uses, but those
    /// in `keep` (entries of recordings in flight, and of the live connection). Returns how
    /// many went.
    pub fn delete_unused_sample_entries(
        &mut self,
        stream_id: i32,
        keep: &[i32],
    ) -> Result<usize, DbError> {
        let keep = keep
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "delete from video_sample_entry
             where stream_id = ? and id not in ({keep})
               and id not in (select video_sample_entry_id from recording)"
        );
        self.transact(|tx| Ok(tx.execute(&sql, [stream_id])?))
    }

    /// Whether `id` is a sample entry of `stream_id`.
    pub fn has_sample_entry(&self, stream_id: i32, id: i32) -> Result<bool, DbError> {
        Ok(self
            .conn
            .query_row(
                "select 1 from video_sample_entry where id = ? and stream_id = ?",
                [id, stream_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn sample_entries(&self) -> Result<Vec<SampleEntry>, DbError> {
        let mut stmt = self.conn.prepare_cached(
            "select id, stream_id, width, height, rfc6381_codec, data from video_sample_entry
             order by id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SampleEntry {
                id: r.get(0)?,
                stream_id: r.get(1)?,
                width: r.get(2)?,
                height: r.get(3)?,
                rfc6381_codec: r.get(4)?,
                data: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Applies one flush as a single transaction. Nothing changes unless it all commits.
    /// Deletions of recordings committed earlier run before the inserts, so that on a full
    /// database (`SQLITE_FULL`) the inserts reuse the pages they free.
    pub fn commit_batch(&mut self, b: &FlushBatch) -> Result<(), DbError> {
        self.transact(|tx| {
            {
                let mut del_index =
                    tx.prepare_cached("delete from recording_playback where composite_id = ?")?;
                let mut del = tx.prepare_cached("delete from recording where composite_id = ?")?;
                let mut add_garbage =
                    tx.prepare_cached("insert into garbage (composite_id) values (?)")?;
                let mut delete = |id: CompositeId| -> Result<(), DbError> {
                    del_index.execute([id.0])?;
                    if del.execute([id.0])? != 1 {
                        return Err(DbError::Corrupt(format!(
                            "recording {id} to delete is not in the database"
                        )));
                    }
                    add_garbage.execute([id.0])?;
                    Ok(())
                };
                let inserted: std::collections::HashSet<CompositeId> =
                    b.inserts.iter().map(|r| r.row.id).collect();
                let (deleted_now, deleted_after_insert): (Vec<CompositeId>, Vec<CompositeId>) =
                    b.deletions.iter().partition(|id| !inserted.contains(id));
                for id in deleted_now {
                    delete(id)?;
                }
                let mut add_new_garbage =
                    tx.prepare_cached("insert into garbage (composite_id) values (?)")?;
                for &id in &b.new_garbage {
                    add_new_garbage.execute([id.0])?;
                }
                let mut rm_garbage =
                    tx.prepare_cached("delete from garbage where composite_id = ?")?;
                for &id in &b.garbage_removed {
                    rm_garbage.execute([id.0])?;
                }
                let mut ins = tx.prepare_cached(
                    "insert into recording (composite_id, stream_id, open_id, run_offset, flags,
                         sample_file_bytes, start_time_90k, wall_duration_90k, media_duration_90k,
                         video_samples, video_sync_samples, video_sample_entry_id,
                         local_time_delta_90k, sample_file_blake3, end_reason)
                     values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                let mut ins_index = tx.prepare_cached(
                    "insert into recording_playback (composite_id, video_index) values (?, ?)",
                )?;
                for r in &b.inserts {
                    let row = &r.row;
                    ins.execute(params![
                        row.id.0,
                        row.id.stream(),
                        row.open_id,
                        row.run_offset,
                        row.flags,
                        row.sample_file_bytes,
                        row.start.0,
                        row.wall_duration_90k,
                        row.media_duration_90k,
                        row.video_samples,
                        row.video_sync_samples,
                        row.video_sample_entry_id,
                        row.local_time_delta_90k,
                        row.blake3.as_slice(),
                        row.end_reason,
                    ])?;
                    ins_index.execute(params![row.id.0, r.video_index])?;
                }
                for id in deleted_after_insert {
                    delete(id)?;
                }
                let mut next = tx.prepare_cached(
                    "update stream set cum_recordings = ?2
                     where id = ?1 and cum_recordings <= ?2",
                )?;
                for &(stream, n) in &b.next_recording_ids {
                    if next.execute(params![stream, n])? != 1 {
                        return Err(DbError::Corrupt(format!(
                            "stream {stream}: next recording id would move backwards to {n}"
                        )));
                    }
                }
            }
            Ok(())
        })
    }

    /// Opens an existing database read-only, for reading commands and for `nvr check` while a
    /// syncer is running: it neither migrates nor changes any pragma that would write, and WAL
    /// lets it read while the syncer commits.
    ///
    /// On a read-only data dir (a read-only mount, a dir this user may not write) SQLite
    /// cannot make the WAL index it needs even to read; if no write-ahead log is left over (a
    /// clean stop leaves none), the file is then opened as immutable, which is exact because
    /// nothing can change it. A leftover log holds commits the file alone lacks: that is
    /// refused ([`DbError::ReadOnlyWithWal`]) rather than shown without them.
    pub fn open_read_only(path: &Path) -> Result<Database, DbError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match Self::connect_read_only(path, flags) {
            Ok(c) => c,
            Err(e) if !dir_is_writable(path) => {
                let wal = sidecar(path, "-wal");
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(DbError::ReadOnlyWithWal {
                        wal: wal.display().to_string(),
                    });
                }
                tracing::debug!(error = %e, "read-only dir: opening the database as immutable");
                let uri = format!("file:{}?immutable=1", uri_path(path));
                Self::connect_read_only(
                    Path::new(&uri),
                    flags | rusqlite::OpenFlags::SQLITE_OPEN_URI,
                )?
            }
            Err(e) => return Err(e.into()),
        };
        let version: i32 = conn.query_row("pragma user_version", [], |r| r.get(0))?;
        if version == 0 {
            return Err(DbError::NotInitialized);
        }
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew { found: version });
        }
        if version < SCHEMA_VERSION {
            return Err(DbError::NeedsMigration { found: version });
        }
        Ok(Database {
            conn,
            commit_hook: None,
        })
    }

    /// Opens for reading a database whose data dir the caller has locked: read-only, so that
    /// it works on a read-only dir, except that an older schema is migrated first (which
    /// needs a writable one).
    pub fn open_locked_for_reading(path: &Path) -> Result<Database, DbError> {
        match Self::open_read_only(path) {
            Err(DbError::NeedsMigration { .. }) => Self::open(path),
            other => other,
        }
    }

    /// A read-only connection that has read the schema, so that a database it cannot read
    /// fails here.
    fn connect_read_only(
        path: &Path,
        flags: rusqlite::OpenFlags,
    ) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(path, flags)?;
        conn.execute_batch("pragma busy_timeout = 5000;")?;
        conn.query_row("select count(*) from sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(conn)
    }

    /// Runs the queries of `f` in one read transaction, so that together they see a single
    /// state of the database even while a syncer commits (`nvr check` on a running data dir).
    /// Nothing is written: the transaction is rolled back.
    pub fn read_snapshot<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.unchecked_transaction().map_err(DbError::from)?;
        let out = f(self);
        tx.rollback().map_err(DbError::from)?;
        out
    }

    /// Sets [`FLAG_FILE_MISSING`] on each of `ids`, in one transaction; fails (changing nothing)
    /// if any is not a committed recording.
    pub fn mark_files_missing(&mut self, ids: &[CompositeId]) -> Result<(), DbError> {
        self.transact(|tx| {
            let mut mark = tx.prepare_cached(
                "update recording set flags = flags | ?2 where composite_id = ?1",
            )?;
            for &id in ids {
                if mark.execute(params![id.0, FLAG_FILE_MISSING])? != 1 {
                    return Err(DbError::Corrupt(format!(
                        "recording {id} to mark as missing its file is not in the database"
                    )));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StreamConfig {
        StreamConfig {
            source: "synthetic:".to_owned(),
            retain_bytes: 1 << 20,
            flush_if_sec: 10,
            rotate_sec: 60,
        }
    }

    fn row(id: CompositeId) -> RecordingToInsert {
        RecordingToInsert {
            row: RecordingRow {
                id,
                open_id: 1,
                run_offset: 0,
                flags: 0,
                start: Time(90_000),
                wall_duration_90k: 90_000,
                media_duration_90k: 90_000,
                video_samples: 1,
                video_sync_samples: 1,
                sample_file_bytes: 10,
                video_sample_entry_id: 1,
                local_time_delta_90k: 0,
                blake3: [7; 32],
                end_reason: None,
            },
            video_index: vec![1, 2, 3],
        }
    }

    /// A new database with open 1 and sample entry 1, which `row` refers to. The entry
    /// belongs to stream 1, which each test adds itself (foreign keys are off for its insert).
    fn new_db() -> (tempfile::TempDir, Database) {
        let tmp = tempfile::tempdir().unwrap();
        let mut db = Database::create(
            &tmp.path().join("db.sqlite3"),
            Uuid::from_u128(1),
            Uuid::from_u128(2),
        )
        .unwrap();
        let open = Open {
            id: 1,
            uuid: Uuid::from_u128(3),
        };
        db.record_open(open, Time(0)).unwrap();
        db.conn.execute_batch("pragma foreign_keys = off").unwrap();
        let entry = db.insert_sample_entry(1, 640, 480, "avc1.4d401e", b"e");
        db.conn.execute_batch("pragma foreign_keys = on").unwrap();
        assert_eq!(entry.unwrap(), 1);
        (tmp, db)
    }

    #[test]
    fn fresh_database_is_at_current_schema_with_wal_and_full_sync() {
        let (tmp, db) = new_db();
        drop(db);
        let db = Database::open(&tmp.path().join("db.sqlite3")).unwrap();
        let v: i32 = db
            .conn
            .query_row("pragma user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = db
            .conn
            .query_row("pragma journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i32 = db
            .conn
            .query_row("pragma synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let info = db.info().unwrap();
        assert_eq!(info.db_uuid, Uuid::from_u128(1));
        assert_eq!(info.last_complete_open.map(|o| o.id), Some(1));
        assert_eq!(db.next_open_id().unwrap(), 2);
    }

    #[test]
    fn newer_schema_is_refused() {
        let (tmp, db) = new_db();
        db.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let e = Database::open(&tmp.path().join("db.sqlite3")).unwrap_err();
        assert!(matches!(e, DbError::TooNew { found: 99 }), "{e}");
    }

    #[test]
    fn batch_is_atomic_and_counters_never_move_backwards() {
        let (_tmp, mut db) = new_db();
        let s = db.add_stream("a", &config()).unwrap();
        let id0 = CompositeId::new(s, 0);
        db.commit_batch(&FlushBatch {
            inserts: vec![row(id0)],
            next_recording_ids: vec![(s, 2)],
            new_garbage: vec![CompositeId::new(s, 1)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(db.recordings(Some(s)).unwrap().len(), 1);
        assert_eq!(db.garbage().unwrap(), vec![CompositeId::new(s, 1)]);
        assert_eq!(db.video_index(id0).unwrap(), Some(vec![1, 2, 3]));

        // A batch that would move the counter backwards fails as a whole.
        let e = db
            .commit_batch(&FlushBatch {
                deletions: vec![id0],
                next_recording_ids: vec![(s, 1)],
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(e, DbError::Corrupt(_)), "{e}");
        assert_eq!(db.recordings(Some(s)).unwrap().len(), 1);

        db.commit_batch(&FlushBatch {
            deletions: vec![id0],
            garbage_removed: vec![CompositeId::new(s, 1)],
            ..Default::default()
        })
        .unwrap();
        assert!(db.recordings(Some(s)).unwrap().is_empty());
        assert_eq!(db.garbage().unwrap(), vec![id0]);
        assert_eq!(db.video_index(id0).unwrap(), None);
    }

    #[test]
    fn failing_commit_hook_rolls_back() {
        let (_tmp, mut db) = new_db();
        let s = db.add_stream("a", &config()).unwrap();
        db.set_commit_hook(Some(Box::new(|| {
            Err(io::Error::from_raw_os_error(
                nix::errno::Errno::ENOSPC as i32,
            ))
        })));
        let e = db
            .commit_batch(&FlushBatch {
                inserts: vec![row(CompositeId::new(s, 0))],
                next_recording_ids: vec![(s, 1)],
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.is_full());
        db.set_commit_hook(None);
        assert!(db.recordings(None).unwrap().is_empty());
        assert_eq!(db.streams().unwrap()[0].next_recording_id, 0);
    }

    #[test]
    fn sqlite_full_is_recognized() {
        let (_tmp, mut db) = new_db();
        let s = db.add_stream("a", &config()).unwrap();
        let pages: i64 = db
            .conn
            .query_row("pragma page_count", [], |r| r.get(0))
            .unwrap();
        db.conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let mut big = row(CompositeId::new(s, 0));
        big.video_index = vec![1; 1 << 20];
        let e = db
            .commit_batch(&FlushBatch {
                inserts: vec![big],
                next_recording_ids: vec![(s, 1)],
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.is_full(), "{e}");
        assert!(db.recordings(None).unwrap().is_empty());
    }

    #[test]
    fn duplicate_stream_names_are_refused() {
        let (_tmp, mut db) = new_db();
        db.add_stream("a", &config()).unwrap();
        let e = db.add_stream("a", &config()).unwrap_err();
        assert!(matches!(e, DbError::DuplicateStream(_)));
    }

    #[test]
    fn camera_names_are_short_plain_and_never_look_like_options() {
        for ok in ["a", "cam-1", "Front_Door.hd", "0", &"x".repeat(64)] {
            assert_eq!(validate_camera_name(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "-cam", "a b", "a/b", "caméra", "a\n", &"x".repeat(65)] {
            let e = validate_camera_name(bad).unwrap_err();
            assert_eq!(e, ConfigError::BadName(bad.to_owned()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn sources_need_a_known_scheme_and_rtsp_a_host() {
        for ok in [
            "file:/srv/clip.h264",
            "file:clip.h264?speed=max",
            "synthetic:",
            "synthetic:?fps=30",
            "rtsp://cam.local/stream1",
            "rtsp://user:pa:ss@10.0.0.7:554/h264",
            "rtsp://[fe80::1]:8554",
            "rtsp://[::1]",
            "rtsp://host?x=1",
            "rtsp://cam/x?transport=udp&stall_sec=300",
        ] {
            let c = StreamConfig {
                source: ok.to_owned(),
                ..config()
            };
            assert_eq!(c.validate(), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("", "unknown scheme"),
            ("http://cam/", "unknown scheme"),
            ("FILE:/x", "unknown scheme"),
            ("rtsp://", "host"),
            ("rtsp:///path", "host"),
            ("rtsp://user@:554/x", "host"),
            ("rtsp://cam:99999/", "invalid port"),
            ("rtsp://cam:12a/", "invalid port"),
            ("rtsp://[::1/", "invalid IPv6"),
            ("rtsp://cam/x?transport=quic", "neither tcp nor udp"),
            ("rtsp://cam/x?stall_sec=0", "stall_sec"),
            ("rtsp://admin:hunter2@cam/x?stall_sec=0", "admin:***@cam"),
            ("file:/a b", "whitespace"),
            // The ingest's parse: what it would refuse at start is refused here.
            ("file:", "file: needs a path"),
            ("synthetic:?fps=0", "fps=0 is outside"),
            ("synthetic:?fps=100000", "fps=100000 is outside"),
            ("synthetic:?bogus=1", "unknown parameter \"bogus\""),
            ("file:x?speed=0", "speed=\"0\" is neither"),
            ("synthetic:?fps=1&bitrate=1000000000", "over the limit"),
        ] {
            let c = StreamConfig {
                source: bad.to_owned(),
                ..config()
            };
            let e = c.validate().unwrap_err();
            assert!(matches!(e, ConfigError::BadSource { .. }), "{bad:?}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(why) && text.contains("rtsp://[USER") && !text.contains("hunter2"),
                "{bad:?}: {text}"
            );
        }
    }

    #[test]
    fn settings_are_checked_against_their_ranges() {
        let with = |f: fn(&mut StreamConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate()
        };
        assert_eq!(with(|c| c.rotate_sec = 1), Ok(()));
        assert_eq!(with(|c| c.rotate_sec = MAX_ROTATE_SEC), Ok(()));
        assert_eq!(with(|c| c.rotate_sec = 0), Err(ConfigError::BadRotate(0)));
        assert_eq!(
            with(|c| c.rotate_sec = 271),
            Err(ConfigError::BadRotate(271))
        );
        assert_eq!(with(|c| c.flush_if_sec = 0), Ok(()));
        assert_eq!(with(|c| c.flush_if_sec = 3600), Ok(()));
        assert_eq!(
            with(|c| c.flush_if_sec = 3601),
            Err(ConfigError::BadFlushIf(3601))
        );
        assert_eq!(with(|c| c.retain_bytes = 0), Ok(()));
        assert_eq!(
            with(|c| c.retain_bytes = -1),
            Err(ConfigError::NegativeRetain(-1))
        );
        let e = with(|c| c.rotate_sec = 271).unwrap_err().to_string();
        assert!(e.contains("271") && e.contains("1 to 270"), "{e}");
    }

    #[test]
    fn removing_a_stream_moves_its_rows_to_garbage_and_keeps_its_id_unused() {
        let (_tmp, mut db) = new_db();
        let a = db.add_stream("a", &config()).unwrap();
        let b = db.add_stream("b", &config()).unwrap();
        let (a0, a1, b0) = (
            CompositeId::new(a, 0),
            CompositeId::new(a, 1),
            CompositeId::new(b, 0),
        );
        // Each stream's recordings use its own entries (which go with it).
        let mut b0_row = row(b0);
        b0_row.row.video_sample_entry_id = db
            .insert_sample_entry(b, 640, 480, "avc1.4d401e", b"b")
            .unwrap();
        db.commit_batch(&FlushBatch {
            inserts: vec![row(a0), row(a1), b0_row],
            next_recording_ids: vec![(a, 2), (b, 1)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(db.newest_recording(a).unwrap().map(|r| r.id), Some(a1));
        assert_eq!(db.remove_stream(a).unwrap(), vec![a0, a1]);
        assert_eq!(db.garbage().unwrap(), vec![a0, a1]);
        assert_eq!(db.video_index(a0).unwrap(), None);
        assert_eq!(
            db.recordings(None)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![b0]
        );
        assert_eq!(db.newest_recording(a).unwrap(), None);
        assert!(matches!(db.remove_stream(a), Err(DbError::NoSuchStream(_))));
        // autoincrement: a new stream never gets the removed id, even the highest one.
        db.remove_stream(b).unwrap();
        let c = db.add_stream("a", &config()).unwrap();
        assert!(c > b, "{c}");
    }

    #[test]
    fn recordings_come_in_pages_in_id_order() {
        let (_tmp, mut db) = new_db();
        let a = db.add_stream("a", &config()).unwrap();
        let b = db.add_stream("b", &config()).unwrap();
        let ids: Vec<CompositeId> = (0..5)
            .map(|i| CompositeId::new(a, i))
            .chain((0..3).map(|i| CompositeId::new(b, i)))
            .collect();
        db.commit_batch(&FlushBatch {
            inserts: ids.iter().map(|&id| row(id)).collect(),
            next_recording_ids: vec![(a, 5), (b, 3)],
            ..Default::default()
        })
        .unwrap();
        let pages = |stream: Option<i32>, limit: u32| {
            let mut out: Vec<Vec<CompositeId>> = Vec::new();
            loop {
                let after = out.last().and_then(|p| p.last().copied());
                let page: Vec<CompositeId> = db
                    .recordings_page(stream, after, limit)
                    .unwrap()
                    .iter()
                    .map(|r| r.id)
                    .collect();
                let last = page.len() < limit as usize;
                out.push(page);
                if last {
                    return out;
                }
            }
        };
        let all = pages(None, 3);
        assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2]);
        assert_eq!(all.concat(), ids);
        assert_eq!(pages(Some(b), 2).concat(), ids[5..]);
        assert_eq!(pages(Some(a), 5).concat(), ids[..5]);
    }

    /// Version 1 shared an entry among the streams that sent the same box: migrating gives
    /// each stream its own copy, repoints its recordings, drops entries no recording used,
    /// and keeps everything else as it was.
    #[test]
    fn migrating_to_version_2_gives_each_stream_its_own_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "pragma user_version = 1;
             insert into open (id, uuid, start_time_90k) values (1, zeroblob(16), 0);
             insert into stream values (1, 'a', 'synthetic:', 1000000, 0, 60, 2);
             insert into stream values (2, 'b', 'synthetic:', 1000000, 0, 60, 1);
             insert into video_sample_entry values (7, 640, 480, 'avc1.4d401e', x'aa');
             insert into video_sample_entry values (8, 320, 240, 'avc1.4d400d', x'bb');
             insert into video_sample_entry values (9, 320, 240, 'avc1.4d400d', x'cc');",
        )
        .unwrap();
        for (id, stream, entry) in [((1i64 << 32), 1, 7), ((1 << 32) + 1, 1, 8), (2 << 32, 2, 7)] {
            conn.execute(
                "insert into recording values (?, ?, 1, 0, 0, 10, 0, 3000, 3000, 1, 1, ?, 0,
                 zeroblob(32), null)",
                params![id, stream, entry],
            )
            .unwrap();
        }
        drop(conn);
        let db = Database::open(&path).unwrap();
        let entries = db.sample_entries().unwrap();
        let owners: Vec<(i32, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.stream_id, e.data.clone()))
            .collect();
        assert_eq!(
            owners,
            [(1, vec![0xaa]), (1, vec![0xbb]), (2, vec![0xaa])],
            "entry 9 was used by no recording"
        );
        for r in db.recordings(None).unwrap() {
            let e = entries
                .iter()
                .find(|e| e.id == r.video_sample_entry_id)
                .unwrap();
            assert_eq!(e.stream_id, r.id.stream(), "{r:?}");
        }
        let b_entry = entries.iter().find(|e| e.stream_id == 2).unwrap();
        assert_eq!((b_entry.width, b_entry.height), (640, 480));
        assert_eq!(b_entry.rfc6381_codec, "avc1.4d401e");
        let version: i32 = db
            .conn
            .query_row("pragma user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let fks: bool = db
            .conn
            .query_row("pragma foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(fks, "foreign keys are on again");
    }

    #[test]
    fn sample_entries_belong_to_one_stream() {
        let (_tmp, mut db) = new_db();
        let a = db.add_stream("a", &config()).unwrap();
        let b = db.add_stream("b", &config()).unwrap();
        let x = db
            .insert_sample_entry(a, 640, 480, "avc1.4d401e", b"x")
            .unwrap();
        assert_eq!(db.find_sample_entry(a, b"x").unwrap(), Some(x));
        // The same box for another stream is that stream's own entry.
        assert_eq!(db.find_sample_entry(b, b"x").unwrap(), None);
        let bx = db
            .insert_sample_entry(b, 1, 1, "avc1.000000", b"x")
            .unwrap();
        assert_ne!(x, bx);
        assert!(db.has_sample_entry(a, x).unwrap() && !db.has_sample_entry(b, x).unwrap());
        let e = db.insert_sample_entry(a, 640, 480, "avc1.4d401e", b"x");
        assert!(e.is_err(), "one entry per stream and box");
        // Unused ones go, but those kept.
        let y = db
            .insert_sample_entry(a, 640, 480, "avc1.4d401e", b"y")
            .unwrap();
        assert_eq!(
            db.delete_unused_sample_entries(a, &[y]).unwrap(),
            2,
            "1 and x"
        );
        assert_eq!(db.count_sample_entries(a).unwrap(), 1);
        assert_eq!(db.count_sample_entries(b).unwrap(), 1);
    }
}
