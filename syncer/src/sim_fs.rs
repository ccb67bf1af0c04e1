//! A deterministic, fault-injecting, in-memory sample directory that models power loss.
//!
//! [`SimFs`] implements [`Dir`] and [`SimFile`] implements [`DirFile`], so everything the
//! syncer does to the sample directory can run against it. Tests use it to fail any chosen
//! operation, to stop the "machine" at any crash point, and to reboot the disk with only what
//! was made durable. It is public (not `cfg(test)`) because the crash-recovery suites of other
//! crates drive it too.
//!
//! # Fault model
//!
//! - **One directory, inodes forever.** Files are inodes kept in a map for the life of a
//!   `SimFs`: an unlinked inode may still be open, and a power loss may bring its name back.
//! - **Two copies of every file.** `current` is what reads see (the page cache); `durable` is
//!   what survives power loss. Each data operation (`write`, `write_all_at`, `set_len`) changes
//!   `current` at once and is appended to the inode's pending log. A successful `sync_all`
//!   applies the pending log to `durable` (holes are zero-filled) and clears it. A *failed*
//!   `sync_all` clears the pending log **without** applying it, which is exactly what Linux
//!   does: the error is reported once, the dirty pages are dropped, reads keep returning the
//!   new data until power loss, and a second `fsync` succeeds without making it durable. Any
//!   injected error on a sync counts as such a failure. A truncate is a data operation: it is
//!   durable only after the file's `sync_all`.
//! - **Directory entries likewise.** The directory has current entries (name to inode),
//!   durable entries, and a pending log of creates and unlinks. A successful [`Dir::sync`]
//!   applies the log to the durable entries; a failed one clears it without applying. So a
//!   create or an unlink is lost on power loss unless the directory was synced after it (and
//!   a create lost to a failed directory sync stays lost: the model is the pessimistic one).
//! - **Power loss** ([`SimFs::power_loss`]) returns a new, independent `SimFs`: the rebooted
//!   disk. [`PowerLossMode::DropUnsynced`] keeps only durable entries and durable contents;
//!   [`PowerLossMode::KeepAll`] keeps everything current (the other legal outcome). The new
//!   disk has no pending logs, no fault rules, no armed crash and fresh counters; it keeps the
//!   capacity limit and extra allocations. Handles of the old `SimFs` keep referring to the
//!   old state only.
//! - **Operations and crash points.** Every operation ([`OpKind`]) takes a sequence number
//!   from one counter. The operations that change durable-relevant state or its ordering are
//!   also *crash points*, numbered from 0 by a second counter: `CreateNew`, `Unlink`,
//!   `DirSync`, `Write`, `WriteAt`, `FileSync`, `SetLen` and `Commit` (the external crash
//!   point [`SimFs::commit_point`], called right before each SQLite `COMMIT`). Closing a file
//!   is not an operation.
//! - **Crashes.** [`SimFs::arm_crash`]`(k)` makes crash point `k` panic with [`SimCrash`]
//!   *before* taking effect; from then on every operation of any kind on that `SimFs` or its
//!   files panics with `SimCrash` too (the machine is dead). Inspection helpers and
//!   `power_loss` keep working, so a test can catch the crash ([`catch_crash`]) and reboot.
//! - **Faults.** Fault rules ([`SimFs::set_fault_hook`], [`SimFs::fail_nth`],
//!   [`SimFs::fail_all`]) see every operation that gets past the crash check; the first rule
//!   returning an errno fails the operation, which then has no effect at all (except the
//!   dropped pending log of a failed sync, above). Faults are checked before the arguments,
//!   so an injected error wins over `EEXIST`, `ENOENT`, `EBADF` and `EINVAL`.
//! - **Capacity.** With [`SimFs::set_capacity_bytes`], a write or `set_len` that would make the
//!   sum of the current lengths of all live inodes (named or still open) exceed the limit fails
//!   with `ENOSPC` and has no effect (all or nothing; no short writes).
//! - **Inodes.** With [`SimFs::set_capacity_inodes`], a create that would make more live
//!   inodes (named or still open) than the limit fails with `ENOSPC`.
//! - **Allocation.** `stat` reports `allocated_bytes` as the length rounded up to 4 KiB plus
//!   what [`SimFs::set_extra_allocated`] added, to simulate a hostile `fallocate` with
//!   `FALLOC_FL_KEEP_SIZE`; a `set_len` releases it, as ext4 and tmpfs free blocks past the new
//!   end (measured: a 4 MiB preallocation of a 5000-byte file, truncated to 5000 bytes, leaves
//!   8 KiB).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use nix::errno::Errno;

use crate::fs::{Dir, DirFile, FileStat, OpenMode};

/// How many recent operations [`SimFs::trace`] keeps.
const TRACE_OPS: usize = 4096;

