//! The sample files an ingest process can still write to, and what each may hold.
//!
//! The syncer cannot take back a descriptor it handed out: after a recording is committed,
//! the ingest that wrote it still holds its write-only `O_APPEND` descriptor, and a hostile
//! one could go on writing through it (36 MiB into a committed file once made the free-space
//! guard delete another camera's recordings). So until the ingest *process* is gone (not
//! only its connection: it may close the socket and keep the descriptors), every file it was
//! handed is *exposed*. [`Exposure::enforce`] looks at the files the process holds right now
//! (`/proc/PID/fd`: at most its `RLIMIT_NOFILE`, so the work is bounded whatever the archive)
//! and cuts any that holds more than it may back to that length, fsynced. `O_APPEND` kept the
//! bytes below it as they were, so a committed recording's bytes and hash are intact again.
//!
//! What a file may hold: while growing, what was acknowledged plus the write window; once the
//! syncer is done with it, its committed (or salvaged) length; a discarded file, what it could
//! hold while growing (never more). Only growth is policed: allocation past the end is the
//! close's to release and check (`crate::durability`), since file systems preallocate for
//! growing files on their own. A settled file the process no longer holds is forgotten: it
//! cannot open it again (the sandbox allows it no file-system access, and the file is not its
//! own). The descriptors are listed for every thread of the process (`/proc/PID/task/*/fd`):
//! a process whose main thread has exited lists none under `/proc/PID/fd`.
//!
//! Reading another process's `/proc/PID/fd` needs root (an ingest is not dumpable): without
//! it, nothing is watched and the caller says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use protocol::CompositeId;

/// A file, by device and inode: what `/proc/PID/fd` entries and our own descriptors agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InodeKey {
    dev: u64,
    ino: u64,
}

