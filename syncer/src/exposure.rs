//! The sample files an ingest process can still write to, and what each may hold.
//!
//! The syncer cannot take back a descriptor it handed out: after a recording is committed,
//! the ingest that wrote it still holds its write-only `O_APPEND` descriptor, and a hostile
//! one could go on writing through it (36 MiB into a committed file once made the free-space
//! guard delete another camera's recordings). So until the ingest *process* is gone (not
//! only its connection: it may close the socket and keep the descriptors), every file it was
//! handed is *exposed*, and the syncer keeps a descriptor of its own to each (a duplicate of
//! the one it handed). [`Exposure::enforce`] looks at every exposed file through that
//! descriptor and cuts any that holds more than it may back to that length, fsynced.
//! `O_APPEND` kept the bytes below it as they were, so a committed recording's bytes and hash
//! are intact again. Files stay exposed while the process holds them (`/proc/PID/fd`, listed
//! *before* the files are looked at, so that a write followed by a close is still seen);
//! the process holds at most its `RLIMIT_NOFILE`, so the work is bounded whatever the archive.
//! Once the process is gone, [`Exposure::last_look`] looks at each file one final time.
//!
//! What a file may hold: while growing, what was acknowledged plus the write window; once the
//! syncer is done with it, its committed (or salvaged) length; a discarded file, what it could
//! hold while growing (never more). What it may occupy on disk, once settled: that length as
//! the close allows it (`durability::allocation_allowed`: the close released any
//! preallocation). A growing file's blocks are not policed: file systems preallocate for
//! growing files on their own (XFS's speculative preallocation can reach twice the file's
//! size), and the close releases and checks them. A settled file the process no longer holds is forgotten: it
//! cannot open it again (the sandbox allows it no file-system access, and the file is not its
//! own). The descriptors are listed for every thread of the process (`/proc/PID/task/*/fd`):
//! a process whose main thread has exited lists none under `/proc/PID/fd`.
//!
//! Reading another process's `/proc/PID/fd` needs root (an ingest is not dumpable): without
//! it, nothing is watched and the caller says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use protocol::CompositeId;

/// Most files one process may hold exposed: twice the descriptors a sandboxed ingest may have
/// open (`ingest::sandbox::MAX_OPEN_FILES`, 32; an honest one holds two or three). Past it (an
/// ingest outside its sandbox) the connection is dropped, which bounds the descriptors the
/// syncer keeps for it.
pub const MAX_EXPOSED_FILES: usize = 64;

/// How old a listing of a process's files may be and still count
/// ([`Exposure::listing_is_fresh`]).
pub const LISTING_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A file, by device and inode: what `/proc/PID/fd` entries and our own descriptors agree on.
pub use protocol::messages::FileKey as InodeKey;

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
    /// The syncer's own descriptor to the file (a duplicate of the handed one: writable, so
    /// that it can cut the file back).
    fd: OwnedFd,
    /// What the file may hold.
    allowed_bytes: u64,
    /// The syncer is done with it (committed, salvaged or discarded).
    settled: bool,
    /// [`Exposure::relays`] when it was handed out.
    exposed_at_relay: u64,
    /// Its `Opened` frame's number on the connection (from 1), for [`Delivery`].
    opened_seq: u64,
}

impl Exposed {
    /// Whether the file holds or occupies more than it may: see the module docs.
    fn breached(&self, size_bytes: u64, allocated_bytes: u64) -> bool {
        let allocation_allowed = crate::durability::allocation_allowed(self.allowed_bytes);
        size_bytes > self.allowed_bytes || (self.settled && allocated_bytes > allocation_allowed)
    }
}

/// A file found holding or occupying more than it may, and what was done about it.
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
    /// Listings of its files relayed by the supervisor processed so far
    /// ([`Exposure::enforce_listed`]).
    relays: u64,
    /// When its files were last listed, by the syncer or the supervisor.
    listed_at: Option<std::time::Instant>,
    /// How far the process has read its connection; `None`: as far as was sent.
    delivery: Option<Delivery>,
    /// Every `Opened` frame up to this number has been read by the process.
    delivered: u64,
}

