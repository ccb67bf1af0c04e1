//! Garbage files: recordings whose database row is *garbage* (deleted by retention, discarded,
//! abandoned) and whose sample file may still exist. A garbage row is forgotten only after its
//! file's unlink is durable (the directory fsynced), so that no id is ever reused while its
//! file could still be there (DESIGN.md invariant 2).
//!
//! An unlink that fails (EPERM on an immutable file, EIO or EROFS from a failing disk) must not
//! stop anything else: the file stays garbage, each collection makes one attempt at each file
//! that is due, and a failing file is tried again after a delay that doubles from
//! [`RETRY_MIN`] to [`RETRY_MAX`]. Its failures are logged when their count is a power of two
//! (the first, then ever more rarely) and counted in [`GarbageStatus`], which `nvr status`
//! shows.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use protocol::messages::GarbageStatus;
use protocol::{CompositeId, Duration, TIME_UNITS_PER_SEC, Time};
use tracing::warn;

use crate::error::Error;
use crate::fs::Dir;
use crate::layout::sample_file_name;

/// Delay before the first retry of a failed unlink.
pub const RETRY_MIN: Duration = Duration(TIME_UNITS_PER_SEC);

/// Longest delay between retries of a failing unlink.
pub const RETRY_MAX: Duration = Duration(5 * 60 * TIME_UNITS_PER_SEC);

/// The garbage files of a syncer; see the module docs.
#[derive(Debug, Default)]
pub struct Garbage {
    /// Garbage rows whose files may still exist.
    to_unlink: BTreeSet<CompositeId>,
    /// Garbage rows whose unlink is durable; the next flush forgets them.
    unlinked: BTreeSet<CompositeId>,
    /// Files of `to_unlink` whose last unlink failed.
    failing: BTreeMap<CompositeId, Failing>,
}

#[derive(Debug)]
struct Failing {
    failures: u32,
    /// Monotonic time of the last failure.
    failed_at: Time,
    /// Monotonic time of the next attempt.
    next_try: Time,
    error: String,
}

impl Garbage {
    /// The garbage of a database whose garbage rows are `ids`.
    pub fn new(ids: impl IntoIterator<Item = CompositeId>) -> Self {
        Garbage {
            to_unlink: ids.into_iter().collect(),
            ..Garbage::default()
        }
    }

    /// Rows that just became garbage (committed as such).
    pub fn add(&mut self, ids: impl IntoIterator<Item = CompositeId>) {
        self.to_unlink.extend(ids);
    }

    /// Whether `id`'s row is garbage whose file may still exist.
    pub fn contains(&self, id: CompositeId) -> bool {
        self.to_unlink.contains(&id)
    }

    /// Garbage rows whose unlink is durable, for the next flush to forget.
    pub fn unlinked(&self) -> impl Iterator<Item = CompositeId> + '_ {
        self.unlinked.iter().copied()
    }

    /// A flush forgot the rows of [`Garbage::unlinked`].
    pub fn forgot_unlinked(&mut self) {
        self.unlinked.clear();
    }

    /// Whether some garbage file's last unlink failed.
    pub fn has_failing(&self) -> bool {
        !self.failing.is_empty()
    }

    /// When a failing unlink is next due, if any is.
    pub fn next_retry(&self) -> Option<Time> {
        self.failing.values().map(|f| f.next_try).min()
    }

    /// Makes every failing file due now (a shutdown makes one last attempt at each).
    pub fn retry_all_now(&mut self, now: Time) {
        for f in self.failing.values_mut() {
            f.next_try = now;
        }
    }

    /// Unlinks every garbage file that is due at monotonic time `now` (one attempt each; a
    /// missing file counts as unlinked), then fsyncs the directory if any was, which makes
    /// those unlinks durable. Only a failed directory fsync is an error (a fatal one).
    pub fn collect<D: Dir>(&mut self, dir: &D, now: Time) -> Result<(), Error> {
        let due: Vec<CompositeId> = self
            .to_unlink
            .iter()
            .filter(|id| self.failing.get(id).is_none_or(|f| f.next_try <= now))
            .copied()
            .collect();
        let mut unlinked = Vec::new();
        for id in due {
            match unlink(dir, id) {
                Ok(()) => {
                    self.failing.remove(&id);
                    unlinked.push(id);
                }
                Err(e) => self.failed(id, now, &e),
            }
        }
        if unlinked.is_empty() {
            return Ok(());
        }
        dir.sync().map_err(Error::DirSyncFailed)?;
        for id in unlinked {
            self.to_unlink.remove(&id);
            self.unlinked.insert(id);
        }
        Ok(())
    }

    fn failed(&mut self, id: CompositeId, now: Time, e: &io::Error) {
        let f = self.failing.entry(id).or_insert(Failing {
            failures: 0,
            failed_at: now,
            next_try: now,
            error: String::new(),
        });
        f.failures = f.failures.saturating_add(1);
        let delay = Duration(
            RETRY_MIN
                .0
                .saturating_mul(1 << (f.failures - 1).min(20))
                .min(RETRY_MAX.0),
        );
        f.failed_at = now;
        f.next_try = now + delay;
        f.error = e.to_string();
        if f.failures.is_power_of_two() {
            warn!(
                file = %sample_file_name(id),
                error = %e,
                failures = f.failures,
                retry_in = %delay,
                "cannot unlink a garbage file; it stays garbage and is retried later"
            );
        }
    }

    /// What `nvr status` shows.
    pub fn status(&self) -> GarbageStatus {
        let newest_error = self
            .failing
            .iter()
            .max_by_key(|(_, f)| f.failed_at)
            .map(|(&id, f)| format!("{}: {}", sample_file_name(id), f.error));
        GarbageStatus {
            files: self.to_unlink.len() as u64,
            failing_unlinks: self.failing.len() as u64,
            newest_error,
        }
    }
}

/// One unlink attempt (repeated only when interrupted); a missing file is no error.
/// Empties the file, then unlinks it. Emptying first frees its blocks even while another
/// process still holds it open (an ingest keeping a committed recording's descriptor would
/// otherwise keep its space after retention deleted it); nothing of a garbage file is needed.
/// A file that cannot be opened for that (gone, immutable) is left to the unlink's answer.
fn unlink<D: Dir>(dir: &D, id: CompositeId) -> io::Result<()> {
    let name = sample_file_name(id);
    if let Ok(f) = dir.open(&name, crate::fs::OpenMode::ReadWrite) {
        let _ = crate::fs::DirFile::set_len(&f, 0);
    }
    loop {
        return match dir.unlink(&name) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn!(file = %name, "garbage file already gone");
                Ok(())
            }
            r => r,
        };
    }
}