/// The largest file the simulation holds in memory; writes or truncates beyond fail with
/// `EFBIG` rather than exhausting the test's memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The allocation unit that `stat` rounds lengths up to.
const BLOCK_BYTES: u64 = 4096;

/// The kind of an operation on a [`SimFs`] or one of its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    CreateNew,
    Open,
    Unlink,
    DirSync,
    List,
    Write,
    WriteAt,
    ReadAt,
    FileSync,
    Stat,
    SetLen,
    /// [`SimFs::commit_point`]: the database layer's `COMMIT`.
    Commit,
}

impl OpKind {
    /// Whether operations of this kind are crash points (see the module's fault model).
    pub fn is_crash_point(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            CreateNew | Unlink | DirSync | Write | WriteAt | FileSync | SetLen | Commit
        )
    }
}

/// One operation, as fault rules and [`SimFs::trace`] see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// Position among all operations on this `SimFs`, from 0.
    pub seq: u64,
    /// Position among crash-point operations, from 0; `None` if this is not a crash point.
    pub crash_point: Option<u64>,
    pub kind: OpKind,
    /// The file's name: the argument of directory operations, or the name a file was opened
    /// under for file operations. `None` for `DirSync`, `List` and `Commit`.
    pub name: Option<String>,
}

/// What a power loss keeps; see [`SimFs::power_loss`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerLossMode {
    /// Only durable directory entries and durable contents survive.
    DropUnsynced,
    /// Everything current survives, as if all pending writeback completed just in time.
    KeepAll,
}

/// The panic payload of a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimCrash;

/// Whether a panic payload (from `catch_unwind` or `JoinHandle::join`) is a [`SimCrash`].
pub fn is_sim_crash(payload: &(dyn Any + Send)) -> bool {
    payload.is::<SimCrash>()
}

/// Runs `f`, turning a [`SimCrash`] panic into `Err(SimCrash)`. Any other panic continues.
pub fn catch_crash<T>(f: impl FnOnce() -> T) -> Result<T, SimCrash> {
    install_quiet_panic_hook();
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) if is_sim_crash(&*payload) => Err(SimCrash),
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Installs, once per process, a panic hook that says nothing about [`SimCrash`] panics (they
/// are expected by design) and hands every other panic to the hook that was there before.
fn install_quiet_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !is_sim_crash(info.payload()) {
                previous(info);
            }
        }));
    });
}

fn crash() -> ! {
    install_quiet_panic_hook();
    panic::panic_any(SimCrash)
}

type FaultRule = Box<dyn FnMut(&OpInfo) -> Option<Errno> + Send>;

/// A data operation not yet made durable by `sync_all`.
#[derive(Debug)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// A directory operation not yet made durable by `Dir::sync`.
#[derive(Debug)]
enum DirOp {
    Create(String, u64),
    Unlink(String),
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    current: Vec<u8>,
    /// What survives power loss.
    durable: Vec<u8>,
    /// Data operations since the last sync, in order; replaying them onto `durable` yields
    /// `current` unless a failed sync dropped some (`lost_ops`).
    pending: Vec<DataOp>,
    /// Whether a failed sync ever dropped pending operations.
    lost_ops: bool,
    open_handles: usize,
    extra_allocated_bytes: u64,
}

#[derive(Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    entries: BTreeMap<String, u64>,
    durable_entries: BTreeMap<String, u64>,
    /// Creates and unlinks since the last directory sync; replaying them onto
    /// `durable_entries` yields `entries` unless a failed sync dropped some.
    dir_pending: Vec<DirOp>,
    next_seq: u64,
    crash_points_seen: u64,
    crash_at: Option<u64>,
    crashed: bool,
    faults: Vec<FaultRule>,
    capacity_bytes: Option<u64>,
    capacity_inodes: Option<u64>,
    trace: VecDeque<OpInfo>,
}

impl State {
    fn inode(&self, ino: u64) -> &Inode {
        self.inodes.get(&ino).expect("inodes are never removed")
    }

    fn inode_mut(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("inodes are never removed")
    }

    /// The inodes that still occupy space: named or open.
    fn live_inodes(&self) -> impl Iterator<Item = &Inode> {
        let named: BTreeSet<u64> = self.entries.values().copied().collect();
        self.inodes
            .iter()
            .filter(move |(ino, inode)| inode.open_handles > 0 || named.contains(ino))
            .map(|(_, inode)| inode)
    }

    /// The sum of the current lengths of the live inodes.
    fn live_bytes(&self) -> u64 {
        self.live_inodes().map(|i| i.current.len() as u64).sum()
    }