/// What an ingest has read of its connection: a descriptor sent in an `Opened` frame it has
/// not read yet is in no descriptor table, so its absence from a listing does not mean it was
/// closed. The connection's writer thread counts the `Opened` frames it has sent; when the
/// socket's send queue is empty (`SIOCOUTQ`), the process has read every one of them.
#[derive(Debug)]
pub struct Delivery {
    /// The syncer's end of the connection.
    pub socket: OwnedFd,
    /// `Opened` frames the writer thread has sent (incremented after each `sendmsg`).
    pub opened_sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Delivery {
    /// The number of `Opened` frames the process has surely read, if the queue is empty now.
    fn read_upto(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        // Loaded before the queue is looked at: each frame counted was in the queue (or read)
        // by then.
        let sent = self.opened_sent.load(std::sync::atomic::Ordering::Acquire);
        let mut unread: nix::libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer given.
        let r =
            unsafe { nix::libc::ioctl(self.socket.as_raw_fd(), nix::libc::TIOCOUTQ, &mut unread) };
        (r == 0 && unread == 0).then_some(sent)
    }
}

impl Exposure {
    /// The exposure of process `pid`, or `None` if it is already gone.
    pub fn of_process(pid: i32) -> Option<Exposure> {
        Some(Exposure {
            pid,
            start_ticks: start_ticks(pid).ok()??,
            files: BTreeMap::new(),
            unwatchable: false,
            relays: 0,
            listed_at: None,
            delivery: None,
            delivered: u64::MAX,
        })
    }

    /// Watches what the process has read of its connection (see [`Delivery`]).
    pub fn with_delivery(mut self, delivery: Delivery) -> Exposure {
        self.delivery = Some(delivery);
        self.delivered = 0;
        self
    }

    /// Brings [`Exposure::delivered`] up to date; call it before listing the descriptors.
    fn note_delivery(&mut self) {
        if let Some(upto) = self.delivery.as_ref().and_then(Delivery::read_upto) {
            self.delivered = self.delivered.max(upto);
        }
    }

