//! How a command reaches a data dir: through the running syncer's admin socket if one
//! answers (the syncer stays the only process that opens SQLite while it runs), otherwise
//! directly, holding the sample dir's lock.
//!
//! While an `nvr run` supervises the dir its syncer may be between runs (restarting after a
//! crash, or recovering at start); a command then waits for it rather than taking the lock,
//! since a command holding the lock (and a `camera set` running recovery) would make the
//! restarted syncer fail and count toward the limit that ends `nvr run`.
//!
//! Offline, reads open the database under the lock without recovery (nothing is changed);
//! writes start a [`Syncer`] (which runs recovery first), apply the change through it, and shut
//! it down, so that every change takes the same path, with the same checks, as in the daemon.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::clock::RealClock;
use syncer::admin_client::{AdminClient, AdminError};
use syncer::db::Database;
use syncer::fs::RealDir;
use syncer::layout::DataDir;
use syncer::server::socket_path;
use syncer::{Syncer, SyncerOptions};
use thiserror::Error;

use crate::state::{SupervisorLock, SupervisorState};

/// Longest wait for the syncer of a running `nvr run` (restarting after a crash, or still
/// recovering) before a command gives up. Restart backoff is at most 30 s by default, and
/// recovery of a large data dir takes seconds.
pub const SUPERVISED_SYNCER_WAIT: Duration = Duration::from_secs(120);

/// How often a waiting command says it still waits.
const WAIT_PROGRESS_EVERY: Duration = Duration::from_secs(15);

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
    #[error(
        "nvr run{} supervises this data dir, but its syncer did not answer on {socket} within \
         {waited:?} ({connect}); see nvr run's log (`nvr status` shows the syncer's state)",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    SupervisedWithoutSyncer {
        pid: Option<u32>,
        socket: PathBuf,
        waited: Duration,
        connect: String,
    },
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
    /// The database for queries, opened read-only (no recovery runs and nothing is written;
    /// works on a read-only data dir), but for the migration of an older schema.
    pub fn read(&self) -> Result<Database, AccessError> {
        Ok(Database::open_locked_for_reading(&self.d.db_path())?)
    }

    /// Starts a syncer on the locked dir (recovery first) for changes; the caller applies them
    /// and calls [`Syncer::shutdown`]. A read-only data dir is refused first, saying so.
    pub fn write(self) -> Result<Syncer<RealDir>, AccessError> {
        self.d.check_writable()?;
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

/// The running syncer, if one answers; while an `nvr run` supervises the dir, waits for its
/// syncer (at most [`SUPERVISED_SYNCER_WAIT`], saying so on stderr). `Err(why)` when no syncer
/// answers and no supervisor holds the dir: the caller may work offline.
pub fn supervised_syncer(d: &DataDir) -> Result<Result<AdminClient, String>, AccessError> {
    let mut why = match AdminClient::connect(d) {
        Ok(c) => return Ok(Ok(c)),
        Err(e) => connect_error(e),
    };
    let started = Instant::now();
    let mut said = None;
    while SupervisorLock::is_held(d) {
        let waited = started.elapsed();
        if waited >= SUPERVISED_SYNCER_WAIT {
            return Err(AccessError::SupervisedWithoutSyncer {
                pid: SupervisorState::read(d).map(|s| s.pid),
                socket: socket_path(d),
                waited,
                connect: why,
            });
        }
        if said.is_none_or(|t: Instant| t.elapsed() >= WAIT_PROGRESS_EVERY) {
            said = Some(Instant::now());
            eprintln!(
                "nvr: waiting for the syncer of the nvr run supervising {} (starting or \
                 restarting; waited {}s of at most {}s)",
                d.root.display(),
                waited.as_secs(),
                SUPERVISED_SYNCER_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        match AdminClient::connect(d) {
            Ok(c) => return Ok(Ok(c)),
            Err(e) => why = connect_error(e),
        }
    }
    Ok(Err(why))
}

fn connect_error(e: AdminError) -> String {
    match e {
        AdminError::Connect { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

/// Connects to the running syncer (waiting for a supervised one, see [`supervised_syncer`]),
/// or else locks the data dir.
pub fn connect_or_lock(d: &DataDir) -> Result<Access, AccessError> {
    let connect_error = match supervised_syncer(d)? {
        Ok(c) => return Ok(Access::Online(c)),
        Err(why) => why,
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