    /// Changes `ino`'s current contents by `op` and logs it, if the size limits allow.
    fn apply_data_op(&mut self, ino: u64, op: DataOp) -> io::Result<()> {
        let old_len = self.inode(ino).current.len() as u64;
        let new_len = match &op {
            DataOp::Write { offset, bytes } => offset
                .checked_add(bytes.len() as u64)
                .ok_or(Errno::EFBIG)?
                .max(old_len),
            DataOp::SetLen(len) => *len,
        };
        if new_len > MAX_FILE_BYTES {
            return Err(Errno::EFBIG.into());
        }
        if let Some(capacity) = self.capacity_bytes
            && new_len > old_len
            && self.live_bytes() - old_len + new_len > capacity
        {
            return Err(Errno::ENOSPC.into());
        }
        let inode = self.inode_mut(ino);
        apply(&mut inode.current, &op);
        inode.pending.push(op);
        Ok(())
    }
}

/// Applies one data operation to a file's contents, zero-filling any hole.
fn apply(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => {
            let start = usize::try_from(*offset).expect("offset checked against MAX_FILE_BYTES");
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        DataOp::SetLen(len) => data.resize(
            usize::try_from(*len).expect("checked against MAX_FILE_BYTES"),
            0,
        ),
    }
}

/// Locks the state, ignoring poison: a panicking fault hook must not turn every later call
/// (including `Drop` of files during unwinding) into a second panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts an operation: crashes if the machine is dead or this is the armed crash point,
/// numbers it, records it in the trace and asks the fault rules. Returns the locked state and
/// the injected error, if any.
fn begin<'a>(
    state: &'a Mutex<State>,
    kind: OpKind,
    name: Option<&str>,
) -> (MutexGuard<'a, State>, Option<Errno>) {
    let mut st = lock(state);
    if st.crashed {
        drop(st);
        crash();
    }
    let seq = st.next_seq;
    st.next_seq += 1;
    let crash_point = if kind.is_crash_point() {
        let index = st.crash_points_seen;
        if st.crash_at == Some(index) {
            st.crashed = true;
            drop(st); // never panic holding the lock
            crash();
        }
        st.crash_points_seen += 1;
        Some(index)
    } else {
        None
    };
    let info = OpInfo {
        seq,
        crash_point,
        kind,
        name: name.map(str::to_owned),
    };
    let mut fault = None;
    for rule in st.faults.iter_mut() {
        // Every rule sees every operation, so counting rules stay exact.
        let verdict = rule(&info);
        fault = fault.or(verdict);
    }
    if st.trace.len() == TRACE_OPS {
        st.trace.pop_front();
    }
    st.trace.push_back(info);
    (st, fault)
}

fn injected(fault: Option<Errno>) -> io::Result<()> {
    match fault {
        Some(errno) => Err(errno.into()),
        None => Ok(()),
    }
}

/// Rejects anything but a plain file name, as the real directory does.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Errno::EINVAL.into());
    }
    Ok(())
}