    /// The process is handed `id`'s file on `handed`, which may hold `allowed_bytes`, in the
    /// connection's `opened_seq`th `Opened` frame.
    pub fn expose(
        &mut self,
        handed: impl AsFd,
        id: CompositeId,
        allowed_bytes: u64,
        opened_seq: u64,
    ) -> io::Result<()> {
        if self.unwatchable {
            return Ok(());
        }
        let key = inode_key(&handed)?;
        let e = Exposed {
            id,
            fd: handed.as_fd().try_clone_to_owned()?,
            allowed_bytes,
            settled: false,
            exposed_at_relay: self.relays,
            opened_seq,
        };
        self.files.insert(key, e);
        Ok(())
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

    /// Whether the process has exited (its descriptors are closed): only when its `/proc`
    /// entry is missing or belongs to another process; a failed read (no descriptor, no
    /// memory) proves nothing.
    pub fn is_gone(&self) -> bool {
        matches!(start_ticks(self.pid), Ok(t) if t != Some(self.start_ticks))
    }

    /// Looks at every exposed file; cuts back each that holds more than it may (the
    /// breaches), and forgets the settled ones the process no longer holds. The error
    /// says the process's descriptors could not be listed (no privilege; a process that is
    /// gone lists none): the files were looked at all the same, and none forgotten.
    pub fn enforce(&mut self) -> (Vec<Breach>, io::Result<()>) {
        // Listed before the look, so that a write followed by a close is still seen; what was
        // read of the connection before the listing.
        self.note_delivery();
        let held = held_files(self.pid);
        let breaches = self.look();
        let held = match held {
            Ok(h) => h,
            Err(e) => {
                self.unwatchable |= e.kind() == io::ErrorKind::PermissionDenied;
                if self.unwatchable {
                    self.files.clear();
                }
                return (breaches, Err(e));
            }
        };
        // A listing that could not follow every link proves nothing about the ones missed.
        if let Some(held) = held {
            self.listed_at = Some(std::time::Instant::now());
            self.forget_closed(&held, u64::MAX, self.delivered);
        }
        (breaches, Ok(()))
    }

    /// [`Exposure::enforce`] with the process's files listed by the supervisor (`held`;
    /// `None`: not known now, so nothing is forgotten).
    ///
    /// The listing was taken some time before this call, so a file handed out after it is
    /// missing from it while held. The supervisor sends one listing at a time and waits for
    /// its answer, so a listing was taken after the previous one was processed: a file is
    /// forgotten only if it was handed out before that.
    pub fn enforce_listed(&mut self, held: Option<&BTreeSet<InodeKey>>) -> Vec<Breach> {
        let breaches = self.look();
        if let Some(held) = held {
            // What was read by the previous listing's processing, which came before this
            // listing was taken; what is read now counts for the next one.
            let delivered = self.delivered;
            self.note_delivery();
            self.listed_at = Some(std::time::Instant::now());
            self.forget_closed(held, self.relays, delivered);
            self.relays += 1;
        }
        breaches
    }

    /// Forgets the settled files not in `held`, handed out before relay `before` in a frame
    /// the process had read (up to `delivered`) when `held` was listed (the syncer's duplicate
    /// would otherwise keep a deleted recording's inode).
    fn forget_closed(&mut self, held: &BTreeSet<InodeKey>, before: u64, delivered: u64) {
        self.files.retain(|k, e| {
            !e.settled
                || held.contains(k)
                || e.exposed_at_relay >= before
                || e.opened_seq > delivered
        });
    }

    /// Whether its files were listed in the last [`LISTING_STALE_AFTER`]: only then can its
    /// count of exposed files be held against it (an unlisted one forgets nothing).
    pub fn listing_is_fresh(&self) -> bool {
        self.listed_at
            .is_some_and(|t| t.elapsed() < LISTING_STALE_AFTER)
    }

    /// How many files are exposed: the settled ones stay while the process holds them. The syncer holds a descriptor for each, so it drops a connection whose
    /// process has more than [`MAX_EXPOSED_FILES`].
    pub fn exposed_files(&self) -> usize {
        self.files.len()
    }

    /// The newest recording exposed here.
    pub fn newest_id(&self) -> Option<CompositeId> {
        self.files.values().map(|e| e.id).max()
    }

    /// The final look, once the process is gone: what it wrote before it went is cut back.
    pub fn last_look(mut self) -> Vec<Breach> {
        self.look()
    }

    /// Every exposed file past its allowance, cut back.
    fn look(&mut self) -> Vec<Breach> {
        let mut breaches = Vec::new();
        for e in self.files.values() {
            let Ok(st) = nix::sys::stat::fstat(&e.fd) else {
                continue;
            };
            let size_bytes = st.st_size as u64;
            let allocated_bytes = (st.st_blocks as u64).saturating_mul(512);
            if e.breached(size_bytes, allocated_bytes) {
                breaches.push(Breach {
                    id: e.id,
                    size_bytes,
                    allocated_bytes,
                    allowed_bytes: e.allowed_bytes,
                    repair: cut_back(&e.fd, size_bytes.min(e.allowed_bytes)),
                });
            }
        }
        breaches
    }
}

/// The files process `pid` holds open now; `None` if a descriptor listed could not be
/// followed (closed meanwhile, or moved: the table changed while it was read). Needs the
/// right to read its `/proc/PID/fd` (root for an ingest, which is not dumpable): `nvr run`'s
/// supervisor lists them for an unprivileged syncer (`AdminRequest::IngestHolds`).
pub fn held_files(pid: i32) -> io::Result<Option<BTreeSet<InodeKey>>> {
    let mut held = BTreeSet::new();
    for path in held_descriptors(pid)? {
        // Follows the link to the open file itself, even when it has been unlinked.
        match nix::sys::stat::stat(&path) {
            Ok(st) => held.insert(InodeKey {
                dev: st.st_dev,
                ino: st.st_ino,
            }),
            Err(_) => return Ok(None),
        };
    }
    Ok(Some(held))
}

/// The `/proc/PID/task/TID/fd/N` links of every thread of the process (they share one table,
/// but a thread that has exited lists nothing): the first thread that lists any.
fn held_descriptors(pid: i32) -> io::Result<Vec<std::path::PathBuf>> {
    let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
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

/// Truncates the file to `len_bytes` through the syncer's own descriptor `fd`, which also
/// releases blocks allocated past it, and fsyncs it.
fn cut_back(fd: &OwnedFd, len_bytes: u64) -> io::Result<()> {
    let len = i64::try_from(len_bytes).map_err(io::Error::other)?;
    nix::unistd::ftruncate(fd, len).map_err(io::Error::from)?;
    nix::unistd::fsync(fd).map_err(io::Error::from)
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks after boot), or `None` if the
/// process does not exist.
fn start_ticks(pid: i32) -> io::Result<Option<u64>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(nix::libc::ESRCH) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let field = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(19))
        .and_then(|t| t.parse().ok());
    field
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat has no start time")))
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

