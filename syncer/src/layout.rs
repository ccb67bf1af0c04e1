//! Where things live in a data dir, and how a data dir is created (`nvr init`).
//!
//! ```text
//! <data-dir>/db.sqlite3      the database (WAL: also -wal and -shm)
//! <data-dir>/sample/         the sample dir: `meta`, `reserve`, and one file per recording,
//!                            named by its 16-hex-digit composite id
//! ```

use std::io;
use std::path::{Path, PathBuf};

use protocol::CompositeId;
use uuid::Uuid;

use crate::db::Database;
use crate::error::Error;
use crate::fs::{Dir, RealDir};
use crate::meta::{self, DirMeta, MetaError};

pub const DB_FILE_NAME: &str = "db.sqlite3";
pub const SAMPLE_DIR_NAME: &str = "sample";

/// The mode of the data dir and the sample dir: only their owner may enter them. The database
/// holds every camera's credentials, and the sample files are the footage.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of every file in a data dir (database, WAL, SHM, meta, sample files, state).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Sets the process umask to `0o077`, so that whatever the process creates in a data dir
/// (SQLite's WAL and SHM, `supervisor.json`, the admin socket) is its owner's alone. Every
/// binary that touches a data dir calls this first: a mode is decided by whoever creates the
/// file.
pub fn set_private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// A sample file's name: its composite id as 16 lowercase hex digits.
pub fn sample_file_name(id: CompositeId) -> String {
    id.to_string()
}

/// What a file system holds in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSize {
    /// `f_blocks * f_frsize`.
    pub bytes: u64,
    /// `f_files`; `None` where the file system has no fixed number (btrfs).
    pub inodes: Option<u64>,
}

/// Paths within one data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE_NAME)
    }

    pub fn sample_dir_path(&self) -> PathBuf {
        self.root.join(SAMPLE_DIR_NAME)
    }

    /// The size of the sample dir's file system (`statvfs`).
    pub fn sample_fs_size(&self) -> Result<FsSize, Error> {
        let path = self.sample_dir_path();
        let st = nix::sys::statvfs::statvfs(&path)
            .map_err(|e| sample_dir_error("statvfs", &path, e.into()))?;
        Ok(FsSize {
            bytes: st.blocks() as u64 * st.fragment_size() as u64,
            inodes: (st.files() > 0).then_some(st.files() as u64),
        })
    }

    /// Fails with [`Error::ReadOnly`] unless this process may write both the data dir and the
    /// sample dir: asked before any command that changes them, so that a read-only mount gets
    /// an answer saying so instead of SQLite's "unable to open database file".
    pub fn check_writable(&self) -> Result<(), Error> {
        use nix::unistd::{AccessFlags, access};
        for dir in [self.root.clone(), self.sample_dir_path()] {
            match access(&dir, AccessFlags::W_OK) {
                Ok(()) => {}
                Err(errno) => return Err(sample_dir_error_or_read_only(&dir, errno.into())),
            }
        }
        Ok(())
    }

    /// Opens the sample dir and takes its exclusive lock; fails if another process holds it.
    pub fn lock_sample_dir(&self) -> Result<RealDir, Error> {
        let path = self.sample_dir_path();
        let mut dir = RealDir::open_dir(&path).map_err(|e| sample_dir_error("open", &path, e))?;
        dir.lock_exclusive().map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::EWOULDBLOCK as i32) {
                Error::io(
                    "lock",
                    path.display(),
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another nvr process (a running syncer or command) holds this data dir",
                    ),
                )
            } else {
                Error::io("lock", path.display(), e)
            }
        })?;
        Ok(dir)
    }

    /// Creates the data dir if needed and initializes it; see [`init`]. The data dir ends up
    /// private ([`DataDir::make_private`]).
    pub fn init(&self) -> Result<InitOutcome, Error> {
        let sample = self.sample_dir_path();
        std::fs::create_dir_all(&sample).map_err(|e| Error::io("create", sample.display(), e))?;
        self.make_private()?;
        let dir = self.lock_sample_dir()?;
        let outcome = init(&dir, &self.db_path())?;
        self.make_private()?;
        Ok(outcome)
    }

    /// Makes the data dir and sample dir [`PRIVATE_DIR_MODE`] and the database, its WAL and
    /// SHM [`PRIVATE_FILE_MODE`], whatever an earlier version, a restore or a hand-made dir
    /// left. SQLite creates the WAL and SHM with the database's own mode, so once the database
    /// is private they are too. Files that do not exist are skipped.
    pub fn make_private(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let dirs = [self.root.clone(), self.sample_dir_path()];
        let files = ["", "-wal", "-shm"].map(|suffix| crate::db::sidecar(&self.db_path(), suffix));
        let wanted = dirs
            .iter()
            .map(|d| (d, PRIVATE_DIR_MODE))
            .chain(files.iter().map(|f| (f, PRIVATE_FILE_MODE)));
        for (path, mode) in wanted {
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", path.display(), e)),
            };
            if meta.permissions().mode() & 0o7777 != mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io("chmod", path.display(), e))?;
            }
        }
        Ok(())
    }
}

