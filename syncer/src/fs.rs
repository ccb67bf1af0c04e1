//! The file-system seam: every operation the syncer performs on the sample directory.
//!
//! The syncer never touches the sample directory except through [`Dir`] and [`DirFile`]. The
//! production implementation ([`RealDir`]) works relative to a directory descriptor; the
//! fault-injecting simulation in [`crate::sim_fs`] implements the same traits so that tests can
//! return EIO/ENOSPC at any chosen call, model Linux's fsync-error semantics, and model power
//! loss. Keep this surface small: each method here is a crash point the simulation enumerates.
//!
//! Names passed to [`Dir`] are plain file names within the one directory (no `/`); the mapping
//! from recording ids to names lives in [`crate::layout`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FlockArg, OFlag, openat};
use nix::sys::stat::Mode;

/// How an existing file is opened by [`Dir::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    ReadOnly,
    /// The ingest's descriptor: write-only and `O_APPEND`, a separate open file description
    /// (never a `dup`: it has its own offset and does not share fsync error state with the
    /// syncer's descriptor). Every write lands at the end of the file, even a `pwrite` at an
    /// offset (Linux ignores the offset under `O_APPEND`), so bytes already reported cannot be
    /// overwritten through it, and a salvage's truncation is where the next write goes.
    Append,
    ReadWrite,
}

/// What the syncer checks of a file at close: its length and what it occupies on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// `st_size`, in bytes.
    pub size_bytes: u64,
    /// `st_blocks * 512`: the bytes actually allocated, which a hostile writer could inflate
    /// with `fallocate` beyond `size_bytes`.
    pub allocated_bytes: u64,
}

/// One directory of sample files.
pub trait Dir: Send + Sync + 'static {
    type File: DirFile;

    /// Creates `name` with `O_CREAT|O_EXCL`, read-write. `EEXIST` is returned as is; callers
    /// treat it as a bug, never as a reason to try another name.
    fn create_new(&self, name: &str) -> io::Result<Self::File>;

    /// Opens an existing file (no create).
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Self::File>;

    /// Unlinks `name`. Durable only after a later [`Dir::sync`].
    fn unlink(&self, name: &str) -> io::Result<()>;

    /// fsyncs the directory, making earlier creates and unlinks durable.
    fn sync(&self) -> io::Result<()>;

    /// Lists the names in the directory (excluding `.` and `..`), in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Bytes still free to unprivileged writers on the directory's file system (`statvfs`
    /// `f_bavail * f_frsize`), or `None` if unlimited.
    fn free_bytes(&self) -> io::Result<Option<u64>>;

    /// Inodes still free to unprivileged creators on the directory's file system (`statvfs`
    /// `f_favail`), or `None` if it has no fixed number (`f_files` 0, as on btrfs).
    fn free_inodes(&self) -> io::Result<Option<u64>>;

    /// Whether the directory itself is gone (removed while open: its link count is 0).
    /// Creates in it fail with `ENOENT` from then on, and what is written there is lost with
    /// the last descriptor, so the syncer stops rather than record into it.
    fn is_removed(&self) -> io::Result<bool>;
}

/// An open file within a [`Dir`].
pub trait DirFile: Send + Sync + 'static {
    /// Writes at the descriptor's own offset, like `write(2)`; may write less than `buf`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// Writes all of `buf` at `offset` without moving the descriptor's offset (`pwrite`).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Reads at `offset` (`pread`); returns 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// `fsync`. On error the data written since the last successful sync must be presumed lost,
    /// even though reads may still return it and a second `sync_all` may succeed.
    fn sync_all(&self) -> io::Result<()>;

    fn stat(&self) -> io::Result<FileStat>;

    /// `ftruncate`. Durable only after a later [`DirFile::sync_all`].
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
}