    /// A child plays the ingest, holding `over`, `within` and `closed` (as its stdin, stdout
    /// and stderr) and closing `closed` after 2 s; this process writes as it could through
    /// them. A file past what it may hold is cut back to it, one within is left alone, and a
    /// settled file written and then closed is cut back before it is forgotten.
    #[test]
    fn held_files_past_their_allowance_are_cut_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut over = std::fs::File::create(tmp.path().join("over")).unwrap();
        let mut within = std::fs::File::create(tmp.path().join("within")).unwrap();
        let mut closed = std::fs::File::create(tmp.path().join("closed")).unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 2; exec sleep 60 2>&-"])
            .stdin(over.try_clone().unwrap())
            .stdout(within.try_clone().unwrap())
            .stderr(closed.try_clone().unwrap())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut me = Exposure::of_process(child.0.id() as i32).unwrap();
        over.write_all(&[1; 5000]).unwrap();
        within.write_all(&[2; 100]).unwrap();
        me.expose(&over, id(1), 1000, 1).unwrap();
        me.expose(&within, id(2), 1000, 2).unwrap();
        me.expose(&closed, id(3), 0, 3).unwrap();
        me.settle(id(1), Some(1000));
        me.settle(id(3), Some(0));
        let (breaches, listed) = me.enforce();
        listed.expect("listing a child's descriptors");
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        let b = &breaches[0];
        assert_eq!((b.id, b.size_bytes, b.allowed_bytes), (id(1), 5000, 1000));
        assert!(b.repair.is_ok());
        assert_eq!(over.metadata().unwrap().len(), 1000);
        assert_eq!(within.metadata().unwrap().len(), 100);
        closed.write_all(&[3; 10]).unwrap();
        drop(closed);
        let mut late = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while me.exposed_files() == 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "closed never forgotten"
            );
            late.extend(enforced(&mut me));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!((late[0].id, late[0].size_bytes), (id(3), 10));
        assert_eq!(
            std::fs::metadata(tmp.path().join("closed")).unwrap().len(),
            0
        );
        // A discarded file may hold no more than it could while growing.
        me.settle(id(2), None);
        within.write_all(&[2; 900]).unwrap();
        assert!(enforced(&mut me).is_empty(), "1000 bytes, within");
        within.write_all(&[2; 10]).unwrap();
        let b = enforced(&mut me);
        assert_eq!((b[0].id, b[0].allowed_bytes), (id(2), 1000));
        assert_eq!(within.metadata().unwrap().len(), 1000);
        // Once the child is gone, a last look cuts back what was written before it went.
        over.write_all(&[1; 10]).unwrap();
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        assert!(me.is_gone());
        let b = me.last_look();
        assert_eq!((b.len(), b[0].id), (1, id(1)));
        assert_eq!(over.metadata().unwrap().len(), 1000);
    }

    /// Blocks preallocated past the end (`FALLOC_FL_KEEP_SIZE`) count for a settled file: it
    /// may occupy what its close allows; past it, the blocks are released and the size left as
    /// it was. A growing file's blocks are the close's to check.
    #[test]
    fn preallocation_past_the_allowance_is_released() {
        use nix::fcntl::{FallocateFlags, fallocate};
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let mut settled = std::fs::File::create(tmp.path().join("settled")).unwrap();
        let growing = std::fs::File::create(tmp.path().join("growing")).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(settled.try_clone().unwrap())
            .stdout(growing.try_clone().unwrap())
            .spawn()
            .unwrap();
        let child = KillOnDrop(child);
        let mut me = Exposure::of_process(child.0.id() as i32).unwrap();
        settled.write_all(&[1; 1000]).unwrap();
        me.expose(&settled, id(1), 1000, 1).unwrap();
        me.expose(&growing, id(2), 1 << 20, 2).unwrap();
        me.settle(id(1), Some(1000));
        if let Err(e) = fallocate(&settled, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) {
            eprintln!("SKIPPED: fallocate on this file system: {e}");
            return;
        }
        fallocate(&growing, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 4 << 20).unwrap();
        let b = enforced(&mut me);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!((b[0].id, b[0].size_bytes), (id(1), 1000));
        assert!(b[0].allocated_bytes >= 1 << 20, "{b:?}");
        let meta = settled.metadata().unwrap();
        assert_eq!(meta.len(), 1000);
        assert!(meta.blocks() * 512 <= crate::durability::allocation_allowed(1000));
    }

    /// A relayed listing may predate a file handed out just before it is processed: such a
    /// file is missing from it and must not be forgotten; the next listing, taken after this
    /// one was processed, decides. A stale listing lets the count of files go unchecked.
    #[test]
    fn a_relayed_listing_forgets_only_files_handed_out_before_the_previous_one() {
        let tmp = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(tmp.path().join("f")).unwrap();
        let mut me = Exposure::of_process(std::process::id() as i32).unwrap();
        assert!(!me.listing_is_fresh());
        me.expose(&file, id(1), 0, 1).unwrap();
        me.settle(id(1), Some(0));
        let nothing_held = BTreeSet::new();
        assert!(me.enforce_listed(Some(&nothing_held)).is_empty());
        assert_eq!(
            me.exposed_files(),
            1,
            "handed out after the listing may have been taken"
        );
        assert!(me.listing_is_fresh());
        me.enforce_listed(None);
        assert_eq!(me.exposed_files(), 1, "no listing, nothing forgotten");
        me.enforce_listed(Some(&nothing_held));
        assert_eq!(me.exposed_files(), 0, "not held in a listing taken after");
    }

    /// `me.enforce()`'s breaches, the listing having worked.
    fn enforced(me: &mut Exposure) -> Vec<Breach> {
        let (breaches, listed) = me.enforce();
        listed.expect("listing a child's descriptors");
        breaches
    }

    /// Kills the child when dropped (a failed assertion included).
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
