//! The sample directory's `meta` file: what binds a sample dir to its database.
//!
//! The file holds the database's uuid, the directory's uuid, and the last complete and the
//! in-progress "open" (one syncer start; see the `open` table). It is exactly [`META_LEN`]
//! bytes, created once at init and afterwards rewritten **in place** with one `pwrite` of the
//! whole file followed by `fsync`: rewriting never allocates, so a full disk cannot leave the
//! directory without a readable meta file. The format assumes a write of one 512-byte sector
//! is atomic (as Moonfire NVR does); a trailing blake3 checksum turns a torn or foreign file
//! into a clear error rather than a silent misreading.
//!
//! Write order at each syncer start (DESIGN.md, startup recovery):
//! 1. meta: `in_progress_open = new`, fsync;
//! 2. database: insert the open and set the dir's `last_complete_open = new`, COMMIT;
//! 3. meta: `last_complete_open = new`, `in_progress_open = None`, fsync.
//!
//! A crash between any two steps leaves a meta that [`DirMeta::check_against`] accepts; a
//! database restored from an older backup does not match, and is refused naming both opens.

use std::io;

use thiserror::Error;
use uuid::Uuid;

use crate::fs::{Dir, DirFile, OpenMode, read_exact_at};

pub const META_FILE_NAME: &str = "meta";

/// Size of the meta file, in bytes: one sector, see the module doc.
pub const META_LEN: usize = 512;

const MAGIC: &[u8; 8] = b"nvr-meta";
const FORMAT_VERSION: u32 = 1;

/// One syncer start, as recorded in the database's `open` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    pub id: u32,
    pub uuid: Uuid,
}

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "open {} ({})", self.id, self.uuid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirMeta {
    pub db_uuid: Uuid,
    pub dir_uuid: Uuid,
    pub last_complete_open: Option<Open>,
    pub in_progress_open: Option<Open>,
}

#[derive(Debug, Error)]
pub enum MetaError {
    #[error("sample dir has no meta file; it was not created by `nvr init`")]
    Missing,
    #[error("sample dir meta file is {len} bytes, expected {META_LEN}")]
    BadLength { len: u64 },
    #[error("sample dir meta file does not start with nvr's magic bytes")]
    BadMagic,
    #[error("sample dir meta file has format version {0}; this nvr understands {FORMAT_VERSION}")]
    BadVersion(u32),
    #[error("sample dir meta file fails its checksum (torn or damaged write)")]
    BadChecksum,
    #[error(
        "sample dir belongs to database {meta_db}, but this database is {db}: \
         refusing to mix a database with another's sample dir"
    )]
    WrongDatabase { meta_db: Uuid, db: Uuid },
    #[error("sample dir has uuid {meta_dir}, but the database expects sample dir {db_dir}")]
    WrongDir { meta_dir: Uuid, db_dir: Uuid },
    #[error(
        "sample dir was last opened by {meta}, but the database's last open of it is {db}: \
         the database looks restored from a backup older than the sample dir"
    )]
    OpenMismatch { meta: String, db: String },
    #[error(
        "sample dir belongs to database {meta_db}, which is missing: \
         restore it rather than create a new one"
    )]
    DatabaseMissing { meta_db: Uuid },
    #[error("sample dir holds {count} sample files but there is no database for them")]
    SamplesWithoutDatabase { count: usize },
    #[error("I/O on the sample dir meta file: {0}")]
    Io(#[from] io::Error),
}

fn put_open(out: &mut Vec<u8>, open: Option<Open>) {
    match open {
        None => out.extend_from_slice(&[0u8; 21]),
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.id.to_le_bytes());
            out.extend_from_slice(o.uuid.as_bytes());
        }
    }
}

fn get_open(b: &[u8]) -> Option<Open> {
    if b[0] == 0 {
        return None;
    }
    let id = u32::from_le_bytes(b[1..5].try_into().expect("4 bytes"));
    let uuid = Uuid::from_bytes(b[5..21].try_into().expect("16 bytes"));
    Some(Open { id, uuid })
}

/// Length of the payload that the checksum covers: magic, version, two uuids, two opens.
const BODY_LEN: usize = 8 + 4 + 16 + 16 + 21 + 21;