/// The simulated directory. Clones share one disk; see the module's fault model.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl SimFs {
    /// An empty disk with no faults and no capacity limit.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// The external crash point before a database `COMMIT`: it panics when armed, like any
    /// crash point, and returns an injected error so that commit failures can be tested.
    pub fn commit_point(&self) -> io::Result<()> {
        let (_st, fault) = begin(&self.state, OpKind::Commit, None);
        injected(fault)
    }

    /// Arms a crash at crash point `at` (0-based, counted from the creation of this disk):
    /// that operation panics with [`SimCrash`] before taking effect, and so does every later
    /// operation. Arming a point already passed has no effect.
    pub fn arm_crash(&self, at: u64) {
        install_quiet_panic_hook();
        lock(&self.state).crash_at = Some(at);
    }

    /// How many crash points have been passed without crashing. After a crash at `k`, this
    /// is `k`; after an unarmed run it is the number of crash points to enumerate.
    pub fn crash_points_seen(&self) -> u64 {
        lock(&self.state).crash_points_seen
    }

    /// Whether an armed crash has happened.
    pub fn crashed(&self) -> bool {
        lock(&self.state).crashed
    }

    /// Adds a fault rule. Rules are consulted in the order added, every rule sees every
    /// operation, and the first `Some(errno)` fails it. The hook runs with the disk locked, so
    /// it must not call back into this `SimFs`.
    pub fn set_fault_hook(&self, hook: impl FnMut(&OpInfo) -> Option<Errno> + Send + 'static) {
        lock(&self.state).faults.push(Box::new(hook));
    }

    /// Fails the `n`th operation of `kind` from now (0-based) with `errno`, once.
    pub fn fail_nth(&self, kind: OpKind, n: u64, errno: Errno) {
        let mut seen = 0;
        self.set_fault_hook(move |op| {
            if op.kind != kind {
                return None;
            }
            seen += 1;
            (seen - 1 == n).then_some(errno)
        });
    }

    /// Fails every operation of `kind` with `errno` until [`SimFs::clear_faults`].
    pub fn fail_all(&self, kind: OpKind, errno: Errno) {
        self.set_fault_hook(move |op| (op.kind == kind).then_some(errno));
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Limits the current bytes of all live files; `None` removes the limit. Existing data
    /// over a new limit stays; only growth fails.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        lock(&self.state).capacity_bytes = capacity_bytes;
    }

    /// Limits the live inodes (see the module docs); `None` is unlimited.
    pub fn set_capacity_inodes(&self, capacity_inodes: Option<u64>) {
        lock(&self.state).capacity_inodes = capacity_inodes;
    }

    /// Adds `extra_bytes` to what `stat` reports as allocated for `name`, beyond its length
    /// rounded up to 4 KiB, as a hostile `fallocate` past the end would (until a `set_len`).
    /// Panics if `name` does not exist.
    pub fn set_extra_allocated(&self, name: &str, extra_bytes: u64) {
        let mut st = lock(&self.state);
        let ino = *st
            .entries
            .get(name)
            .unwrap_or_else(|| panic!("set_extra_allocated: no file named {name:?}"));
        st.inode_mut(ino).extra_allocated_bytes = extra_bytes;
    }

    /// The rebooted disk after a power loss now; see [`PowerLossMode`]. `self` is unchanged
    /// and independent of the result. Works on a crashed disk.
    pub fn power_loss(&self, mode: PowerLossMode) -> SimFs {
        let st = lock(&self.state);
        let entries = match mode {
            PowerLossMode::DropUnsynced => st.durable_entries.clone(),
            PowerLossMode::KeepAll => st.entries.clone(),
        };
        let inodes = entries
            .values()
            .map(|&ino| {
                let old = st.inode(ino);
                let contents = match mode {
                    PowerLossMode::DropUnsynced => old.durable.clone(),
                    PowerLossMode::KeepAll => old.current.clone(),
                };
                let inode = Inode {
                    current: contents.clone(),
                    durable: contents,
                    extra_allocated_bytes: old.extra_allocated_bytes,
                    ..Inode::default()
                };
                (ino, inode)
            })
            .collect();
        let rebooted = State {
            inodes,
            next_ino: st.next_ino,
            durable_entries: entries.clone(),
            entries,
            capacity_bytes: st.capacity_bytes,
            capacity_inodes: st.capacity_inodes,
            ..State::default()
        };
        SimFs {
            state: Arc::new(Mutex::new(rebooted)),
        }
    }

    /// The current names, sorted. Not an operation: never fails, crashes or counts.
    pub fn names(&self) -> Vec<String> {
        lock(&self.state).entries.keys().cloned().collect()
    }

    /// What a read of `name` would return now, or `None` if there is no such name.
    pub fn read_current(&self, name: &str) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.entries
            .get(name)
            .map(|&ino| st.inode(ino).current.clone())
    }

    /// What `name` would hold after a [`PowerLossMode::DropUnsynced`] power loss now, or
    /// `None` if the name would not exist.
    pub fn read_durable(&self, name: &str) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.durable_entries
            .get(name)
            .map(|&ino| st.inode(ino).durable.clone())
    }

    /// The most recent operations (up to 4096), oldest first. A crashing operation is not
    /// included.
    pub fn trace(&self) -> Vec<OpInfo> {
        lock(&self.state).trace.iter().cloned().collect()
    }

    fn file(&self, st: &mut State, ino: u64, name: &str, mode: OpenMode) -> SimFile {
        st.inode_mut(ino).open_handles += 1;
        SimFile {
            state: Arc::clone(&self.state),
            ino,
            name: name.to_owned(),
            mode,
            offset: 0,
        }
    }
}

impl Dir for SimFs {
    type File = SimFile;