/// A dir of the data dir that cannot be written: [`Error::SampleDirMissing`] when it does not
/// exist, else [`Error::ReadOnly`].
fn sample_dir_error_or_read_only(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return sample_dir_error("access", path, e);
    }
    Error::ReadOnly {
        path: path.display().to_string(),
        source: e,
    }
}

/// An error reaching the sample dir itself: [`Error::SampleDirMissing`] when it does not exist.
fn sample_dir_error(op: &'static str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::SampleDirMissing {
            path: path.display().to_string(),
        }
    } else {
        Error::io(op, path.display(), e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

/// Initializes a database at `db_path` bound to the (locked) sample dir `dir`.
///
/// Idempotent: a healthy, matching pair is left alone. An init interrupted between creating the
/// database and writing the meta file is completed. Anything else (a sample dir of another
/// database, sample files without a database) is refused with a clear error.
pub fn init<D: Dir>(dir: &D, db_path: &Path) -> Result<InitOutcome, Error> {
    let names = dir.list().map_err(|e| Error::io("list", "sample dir", e))?;
    let sample_files = names
        .iter()
        .filter(|n| CompositeId::parse_file_name(n.as_bytes()).is_some())
        .count();
    let has_samples = sample_files > 0;
    if db_path.exists() {
        match Database::open(db_path) {
            Ok(db) => {
                let info = db.info()?;
                return match meta::read_meta(dir) {
                    Ok(m) => {
                        m.check_against(info.db_uuid, info.dir_uuid, info.last_complete_open)?;
                        Ok(InitOutcome::AlreadyInitialized)
                    }
                    Err(MetaError::Missing)
                        if info.last_complete_open.is_none() && !has_samples =>
                    {
                        write_new_meta(dir, info.db_uuid, info.dir_uuid)?;
                        Ok(InitOutcome::Created)
                    }
                    Err(e) => Err(e.into()),
                };
            }
            Err(crate::db::DbError::NotInitialized) => {
                // An empty file from an interrupted create: start over.
                remove_db_files(db_path)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match meta::read_meta(dir) {
        Err(MetaError::Missing) => {}
        Ok(m) => return Err(MetaError::DatabaseMissing { meta_db: m.db_uuid }.into()),
        Err(e) => return Err(e.into()),
    }
    if has_samples {
        return Err(MetaError::SamplesWithoutDatabase {
            count: sample_files,
        }
        .into());
    }
    let db_uuid = Uuid::new_v4();
    let dir_uuid = Uuid::new_v4();
    Database::create(db_path, db_uuid, dir_uuid)?;
    write_new_meta(dir, db_uuid, dir_uuid)?;
    Ok(InitOutcome::Created)
}

fn write_new_meta<D: Dir>(dir: &D, db_uuid: Uuid, dir_uuid: Uuid) -> Result<(), Error> {
    let m = DirMeta {
        db_uuid,
        dir_uuid,
        last_complete_open: None,
        in_progress_open: None,
    };
    meta::create_meta(dir, &m).map_err(|e| Error::io("create", meta::META_FILE_NAME, e))
}

fn remove_db_files(db_path: &Path) -> Result<(), Error> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db_path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("remove", Path::new(&p).display(), e));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().join("data"));
        assert_eq!(d.init().unwrap(), InitOutcome::Created);
        assert_eq!(d.init().unwrap(), InitOutcome::AlreadyInitialized);
    }

    #[test]
    fn init_refuses_another_databases_sample_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDir::new(tmp.path().join("a"));
        a.init().unwrap();
        std::fs::remove_file(a.db_path()).unwrap();
        let b = DataDir::new(tmp.path().join("b"));
        b.init().unwrap();
        std::fs::copy(b.db_path(), a.db_path()).unwrap();
        let e = a.init().unwrap_err();
        assert!(e.to_string().contains("belongs to database"), "{e}");
    }

    #[test]
    fn init_completes_after_a_crash_before_the_meta_write() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().join("data"));
        d.init().unwrap();
        std::fs::remove_file(d.sample_dir_path().join(meta::META_FILE_NAME)).unwrap();
        assert_eq!(d.init().unwrap(), InitOutcome::Created);
        assert_eq!(d.init().unwrap(), InitOutcome::AlreadyInitialized);
    }

    #[test]
    fn sample_file_names_are_sixteen_hex_digits() {
        assert_eq!(sample_file_name(CompositeId::new(1, 2)), "0000000100000002");
    }
}
