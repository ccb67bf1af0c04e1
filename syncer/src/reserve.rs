//! The reserve file: a little preallocated space, released when the disk is full.
//!
//! When the disk fills (ENOSPC on a sample-dir operation, `SQLITE_FULL` at COMMIT), the
//! transaction that would free space by deleting old recordings may itself need space. The
//! syncer keeps [`RESERVE_FILE_NAME`] in the sample dir (on the same file system as the
//! database by default) and unlinks it at such a moment, so that transaction can commit;
//! it is re-created after a later successful flush. Startup never fails because the reserve
//! cannot be created.

use std::io;

use crate::fs::{Dir, DirFile};

pub const RESERVE_FILE_NAME: &str = "reserve";

/// Bytes written per call while filling the reserve.
const FILL_CHUNK_BYTES: usize = 64 << 10;

/// Creates the reserve file of `bytes` bytes (real blocks, not a sparse file) if it is missing.
/// On failure, nothing is left behind.
pub fn ensure<D: Dir>(dir: &D, bytes: u64) -> io::Result<()> {
    if dir.list()?.iter().any(|n| n == RESERVE_FILE_NAME) {
        return Ok(());
    }
    let fill = || -> io::Result<()> {
        let f = dir.create_new(RESERVE_FILE_NAME)?;
        let zeros = vec![0u8; FILL_CHUNK_BYTES];
        let mut pos = 0u64;
        while pos < bytes {
            let n = zeros.len().min((bytes - pos) as usize);
            f.write_all_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        f.sync_all()?;
        dir.sync()
    };
    fill().inspect_err(|_| {
        let _ = dir.unlink(RESERVE_FILE_NAME);
    })
}

/// Whether the reserve file is there (false also if the dir cannot be listed).
pub fn exists<D: Dir>(dir: &D) -> bool {
    dir.list()
        .is_ok_and(|names| names.iter().any(|n| n == RESERVE_FILE_NAME))
}

/// Unlinks the reserve file, freeing its space at once. Missing is fine.
pub fn release<D: Dir>(dir: &D) -> io::Result<()> {
    match dir.unlink(RESERVE_FILE_NAME) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Releases the reserve when less than `low_bytes` is free, before anything that may need to
/// grow the database (opening it in WAL mode creates its `-wal` and `-shm` files). Returns
/// whether it was released.
pub fn release_if_low<D: Dir>(dir: &D, low_bytes: u64) -> io::Result<bool> {
    match dir.free_bytes()? {
        Some(free) if free < low_bytes && dir.list()?.iter().any(|n| n == RESERVE_FILE_NAME) => {
            release(dir)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
