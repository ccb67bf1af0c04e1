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

use protocol::{CompositeId, Time};
use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;
use uuid::Uuid;

use crate::meta::Open;

/// Flag bit of `recording.flags`: the last sample's duration is unknown and stored as 0.
pub const FLAG_TRAILING_ZERO: i32 = 1;

/// The migrations, index `i` taking a database from `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("schema_v1.sql")];

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
    #[error("COMMIT failed: {0}")]
    Commit(#[source] io::Error),
    #[error("database row is corrupt: {0}")]
    Corrupt(String),
    #[error("no stream with id {0}")]
    NoSuchStream(i32),
    #[error("a stream named {0:?} already exists")]
    DuplicateStream(String),
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingToInsert {
    pub row: RecordingRow,
    /// The sample index (see `protocol::sample_index`).
    pub video_index: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleEntry {
    pub id: i32,
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

    fn migrate(&mut self, from: i32) -> Result<(), DbError> {
        if from == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i32 + 1)?;
        }
        tx.commit()?;
        Ok(())
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
        let mut stmt = self.conn.prepare_cached(
            "select r.composite_id, r.open_id, r.run_offset, r.flags, r.start_time_90k,
                    r.wall_duration_90k, r.media_duration_90k, r.video_samples,
                    r.video_sync_samples, r.sample_file_bytes, r.video_sample_entry_id,
                    r.local_time_delta_90k, r.sample_file_blake3, r.end_reason
             from recording r
             where ?1 is null or r.stream_id = ?1
             order by r.composite_id",
        )?;
        let rows = stmt.query_map([stream_id], |r| {
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

    /// Looks up a sample entry by its exact box bytes, inserting it if new.
    pub fn insert_sample_entry(
        &mut self,
        width: u16,
        height: u16,
        rfc6381_codec: &str,
        data: &[u8],
    ) -> Result<i32, DbError> {
        let found: Option<i32> = self
            .conn
            .query_row(
                "select id from video_sample_entry where data = ?",
                [data],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = found {
            return Ok(id);
        }
        self.transact(|tx| {
            tx.execute(
                "insert into video_sample_entry (width, height, rfc6381_codec, data)
                 values (?, ?, ?, ?)",
                params![width, height, rfc6381_codec, data],
            )?;
            Ok(tx.last_insert_rowid() as i32)
        })
    }

    pub fn has_sample_entry(&self, id: i32) -> Result<bool, DbError> {
        Ok(self
            .conn
            .query_row(
                "select 1 from video_sample_entry where id = ?",
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn sample_entries(&self) -> Result<Vec<SampleEntry>, DbError> {
        let mut stmt = self.conn.prepare_cached(
            "select id, width, height, rfc6381_codec, data from video_sample_entry order by id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SampleEntry {
                id: r.get(0)?,
                width: r.get(1)?,
                height: r.get(2)?,
                rfc6381_codec: r.get(3)?,
                data: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Applies one flush as a single transaction. Nothing changes unless it all commits.
    pub fn commit_batch(&mut self, b: &FlushBatch) -> Result<(), DbError> {
        self.transact(|tx| {
            {
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
                let mut del_index =
                    tx.prepare_cached("delete from recording_playback where composite_id = ?")?;
                let mut del = tx.prepare_cached("delete from recording where composite_id = ?")?;
                let mut add_garbage =
                    tx.prepare_cached("insert into garbage (composite_id) values (?)")?;
                for &id in &b.deletions {
                    del_index.execute([id.0])?;
                    if del.execute([id.0])? != 1 {
                        return Err(DbError::Corrupt(format!(
                            "recording {id} to delete is not in the database"
                        )));
                    }
                    add_garbage.execute([id.0])?;
                }
                for &id in &b.new_garbage {
                    add_garbage.execute([id.0])?;
                }
                let mut rm_garbage =
                    tx.prepare_cached("delete from garbage where composite_id = ?")?;
                for &id in &b.garbage_removed {
                    rm_garbage.execute([id.0])?;
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

    /// A new database with open 1 and sample entry 1, which `row` refers to.
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
        assert_eq!(
            db.insert_sample_entry(640, 480, "avc1.4d401e", b"e")
                .unwrap(),
            1
        );
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
    fn sample_entries_are_deduplicated() {
        let (_tmp, mut db) = new_db();
        let a = db
            .insert_sample_entry(640, 480, "avc1.4d401e", b"x")
            .unwrap();
        let b = db
            .insert_sample_entry(640, 480, "avc1.4d401e", b"x")
            .unwrap();
        let c = db
            .insert_sample_entry(640, 480, "avc1.4d401e", b"y")
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(db.sample_entries().unwrap().len(), 3);
    }
}
