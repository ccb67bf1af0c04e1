//! Making one recording durable: the slow, per-stream disk work of a close or a salvage.
//!
//! This runs without the syncer's state lock so that one stream's slow fsync, hash or salvage
//! never delays another stream. It works only on the syncer's own descriptor of the file (never
//! the writer's, whose fsync errors and offset are its own) and never trusts what the writer
//! reported: the size, the allocation and the hash are taken from the file itself.

use std::io;

use protocol::CompositeId;
use protocol::sample_index;

use crate::db::{FLAG_TRAILING_ZERO, RecordingRow, RecordingToInsert};
use crate::fs::{Dir, DirFile, FileStat};
use crate::retention::round_up;

/// After its allocation past the end is released ([`release_allocation`]), a file may occupy
/// its length rounded up to 4 KiB, plus this, plus 1/1024 of its length: what a file system's
/// own metadata counted in `st_blocks` takes (ext4's extent tree blocks, ext2/3's indirect
/// blocks, one per 1024 data blocks). Past it the file's blocks are not its data's (a writer's
/// `fallocate` of holes it never filled, say), and the recording is rejected. Quotas count
/// recordings by their length rounded up to 4 KiB, so this is also what a recording may hold
/// beyond its quota accounting.
pub const ALLOCATION_SLACK_BYTES: u64 = 64 << 10;

/// Bytes hashed per read.
const HASH_CHUNK_BYTES: usize = 1 << 20;

/// How the recording came to be saved.
#[derive(Debug)]
pub enum SaveMode {
    /// The writer closed it; its hash is a cross-check of the syncer's.
    Close { writer_blake3: [u8; 32] },
    /// The writer is gone mid-recording: keep the longest whole-sample prefix of what it
    /// reported that the file actually holds.
    Salvage,
}

/// A recording whose durability work is pending; see [`PendingSave::run`].
#[derive(Debug)]
pub struct PendingSave<F> {
    pub(crate) id: CompositeId,
    pub(crate) file: F,
    pub(crate) mode: SaveMode,
    /// The row as reported; sizes and hash are checked or recomputed by `run`.
    pub(crate) row: RecordingRow,
    /// The reported index: complete for a close; for a salvage, every reported sample with the
    /// last one's duration 0.
    pub(crate) index: Vec<u8>,
}

/// Why a save did not produce a committable recording.
#[derive(Debug)]
pub enum SaveFailure {
    /// The file contradicts what the writer reported.
    Rejected(String),
    /// Nothing usable to salvage (no whole sample on disk).
    NothingUsable,
    /// The file fsync failed: the data may be gone. Discard, end reason `io-error`.
    SyncFailed(io::Error),
    /// The directory fsync failed: fatal to the syncer.
    DirSyncFailed(io::Error),
    /// Another I/O error (stat, read, truncate): discard.
    Io(&'static str, io::Error),
}

impl std::fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaveFailure::Rejected(r) => write!(f, "rejected: {r}"),
            SaveFailure::NothingUsable => write!(f, "no whole sample on disk to salvage"),
            SaveFailure::SyncFailed(e) => write!(f, "fsync failed: {e}"),
            SaveFailure::DirSyncFailed(e) => write!(f, "fsync of the sample dir failed: {e}"),
            SaveFailure::Io(op, e) => write!(f, "{op} failed: {e}"),
        }
    }
}

impl<F: DirFile> PendingSave<F> {
    pub fn id(&self) -> CompositeId {
        self.id
    }

    /// Checks the file, makes it and its directory entry durable, and hashes it.
    pub fn run<D: Dir<File = F>>(self, dir: &D) -> Result<RecordingToInsert, SaveFailure> {
        let PendingSave {
            id,
            file,
            mode,
            mut row,
            mut index,
        } = self;
        let stat = file.stat().map_err(|e| SaveFailure::Io("fstat", e))?;
        match mode {
            SaveMode::Close { writer_blake3 } => {
                let expected = row.sample_file_bytes as u64;
                if stat.size_bytes != expected {
                    return Err(SaveFailure::Rejected(format!(
                        "file holds {} bytes but the index says {expected}",
                        stat.size_bytes
                    )));
                }
                let stat = release_allocation(&file, stat)?;
                check_allocation(stat.size_bytes, stat.allocated_bytes)?;
                sync(&file, dir)?;
                let hash = hash_prefix(&file, expected)?;
                if hash != writer_blake3 {
                    return Err(SaveFailure::Rejected(format!(
                        "blake3 of the file is {} but the writer reported {}",
                        hex(&hash),
                        hex(&writer_blake3)
                    )));
                }
                row.blake3 = hash;
            }
            SaveMode::Salvage => {
                let (prefix, summary) = sample_index::whole_sample_prefix(&index, stat.size_bytes)
                    .map_err(|e| SaveFailure::Rejected(format!("reported index: {e}")))?;
                if summary.samples == 0 {
                    return Err(SaveFailure::NothingUsable);
                }
                let stat = if stat.size_bytes > summary.total_bytes {
                    // Never extend: only cut what the index does not cover. The cut frees the
                    // tail's blocks and any allocation past the end, so the allocation is
                    // measured again after it.
                    file.set_len(summary.total_bytes)
                        .map_err(|e| SaveFailure::Io("truncate", e))?;
                    file.stat().map_err(|e| SaveFailure::Io("fstat", e))?
                } else {
                    release_allocation(&file, stat)?
                };
                check_allocation(stat.size_bytes, stat.allocated_bytes)?;
                sync(&file, dir)?;
                row.blake3 = hash_prefix(&file, summary.total_bytes)?;
                let reported_media = i64::from(row.media_duration_90k);
                let reported_correction = i64::from(row.wall_duration_90k) - reported_media;
                let media = summary.media_duration_90k;
                let limit = media / 2000;
                let wall = media + reported_correction.clamp(-limit, limit);
                row.media_duration_90k = to_i32(media, "media duration")?;
                row.wall_duration_90k = to_i32(wall, "wall duration")?;
                row.sample_file_bytes = summary.total_bytes as i64;
                row.video_samples = to_i32(i64::from(summary.samples), "samples")?;
                row.video_sync_samples = to_i32(i64::from(summary.key_samples), "key samples")?;
                if summary.last_sample_duration_90k == 0 {
                    row.flags |= FLAG_TRAILING_ZERO;
                }
                index = prefix;
            }
        }
        debug_assert_eq!(row.id, id);
        Ok(RecordingToInsert {
            row,
            video_index: index,
        })
    }
}