    fn create_new(&self, name: &str) -> io::Result<SimFile> {
        let (mut st, fault) = begin(&self.state, OpKind::CreateNew, Some(name));
        injected(fault)?;
        check_name(name)?;
        if st.entries.contains_key(name) {
            return Err(Errno::EEXIST.into());
        }
        if st
            .capacity_inodes
            .is_some_and(|c| st.live_inodes().count() as u64 >= c)
        {
            return Err(Errno::ENOSPC.into());
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(ino, Inode::default());
        st.entries.insert(name.to_owned(), ino);
        st.dir_pending.push(DirOp::Create(name.to_owned(), ino));
        Ok(self.file(&mut st, ino, name, OpenMode::ReadWrite))
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<SimFile> {
        let (mut st, fault) = begin(&self.state, OpKind::Open, Some(name));
        injected(fault)?;
        check_name(name)?;
        let ino = *st.entries.get(name).ok_or(Errno::ENOENT)?;
        Ok(self.file(&mut st, ino, name, mode))
    }

    fn unlink(&self, name: &str) -> io::Result<()> {
        let (mut st, fault) = begin(&self.state, OpKind::Unlink, Some(name));
        injected(fault)?;
        check_name(name)?;
        st.entries.remove(name).ok_or(Errno::ENOENT)?;
        st.dir_pending.push(DirOp::Unlink(name.to_owned()));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let (mut st, fault) = begin(&self.state, OpKind::DirSync, None);
        let pending = std::mem::take(&mut st.dir_pending);
        injected(fault)?;
        for op in pending {
            match op {
                DirOp::Create(name, ino) => st.durable_entries.insert(name, ino),
                DirOp::Unlink(name) => st.durable_entries.remove(&name),
            };
        }
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let (st, fault) = begin(&self.state, OpKind::List, None);
        injected(fault)?;
        Ok(st.entries.keys().cloned().collect())
    }

    /// Capacity minus the bytes of live inodes; `None` without a capacity limit. Not an
    /// operation (no crash point, no fault).
    fn free_bytes(&self) -> io::Result<Option<u64>> {
        let st = lock(&self.state);
        Ok(st.capacity_bytes.map(|c| c.saturating_sub(st.live_bytes())))
    }

    fn free_inodes(&self) -> io::Result<Option<u64>> {
        let st = lock(&self.state);
        let live = st.live_inodes().count() as u64;
        Ok(st.capacity_inodes.map(|c| c.saturating_sub(live)))
    }

    /// The simulated directory is never removed (its loss is a power loss's, not an
    /// operator's; the real directory's removal is tested on a real file system).
    fn is_removed(&self) -> io::Result<bool> {
        Ok(false)
    }
}

/// An open file of a [`SimFs`], with its own offset for [`DirFile::write`].
pub struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    /// The name this file was opened under, reported to fault rules.
    name: String,
    mode: OpenMode,
    offset: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("name", &self.name)
            .field("ino", &self.ino)
            .field("mode", &self.mode)
            .field("offset", &self.offset)
            .finish()
    }
}

impl SimFile {
    fn begin(&self, kind: OpKind) -> (MutexGuard<'_, State>, Option<Errno>) {
        begin(&self.state, kind, Some(&self.name))
    }

    fn check_writable(&self) -> io::Result<()> {
        match self.mode {
            OpenMode::ReadOnly => Err(Errno::EBADF.into()),
            OpenMode::Append | OpenMode::ReadWrite => Ok(()),
        }
    }
}

impl DirFile for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (mut st, fault) = begin(&self.state, OpKind::Write, Some(&self.name));
        injected(fault)?;
        self.check_writable()?;
        if self.mode == OpenMode::Append {
            self.offset = st.inode(self.ino).current.len() as u64;
        }
        let op = DataOp::Write {
            offset: self.offset,
            bytes: buf.to_vec(),
        };
        st.apply_data_op(self.ino, op)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (mut st, fault) = self.begin(OpKind::WriteAt);
        injected(fault)?;
        self.check_writable()?;
        // Like Linux: under O_APPEND, pwrite ignores its offset.
        let offset = match self.mode {
            OpenMode::Append => st.inode(self.ino).current.len() as u64,
            _ => offset,
        };
        let op = DataOp::Write {
            offset,
            bytes: buf.to_vec(),
        };
        st.apply_data_op(self.ino, op)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (st, fault) = self.begin(OpKind::ReadAt);
        injected(fault)?;
        if self.mode == OpenMode::Append {
            return Err(Errno::EBADF.into());
        }
        let data = &st.inode(self.ino).current;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn sync_all(&self) -> io::Result<()> {
        let (mut st, fault) = self.begin(OpKind::FileSync);
        let inode = st.inode_mut(self.ino);
        let pending = std::mem::take(&mut inode.pending);
        if fault.is_some() {
            // Linux drops the dirty pages of a failed writeback: they never become durable.
            inode.lost_ops |= !pending.is_empty();
            return injected(fault);
        }
        for op in &pending {
            apply(&mut inode.durable, op);
        }
        debug_assert!(inode.lost_ops || inode.durable == inode.current);
        Ok(())
    }

    fn stat(&self) -> io::Result<FileStat> {
        let (st, fault) = self.begin(OpKind::Stat);
        injected(fault)?;
        let inode = st.inode(self.ino);
        let size_bytes = inode.current.len() as u64;
        Ok(FileStat {
            size_bytes,
            allocated_bytes: size_bytes.next_multiple_of(BLOCK_BYTES) + inode.extra_allocated_bytes,
        })
    }

    /// Fails with `EINVAL` on a read-only file, as `ftruncate` does.
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let (mut st, fault) = self.begin(OpKind::SetLen);
        injected(fault)?;
        if self.mode == OpenMode::ReadOnly {
            return Err(Errno::EINVAL.into());
        }
        st.apply_data_op(self.ino, DataOp::SetLen(len_bytes))?;
        st.inode_mut(self.ino).extra_allocated_bytes = 0;
        Ok(())
    }
}