impl DirMeta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut body = Vec::with_capacity(BODY_LEN);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        body.extend_from_slice(self.db_uuid.as_bytes());
        body.extend_from_slice(self.dir_uuid.as_bytes());
        put_open(&mut body, self.last_complete_open);
        put_open(&mut body, self.in_progress_open);
        debug_assert_eq!(body.len(), BODY_LEN);
        let mut out = [0u8; META_LEN];
        out[..BODY_LEN].copy_from_slice(&body);
        out[BODY_LEN..BODY_LEN + 32].copy_from_slice(blake3::hash(&body).as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<DirMeta, MetaError> {
        if b.len() != META_LEN {
            return Err(MetaError::BadLength {
                len: b.len() as u64,
            });
        }
        if &b[..8] != MAGIC {
            return Err(MetaError::BadMagic);
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(MetaError::BadVersion(version));
        }
        if blake3::hash(&b[..BODY_LEN]).as_bytes()[..] != b[BODY_LEN..BODY_LEN + 32] {
            return Err(MetaError::BadChecksum);
        }
        let uuid_at = |o: usize| Uuid::from_bytes(b[o..o + 16].try_into().expect("16 bytes"));
        Ok(DirMeta {
            db_uuid: uuid_at(12),
            dir_uuid: uuid_at(28),
            last_complete_open: get_open(&b[44..65]),
            in_progress_open: get_open(&b[65..86]),
        })
    }

    /// Checks that this meta belongs with a database whose uuid is `db_uuid`, whose record of
    /// the sample dir has uuid `dir_uuid` and last complete open `db_last_open`.
    ///
    /// Accepted: the meta's last complete open equals the database's (normal), or the meta's
    /// in-progress open equals it (a crash between the database commit and the final meta
    /// write). Anything else means the two were not written together.
    pub fn check_against(
        &self,
        db_uuid: Uuid,
        dir_uuid: Uuid,
        db_last_open: Option<Open>,
    ) -> Result<(), MetaError> {
        if self.db_uuid != db_uuid {
            return Err(MetaError::WrongDatabase {
                meta_db: self.db_uuid,
                db: db_uuid,
            });
        }
        if self.dir_uuid != dir_uuid {
            return Err(MetaError::WrongDir {
                meta_dir: self.dir_uuid,
                db_dir: dir_uuid,
            });
        }
        if self.last_complete_open == db_last_open
            || (db_last_open.is_some() && self.in_progress_open == db_last_open)
        {
            return Ok(());
        }
        let show = |o: Option<Open>| o.map_or_else(|| "no open".to_owned(), |o| o.to_string());
        Err(MetaError::OpenMismatch {
            meta: show(self.last_complete_open),
            db: show(db_last_open),
        })
    }
}

/// Reads the meta file, `Err(MetaError::Missing)` if there is none.
pub fn read_meta<D: Dir>(dir: &D) -> Result<DirMeta, MetaError> {
    let f = match dir.open(META_FILE_NAME, OpenMode::ReadOnly) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MetaError::Missing),
        Err(e) => return Err(e.into()),
    };
    let len = f.stat()?.size_bytes;
    if len != META_LEN as u64 {
        return Err(MetaError::BadLength { len });
    }
    let mut buf = [0u8; META_LEN];
    read_exact_at(&f, &mut buf, 0)?;
    DirMeta::decode(&buf)
}

/// Creates the meta file at init: create, write, fsync the file, fsync the directory.
pub fn create_meta<D: Dir>(dir: &D, meta: &DirMeta) -> io::Result<()> {
    let f = dir.create_new(META_FILE_NAME)?;
    f.write_all_at(&meta.encode(), 0)?;
    f.sync_all()?;
    dir.sync()
}

/// Rewrites the meta file in place (no allocation) and fsyncs it.
pub fn rewrite_meta<D: Dir>(dir: &D, meta: &DirMeta) -> io::Result<()> {
    let f = dir.open(META_FILE_NAME, OpenMode::ReadWrite)?;
    f.write_all_at(&meta.encode(), 0)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(id: u32) -> Open {
        Open {
            id,
            uuid: Uuid::from_u128(u128::from(id) * 7919),
        }
    }

    fn meta() -> DirMeta {
        DirMeta {
            db_uuid: Uuid::from_u128(1),
            dir_uuid: Uuid::from_u128(2),
            last_complete_open: Some(open(3)),
            in_progress_open: Some(open(4)),
        }
    }

    #[test]
    fn round_trips() {
        let m = meta();
        assert_eq!(DirMeta::decode(&m.encode()).unwrap(), m);
        let empty = DirMeta {
            last_complete_open: None,
            in_progress_open: None,
            ..m
        };
        assert_eq!(DirMeta::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damaged_meta_is_refused() {
        let mut b = meta().encode();
        b[50] ^= 1;
        assert!(matches!(DirMeta::decode(&b), Err(MetaError::BadChecksum)));
        let mut b = meta().encode();
        b[0] = b'x';
        assert!(matches!(DirMeta::decode(&b), Err(MetaError::BadMagic)));
        assert!(matches!(
            DirMeta::decode(&b[..100]),
            Err(MetaError::BadLength { len: 100 })
        ));
    }

    #[test]
    fn accepts_each_crash_point_of_the_open_sequence() {
        let db = Uuid::from_u128(1);
        let dir = Uuid::from_u128(2);
        // Crash after step 1: meta in progress, database still at the old open.
        let m = DirMeta {
            db_uuid: db,
            dir_uuid: dir,
            last_complete_open: Some(open(3)),
            in_progress_open: Some(open(4)),
        };
        m.check_against(db, dir, Some(open(3))).unwrap();
        // Crash after step 2: database committed the new open.
        m.check_against(db, dir, Some(open(4))).unwrap();
        // After step 3.
        let m = DirMeta {
            last_complete_open: Some(open(4)),
            in_progress_open: None,
            ..m
        };
        m.check_against(db, dir, Some(open(4))).unwrap();
    }

    #[test]
    fn database_restored_from_backup_is_refused_naming_both_opens() {
        let m = DirMeta {
            in_progress_open: None,
            ..meta()
        };
        let e = m
            .check_against(m.db_uuid, m.dir_uuid, Some(open(1)))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("open 3") && msg.contains("open 1"), "{msg}");
    }

    #[test]
    fn foreign_dir_is_refused_naming_both_databases() {
        let m = meta();
        let other = Uuid::from_u128(99);
        let msg = m
            .check_against(other, m.dir_uuid, m.last_complete_open)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&other.to_string()) && msg.contains(&m.db_uuid.to_string()),
            "{msg}"
        );
        let msg = m
            .check_against(m.db_uuid, other, m.last_complete_open)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&other.to_string()), "{msg}");
    }
}
