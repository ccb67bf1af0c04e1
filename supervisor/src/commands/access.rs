//! How a command reaches a data dir: through the running syncer's admin socket if one
//! answers (the syncer stays the only process that opens SQLite while it runs), otherwise
//! directly, holding the sample dir's lock.
//!
//! Offline, reads open the database under the lock without recovery (nothing is changed);
//! writes start a [`Syncer`] (which runs recovery first), apply the change through it, and shut
//! it down, so that every change takes the same path, with the same checks, as in the daemon.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use protocol::clock::RealClock;
use syncer::admin_client::{AdminClient, AdminError};
use syncer::db::Database;
use syncer::fs::RealDir;
use syncer::layout::DataDir;
use syncer::server::socket_path;
use syncer::{Syncer, SyncerOptions};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AccessError {
    #[error("not an nvr data dir (no {db}); run `nvr init` first")]
    NotInitialized { db: PathBuf },
    #[error(
        "another process holds the data dir's lock, but no syncer answers on {socket} ({connect}); \
         a syncer may be starting or stopping, or another nvr command is running: try again \
         shortly"
    )]
    LockedWithoutSyncer { socket: PathBuf, connect: String },
    #[error(transparent)]
    Syncer(#[from] syncer::Error),
    #[error("database: {0}")]
    Db(#[from] syncer::db::DbError),
}

/// A data dir reached one way or the other.
pub enum Access {
    /// A syncer runs and answered the admin hello.
    Online(AdminClient),
    /// No syncer runs: the sample dir's lock is held by this process until this is dropped.
    Offline(Offline),
}

/// A data dir this process has locked.
pub struct Offline {
    dir: RealDir,
    d: DataDir,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Online(_) => f.write_str("Access::Online"),
            Access::Offline(o) => write!(f, "Access::Offline({})", o.d.root.display()),
        }
    }
}

impl Offline {
    /// The database for queries (no recovery runs and nothing is written).
    pub fn read(&self) -> Result<Database, AccessError> {
        Ok(Database::open(&self.d.db_path())?)
    }

    /// Starts a syncer on the locked dir (recovery first) for changes; the caller applies them
    /// and calls [`Syncer::shutdown`].
    pub fn write(self) -> Result<Syncer<RealDir>, AccessError> {
        let db = Database::open(&self.d.db_path())?;
        let (s, _report) = Syncer::start(
            Arc::new(self.dir),
            db,
            Arc::new(RealClock),
            SyncerOptions::default(),
        )?;
        Ok(s)
    }
}

/// Whether a syncer answers on the data dir's admin socket.
pub fn syncer_answers(d: &DataDir) -> bool {
    AdminClient::connect(d).is_ok()
}

/// Connects to the running syncer, or else locks the data dir.
pub fn connect_or_lock(d: &DataDir) -> Result<Access, AccessError> {
    let connect_error = match AdminClient::connect(d) {
        Ok(c) => return Ok(Access::Online(c)),
        Err(AdminError::Connect { source, .. }) => source.to_string(),
        Err(e) => e.to_string(),
    };
    if !d.db_path().exists() {
        return Err(AccessError::NotInitialized { db: d.db_path() });
    }
    match d.lock_sample_dir() {
        Ok(dir) => Ok(Access::Offline(Offline { dir, d: d.clone() })),
        Err(syncer::Error::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => {
            Err(AccessError::LockedWithoutSyncer {
                socket: socket_path(d),
                connect: connect_error,
            })
        }
        Err(e) => Err(e.into()),
    }
}