impl Drop for SimFile {
    /// Closing is not an operation: it never fails or crashes (it runs while a crash unwinds).
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        let inode = st.inode_mut(self.ino);
        assert!(inode.open_handles > 0, "open handle count underflow");
        inode.open_handles -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{read_exact_at, write_all};

    fn errno(e: io::Error) -> Errno {
        Errno::from_raw(e.raw_os_error().expect("an errno"))
    }

    /// Creates `name` holding `data`, with the file and the directory synced.
    fn durable_file(fs: &SimFs, name: &str, data: &[u8]) {
        let mut f = fs.create_new(name).unwrap();
        write_all(&mut f, data).unwrap();
        f.sync_all().unwrap();
        fs.sync().unwrap();
    }

    #[test]
    fn unsynced_write_is_lost_on_drop_unsynced_but_kept_on_keep_all() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"old");
        let f = fs.open("a", OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"new!", 3).unwrap();
        assert_eq!(fs.read_current("a").unwrap(), b"oldnew!");
        assert_eq!(fs.read_durable("a").unwrap(), b"old");
        let dropped = fs.power_loss(PowerLossMode::DropUnsynced);
        assert_eq!(dropped.read_current("a").unwrap(), b"old");
        let kept = fs.power_loss(PowerLossMode::KeepAll);
        assert_eq!(kept.read_current("a").unwrap(), b"oldnew!");
        assert_eq!(kept.read_durable("a").unwrap(), b"oldnew!");
    }

    #[test]
    fn create_is_lost_without_dir_sync_and_kept_with_it() {
        let fs = SimFs::new();
        let f = fs.create_new("a").unwrap();
        f.sync_all().unwrap();
        assert_eq!(fs.read_durable("a"), None);
        assert!(
            fs.power_loss(PowerLossMode::DropUnsynced)
                .names()
                .is_empty()
        );
        assert_eq!(fs.power_loss(PowerLossMode::KeepAll).names(), ["a"]);
        fs.sync().unwrap();
        assert_eq!(fs.power_loss(PowerLossMode::DropUnsynced).names(), ["a"]);
    }

    #[test]
    fn unlink_is_undone_by_power_loss_without_dir_sync() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"data");
        fs.unlink("a").unwrap();
        assert!(fs.names().is_empty());
        assert_eq!(fs.read_durable("a").unwrap(), b"data");
        let rebooted = fs.power_loss(PowerLossMode::DropUnsynced);
        assert_eq!(rebooted.read_current("a").unwrap(), b"data");
        fs.sync().unwrap();
        assert!(
            fs.power_loss(PowerLossMode::DropUnsynced)
                .names()
                .is_empty()
        );
    }

    #[test]
    fn failed_dir_sync_loses_the_create_for_good() {
        let fs = SimFs::new();
        fs.fail_nth(OpKind::DirSync, 0, Errno::EIO);
        drop(fs.create_new("a").unwrap());
        assert_eq!(errno(fs.sync().unwrap_err()), Errno::EIO);
        fs.sync().unwrap();
        assert_eq!(fs.names(), ["a"]);
        assert_eq!(fs.read_durable("a"), None);
    }

    #[test]
    fn fsync_eio_is_reported_once_and_the_data_is_lost() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"old");
        let f = fs.open("a", OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"lost", 3).unwrap();
        fs.fail_nth(OpKind::FileSync, 0, Errno::EIO);
        assert_eq!(errno(f.sync_all().unwrap_err()), Errno::EIO);
        let mut buf = [0u8; 7];
        read_exact_at(&f, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"oldlost", "reads still see the page cache");
        f.sync_all().unwrap();
        assert_eq!(
            fs.read_durable("a").unwrap(),
            b"old",
            "second fsync Ok, data gone"
        );

        f.write_all_at(b"more", 7).unwrap();
        f.sync_all().unwrap();
        assert_eq!(fs.read_durable("a").unwrap(), b"old\0\0\0\0more");
        let rebooted = fs.power_loss(PowerLossMode::DropUnsynced);
        assert_eq!(rebooted.read_current("a").unwrap(), b"old\0\0\0\0more");
    }

    #[test]
    fn truncate_is_durable_only_after_sync_all() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"0123456789");
        let f = fs.open("a", OpenMode::ReadWrite).unwrap();
        f.set_len(4).unwrap();
        assert_eq!(f.stat().unwrap().size_bytes, 4);
        assert_eq!(fs.read_durable("a").unwrap(), b"0123456789");
        f.sync_all().unwrap();
        assert_eq!(fs.read_durable("a").unwrap(), b"0123");
    }

    /// A small save-and-flush sequence with crash points 0..=7 (create, write, set_len,
    /// file sync, dir sync, commit, unlink, dir sync).
    fn workload(fs: &SimFs) -> io::Result<()> {
        let mut f = fs.create_new("rec")?;
        write_all(&mut f, b"frames")?;
        f.set_len(5)?;
        f.sync_all()?;
        fs.sync()?;
        fs.commit_point()?;
        fs.unlink("rec")?;
        fs.sync()
    }

    #[test]
    fn crash_panics_at_the_armed_crash_point_and_after() {
        let full = SimFs::new();
        workload(&full).unwrap();
        let points = full.crash_points_seen();
        assert_eq!(points, 8);
        for k in 0..points {
            let fs = SimFs::new();
            fs.arm_crash(k);
            assert_eq!(
                catch_crash(|| workload(&fs)).err(),
                Some(SimCrash),
                "crash at {k}"
            );
            assert!(fs.crashed());
            assert_eq!(fs.crash_points_seen(), k);
            let passed = fs
                .trace()
                .iter()
                .filter(|op| op.crash_point.is_some())
                .count();
            assert_eq!(passed as u64, k);
            assert_eq!(catch_crash(|| fs.list()).unwrap_err(), SimCrash);
            assert_eq!(catch_crash(|| fs.commit_point()).unwrap_err(), SimCrash);
            let rebooted = fs.power_loss(PowerLossMode::DropUnsynced);
            assert!(!rebooted.crashed());
            assert_eq!(rebooted.crash_points_seen(), 0);
            rebooted.list().unwrap();
        }
        let fs = SimFs::new();
        fs.arm_crash(points);
        assert_eq!(catch_crash(|| workload(&fs)).unwrap().ok(), Some(()));
    }

    #[test]
    fn crash_happens_before_the_op_takes_effect() {
        let fs = SimFs::new();
        let mut f = fs.create_new("a").unwrap();
        fs.arm_crash(1);
        assert_eq!(
            catch_crash(|| write_all(&mut f, b"x")).err(),
            Some(SimCrash)
        );
        assert_eq!(fs.read_current("a").unwrap(), b"");
        assert_eq!(
            catch_crash(|| f.read_at(&mut [0u8; 1], 0)).err(),
            Some(SimCrash)
        );
        assert_eq!(catch_crash(|| f.stat()).err(), Some(SimCrash));
        drop(f); // closing a file on a dead machine is fine
    }

    #[test]
    fn other_panics_pass_through_catch_crash() {
        let payload = panic::catch_unwind(|| catch_crash(|| panic::panic_any(7u32))).unwrap_err();
        assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
    }

    #[test]
    fn fault_hook_selects_by_name_and_kind() {
        let fs = SimFs::new();
        fs.set_fault_hook(|op| {
            (op.kind == OpKind::WriteAt && op.name.as_deref() == Some("b")).then_some(Errno::EIO)
        });
        let a = fs.create_new("a").unwrap();
        let b = fs.create_new("b").unwrap();
        a.write_all_at(b"ok", 0).unwrap();
        assert_eq!(errno(b.write_all_at(b"no", 0).unwrap_err()), Errno::EIO);
        assert_eq!(
            fs.read_current("b").unwrap(),
            b"",
            "a failed op has no effect"
        );
        b.sync_all().unwrap();

        fs.fail_all(OpKind::Commit, Errno::EROFS);
        assert_eq!(errno(fs.commit_point().unwrap_err()), Errno::EROFS);
        assert_eq!(errno(fs.commit_point().unwrap_err()), Errno::EROFS);
        fs.clear_faults();
        fs.commit_point().unwrap();
        b.write_all_at(b"yes", 0).unwrap();

        let trace = fs.trace();
        let last = trace.last().unwrap();
        assert_eq!(last.kind, OpKind::WriteAt);
        assert_eq!(last.name.as_deref(), Some("b"));
        assert_eq!(last.seq, trace.len() as u64 - 1);
    }

    #[test]
    fn fail_nth_counts_ops_of_its_kind_from_now() {
        let fs = SimFs::new();
        let mut f = fs.create_new("a").unwrap();
        write_all(&mut f, b"0").unwrap();
        fs.fail_nth(OpKind::Write, 1, Errno::ENOSPC);
        fs.fail_nth(OpKind::Stat, 0, Errno::EIO);
        write_all(&mut f, b"1").unwrap();
        assert_eq!(errno(f.write(b"2").unwrap_err()), Errno::ENOSPC);
        write_all(&mut f, b"3").unwrap();
        assert_eq!(errno(f.stat().unwrap_err()), Errno::EIO);
        assert_eq!(f.stat().unwrap().size_bytes, 3);
        assert_eq!(fs.read_current("a").unwrap(), b"013");
    }

    #[test]
    fn capacity_refuses_growth_with_enospc_and_no_effect() {
        let fs = SimFs::new();
        fs.set_capacity_bytes(Some(10));
        let mut a = fs.create_new("a").unwrap();
        write_all(&mut a, b"123456").unwrap();
        let mut b = fs.create_new("b").unwrap();
        assert_eq!(errno(b.write(b"12345").unwrap_err()), Errno::ENOSPC);
        assert_eq!(errno(b.set_len(5).unwrap_err()), Errno::ENOSPC);
        assert_eq!(fs.read_current("b").unwrap(), b"");
        write_all(&mut b, b"1234").unwrap();

        // An unlinked file holds its space while open, and frees it on close.
        fs.unlink("a").unwrap();
        assert_eq!(errno(b.write(b"5").unwrap_err()), Errno::ENOSPC);
        a.set_len(0).unwrap();
        drop(a);
        write_all(&mut b, b"567890").unwrap();
    }

    #[test]
    fn unlinked_open_file_stays_readable() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"data");
        let f = fs.open("a", OpenMode::ReadOnly).unwrap();
        fs.unlink("a").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(f.read_at(&mut buf, 1).unwrap(), 3);
        assert_eq!(&buf[..3], b"ata");
        assert_eq!(f.read_at(&mut buf, 9).unwrap(), 0);
    }

    #[test]
    fn errors_match_linux() {
        let fs = SimFs::new();
        drop(fs.create_new("a").unwrap());
        assert_eq!(errno(fs.create_new("a").unwrap_err()), Errno::EEXIST);
        assert_eq!(
            errno(fs.open("b", OpenMode::ReadOnly).unwrap_err()),
            Errno::ENOENT
        );
        assert_eq!(errno(fs.unlink("b").unwrap_err()), Errno::ENOENT);
        for bad in ["", ".", "..", "../x", "a\0"] {
            let e = fs.create_new(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let mut ro = fs.open("a", OpenMode::ReadOnly).unwrap();
        assert_eq!(errno(ro.write(b"x").unwrap_err()), Errno::EBADF);
        assert_eq!(errno(ro.write_all_at(b"x", 0).unwrap_err()), Errno::EBADF);
        assert_eq!(errno(ro.set_len(1).unwrap_err()), Errno::EINVAL);
        let wo = fs.open("a", OpenMode::Append).unwrap();
        assert_eq!(
            errno(wo.read_at(&mut [0u8; 1], 0).unwrap_err()),
            Errno::EBADF
        );
        assert_eq!(fs.list().unwrap(), ["a"]);
    }

    /// Like Linux's `O_APPEND`: writes and `pwrite`s through the writer's descriptor land at
    /// the end, so the bytes before it cannot be overwritten through it.
    #[test]
    fn append_descriptor_writes_only_at_the_end() {
        let fs = SimFs::new();
        let own = fs.create_new("a").unwrap();
        own.write_all_at(b"abc", 0).unwrap();
        let mut w = fs.open("a", OpenMode::Append).unwrap();
        assert_eq!(w.write(b"d").unwrap(), 1);
        w.write_all_at(b"e", 0).unwrap();
        own.set_len(2).unwrap();
        assert_eq!(w.write(b"f").unwrap(), 1);
        assert_eq!(fs.read_current("a").unwrap(), b"abf");
    }

    #[test]
    fn stat_rounds_allocation_up_and_adds_extra() {
        let fs = SimFs::new();
        let mut f = fs.create_new("a").unwrap();
        assert_eq!(
            f.stat().unwrap(),
            FileStat {
                size_bytes: 0,
                allocated_bytes: 0
            }
        );
        write_all(&mut f, &[1u8; 4097]).unwrap();
        fs.set_extra_allocated("a", 1 << 20);
        assert_eq!(
            f.stat().unwrap(),
            FileStat {
                size_bytes: 4097,
                allocated_bytes: 8192 + (1 << 20)
            }
        );
    }

    #[test]
    fn power_loss_returns_an_independent_disk() {
        let fs = SimFs::new();
        durable_file(&fs, "a", b"v1");
        fs.fail_all(OpKind::List, Errno::EIO);
        let rebooted = fs.power_loss(PowerLossMode::DropUnsynced);
        rebooted.list().unwrap();
        let old = fs.open("a", OpenMode::ReadWrite).unwrap();
        old.write_all_at(b"v2", 0).unwrap();
        old.sync_all().unwrap();
        assert_eq!(rebooted.read_current("a").unwrap(), b"v1");
        let new = rebooted.open("a", OpenMode::ReadOnly).unwrap();
        let mut buf = [0u8; 2];
        read_exact_at(&new, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"v1");
    }
}