fn to_i32(v: i64, what: &str) -> Result<i32, SaveFailure> {
    i32::try_from(v).map_err(|_| SaveFailure::Rejected(format!("{what} {v} out of range")))
}

/// Releases what `file` has allocated past its end (a writer's `fallocate` with
/// `FALLOC_FL_KEEP_SIZE`, a file system's speculative preallocation) by truncating it to its
/// own length, which frees blocks beyond the end and changes no byte; returns the new stat.
/// `stat` is the file's stat now; a file holding no more than its rounded length is left be.
fn release_allocation<F: DirFile>(file: &F, stat: FileStat) -> Result<FileStat, SaveFailure> {
    if stat.allocated_bytes <= round_up(stat.size_bytes as i64) as u64 {
        return Ok(stat);
    }
    file.set_len(stat.size_bytes)
        .map_err(|e| SaveFailure::Io("truncate to release preallocation", e))?;
    let released = file.stat().map_err(|e| SaveFailure::Io("fstat", e))?;
    if released.size_bytes != stat.size_bytes {
        return Err(SaveFailure::Rejected(format!(
            "file changed from {} to {} bytes while being saved",
            stat.size_bytes, released.size_bytes
        )));
    }
    Ok(released)
}

/// The most a saved file of `size_bytes` may occupy on disk (see [`ALLOCATION_SLACK_BYTES`]).
pub(crate) fn allocation_allowed(size_bytes: u64) -> u64 {
    round_up(size_bytes as i64) as u64 + ALLOCATION_SLACK_BYTES + size_bytes / 1024
}

fn check_allocation(size_bytes: u64, allocated_bytes: u64) -> Result<(), SaveFailure> {
    let allowed = allocation_allowed(size_bytes);
    if allocated_bytes > allowed {
        return Err(SaveFailure::Rejected(format!(
            "file occupies {allocated_bytes} bytes on disk for {size_bytes} bytes of data"
        )));
    }
    Ok(())
}

/// fsyncs the file, then the directory (which makes the file's creation durable).
fn sync<D: Dir>(file: &D::File, dir: &D) -> Result<(), SaveFailure> {
    file.sync_all().map_err(SaveFailure::SyncFailed)?;
    dir.sync().map_err(SaveFailure::DirSyncFailed)
}

/// blake3 of the first `len` bytes of the file, read through the syncer's own descriptor.
pub fn hash_prefix<F: DirFile + ?Sized>(file: &F, len: u64) -> Result<[u8; 32], SaveFailure> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES.min(len as usize).max(1)];
    let mut pos = 0u64;
    while pos < len {
        let want = buf.len().min((len - pos) as usize);
        crate::fs::read_exact_at(file, &mut buf[..want], pos)
            .map_err(|e| SaveFailure::Io("read for hashing", e))?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_past_the_rounded_length_and_metadata_slack_is_refused() {
        let mib = 1 << 20;
        assert!(check_allocation(1000, 4096).is_ok());
        assert!(check_allocation(1000, 4096 + ALLOCATION_SLACK_BYTES).is_ok());
        assert!(check_allocation(1000, 4096 + ALLOCATION_SLACK_BYTES + 4096).is_err());
        // Metadata grows with the file: 1/1024 of 1 GiB is 1 MiB.
        let gib = 1024 * mib;
        assert!(check_allocation(gib, gib + ALLOCATION_SLACK_BYTES + mib).is_ok());
        assert!(check_allocation(gib, gib + 4 * mib).is_err());
    }
}