/// Writes all of `buf` through [`DirFile::write`], looping on short writes.
pub fn write_all<F: DirFile + ?Sized>(f: &mut F, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match f.write(buf)? {
            0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// Reads `[offset, offset + buf.len())` fully, or fails with `UnexpectedEof`.
pub fn read_exact_at<F: DirFile + ?Sized>(
    f: &F,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match f.read_at(buf, offset)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// The production [`Dir`]: operations relative to an `O_DIRECTORY` descriptor, so that a
/// rename of the data dir's parent cannot redirect them.
#[derive(Debug)]
pub struct RealDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The exclusive `flock`, once taken; released when this `RealDir` is dropped.
    lock: Option<nix::fcntl::Flock<OwnedFd>>,
}

impl RealDir {
    /// Opens an existing directory.
    pub fn open_dir(path: &Path) -> io::Result<RealDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(RealDir {
            fd,
            path: path.to_owned(),
            lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes an exclusive, non-blocking `flock` on the directory, held until this `RealDir`
    /// is dropped. Fails with `EWOULDBLOCK` when another process (another syncer, or an `nvr`
    /// command working offline) holds it.
    pub fn lock_exclusive(&mut self) -> io::Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        // The lock belongs to the open file description, which the duplicate shares with
        // `self.fd`; the guard keeps it until drop.
        let fd = self.fd.as_fd().try_clone_to_owned()?;
        match nix::fcntl::Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                self.lock = Some(lock);
                Ok(())
            }
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }

    fn open_at(&self, name: &str, flags: OFlag) -> io::Result<File> {
        check_name(name)?;
        let fd = openat(
            self.fd.as_fd(),
            name,
            flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }
}

/// Rejects anything but a plain file name, so no caller can escape the directory.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

impl Dir for RealDir {
    type File = File;

    fn create_new(&self, name: &str) -> io::Result<File> {
        self.open_at(name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR)
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<File> {
        let flags = match mode {
            OpenMode::ReadOnly => OFlag::O_RDONLY,
            OpenMode::Append => OFlag::O_WRONLY | OFlag::O_APPEND,
            OpenMode::ReadWrite => OFlag::O_RDWR,
        };
        self.open_at(name, flags)
    }

    fn unlink(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::unlinkat(
            self.fd.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(io::Error::from)
    }

    fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(io::Error::from)
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        self.statvfs_free().map(Some)
    }

    fn free_inodes(&self) -> io::Result<Option<u64>> {
        let st = nix::sys::statvfs::fstatvfs(self.fd.as_fd()).map_err(io::Error::from)?;
        Ok((st.files() > 0).then_some(st.files_available() as u64))
    }

    /// A link count of 0, confirmed by the path no longer naming this directory (some
    /// FUSE and network file systems report 0 links for directories).
    fn is_removed(&self) -> io::Result<bool> {
        let st = nix::sys::stat::fstat(self.fd.as_fd()).map_err(io::Error::from)?;
        if st.st_nlink != 0 {
            return Ok(false);
        }
        Ok(match nix::sys::stat::stat(&self.path) {
            Ok(now) => (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino),
            Err(nix::errno::Errno::ENOENT) => true,
            Err(e) => return Err(e.into()),
        })
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(n) => names.push(n.to_string_lossy().into_owned()),
            }
        }
        Ok(names)
    }
}

impl RealDir {
    fn statvfs_free(&self) -> io::Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(self.fd.as_fd()).map_err(io::Error::from)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }
}

impl DirFile for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(self, buf)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn stat(&self) -> io::Result<FileStat> {
        let st = nix::sys::stat::fstat(self.as_fd()).map_err(io::Error::from)?;
        Ok(FileStat {
            size_bytes: st.st_size as u64,
            allocated_bytes: (st.st_blocks as u64).saturating_mul(512),
        })
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        File::set_len(self, len_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_dir_creates_exclusively_and_refuses_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let d = RealDir::open_dir(tmp.path()).unwrap();
        let mut f = d.create_new("a").unwrap();
        write_all(&mut f, b"hello").unwrap();
        assert_eq!(
            d.create_new("a").unwrap_err().raw_os_error(),
            Some(libc_eexist())
        );
        assert_eq!(
            d.create_new("../x").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let st = DirFile::stat(&f).unwrap();
        assert_eq!(st.size_bytes, 5);
        let mut buf = [0u8; 5];
        read_exact_at(&f, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(d.list().unwrap(), vec!["a".to_owned()]);
        d.unlink("a").unwrap();
        d.sync().unwrap();
        assert!(d.list().unwrap().is_empty());
    }

    #[test]
    fn second_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = RealDir::open_dir(tmp.path()).unwrap();
        a.lock_exclusive().unwrap();
        let mut b = RealDir::open_dir(tmp.path()).unwrap();
        assert_eq!(
            b.lock_exclusive().unwrap_err().raw_os_error(),
            Some(nix::errno::Errno::EWOULDBLOCK as i32)
        );
        drop(a);
        b.lock_exclusive().unwrap();
    }

    fn libc_eexist() -> i32 {
        nix::errno::Errno::EEXIST as i32
    }
}