/// The key of the file open on `fd`.
pub fn inode_key(fd: impl AsFd) -> io::Result<InodeKey> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
    Ok(InodeKey {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

#[derive(Debug)]
struct Exposed {
    id: CompositeId,
    /// What the file may hold.
    allowed_bytes: u64,
    /// The syncer is done with it (committed, salvaged or discarded).
    settled: bool,
}

/// A file found holding more than it may, and what was done about it.
#[derive(Debug)]
pub struct Breach {
    pub id: CompositeId,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub allowed_bytes: u64,
    /// The cut back to `allowed_bytes` and its fsync.
    pub repair: io::Result<()>,
}

/// The files one ingest process was handed; see the module docs.
#[derive(Debug)]
pub struct Exposure {
    pid: i32,
    /// The process's start time (`/proc/PID/stat` field 22), so that a reused pid is never
    /// taken for it.
    start_ticks: u64,
    files: BTreeMap<InodeKey, Exposed>,
    /// Its descriptors cannot be listed (no privilege): nothing is tracked, so that nothing
    /// grows with every recording handed out.
    unwatchable: bool,
}

impl Exposure {
    /// The exposure of process `pid`, or `None` if it is already gone.
    pub fn of_process(pid: i32) -> Option<Exposure> {
        Some(Exposure {
            pid,
            start_ticks: start_ticks(pid)?,
            files: BTreeMap::new(),
            unwatchable: false,
        })
    }

    /// The process has handed `id`'s file (`key`), which may hold `allowed_bytes`.
    pub fn expose(&mut self, key: InodeKey, id: CompositeId, allowed_bytes: u64) {
        if self.unwatchable {
            return;
        }
        let e = Exposed {
            id,
            allowed_bytes,
            settled: false,
        };
        self.files.insert(key, e);
    }

    /// `id`'s file may now hold `allowed_bytes` (a progress report was acknowledged).
    pub fn allow(&mut self, id: CompositeId, allowed_bytes: u64) {
        if let Some(e) = self.files.values_mut().find(|e| e.id == id) {
            e.allowed_bytes = allowed_bytes;
        }
    }

    /// The syncer is done with `id`: its file may hold `final_bytes` (`None`, a discarded
    /// file: no more than it might while growing). Returns whether `id` was exposed here.
    pub fn settle(&mut self, id: CompositeId, final_bytes: Option<u64>) -> bool {
        match self.files.values_mut().find(|e| e.id == id) {
            Some(e) => {
                if let Some(b) = final_bytes {
                    e.allowed_bytes = b;
                }
                e.settled = true;
                true
            }
            None => false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process has exited (its descriptors are closed).
    pub fn is_gone(&self) -> bool {
        start_ticks(self.pid) != Some(self.start_ticks)
    }

    /// Looks at every exposed file the process holds now; cuts back each that holds more
    /// than it may. `Err` when the process's descriptors cannot be listed (no privilege; a
    /// process that is gone lists none).
    pub fn enforce(&mut self) -> io::Result<Vec<Breach>> {
        let mut breaches = Vec::new();
        let mut held = BTreeSet::new();
        let paths = match self.held_descriptors() {
            Ok(p) => p,
            Err(e) => {
                self.unwatchable |= e.kind() == io::ErrorKind::PermissionDenied;
                if self.unwatchable {
                    self.files.clear();
                }
                return Err(e);
            }
        };
        for path in paths {
            // Follows the link to the open file itself, even when it has been unlinked.
            let Ok(st) = nix::sys::stat::stat(&path) else {
                continue;
            };
            let key = InodeKey {
                dev: st.st_dev,
                ino: st.st_ino,
            };
            let Some(e) = self.files.get_mut(&key) else {
                continue;
            };
            held.insert(key);
            let size_bytes = st.st_size as u64;
            if size_bytes > e.allowed_bytes {
                breaches.push(Breach {
                    id: e.id,
                    size_bytes,
                    allocated_bytes: (st.st_blocks as u64).saturating_mul(512),
                    allowed_bytes: e.allowed_bytes,
                    repair: cut_back(&path, key, e.allowed_bytes),
                });
            }
        }
        self.files.retain(|k, e| !e.settled || held.contains(k));
        Ok(breaches)
    }

    /// The `/proc/PID/task/TID/fd/N` links of every thread of the process (they share one
    /// table, but a thread that has exited lists nothing): the first thread that lists any.
    fn held_descriptors(&self) -> io::Result<Vec<std::path::PathBuf>> {
        let tasks = match std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut denied = None;
        for task in tasks.flatten() {
            match std::fs::read_dir(task.path().join("fd")) {
                Ok(fds) => {
                    let paths: Vec<_> = fds.flatten().map(|f| f.path()).collect();
                    if !paths.is_empty() {
                        return Ok(paths);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = Some(e),
                Err(_) => {} // a thread that just exited
            }
        }
        denied.map_or(Ok(Vec::new()), Err)
    }
}

/// Truncates the file open as `path` (a `/proc/.../fd/N` link) to `len_bytes` and fsyncs it,
/// through a descriptor of the syncer's own, after checking that what it opened is still the
/// regular file `key`: the ingest may have put another file at that descriptor number since it
/// was looked at. Opened non-blocking, so that a FIFO put there cannot hang the syncer.
fn cut_back(path: &Path, key: InodeKey, len_bytes: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let st = nix::sys::stat::fstat(&f).map_err(io::Error::from)?;
    let is_file = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
    if !is_file || (st.st_dev, st.st_ino) != (key.dev, key.ino) {
        return Err(io::Error::other(
            "the descriptor now names another file; left alone",
        ));
    }
    if (st.st_size as u64) > len_bytes {
        f.set_len(len_bytes)?;
    }
    f.sync_all()
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks after boot), or `None` if the
/// process does not exist.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn id(r: i32) -> CompositeId {
        CompositeId::new(1, r)
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let mut me = Exposure::of_process(std::process::id() as i32).unwrap();
        assert!(!me.is_gone());
        me.start_ticks += 1;
        assert!(me.is_gone(), "another start time: another process");
        assert!(Exposure::of_process(i32::MAX).is_none());
    }

    /// This process plays the ingest: a file it holds past what it may is cut back to it;
    /// one within is left alone; a settled file it closed is forgotten.
    #[test]
    fn held_files_past_their_allowance_are_cut_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut me = Exposure::of_process(std::process::id() as i32).unwrap();
        let mut over = std::fs::File::create(tmp.path().join("over")).unwrap();
        let mut within = std::fs::File::create(tmp.path().join("within")).unwrap();
        let closed = std::fs::File::create(tmp.path().join("closed")).unwrap();
        over.write_all(&[1; 5000]).unwrap();
        within.write_all(&[2; 100]).unwrap();
        me.expose(inode_key(&over).unwrap(), id(1), 1000);
        me.expose(inode_key(&within).unwrap(), id(2), 1000);
        me.expose(inode_key(&closed).unwrap(), id(3), 0);
        me.settle(id(1), Some(1000));
        me.settle(id(3), Some(0));
        drop(closed);
        let breaches = match me.enforce() {
            Ok(b) => b,
            Err(e) => panic!("listing our own descriptors: {e}"),
        };
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        let b = &breaches[0];
        assert_eq!((b.id, b.size_bytes, b.allowed_bytes), (id(1), 5000, 1000));
        assert!(b.repair.is_ok());
        assert_eq!(over.metadata().unwrap().len(), 1000);
        assert_eq!(within.metadata().unwrap().len(), 100);
        assert_eq!(me.files.len(), 2, "the closed, settled file is forgotten");
        // A discarded file may hold no more than it could while growing.
        me.settle(id(2), None);
        within.write_all(&[2; 900]).unwrap();
        assert!(me.enforce().unwrap().is_empty(), "1000 bytes, within");
        within.write_all(&[2; 10]).unwrap();
        let b = me.enforce().unwrap();
        assert_eq!((b[0].id, b[0].allowed_bytes), (id(2), 1000));
        assert_eq!(within.metadata().unwrap().len(), 1000);
    }
}
