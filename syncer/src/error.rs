//! The syncer library's error type.

use std::io;

use protocol::CompositeId;
use thiserror::Error;

use crate::db::{ConfigError, DbError};
use crate::meta::MetaError;

#[derive(Debug, Error)]
pub enum Error {
    /// An operation on the sample dir failed; `target` names the file or directory.
    #[error("{op} {target}: {source}")]
    Io {
        op: &'static str,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("no stream with id {0}")]
    NoSuchStream(i32),
    #[error("recording {0} is not open")]
    NotOpen(CompositeId),
    /// A peer asked for something the syncer will not do; nothing else is affected.
    #[error("stream {stream}: {reason}")]
    Rejected { stream: i32, reason: String },
    /// The recording's file fsync failed: its data may be gone although reads still return
    /// it, so it is discarded (end reason `io-error`), never retried and trusted.
    #[error("recording {id} discarded (io-error): fsync failed: {source}")]
    SyncFailed {
        id: CompositeId,
        #[source]
        source: io::Error,
    },
    /// Fatal: creates or unlinks may not be durable. The syncer must restart through recovery.
    #[error("fsync of the sample dir failed; restart through recovery: {0}")]
    DirSyncFailed(#[source] io::Error),
    /// Fatal: the syncer's state contradicts the disk (e.g. `EEXIST` creating a new id).
    #[error("bug: {0}")]
    Bug(String),
    /// `check --repair` on a sample dir whose meta does not match the database: the database
    /// may be an older backup or another dir's, and would take newer recordings for strays.
    #[error(
        "repair refused: the sample dir does not belong to this database ({0}); a database \
         restored from an older backup or another data dir's would unlink recordings it does \
         not know. Nothing was changed"
    )]
    RepairRefused(String),
    #[error("the syncer is shutting down")]
    ShuttingDown,
    /// Fatal: the sample dir was removed while the syncer had it open. Nothing written there
    /// can last, and recovery refuses to start without it (see [`Error::SampleDirMissing`]).
    #[error(
        "the sample dir was removed while recording: new recordings would be lost. Stopping; \
         restore it (from a backup, or remount its file system) before starting again"
    )]
    SampleDirRemoved,
    /// A command that changes the data dir found it read-only; nothing was changed.
    #[error(
        "the data dir cannot be written ({path}: {source}), and this command changes it. \
         Remount it read-write or run as its owner; reading commands (status, recordings, \
         camera list, check without --repair, export) work on a read-only dir"
    )]
    ReadOnly {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The data dir has a database but no sample dir: its file system is not mounted, or the
    /// dir was removed. nvr never makes a new one in its place, since the database describes
    /// recordings that belong there.
    #[error(
        "the sample dir {path} is missing: its file system is not mounted, or it was removed. \
         Mount or restore it; if its recordings are truly gone, move the whole data dir aside \
         and `nvr init` a new one"
    )]
    SampleDirMissing { path: String },
    /// A minimum free space the file system can never have: the free-space guard would
    /// delete every recording as soon as it is committed.
    #[error(
        "the minimum free space ({min_free_bytes} bytes) is not below the size of the sample \
         dir's file system ({size_bytes} bytes): every recording would be deleted as soon as \
         it is committed. Choose a few percent of the disk (or 0 to turn the guard off)"
    )]
    MinFreeTooLarge {
        min_free_bytes: u64,
        size_bytes: u64,
    },
    /// Likewise for inodes.
    #[error(
        "the minimum of free inodes ({min_free_inodes}) is not below the inodes of the sample \
         dir's file system ({inodes}): every recording would be deleted as soon as it is \
         committed. Choose a few percent of them (or 0 to turn the guard off)"
    )]
    MinFreeInodesTooLarge { min_free_inodes: u64, inodes: u64 },
    /// An open while the reserve file is released and cannot be made again: the space left
    /// is for the commit that frees space, not for a new sample file.
    #[error(
        "the disk is full: no new recording until a commit has made room (the reserve file \
         is released)"
    )]
    ReserveReleased,
    /// An open while the file system is nearly out of inodes: the few left are kept for the
    /// work that frees some (the free-space guard deletes the oldest recordings meanwhile).
    #[error(
        "the file system is out of inodes ({free_inodes} free): no new recording until the \
         oldest recordings have been deleted"
    )]
    NoFreeInodes { free_inodes: u64 },
    /// An open beyond the stream's budget (`protocol::limits::OpenBudget`): refused, as a
    /// full disk's opens are, for the writer to try again; nothing else is affected.
    #[error(
        "stream {stream} opens recordings faster than its budget ({} at once, then one every \
         {} s): try again shortly",
        protocol::limits::OPEN_BURST,
        protocol::limits::OPEN_INTERVAL_90K / protocol::TIME_UNITS_PER_SEC
    )]
    OpenTooSoon { stream: i32 },
    /// A camera name or setting was refused; nothing changed.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Removing a camera that has committed recordings needs `delete_recordings`.
    #[error(
        "camera {name:?} has {recordings} committed recording(s); removing it deletes them, \
         so ask for that explicitly (`nvr camera remove {name} --delete-recordings`)"
    )]
    HasRecordings {
        stream: i32,
        name: String,
        recordings: usize,
    },
    /// A camera cannot be removed while one of its recordings is being written or saved.
    #[error(
        "camera {name:?}: recording {recording} is still being written or saved; \
         stop its ingest first"
    )]
    StreamBusy {
        stream: i32,
        name: String,
        recording: CompositeId,
    },
}

impl Error {
    /// True when the syncer must stop and restart through recovery.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::DirSyncFailed(_) | Error::Bug(_) | Error::SampleDirRemoved
        )
    }

    /// True for a file system out of space or quota (`ENOSPC`, `EDQUOT`): the disk's state,
    /// which freeing space may change, not a fault of whoever asked.
    pub fn is_out_of_space(&self) -> bool {
        let source = match self {
            Error::Io { source, .. } => source,
            Error::ReserveReleased | Error::NoFreeInodes { .. } => return true,
            _ => return false,
        };
        [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT]
            .iter()
            .any(|&n| source.raw_os_error() == Some(n as i32))
    }

    pub(crate) fn io(op: &'static str, target: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            op,
            target: target.to_string(),
            source,
        }
    }
}
