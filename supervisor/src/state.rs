//! What `nvr run` knows and the syncer does not: each camera's process state. The supervisor
//! rewrites `<data-dir>/supervisor.json` (write to a temporary file, rename) whenever it
//! changes, and removes it when it exits; `nvr status` merges it with the syncer's view.
//!
//! The state file belongs to the supervisor holding [`SupervisorLock`]
//! (`<data-dir>/supervisor.lock`, an exclusive open-file-description lock): a second `nvr run`
//! on the same data dir stops at once instead of starting a syncer, and so can never write or
//! remove the running supervisor's state. The lock is an OFD lock rather than a `flock` because
//! other commands must be able to ask whether it is held without taking it
//! ([`SupervisorLock::is_held`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use syncer::layout::DataDir;

use crate::identity::Identity;

pub const STATE_FILE_NAME: &str = "supervisor.json";

pub const LOCK_FILE_NAME: &str = "supervisor.lock";

/// The lock of the one supervisor of a data dir, held until dropped (or the process ends).
#[derive(Debug)]
pub struct SupervisorLock {
    _file: File,
    /// The data dir's owner, who gets the supervisor's files (see [`crate::identity`]).
    owner: Option<Identity>,
}

/// Why [`SupervisorLock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another nvr run{} supervises {}; stop it first",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        .data_dir.display()
    )]
    Held { pid: Option<u32>, data_dir: PathBuf },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SupervisorLock {
    /// Takes the data dir's supervisor lock, without waiting. On a data dir given to `owner`,
    /// the supervisor (root) works in a directory that user controls: the lock is never
    /// followed through a symlink nor taken on a file linked elsewhere, and is the owner's.
    pub fn acquire(d: &DataDir, owner: Option<Identity>) -> Result<SupervisorLock, LockError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = d.root.join(LOCK_FILE_NAME);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_error)?;
        let meta = file.metadata().map_err(io_error)?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(io_error(io::Error::other(
                "not a plain file (a hard link or special file): remove it",
            )));
        }
        give(&file, owner).map_err(io_error)?;
        let lock = whole_file(nix::libc::F_WRLCK);
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(SupervisorLock { _file: file, owner }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Err(LockError::Held {
                pid: SupervisorState::read(d).map(|s| s.pid),
                data_dir: d.root.clone(),
            }),
            Err(e) => Err(io_error(e.into())),
        }
    }

    /// Whether a supervisor holds the data dir's lock now. It only asks (`F_OFD_GETLK`) and
    /// never takes the lock, so asking cannot make a starting `nvr run` think another one
    /// supervises the dir. Works on a read-only data dir.
    pub fn is_held(d: &DataDir) -> bool {
        let Ok(file) = File::open(d.root.join(LOCK_FILE_NAME)) else {
            return false;
        };
        let mut probe = whole_file(nix::libc::F_WRLCK);
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe)) {
            Ok(_) => i32::from(probe.l_type) != nix::libc::F_UNLCK,
            Err(_) => false,
        }
    }
}

/// A lock description of `kind` covering the whole file, as OFD locks require (pid 0).
fn whole_file(kind: i32) -> nix::libc::flock {
    // SAFETY: `flock` is a plain C struct for which all zeroes is a valid value.
    let mut lock: nix::libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as i16;
    lock.l_whence = nix::libc::SEEK_SET as i16;
    lock
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Started and not known to have exited.
    Running,
    /// Exited unexpectedly; waiting out its backoff before the next start.
    Restarting,
    /// Restarted too often: tried again only after a long backoff (see `retry_at`).
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraState {
    pub name: String,
    pub state: ProcessState,
    /// Restarts since `nvr run` started.
    pub restarts: u32,
    /// How the last run of its ingest ended, if it did.
    pub last_error: Option<String>,
    /// For a failed camera: when it is tried again.
    #[serde(default)]
    pub retry_at: Option<protocol::Time>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    /// Pid of the `nvr run` process.
    pub pid: u32,
    pub syncer: ProcessState,
    pub syncer_restarts: u32,
    pub cameras: Vec<CameraState>,
}

/// Gives the open file to `owner`, if any.
fn give(f: &File, owner: Option<Identity>) -> io::Result<()> {
    match owner {
        Some(o) => nix::unistd::fchown(f, Some(o.uid), Some(o.gid)).map_err(io::Error::from),
        None => Ok(()),
    }
}

pub fn state_path(d: &DataDir) -> PathBuf {
    d.root.join(STATE_FILE_NAME)
}

impl SupervisorState {
    /// Replaces the state file atomically; only the holder of `lock` may. The temporary file
    /// is made anew (`O_EXCL`, never through a link someone left in its place) and given to
    /// the data dir's owner; the rename replaces whatever name was there, never a link's target.
    pub fn write(&self, d: &DataDir, lock: &SupervisorLock) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = state_path(d);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        give(&f, lock.owner)?;
        f.write_all(&json)?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads the state file of a running `nvr run`: `None` if there is none, or if its
    /// process is gone (a leftover of a killed supervisor).
    pub fn read(d: &DataDir) -> Option<SupervisorState> {
        let s: SupervisorState =
            serde_json::from_slice(&std::fs::read(state_path(d)).ok()?).ok()?;
        Path::new(&format!("/proc/{}", s.pid)).exists().then_some(s)
    }

    /// Removes the state file; only the holder of `_lock` may.
    pub fn remove(d: &DataDir, _lock: &SupervisorLock) {
        let _ = std::fs::remove_file(state_path(d));
    }
}
